//! A notification accepted over HTTP reaches each channel's provider through the outbox,
//! the relay, RabbitMQ and the channel's worker.

use domain::Channel;
use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn delivers_on_every_channel() {
    let (app, _services) = TestApp::spawn().await;
    let id = app
        .accept(&json!({
            "type": "invoice.ready",
            "to": [{"email": "ada@example.com", "phone": "+15551234567", "whatsapp": "+447911123456",
                    "subscriber_id": "user-42"}],
            "content": {"subject": "Your invoice", "text": "It is ready", "html": "<p>It is ready</p>"},
            "data": {"invoice": "INV-7"}
        }))
        .await;
    let n = app.wait_for_status(id, "sent").await;
    let deliveries = n["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 4);
    for d in deliveries {
        assert_eq!(d["status"], "sent", "{d:#}");
        assert_eq!(d["attempt_count"], 1);
        assert_eq!(d["provider"], "sandbox");
        let provider_id = d["provider_message_id"].as_str().unwrap();
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0]["outcome"], "sent");
        assert_eq!(attempts[0]["number"], 1);

        let channel: Channel = d["channel"].as_str().unwrap().parse().unwrap();
        let recorded = app.sandbox_messages(channel);
        assert_eq!(recorded.len(), 1, "{channel}");
        assert_eq!(recorded[0]["provider_message_id"], provider_id);
        assert_eq!(recorded[0]["delivery_id"], d["id"]);
        assert_eq!(recorded[0]["to"], d["recipient"]);
    }
    let email = &app.sandbox_messages(Channel::Email)[0];
    assert_eq!(email["content"]["subject"], "Your invoice");
    assert_eq!(email["content"]["html"], "<p>It is ready</p>");
    let novu = &app.sandbox_messages(Channel::Novu)[0];
    assert_eq!(novu["to"], "user-42");
    assert_eq!(novu["type"], "invoice.ready");
    assert_eq!(novu["data"]["invoice"], "INV-7");
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 0);
}

#[tokio::test]
async fn send_at_in_the_future_is_not_sent_before_its_time() {
    let (app, _services) = TestApp::spawn().await;
    let send_at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2)).replace_nanosecond(0).unwrap();
    let send_at_text = send_at.format(&time::format_description::well_known::Rfc3339).unwrap();
    let later = app
        .accept(&json!({"type": "t", "to": [{"email": "later@example.com"}], "send_at": send_at_text,
            "content": {"subject": "Later", "text": "later"}}))
        .await;
    let now = app
        .accept(
            &json!({"type": "t", "to": [{"email": "now@example.com"}], "content": {"subject": "Now", "text": "now"}}),
        )
        .await;

    // Once the one sent now has gone through relay and worker, the scheduled one is
    // still waiting in the outbox.
    app.wait_for_status(now, "sent").await;
    let waiting = app.get(later).await;
    assert_eq!(waiting["status"], "pending");
    assert_eq!(waiting["deliveries"][0]["status"], "pending");
    assert_eq!(app.sandbox_messages(Channel::Email).len(), 1);
    assert_eq!(app.env.store.outbox_len().await.unwrap(), 1);

    let sent = app.wait_for_status(later, "sent").await;
    let started: time::OffsetDateTime = time::OffsetDateTime::parse(
        sent["deliveries"][0]["attempts"][0]["started_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(started >= send_at, "sent at {started}, scheduled for {send_at}");
}

#[tokio::test]
async fn each_binary_serves_metrics_that_move_with_a_delivery() {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let api_addr = free();
    let app = TestApp::api_with(|c| c.ops_listen = Some(api_addr)).await;
    let relay_addr = free();
    let _relay =
        app.start_relay_with(outbox_relay::RelaySettings { listen: Some(relay_addr), ..Default::default() }).await;
    let mut workers = Vec::new();
    for channel in Channel::QUEUED {
        let addr = free();
        let options = crate::harness::WorkerOptions { listen: Some(addr), ..Default::default() };
        workers.push((channel, addr, app.start_worker(channel, options).await));
    }
    let id = app
        .accept(&json!({"type": "t", "to": [{"email": "a@example.com", "phone": "+15551234567",
            "whatsapp": "+15551234567", "subscriber_id": "u-1", "slack_channel": "C0123456789"}],
            "content": {"subject": "s", "text": "t"}}))
        .await;
    app.wait_for_status(id, "sent").await;
    // A push to a device of u-1, written as the accept's fan-out to devices writes it.
    crate::push_worker::register(&app, "u-1", "phone", "fcm-token").await;
    let push = crate::push_worker::push_delivery(&app, "u-1", "phone").await;
    app.wait_for_status(push.notification_id, "sent").await;

    let scrape = |url: String| async move { reqwest::get(url).await.unwrap().text().await.unwrap() };
    let counter = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} in\n{text}"))
    };
    let api = scrape(format!("http://{api_addr}/metrics")).await;
    assert!(counter(&api, "notify_notifications_accepted_total") >= 1.0);
    let relay = scrape(format!("http://{relay_addr}/metrics")).await;
    assert!(counter(&relay, "notify_outbox_published_total") >= Channel::QUEUED.len() as f64);
    for (channel, addr, _worker) in &workers {
        let text = scrape(format!("http://{addr}/metrics")).await;
        let sent =
            format!(r#"notify_delivery_attempts_total{{channel="{channel}",provider="sandbox",outcome="sent"}}"#);
        assert!(counter(&text, &sent) >= 1.0, "{channel}");
        let latency = format!(r#"notify_accept_to_sent_seconds_count{{channel="{channel}"}}"#);
        assert!(counter(&text, &latency) >= 1.0, "{channel}");
    }
}
