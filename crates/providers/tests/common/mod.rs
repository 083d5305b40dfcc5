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
