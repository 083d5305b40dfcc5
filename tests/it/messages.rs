//! Messages a worker must not act on: poison goes to the dead-letter queue, duplicates
//! and stale attempts are dropped.

use domain::{Channel, DeliveryMessage, Publishable};
use lapin::{
    BasicProperties,
    options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
};
use uuid::Uuid;

use crate::harness::{TestApp, WorkerOptions, email, eventually};

async fn publish(channel: &lapin::Channel, routing_key: &str, body: &[u8]) {
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let confirm = channel
        .basic_publish(
            queue::topology::EXCHANGE.into(),
            routing_key.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack());
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_and_the_worker_keeps_going() {
    let app = TestApp::api_only().await;
    let (_conn, amqp) = app.amqp().await;
    publish(&amqp, "email", b"this is not JSON").await;
    let unknown = DeliveryMessage::new(Uuid::now_v7(), Uuid::now_v7(), app.tenant_id, Channel::Email, 1);
    publish(&amqp, "email", &unknown.to_json()).await;

    // One message at a time, in queue order: once the real notification is sent, both
    // poison messages have been handled before it.
    let _worker = app.start_worker(Channel::Email, WorkerOptions { prefetch: 1, ..Default::default() }).await;
    let _relay = app.start_relay(100).await;
    let id = app.accept(&email("a@example.com")).await;
    app.wait_for_status(id, "sent").await;

    let dead_queue = queue::topology::dead_letter_queue_name(Channel::Email);
    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        let message = eventually("a dead-lettered message", || async {
            amqp.basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: true }).await.unwrap()
        })
        .await;
        bodies.push(message.delivery.data.clone());
    }
    assert_eq!(bodies[0], b"this is not JSON");
    assert_eq!(bodies[1], unknown.to_json());
}

#[tokio::test]
async fn a_duplicate_message_for_a_sent_delivery_does_not_send_again() {
    let app = TestApp::api_only().await;
    let relay = app.start_relay(100).await;
    let worker = app.start_worker(Channel::Email, WorkerOptions::default()).await;
    let id = app.accept(&email("a@example.com")).await;
    let n = app.wait_for_status(id, "sent").await;
    worker.stop().await;

    // The same message again (as a relay whose commit failed after the confirm would
    // publish it), then an older attempt, then a fresh notification as a marker.
    let delivery_id: Uuid = n["deliveries"][0]["id"].as_str().unwrap().parse().unwrap();
    let duplicate = DeliveryMessage::new(delivery_id, id, app.tenant_id, Channel::Email, 1);
    let (_conn, amqp) = app.amqp().await;
    publish(&amqp, "email", &duplicate.to_json()).await;
    publish(&amqp, "email", &duplicate.to_json()).await;
    let marker = app.accept(&email("b@example.com")).await;
    eventually("the marker published", || async { (app.env.store.outbox_len().await.unwrap() == 0).then_some(()) })
        .await;

    let _worker = app.start_worker(Channel::Email, WorkerOptions { prefetch: 1, ..Default::default() }).await;
    app.wait_for_status(marker, "sent").await;
    assert_eq!(app.sends_of(Channel::Email, &delivery_id.to_string()), 1);
    let again = app.get(id).await;
    assert_eq!(again["deliveries"][0]["attempt_count"], 1);
    assert_eq!(again["deliveries"][0]["attempts"].as_array().unwrap().len(), 1);
    relay.stop().await;
}
