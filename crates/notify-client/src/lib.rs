//! A client of Notify's API for Rust producers.
//!
//! - [`Client::send`] sends a [`NewNotification`], the API's own request type. A request
//!   without an idempotency key gets one, so its retries are safe; `429`, `503` and
//!   connection errors are retried after `Retry-After` (else a jittered exponential
//!   backoff), a bounded number of times. Any other refusal is a [`Error::Problem`] with the
//!   API's problem: its `code` and the fields it names. A `Retry-After` is waited out up
//!   to a minute ([`MAX_RETRY_AFTER`]).
//! - [`with_notify_context`] runs a future with a [`NotifyContext`] (the tenant's key, the
//!   record and correlation ids, an audience, data), and [`notify`] in it turns a business
//!   error into a notification, as seed 000's `await Notify("Vendor Name is missing", "HIGH")`.

mod context;
mod retry;

use std::time::Duration;

pub use context::{NotifyContext, NotifyOptions, notify, notify_with, with_notify_context};
pub use domain::{
    Priority,
    problem::Problem,
    request::{Audience, Content, NewNotification, Recipient, Severity},
    view::AcceptedNotification,
};
use reqwest::StatusCode;
pub use retry::{MAX_RETRY_AFTER, Retries};

/// What went wrong with a call.
#[derive(Debug)]
pub enum Error {
    /// The API refused the request (or still refused it after the retries): its problem.
    Problem(Box<Problem>),
    /// No answer, or one that is not the API's, after the retries.
    Transport(String),
    /// [`notify`] outside [`with_notify_context`].
    NoContext,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Problem(p) => write!(f, "{} ({}): {}", p.status, p.code, p.detail),
            Error::Transport(why) => write!(f, "transport: {why}"),
            Error::NoContext => f.write_str("notify() runs inside with_notify_context()"),
        }
    }
}

impl std::error::Error for Error {}

/// A client of one Notify API with one tenant's API key. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    api_key: String,
    retries: Retries,
}

impl Client {
    /// `base_url` as `https://notify.example.com`; `api_key` the tenant's `nk_...` key.
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Transport(e.to_string()))?;
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Ok(Client { http, base_url, api_key: api_key.into(), retries: Retries::default() })
    }

    /// The same client with another retry policy.
    pub fn with_retries(self, retries: Retries) -> Client {
        Client { retries, ..self }
    }

    /// The same client with another tenant's key.
    pub fn with_api_key(&self, api_key: impl Into<String>) -> Client {
        Client { api_key: api_key.into(), ..self.clone() }
    }

    /// Sends `notification`; its idempotency key, or a new one, makes every retry of it the
    /// same request.
    pub async fn send(&self, notification: &NewNotification) -> Result<AcceptedNotification, Error> {
        let key = notification.idempotency_key.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let url = format!("{}/v1/notifications", self.base_url);
        let body = serde_json::to_vec(notification).map_err(|e| Error::Transport(e.to_string()))?;
        let mut backoff = self.retries.backoff();
        loop {
            let sent = self
                .http
                .post(&url)
                .bearer_auth(&self.api_key)
                .header("Idempotency-Key", &key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let wait = match sent {
                Ok(response) if response.status().is_success() => {
                    return response.json().await.map_err(|e| Error::Transport(e.to_string()));
                }
                Ok(response) => {
                    let status = response.status();
                    let after = retry::retry_after(response.headers());
                    let problem = problem(status, response).await;
                    if !retry::is_retryable(status) {
                        return Err(Error::Problem(Box::new(problem)));
                    }
                    backoff.next(after).ok_or_else(|| Error::Problem(Box::new(problem)))?
                }
                // A request that may have reached the API is sent again: the key makes the
                // second the first's answer.
                Err(e) => backoff.next(None).ok_or_else(|| Error::Transport(e.to_string()))?,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// The problem the API answered, or one that says what came instead.
async fn problem(status: StatusCode, response: reqwest::Response) -> Problem {
    let text = response.text().await.unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|_| Problem {
        kind: "about:blank".into(),
        title: status.canonical_reason().unwrap_or("error").into(),
        status: status.as_u16(),
        detail: text.chars().take(200).collect(),
        code: "unexpected_answer".into(),
        errors: vec![],
    })
}
