//! Key rotation of sealed chat addresses: `rotate-integration-key` re-seals subscribers'
//! chat webhook addresses and the recipients of chat deliveries still to be sent, so that
//! once the old key is removed every one of them still opens.

use domain::Channel;
use notify_api::rotation::{Counts, Rotated, rotate};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    harness::{TestApp, WorkerOptions},
    integrations::keys,
};

/// Webhooks on loopback (tests allow private hosts).
const DISCORD: &str = "http://127.0.0.1:9/api/webhooks/42/secret-token-abcd";
const TEAMS: &str = "http://127.0.0.1:9/workflows/7/triggers/manual/paths/invoke?sig=secret-sig-wxyz";

fn chat_to(subscriber: &str, text: &str) -> Value {
    json!({"type": "t", "to": [{"subscriber_id": subscriber}], "channels": ["chat"], "content": {"text": text}})
}

async fn recipient(app: &TestApp, notification: Uuid) -> String {
    sqlx::query_scalar("SELECT recipient FROM deliveries WHERE notification_id = $1")
        .bind(notification)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap()
}

async fn stored_chat(app: &TestApp, subscriber: &str) -> Value {
    sqlx::query_scalar("SELECT chat FROM subscribers WHERE tenant_id = $1 AND id = $2")
        .bind(app.tenant_id)
        .bind(subscriber)
        .fetch_one(app.env.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn after_rotation_the_old_key_can_go_and_chat_addresses_still_open() {
    let k1 = keys("k1", &[("k1", 1)]);
    let app = TestApp::api_with_broker(|config| config.secrets = k1.clone()).await;
    // Declared before the first accept, which the relay's own declaration may not be.
    let (conn, _) = app.amqp().await;
    let _ = conn.close(200, "declared".into()).await;
    let _relay = app.start_relay(500).await;
    for (id, chat) in [
        ("u-1", json!({"discord": DISCORD})),
        ("u-2", json!({"slack": "U024BE7LH"})),
        ("u-3", json!({"teams": TEAMS, "slack": "C024BE91L"})),
    ] {
        let (status, body) = app.call("PUT", &format!("/v1/subscribers/{id}"), Some(&json!({"chat": chat}))).await;
        assert!(matches!(status, 200 | 201), "{status} {body}");
    }
    assert!(stored_chat(&app, "u-1").await["discord"]["to"].as_str().unwrap().starts_with("discord:v1.k1."));

    // Sent while k1 was the only key: final, it keeps the recipient it was sent to.
    let k1_worker = app.start_worker(Channel::Chat, WorkerOptions { secrets: Some(k1), ..Default::default() }).await;
    let sent = app.accept(&chat_to("u-1", "before")).await;
    app.wait_for_status(sent, "sent").await;
    k1_worker.stop().await;
    // Accepted but not yet sent when the key changes.
    let waiting = app.accept(&chat_to("u-1", "waiting")).await;
    assert!(recipient(&app, waiting).await.starts_with("discord:v1.k1."));

    let both = keys("k2", &[("k1", 1), ("k2", 2)]).keyring().unwrap().unwrap();
    // Batches of one: each pass goes on after the last row it read.
    let done = rotate(&app.env.store, &both, 1).await.unwrap();
    assert_eq!(
        done,
        Rotated {
            integrations: Counts::default(),
            subscribers: Counts { resealed: 2, ..Default::default() },
            deliveries: Counts { resealed: 1, ..Default::default() },
            webhooks: Counts::default(),
        }
    );
    assert_eq!(rotate(&app.env.store, &both, 1).await.unwrap(), Rotated::default(), "idempotent");

    let u1 = stored_chat(&app, "u-1").await;
    assert!(u1["discord"]["to"].as_str().unwrap().starts_with("discord:v1.k2."), "{u1}");
    assert_eq!(u1["discord"]["last4"], "abcd");
    let u3 = stored_chat(&app, "u-3").await;
    assert!(u3["teams"]["to"].as_str().unwrap().starts_with("teams:v1.k2."), "{u3}");
    assert_eq!(u3["slack"]["to"], "slack:C024BE91L");
    assert_eq!(stored_chat(&app, "u-2").await, json!({"slack": {"to": "slack:U024BE7LH"}}));
    assert!(recipient(&app, waiting).await.starts_with("discord:v1.k2."));
    assert!(recipient(&app, sent).await.starts_with("discord:v1.k1."), "a final delivery keeps its recipient");
    let (status, shown) = app.call("GET", "/v1/subscribers/u-1", None).await;
    assert_eq!((status, &shown["chat"]), (200, &json!({"discord": {"webhook": true, "last4": "abcd"}})));

    // k1 removed: a worker with k2 alone sends the waiting delivery and a new one.
    let k2 = keys("k2", &[("k2", 2)]);
    let _k2_worker = app.start_worker(Channel::Chat, WorkerOptions { secrets: Some(k2), ..Default::default() }).await;
    app.wait_for_status(waiting, "sent").await;
    let after = app.accept(&chat_to("u-1", "after")).await;
    app.wait_for_status(after, "sent").await;
    let sent_to: Vec<(String, String)> = app
        .sandbox_messages(Channel::Chat)
        .iter()
        .map(|m| (m["content"]["text"].as_str().unwrap().to_owned(), m["to"].as_str().unwrap().to_owned()))
        .collect();
    // The sandbox writes an opened webhook as `discord:<webhook>` (a sealed one would show
    // as `discord:v1.…`): each was opened, the waiting one with k2 alone.
    for text in ["before", "waiting", "after"] {
        assert!(sent_to.contains(&(text.to_owned(), "discord:<webhook>".to_owned())), "{text}: {sent_to:?}");
    }
}

#[tokio::test]
async fn a_subscriber_changed_while_being_resealed_is_left_to_its_writer() {
    let app = TestApp::api_only().await;
    let put = |url: &'static str| json!({"chat": {"discord": url}});
    assert_eq!(app.call("PUT", "/v1/subscribers/u-1", Some(&put(DISCORD))).await.0, 201);
    // Read as the rotation to a key `k9` reads it, then written anew by the API.
    let stale = app.env.store.subscribers_to_reseal("k9", None, 10).await.unwrap();
    assert_eq!(stale.len(), 1);
    let other = "http://127.0.0.1:9/api/webhooks/43/other-token-efgh";
    assert_eq!(app.call("PUT", "/v1/subscribers/u-1", Some(&put(other))).await.0, 200);
    assert!(!app.env.store.reseal_subscriber_chat(&stale[0], &stale[0].chat).await.unwrap());
    assert_eq!(stored_chat(&app, "u-1").await["discord"]["last4"], "efgh");
}
