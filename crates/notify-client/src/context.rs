//! Seed 000's one line: inside a task that [`with_notify_context`] gave the tenant, the
//! record and the audience, `notify("Vendor Name is missing", Severity::High).await`.

use std::future::Future;

use serde_json::{Map, Value};

use crate::{AcceptedNotification, Audience, Client, Content, Error, NewNotification, Severity};

tokio::task_local! {
    static CONTEXT: NotifyContext;
}

/// What [`notify`] adds to a notification, set once for a unit of work (a request, a job).
#[derive(Clone)]
pub struct NotifyContext {
    /// The client to send with; its key is the tenant's.
    pub client: Client,
    /// The business record the work is about: in `data.record_id`, and the correlation id
    /// when none is given.
    pub record_id: Option<String>,
    pub correlation_id: Option<String>,
    /// Who hears of it; default: the classification of its error class or type (on the
    /// server), else its severity's.
    pub audience: Option<Audience>,
    /// Added to every notification's `data`.
    pub data: Map<String, Value>,
}

impl NotifyContext {
    pub fn new(client: Client) -> NotifyContext {
        NotifyContext { client, record_id: None, correlation_id: None, audience: None, data: Map::new() }
    }

    /// The same context for another tenant's key.
    pub fn tenant_key(self, api_key: impl Into<String>) -> NotifyContext {
        NotifyContext { client: self.client.with_api_key(api_key), ..self }
    }

    pub fn record_id(self, id: impl Into<String>) -> NotifyContext {
        NotifyContext { record_id: Some(id.into()), ..self }
    }

    pub fn correlation_id(self, id: impl Into<String>) -> NotifyContext {
        NotifyContext { correlation_id: Some(id.into()), ..self }
    }

    pub fn audience(self, audience: Audience) -> NotifyContext {
        NotifyContext { audience: Some(audience), ..self }
    }

    pub fn data(mut self, key: impl Into<String>, value: impl Into<Value>) -> NotifyContext {
        self.data.insert(key.into(), value.into());
        self
    }
}

/// Runs `work` with `context` for the [`notify`] calls it makes (and the tasks it awaits,
/// not those it spawns).
pub async fn with_notify_context<F: Future>(context: NotifyContext, work: F) -> F::Output {
    CONTEXT.scope(context, work).await
}

/// What a [`notify`] call may say beyond its message and severity.
#[derive(Clone, Debug, Default)]
pub struct NotifyOptions {
    /// The notification type; default `error`.
    pub kind: Option<String>,
    pub error_code: Option<String>,
    /// Its class (`validation`, `mapping`, `auth`, `system`, or the tenant's own), which
    /// the tenant's classification maps to an audience and a priority.
    pub error_class: Option<String>,
}

/// Sends `message` as a notification of the context's tenant: type `error` (or the
/// options'), the message as its content on every channel, `severity` (the priority when
/// the classification gives none), the context's record id (`data.record_id`),
/// correlation id and data. Its audience is the context's; else the server's
/// classification of its error class or type; and when the tenant classified neither,
/// the severity's (`high` and `critical` to `support`, else `customer`).
pub async fn notify(message: &str, severity: Severity) -> Result<AcceptedNotification, Error> {
    notify_with(message, severity, NotifyOptions::default()).await
}

/// [`notify`] with options.
pub async fn notify_with(
    message: &str,
    severity: Severity,
    options: NotifyOptions,
) -> Result<AcceptedNotification, Error> {
    let context = CONTEXT.try_with(Clone::clone).map_err(|_| Error::NoContext)?;
    let mut data = context.data.clone();
    data.insert("message".into(), message.into());
    if let Some(id) = &context.record_id {
        data.insert("record_id".into(), id.clone().into());
    }
    let mut notification = NewNotification {
        kind: options.kind.unwrap_or_else(|| "error".into()),
        audience: context.audience,
        data: Some(data),
        content: Some(Content {
            subject: Some(message.into()),
            text: Some(message.into()),
            title: Some(message.into()),
            body: Some(message.into()),
            ..Content::default()
        }),
        severity: Some(severity),
        error_code: options.error_code,
        error_class: options.error_class,
        correlation_id: context.correlation_id.or(context.record_id),
        ..NewNotification::default()
    };
    match context.client.send(&notification).await {
        Err(Error::Problem(p)) if notification.audience.is_none() && names_no_audience(&p) => {
            notification.audience = Some(match severity {
                Severity::High | Severity::Critical => Audience::Support,
                Severity::Low | Severity::Medium => Audience::Customer,
            });
            context.client.send(&notification).await
        }
        sent => sent,
    }
}

/// The refusal of a notification that names no recipients and nothing classifies.
fn names_no_audience(p: &crate::Problem) -> bool {
    p.code == "validation_failed" && p.errors.len() == 1 && p.errors[0].field == "to"
}
