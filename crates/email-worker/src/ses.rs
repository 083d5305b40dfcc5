//! Amazon SES v2 `SendEmail` (providers.md §1, §8): one message with simple content per
//! delivery, tagged with our ids so that SES events can be matched to deliveries, and
//! every failure sorted into the buckets of providers.md §0.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_sesv2::{
    Client,
    config::Credentials,
    error::{BuildError, ConnectorError, ProvideErrorMetadata, SdkError},
    types::{Body, Content, Destination, EmailContent, Message, MessageHeader, MessageTag},
};
use bootstrap::{ConfigError, ExposeSecret, SecretString};
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

    /// Checks every setting; `provider_timeout` is the worker's limit on a provider call.
    pub fn validate(&self, provider_timeout: Duration) -> Result<(), ConfigError> {
        let region_ok = !self.region.is_empty()
            && self.region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(invalid(SECTION, "region", "must be an AWS region such as `eu-west-1`"));
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid(SECTION, "endpoint_url", "must be an http or https URL"));
        }
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
        mail::both_or_neither(
            (&self.access_key_id, "access_key_id"),
            (&self.secret_access_key, "secret_access_key"),
            SECTION,
        )?;
        if self.connect_timeout.is_zero() || self.attempt_timeout.is_zero() {
            return Err(invalid(SECTION, "attempt_timeout", "timeouts must be above zero"));
        }
        if self.attempt_timeout >= provider_timeout {
            return Err(invalid(
                SECTION,
                "attempt_timeout",
                format!("must be below worker.provider_timeout ({provider_timeout:?})"),
            ));
        }
        Ok(())
    }
}

/// The AWS configuration of the client: the SDK's own retries off, since the worker's
/// retry policy retries (with SES's quota throttling needing minutes, beyond the SDK's
/// backoff) and an attempt must be one request, and explicit timeouts (providers.md §8).
async fn sdk_config(config: &SesConfig) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(config.connect_timeout)
        .operation_attempt_timeout(config.attempt_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
        let credentials = Credentials::new(id.expose_secret(), secret.expose_secret(), None, None, "notify-config");
        loader = loader.credentials_provider(credentials);
    }
    loader.load().await
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
        let client = Client::new(&sdk_config(config).await);
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
            Err(err) => SendOutcome::Failed(failure(&err, &job.recipient)),
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

/// Sorts a failed call into the buckets of providers.md §0 (§8 "Classifying SdkError").
/// The message is redacted: SES quotes addresses in some of its errors.
fn failure<E: ProvideErrorMetadata + std::error::Error + 'static>(err: &SdkError<E>, recipient: &str) -> SendFailure {
    let context = || redact(&chain(err), recipient);
    match err {
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            let code = e.err().code();
            let message = redact(e.err().message().unwrap_or("no message"), recipient);
            let code_text = code.map_or_else(|| format!("http_{status}"), str::to_owned);
            SendFailure::new(classify(code, status), code_text, message)
        }
        SdkError::DispatchFailure(e) => {
            let (kind, code) =
                e.as_connector_error().map_or((FailureKind::Retryable, "dispatch_failure"), classify_dispatch);
            SendFailure::new(kind, code, context())
        }
        // The request went out and no full answer came back: SES may have sent the email.
        SdkError::TimeoutError(_) => SendFailure::new(FailureKind::Ambiguous, "timeout", context()),
        SdkError::ResponseError(_) => SendFailure::new(FailureKind::Ambiguous, "response_unreadable", context()),
        // The request could not be built from this job: the same on every attempt.
        SdkError::ConstructionFailure(_) => SendFailure::new(FailureKind::Permanent, "request_invalid", context()),
        _ => SendFailure::new(FailureKind::Ambiguous, "sdk_error", context()),
    }
}

/// The error and its causes, `outer: inner: innermost`: the SDK's own text is a bare
/// "dispatch failure" whose cause (refused connection, missing credentials) is below it.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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

/// A failure before any answer came. Only a connection lost once the request may have
/// gone out is ambiguous; the rest never reached SES.
fn classify_dispatch(e: &ConnectorError) -> (FailureKind, &'static str) {
    use aws_smithy_types::retry::ErrorKind;
    if e.is_timeout() {
        // The connector's only timeout is the connect timeout.
        (FailureKind::Retryable, "connect_timeout")
    } else if e.is_user() {
        (FailureKind::Permanent, "request_invalid")
    } else if e.is_io() {
        if connection_lost(e) {
            (FailureKind::Ambiguous, "connection_lost")
        } else {
            (FailureKind::Retryable, "connection_failed")
        }
    } else if e.as_other() == Some(ErrorKind::TransientError) {
        // hyper's "incomplete message": the connection closed after the request was written.
        (FailureKind::Ambiguous, "connection_lost")
    } else {
        // Unclassified failures before transmission are the credentials, the endpoint or
        // the signing: our configuration.
        (FailureKind::Config, "client_setup")
    }
}

/// The I/O error is one that can happen after the request was written.
fn connection_lost(e: &ConnectorError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof);
        }
        source = err.source();
    }
    false
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

    #[test]
    fn failures_before_an_answer_are_retryable_unless_the_request_may_have_gone_out() {
        use std::io::{Error, ErrorKind::*};
        let io = |kind| ConnectorError::io(Box::new(Error::from(kind)));
        assert_eq!(classify_dispatch(&io(ConnectionRefused)), (FailureKind::Retryable, "connection_failed"));
        assert_eq!(classify_dispatch(&io(ConnectionReset)), (FailureKind::Ambiguous, "connection_lost"));
        assert_eq!(
            classify_dispatch(&ConnectorError::timeout("connect".into())),
            (FailureKind::Retryable, "connect_timeout")
        );
        let incomplete =
            ConnectorError::other("closed".into(), Some(aws_smithy_types::retry::ErrorKind::TransientError));
        assert_eq!(classify_dispatch(&incomplete).0, FailureKind::Ambiguous);
        let credentials = ConnectorError::other("no credentials".into(), None);
        assert_eq!(classify_dispatch(&credentials), (FailureKind::Config, "client_setup"));
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
        let content = domain::Content { subject: Some("S".into()), text: Some("T".into()), html: None };
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
        let content =
            domain::Content { subject: Some("S".into()), text: Some("T".into()), html: Some("<b>H</b>".into()) };
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
