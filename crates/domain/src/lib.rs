//! Notify's vocabulary: channels, priorities, statuses, the accepted-notification request
//! and its validation, subscribers, types, templates, the planning of deliveries, the
//! broker message, the retry policy, send outcomes and the `Provider` that produces them.
//!
//! This crate does no I/O and knows nothing of sqlx, lapin, axum or any provider SDK.

pub mod address;
pub mod api_key;
pub mod backoff;
pub mod channel;
pub mod chat;
pub mod classification;
pub mod inbox;
pub mod job;
pub mod locale;
pub mod message;
pub mod notification_type;
pub mod object;
pub mod outcome;
pub mod plan;
pub mod problem;
pub mod provider;
pub mod push;
pub mod request;
pub mod retry;
pub mod status;
pub mod subscriber;
pub mod template;
pub mod view;
pub mod webhook;

pub use channel::{Channel, Priority};
pub use job::DeliveryJob;
pub use message::{DeliveryMessage, OutboxMessage, Publishable, Route, WebhookMessage};
pub use outcome::{FailureKind, SendFailure, SendOutcome, SendReceipt};
pub use plan::{Directory, Plan, PlannedDelivery, PlannedSubscriber, Skip};
pub use provider::Provider;
pub use request::{Content, FieldError, NewNotification, Recipient, ValidNotification};
pub use retry::RetryPolicy;
pub use status::{DeliveryStatus, NotificationStatus};
