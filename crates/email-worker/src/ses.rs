//! Amazon SES v2 `SendEmail` (docs/providers.md §3, §2): one message with simple content per
//! delivery, tagged with our ids so that SES events can be matched to deliveries, and
//! every failure sorted into the buckets of docs/providers.md §1.

use std::time::Duration;

use aws_sdk_sesv2::{
    Client,
    error::BuildError,
    types::{Body, Content, Destination, EmailContent, Message, MessageHeader, MessageTag},
};
use aws_support::ClientSettings;
use bootstrap::{ConfigError, SecretString};
use domain::{DeliveryJob, FailureKind, SendFailure, SendOutcome, SendReceipt};
use futures_util::{FutureExt, future::BoxFuture};
use serde::Deserialize;
use worker::Provider;

use crate::mail::{self, ListUnsubscribe, invalid, redact};

const SECTION: &str = "email.ses";

/// `[email.ses]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesConfig {
    /// The AWS region of the SES account (`eu-west-1`).
    pub region: String,
    /// Another endpoint than the region's (a VPC endpoint; moto in tests).
    pub endpoint_url: Option<String>,
    /// The sender, a verified SES identity: `noreply@example.com` or
    /// `Notify <noreply@example.com>` (ASCII: SES wants a non-ASCII name MIME-encoded).
    pub from: String,
    pub reply_to: Option<String>,
    /// The configuration set that publishes the SES events (delivery, bounce, complaint).
    pub configuration_set: Option<String>,
    /// An https, http or mailto URL for the `List-Unsubscribe` header; `{delivery_id}` in
    /// it is replaced by the delivery's id.
    pub list_unsubscribe: Option<String>,
    /// Static credentials; without them the standard AWS chain is used (environment,
    /// profile, web identity, ECS or EC2 instance role).
    pub access_key_id: Option<SecretString>,
    pub secret_access_key: Option<SecretString>,
    /// How long to wait for a connection. Nothing was sent when it runs out.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one request may take in all. Must stay below `worker.provider_timeout`, so
    /// that the SDK, which knows whether the request went out, answers first.
    #[serde(default = "default_attempt_timeout", with = "humantime_serde")]
    pub attempt_timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_attempt_timeout() -> Duration {
    Duration::from_secs(8)
}

impl SesConfig {
    /// The settings with only what has no default.
    pub fn new(region: impl Into<String>, from: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint_url: None,
            from: from.into(),
            reply_to: None,
            configuration_set: None,
            list_unsubscribe: None,
            access_key_id: None,
            secret_access_key: None,
            connect_timeout: default_connect_timeout(),
            attempt_timeout: default_attempt_timeout(),
        }
    }

    fn client(&self) -> ClientSettings<'_> {
        ClientSettings {
            section: SECTION,
            region: &self.region,
            endpoint_url: self.endpoint_url.as_deref(),
            access_key_id: self.access_key_id.as_ref(),
            secret_access_key: self.secret_access_key.as_ref(),
            connect_timeout: self.connect_timeout,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// Checks every setting; `provider_timeout` is the worker's limit on a provider call.
    pub fn validate(&self, provider_timeout: Duration) -> Result<(), ConfigError> {
        self.client().validate(provider_timeout)?;
        for (key, value) in [("from", Some(&self.from)), ("reply_to", self.reply_to.as_ref())] {
            if let Some(value) = value {
                mail::mailbox(value, SECTION, key)?;
                if !value.is_ascii() {
                    return Err(invalid(
                        SECTION,
                        key,
                        "must be ASCII; MIME-encode a non-ASCII display name (RFC 2047)",
                    ));
                }
            }
        }
        if self.configuration_set.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(SECTION, "configuration_set", "must not be empty"));
        }
        if let Some(value) = &self.list_unsubscribe {
            ListUnsubscribe::parse(value, SECTION)?;
        }
        Ok(())
    }
}

pub struct SesProvider {
    client: Client,
    from: String,
    reply_to: Option<String>,
    configuration_set: Option<String>,
    list_unsubscribe: Option<ListUnsubscribe>,
}

impl SesProvider {
    /// Builds the SDK client, once per process: it holds the connection pool and the
    /// credentials cache. Credentials are resolved at the first send, so a missing one
    /// shows as a configuration failure of that send.
    pub async fn new(config: &SesConfig) -> Result<Self, ConfigError> {
        let list_unsubscribe =
            config.list_unsubscribe.as_deref().map(|v| ListUnsubscribe::parse(v, SECTION)).transpose()?;
        let client = Client::new(&config.client().sdk_config().await);
        tracing::info!(region = %config.region, endpoint = ?config.endpoint_url, "SES provider ready");
        Ok(Self {
            client,
            from: config.from.clone(),
            reply_to: config.reply_to.clone(),
            configuration_set: config.configuration_set.clone(),
            list_unsubscribe,
        })
    }

    async fn send_email(&self, job: &DeliveryJob) -> SendOutcome {
        let content = match self.content(job) {
            Ok(content) => content,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        let tags = match tags(job) {
            Ok(tags) => tags,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        let result = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&job.recipient).build())
            .content(content)
            .set_email_tags(Some(tags))
            .set_reply_to_addresses(self.reply_to.clone().map(|r| vec![r]))
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await;
        match result {
            Ok(output) => match output.message_id {
                Some(id) => SendOutcome::Sent(SendReceipt { provider_message_id: id, response_excerpt: None }),
                // SES answered 200, so it took the message; without the id, its events
                // cannot be matched.
                None => SendOutcome::Failed(SendFailure::new(
                    FailureKind::Ambiguous,
                    "no_message_id",
                    "SES accepted the message but returned no MessageId",
                )),
            },
            Err(err) => SendOutcome::Failed(aws_support::failure(&err, classify, |text| redact(text, &job.recipient))),
        }
    }

    /// `Simple` content: SES builds the MIME message (multipart/alternative when both
    /// bodies are there) and adds our headers.
    fn content(&self, job: &DeliveryJob) -> Result<EmailContent, SendFailure> {
        let parts = mail::EmailParts::of(job)?;
        let utf8 = |data: &str| built(Content::builder().data(data).charset("UTF-8").build());
        let body = Body::builder()
            .set_text(parts.body.text().map(utf8).transpose()?)
            .set_html(parts.body.html().map(utf8).transpose()?)
            .build();
        let headers = match &self.list_unsubscribe {
            Some(list) => list
                .headers(job)
                .into_iter()
                .map(|(name, value)| built(MessageHeader::builder().name(name).value(value).build()))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![],
        };
        let message = Message::builder().subject(utf8(parts.subject)?).body(body).set_headers(Some(headers)).build();
        Ok(EmailContent::builder().simple(message).build())
    }
}

/// Our ids as SES message tags, echoed in every SES event as `mail.tags`: they find the
/// delivery an event is about and tell duplicates of an ambiguous retry apart. (Tag values
/// allow letters, digits, `_` and `-`, which is all a UUID holds.)
fn tags(job: &DeliveryJob) -> Result<Vec<MessageTag>, SendFailure> {
    [("notification_id", job.notification_id), ("delivery_id", job.delivery_id)]
        .into_iter()
        .map(|(name, id)| built(MessageTag::builder().name(name).value(id.to_string()).build()))
        .collect()
}

/// A request part the SDK refused to build: our bug, the same on every attempt.
fn built<T>(result: Result<T, BuildError>) -> Result<T, SendFailure> {
    result.map_err(|e| SendFailure::new(FailureKind::Permanent, "request_invalid", e.to_string()))
}

impl Provider for SesProvider {
    fn name(&self) -> &str {
        "ses"
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.send_email(job).boxed()
    }
}

/// The bucket of an error answer of SES, by its code, else by its HTTP status.
fn classify(code: Option<&str>, status: u16) -> FailureKind {
    match code {
        // Sending rate or daily quota: the message was not taken, later it will be.
        Some(
            "TooManyRequestsException"
            | "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "LimitExceededException"
            | "RequestLimitExceeded"
            | "RequestTimeout"
            | "RequestTimeoutException",
        ) => FailureKind::Retryable,
        // The account, its identities or our credentials: every send fails until an
        // operator acts.
        Some(
            "AccountSuspendedException"
            | "SendingPausedException"
            | "MailFromDomainNotVerifiedException"
            | "NotFoundException"
            | "AccessDenied"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "OptInRequired",
        ) => FailureKind::Config,
        _ if status == 429 => FailureKind::Retryable,
        _ if status == 401 || status == 403 => FailureKind::Config,
        _ if status >= 500 => FailureKind::Ambiguous,
        // MessageRejected, BadRequestException and the rest: this message, as it is.
        _ => FailureKind::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_error_codes_fall_into_the_providers_md_buckets() {
        let cases = [
            (Some("MessageRejected"), 400, FailureKind::Permanent),
            (Some("BadRequestException"), 400, FailureKind::Permanent),
            (Some("TooManyRequestsException"), 429, FailureKind::Retryable),
            (Some("Throttling"), 400, FailureKind::Retryable),
            (Some("LimitExceededException"), 400, FailureKind::Retryable),
            (Some("AccountSuspendedException"), 400, FailureKind::Config),
            (Some("SendingPausedException"), 400, FailureKind::Config),
            (Some("MailFromDomainNotVerifiedException"), 400, FailureKind::Config),
            (Some("NotFoundException"), 404, FailureKind::Config),
            (Some("UnrecognizedClientException"), 403, FailureKind::Config),
            (Some("ExpiredToken"), 403, FailureKind::Config),
            (Some("Whatever"), 403, FailureKind::Config),
            (Some("InternalFailure"), 500, FailureKind::Ambiguous),
            (Some("ServiceUnavailable"), 503, FailureKind::Ambiguous),
            (None, 502, FailureKind::Ambiguous),
            (None, 429, FailureKind::Retryable),
            (None, 400, FailureKind::Permanent),
        ];
        for (code, status, kind) in cases {
            assert_eq!(classify(code, status), kind, "{code:?} {status}");
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_retryable_failure() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = SesConfig {
            endpoint_url: Some(format!("http://127.0.0.1:{port}")),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            ..SesConfig::new("us-east-1", "noreply@example.com")
        };
        let provider = SesProvider::new(&config).await.unwrap();
        let content =
            domain::Content { subject: Some("S".into()), text: Some("T".into()), html: None, ..Default::default() };
        let SendOutcome::Failed(f) = provider.send_email(&mail::tests::job("user@example.org", content)).await else {
            panic!("sent to nobody")
        };
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Retryable, "connection_failed"), "{}", f.message);
        assert!(f.message.contains("Connection refused"), "the cause is named: {}", f.message);
    }

    #[test]
    fn the_settings_are_checked() {
        let ok = SesConfig::new("eu-west-1", "Notify <noreply@example.com>");
        let limit = Duration::from_secs(10);
        ok.validate(limit).unwrap();
        let cases: [(&str, SesConfig); 6] = [
            ("region", SesConfig { region: "EU West".into(), ..ok.clone() }),
            ("from", SesConfig { from: "not an address".into(), ..ok.clone() }),
            ("from", SesConfig { from: "Zoë <noreply@example.com>".into(), ..ok.clone() }),
            ("endpoint_url", SesConfig { endpoint_url: Some("localhost:4566".into()), ..ok.clone() }),
            ("secret_access_key", SesConfig { access_key_id: Some("AKIA".into()), ..ok.clone() }),
            ("attempt_timeout", SesConfig { attempt_timeout: limit, ..ok.clone() }),
        ];
        for (key, config) in cases {
            let err = config.validate(limit).unwrap_err().to_string();
            assert!(err.contains(&format!("email.ses.{key}")), "{key}: {err}");
        }
    }

    #[tokio::test]
    async fn the_content_carries_both_bodies_and_the_unsubscribe_headers() {
        let config = SesConfig {
            list_unsubscribe: Some("https://example.com/u/{delivery_id}".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            ..SesConfig::new("us-east-1", "noreply@example.com")
        };
        let provider = SesProvider::new(&config).await.unwrap();
        let content = domain::Content {
            subject: Some("S".into()),
            text: Some("T".into()),
            html: Some("<b>H</b>".into()),
            ..Default::default()
        };
        let job = mail::tests::job("user@example.org", content);
        let simple = provider.content(&job).unwrap().simple.unwrap();
        assert_eq!(simple.subject.unwrap().data, "S");
        let body = simple.body.unwrap();
        assert_eq!((body.text.unwrap().data.as_str(), body.html.unwrap().data.as_str()), ("T", "<b>H</b>"));
        let headers: Vec<(String, String)> = simple.headers.unwrap().into_iter().map(|h| (h.name, h.value)).collect();
        assert_eq!(headers[0], ("List-Unsubscribe".into(), format!("<https://example.com/u/{}>", job.delivery_id)));
        assert_eq!(headers[1].0, "List-Unsubscribe-Post");
        let tags = tags(&job).unwrap();
        assert_eq!((tags[1].name.as_str(), tags[1].value.clone()), ("delivery_id", job.delivery_id.to_string()));
    }
}
