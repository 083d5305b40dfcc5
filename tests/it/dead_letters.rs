//! The dead-letter queues' redrive (`notify-admin dlq`): what is dead is listed and
//! left in place, replayed to a worker that then delivers it, or discarded; the relay
//! reports each queue's depth.

use std::time::Duration;

use domain::{Channel, DeliveryMessage, Publishable, Route};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use notify_api::dlq::{self, Replayed, Selection};
use uuid::Uuid;

use crate::harness::{TestApp, WorkerOptions, email, eventually};

const EMAIL: Route = Route::Channel(Channel::Email);
const SMS: Route = Route::Channel(Channel::Sms);

const ALL: Selection = Selection { limit: None, delivery: None };

/// Publishes `body` to the work queue of `routing_key`, as a relay would.
async fn publish(amqp: &lapin::Channel, routing_key: &str, body: &[u8], headers: FieldTable) {
    amqp.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let props = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
    let confirm = amqp
        .basic_publish(
            queue::topology::EXCHANGE.into(),
            routing_key.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
}

/// Takes `n` messages from `route`'s work queue and rejects them, as a worker does
/// with a message it must not act on: the broker moves them to the dead-letter queue.
async fn reject(amqp: &lapin::Channel, route: Route, n: usize) {
    let queue = queue::topology::route_queue_name(route);
    for _ in 0..n {
        let got = eventually("a message in the work queue", || async {
            amqp.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false }).await.unwrap()
        })
        .await;
        amqp.basic_reject(got.delivery.delivery_tag, BasicRejectOptions { requeue: false }).await.unwrap();
    }
    eventually("the rejected messages dead-lettered", || async {
        (queue::dead_letters::depth(amqp, route).await.unwrap() as usize >= n).then_some(())
    })
    .await;
}

/// Accepts `n` email notifications, lets the relay publish them, and dead-letters their
/// messages; returns the notification and delivery ids. No worker has run: the
/// deliveries are `queued` with nothing left to move them but the dead letters.
async fn dead_deliveries(app: &TestApp, amqp: &lapin::Channel, n: usize) -> Vec<(Uuid, Uuid)> {
    let relay = app.start_relay(100).await;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = app.accept(&email(&format!("dead{i}@example.com"))).await;
        ids.push((id, app.get(id).await["deliveries"][0]["id"].as_str().unwrap().parse().unwrap()));
    }
    eventually("the messages published", || async { (app.env.store.outbox_len().await.unwrap() == 0).then_some(()) })
        .await;
    relay.stop().await;
    reject(amqp, Route::Channel(Channel::Email), n).await;
    ids
}

fn delivery_ids(letters: &[queue::DeadLetter]) -> Vec<Option<Uuid>> {
    letters.iter().map(|l| l.message.as_ref().ok().map(|m| m.id())).collect()
}

#[tokio::test]
async fn a_dead_letter_is_listed_replayed_delivered_and_the_unreadable_one_discarded() {
    let app = TestApp::api_only().await;
    let (_conn, amqp) = app.amqp().await;
    let url = app.env.amqp_url().await;
    publish(&amqp, "email", b"this is not JSON", FieldTable::default()).await;
    reject(&amqp, Route::Channel(Channel::Email), 1).await;
    let [(id, delivery)] = dead_deliveries(&app, &amqp, 1).await[..] else { unreachable!() };
    assert_eq!(app.get(id).await["deliveries"][0]["status"], "queued");

    // Listed with its ids and the broker's reason, and left where it was.
    let listed = dlq::list(&url, EMAIL, ALL).await.unwrap();
    assert_eq!(delivery_ids(&listed), [None, Some(delivery)]);
    assert!(listed[0].message.as_ref().unwrap_err().contains("not valid JSON"), "{:?}", listed[0].message);
    let message = listed[1].message.as_ref().unwrap();
    assert_eq!((message.attempt(), message.tenant_id()), (1, app.tenant_id));
    let death = &listed[1].deaths[0];
    assert_eq!((death.reason.as_str(), death.count, death.queue.as_str()), ("rejected", 1, "notify.email"));
    assert!(death.time.is_some());
    assert_eq!(delivery_ids(&dlq::list(&url, EMAIL, ALL).await.unwrap()), [None, Some(delivery)]);
    let first = Selection { limit: Some(1), delivery: None };
    assert_eq!(dlq::list(&url, EMAIL, first).await.unwrap().len(), 1);

    // Replayed: a worker delivers it once; the unreadable message stays in the queue.
    let done = dlq::replay(&url, EMAIL, ALL).await.unwrap();
    assert_eq!(done, Replayed { replayed: 1, unreadable: 1 });
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    let n = app.wait_for_status(id, "sent").await;
    assert_eq!(n["deliveries"][0]["attempt_count"], 1);
    assert_eq!(app.sends_of(Channel::Email, &delivery.to_string()), 1);
    assert_eq!(delivery_ids(&dlq::list(&url, EMAIL, ALL).await.unwrap()), [None]);

    // Discarded: gone for good.
    assert_eq!(dlq::discard(&url, EMAIL, ALL).await.unwrap(), 1);
    assert!(dlq::list(&url, EMAIL, ALL).await.unwrap().is_empty());
    assert_eq!(queue::dead_letters::depth(&amqp, EMAIL).await.unwrap(), 0);
}

#[tokio::test]
async fn a_replay_keeps_the_trace_and_one_delivery_can_be_picked() {
    let app = TestApp::api_only().await;
    let (_conn, amqp) = app.amqp().await;
    let url = app.env.amqp_url().await;
    // Dead letters of deliveries that do not exist, one with a trace context.
    let tenant = app.tenant_id;
    let [a, b, c] = [0; 3].map(|_| DeliveryMessage::new(Uuid::now_v7(), Uuid::now_v7(), tenant, Channel::Sms, 1));
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut traced = FieldTable::default();
    traced.insert("traceparent".into(), AMQPValue::LongString(traceparent.into()));
    publish(&amqp, "sms", &a.to_json(), FieldTable::default()).await;
    publish(&amqp, "sms", &b.to_json(), traced).await;
    publish(&amqp, "sms", &c.to_json(), FieldTable::default()).await;
    reject(&amqp, Route::Channel(Channel::Sms), 3).await;

    // One delivery only: b goes back to the work queue, a and c stay, in their order.
    let only_b = Selection { limit: None, delivery: Some(b.delivery_id) };
    assert_eq!(dlq::replay(&url, SMS, only_b).await.unwrap(), Replayed { replayed: 1, unreadable: 0 });
    let left = dlq::list(&url, SMS, ALL).await.unwrap();
    assert_eq!(delivery_ids(&left), [Some(a.delivery_id), Some(c.delivery_id)]);
    let work = queue::topology::queue_name(Channel::Sms);
    let replayed = amqp.basic_get(work.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap().unwrap();
    assert_eq!(DeliveryMessage::parse(&replayed.delivery.data).unwrap(), b);
    let headers = replayed.delivery.properties.headers().clone().unwrap();
    assert_eq!(headers.inner().get("traceparent"), Some(&AMQPValue::LongString(traceparent.into())));
    assert_eq!(replayed.delivery.properties.message_id().as_ref().map(|m| m.as_str()), Some(b.message_id().as_str()));

    // A limit counts what was acted on; a discard of one delivery leaves the others.
    let only_c = Selection { limit: None, delivery: Some(c.delivery_id) };
    assert_eq!(dlq::discard(&url, SMS, only_c).await.unwrap(), 1);
    let unknown = Selection { limit: None, delivery: Some(Uuid::now_v7()) };
    assert_eq!(dlq::discard(&url, SMS, unknown).await.unwrap(), 0);
    assert_eq!(delivery_ids(&dlq::list(&url, SMS, ALL).await.unwrap()), [Some(a.delivery_id)]);
    let one = Selection { limit: Some(1), delivery: None };
    assert_eq!(dlq::replay(&url, SMS, one).await.unwrap().replayed, 1);
    assert!(dlq::list(&url, SMS, ALL).await.unwrap().is_empty());
    assert!("in_app".parse::<Route>().is_err(), "in_app has no queue");
}

#[tokio::test]
async fn a_message_dead_again_after_its_replay_ends_the_pass_in_the_queue() {
    let app = TestApp::api_only().await;
    let (_conn, amqp) = app.amqp().await;
    let url = app.env.amqp_url().await;
    let unknown = DeliveryMessage::new(Uuid::now_v7(), Uuid::now_v7(), app.tenant_id, Channel::Email, 1);
    publish(&amqp, "email", &unknown.to_json(), FieldTable::default()).await;
    let _worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    eventually("the unknown delivery dead-lettered", || async {
        (queue::dead_letters::depth(&amqp, EMAIL).await.unwrap() == 1).then_some(())
    })
    .await;

    // The worker dead-letters it again at once; the pass took only what was there.
    assert_eq!(dlq::replay(&url, EMAIL, ALL).await.unwrap().replayed, 1);
    let again = eventually("the replayed message dead again", || async {
        let listed = dlq::list(&url, EMAIL, ALL).await.unwrap();
        (listed.len() == 1).then_some(listed)
    })
    .await;
    assert_eq!(again[0].message.as_ref().unwrap(), &domain::OutboxMessage::Delivery(unknown.clone()));
    assert_eq!(again[0].deaths[0].reason, "rejected");
}

#[tokio::test]
async fn the_relay_reports_the_depth_of_each_dead_letter_queue() {
    let app = TestApp::api_only().await;
    let (_conn, amqp) = app.amqp().await;
    let url = app.env.amqp_url().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _relay = app
        .start_relay_with(outbox_relay::RelaySettings {
            listen: Some(([127, 0, 0, 1], port).into()),
            dead_letter_interval: Duration::from_millis(50),
            ..Default::default()
        })
        .await;
    for i in 0..3 {
        publish(&amqp, "whatsapp", format!("poison {i}").as_bytes(), FieldTable::default()).await;
    }
    reject(&amqp, Route::Channel(Channel::Whatsapp), 3).await;

    // The metrics registry is the process's, shared with the other tests' relays, which
    // report their own vhosts every 15 s: wait for this relay's value.
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let shows = |depth: u32| {
        let (app, metrics) = (&app, &metrics);
        async move {
            let text = app.http.get(metrics).send().await.ok()?.text().await.ok()?;
            text.lines().any(|l| l == format!(r#"notify_dead_letters{{channel="whatsapp"}} {depth}"#)).then_some(())
        }
    };
    eventually("the gauge at 3", || shows(3)).await;
    let two = Selection { limit: Some(2), delivery: None };
    assert_eq!(dlq::discard(&url, Route::Channel(Channel::Whatsapp), two).await.unwrap(), 2);
    eventually("the gauge at 1", || shows(1)).await;
}

#[tokio::test]
async fn webhook_dead_letters_are_listed_and_redriven_by_dlq_webhooks() {
    let app = TestApp::api_only().await;
    let (_conn, amqp) = app.amqp().await;
    let url = app.env.amqp_url().await;
    // The worker dead-letters what is not a message at all.
    let worker = app.start_webhook_worker(|_| {}).await;
    publish(&amqp, "webhooks", b"not json", FieldTable::default()).await;
    eventually("dead-lettered by the worker", || async {
        (queue::dead_letters::depth(&amqp, Route::Webhooks).await.unwrap() == 1).then_some(())
    })
    .await;
    worker.stop().await;
    // And one rejected by hand.
    let message = domain::WebhookMessage::new(Uuid::now_v7(), app.tenant_id, 1);
    publish(&amqp, "webhooks", &message.to_json(), FieldTable::default()).await;
    reject(&amqp, Route::Webhooks, 1).await;

    let listed = dlq::list(&url, Route::Webhooks, ALL).await.unwrap();
    assert_eq!(delivery_ids(&listed), [None, Some(message.message_id)]);
    let only = Selection { limit: None, delivery: Some(message.message_id) };
    assert_eq!(dlq::replay(&url, Route::Webhooks, only).await.unwrap(), Replayed { replayed: 1, unreadable: 0 });
    let work = queue::topology::route_queue_name(Route::Webhooks);
    let got = amqp.basic_get(work.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap().unwrap();
    assert_eq!(domain::WebhookMessage::parse(&got.delivery.data).unwrap(), message);
    assert_eq!(dlq::discard(&url, Route::Webhooks, ALL).await.unwrap(), 1);
}
