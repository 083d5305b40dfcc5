//! What the provider tests share: a job to send, the client, a port nothing listens on.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::time::Duration;

use domain::{Channel, Content, DeliveryJob, FailureKind, Priority, SendFailure, SendOutcome, SendReceipt};
use serde_json::Value;
use uuid::Uuid;

pub fn job(channel: Channel, recipient: &str, kind: &str, text: Option<&str>, data: Value) -> DeliveryJob {
    DeliveryJob {
        delivery_id: Uuid::now_v7(),
        notification_id: Uuid::now_v7(),
        tenant_id: Uuid::now_v7(),
        channel,
        attempt: 1,
        retry_base: 0,
        recipient: recipient.to_owned(),
        kind: kind.to_owned(),
        priority: Priority::Normal,
        content: Content { text: text.map(str::to_owned), ..Default::default() },
        data: data.as_object().cloned().unwrap_or_default(),
        workflow: None,
        retry: None,
        device: None,
    }
}

pub fn client() -> providers::http::Client {
    providers::http::client(Duration::from_secs(5)).expect("a client builds")
}

/// A base URL where the connection is refused: a port that was free a moment ago.
pub fn refusing_base_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    format!("http://{}", listener.local_addr().expect("its address"))
}

pub fn sent(outcome: SendOutcome) -> SendReceipt {
    match outcome {
        SendOutcome::Sent(receipt) => receipt,
        SendOutcome::Failed(failure) => panic!("expected a send, got {failure:?}"),
    }
}

pub fn failed(outcome: SendOutcome, kind: FailureKind, code: &str) -> SendFailure {
    match outcome {
        SendOutcome::Failed(failure) => {
            assert_eq!((failure.kind, failure.code.as_str()), (kind, code), "{failure:?}");
            failure
        }
        SendOutcome::Sent(receipt) => panic!("expected a {kind:?} failure, got a send: {receipt:?}"),
    }
}

/// `base` with the keys of `changes` set, a `null` removing the key.
pub fn with(mut base: Value, changes: Value) -> Value {
    let map = base.as_object_mut().expect("settings are an object");
    for (key, value) in changes.as_object().expect("changes are an object") {
        if value.is_null() {
            map.remove(key);
        } else {
            map.insert(key.clone(), value.clone());
        }
    }
    base
}

/// The provider `unit` builds from the operator's `[<channel>.<name>]` section `settings`,
/// as a worker builds it, with HTTP requests timing out after `timeout`.
pub async fn built_with(
    unit: &dyn providers::ProviderUnit,
    settings: Value,
    timeout: Duration,
) -> std::sync::Arc<dyn domain::Provider> {
    let mut channel = serde_json::Map::new();
    channel.insert(unit.name().to_owned(), settings);
    let mut config = serde_json::Map::new();
    config.insert(unit.channel().as_str().to_owned(), Value::Object(channel));
    let figment = figment::Figment::from(figment::providers::Serialized::defaults(Value::Object(config)));
    let settings = unit.settings(providers::Source::Config(&figment)).expect("valid settings");
    let http = providers::http::SharedClient::new(timeout);
    let ctx = providers::Context { http: &http, provider_timeout: timeout };
    settings.build(&ctx).await.expect("the provider builds")
}

/// [`built_with`] with the usual 5 s timeout.
pub async fn built(unit: &dyn providers::ProviderUnit, settings: Value) -> std::sync::Arc<dyn domain::Provider> {
    built_with(unit, settings, Duration::from_secs(5)).await
}
