//! Amazon SES v2 `SendEmail` (docs/providers.md §3, §2): one message with simple content per
//! delivery, tagged with our ids so that SES events can be matched to deliveries, and
//! every failure sorted into the buckets of docs/providers.md §1.

use aws_config::SdkConfig;
use aws_sdk_sesv2::{
    Client,
    error::BuildError,
    types::{Body, Content, Destination, EmailContent, Message, MessageHeader, MessageTag},
};
use bootstrap::ConfigError;
use domain::{Channel, DeliveryJob, FailureKind, Provider, SendFailure, SendOutcome, SendReceipt};
use futures_util::{FutureExt, future::BoxFuture};
use serde::Deserialize;

use crate::{
    Checked, aws,
    mail::{self, ListUnsubscribe, redact},
    settings::Section,
};

/// Amazon SES (`email.ses`).
pub const UNIT: aws::Unit<Ses> = aws::Unit::new();

#[derive(Debug)]
pub struct Ses;

/// `[email.ses]`: the AWS client's settings and SES's own.
pub type SesConfig = aws::AwsConfig<SesOptions>;

/// What SES adds to the AWS client's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SesOptions {
    /// The sender, a verified SES identity: `noreply@example.com` or
    /// `Notify <noreply@example.com>` (ASCII: SES wants a non-ASCII name MIME-encoded).
    pub from: String,
    pub reply_to: Option<String>,
    /// The configuration set that publishes the SES events (delivery, bounce, complaint).
    pub configuration_set: Option<String>,
    /// An https, http or mailto URL for the `List-Unsubscribe` header; `{delivery_id}` in
    /// it is replaced by the delivery's id.
    pub list_unsubscribe: Option<String>,
    /// The SNS topic the tenant's configuration set publishes its SES events to (an
    /// integration only): the API takes events on the tenant's own receipt route
    /// (`/v1/providers/ses/events/{tenant_id}`) from this topic alone.
    pub events_topic_arn: Option<String>,
}

impl SesOptions {
    /// The options with only the sender.
    pub fn from(from: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            reply_to: None,
            configuration_set: None,
            list_unsubscribe: None,
            events_topic_arn: None,
        }
    }

    fn validate(&self, section: &Section) -> Result<Option<ListUnsubscribe>, ConfigError> {
        for (key, value) in [("from", Some(&self.from)), ("reply_to", self.reply_to.as_ref())] {
            if let Some(value) = value {
                mail::mailbox(value, section, key)?;
                if !value.is_ascii() {
                    return Err(section.invalid(key, "must be ASCII; MIME-encode a non-ASCII display name (RFC 2047)"));
                }
            }
        }
        if self.configuration_set.as_deref().is_some_and(str::is_empty) {
            return Err(section.invalid("configuration_set", "must not be empty"));
        }
        if self
            .events_topic_arn
            .as_deref()
            .is_some_and(|arn| !arn.starts_with("arn:") || arn.contains(char::is_whitespace))
        {
            return Err(section.invalid("events_topic_arn", "must be an SNS topic ARN (`arn:aws:sns:…`)"));
        }
        self.list_unsubscribe.as_deref().map(|v| ListUnsubscribe::parse(v, section)).transpose()
    }
}

impl aws::Service for Ses {
    const CHANNEL: Channel = Channel::Email;
    const NAME: &'static str = "ses";
    type Options = SesOptions;
    type Provider = SesProvider;

    fn validate(options: &SesOptions, section: &Section) -> Result<(), ConfigError> {
        options.validate(section).map(drop)
    }

    fn provider(sdk: &SdkConfig, options: &SesOptions, section: &Section) -> Result<SesProvider, ConfigError> {
        Ok(SesProvider {
            client: Client::new(sdk),
            from: options.from.clone(),
            reply_to: options.reply_to.clone(),
            configuration_set: options.configuration_set.clone(),
            list_unsubscribe: options.validate(section)?,
        })
    }

    /// `GetEmailIdentity` of the sender's domain (moto, our stand-in, has no `GetAccount`):
    /// the credentials, the region and the endpoint work, and SES knows the sender.
    fn check<'a>(provider: &'a SesProvider, options: &'a SesOptions) -> BoxFuture<'a, Checked> {
        async move {
            let domain = match mail::mailbox(&options.from, &Section::Integration, "from") {
                Ok(sender) => sender.email.domain().to_owned(),
                Err(e) => return Checked::failed(None, "settings", e.to_string()),
            };
            let identity = provider.client.get_email_identity().email_identity(&domain).send().await;
            aws::checked(identity, |output| {
                let verified = if output.verified_for_sending_status { "verified" } else { "not verified" };
                format!("credentials accepted; the sender's domain `{domain}` is {verified} for sending")
            })
        }
        .boxed()
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
            Err(err) => SendOutcome::Failed(aws::failure(&err, classify, |text| redact(text, &job.recipient))),
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
    use std::time::Duration;

    use super::*;
    use crate::{Context, ProviderSettings, ProviderUnit, Source};

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

    fn settings(toml: &str) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        UNIT.settings(Source::Config(&crate::settings::tests::figment(toml)))
    }

    const TESTING: &str = "access_key_id = \"testing\"\nsecret_access_key = \"testing\"\n";

    /// The SES provider of these settings, and its concrete type.
    async fn provider(toml: &str) -> SesProvider {
        let settings = aws::Settings::<Ses>::read(&Source::Config(&crate::settings::tests::figment(toml))).unwrap();
        settings.provider(Duration::from_secs(10)).await.unwrap()
    }

    #[tokio::test]
    async fn nothing_listening_is_a_retryable_failure() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let provider = provider(&format!(
            "[email.ses]\nregion = \"us-east-1\"\nfrom = \"noreply@example.com\"\n{TESTING}endpoint_url = \"http://127.0.0.1:{port}\"\n"
        ))
        .await;
        let content =
            domain::Content { subject: Some("S".into()), text: Some("T".into()), html: None, ..Default::default() };
        let SendOutcome::Failed(f) = provider.send_email(&mail::tests::job("user@example.org", content)).await else {
            panic!("sent to nobody")
        };
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Retryable, "connection_failed"), "{}", f.message);
        assert!(f.message.contains("Connection refused"), "the cause is named: {}", f.message);
    }

    #[tokio::test]
    async fn the_settings_are_checked() {
        let ok = "[email.ses]\nregion = \"eu-west-1\"\nfrom = \"Notify <noreply@example.com>\"\n";
        settings(ok).unwrap();
        let cases = [
            ("region", "region = \"EU West\"\nfrom = \"a@example.com\""),
            ("from", "region = \"eu-west-1\"\nfrom = \"not an address\""),
            ("from", "region = \"eu-west-1\"\nfrom = \"Zoë <noreply@example.com>\""),
            ("endpoint_url", "region = \"eu-west-1\"\nfrom = \"a@example.com\"\nendpoint_url = \"localhost:4566\""),
            ("secret_access_key", "region = \"eu-west-1\"\nfrom = \"a@example.com\"\naccess_key_id = \"AKIA\""),
            ("role_arn", "region = \"eu-west-1\"\nfrom = \"a@example.com\"\nrole_arn = \"notify\""),
        ];
        for (key, section) in cases {
            let err = settings(&format!("[email.ses]\n{section}\n")).unwrap_err().to_string();
            assert!(err.contains(&format!("email.ses.{key}")), "{key}: {err}");
        }
        let err = settings("[email.ses]\nregion = \"eu-west-1\"\nfrom = \"a@example.com\"\nregoin = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("regoin"), "{err}");
        // The attempt must end before the worker gives up on the call.
        let slow = settings(&format!("{ok}attempt_timeout = \"10s\"\n")).unwrap();
        let http = crate::http::SharedClient::new(Duration::from_secs(10));
        let ctx = Context { http: &http, provider_timeout: Duration::from_secs(10) };
        let err = slow.build(&ctx).await.err().unwrap().to_string();
        assert!(err.contains("email.ses.attempt_timeout"), "{err}");
    }

    #[test]
    fn a_tenant_brings_its_keys_and_never_an_endpoint() {
        use crate::{IntegrationRules, settings::tests::integration};
        let rules = IntegrationRules::default();
        let read = |settings: serde_json::Value| {
            UNIT.settings(Source::Integration(&integration(&settings, &rules))).err().map(|e| e.to_string())
        };
        let keys = serde_json::json!({"region": "eu-west-1", "from": "a@example.com",
            "access_key_id": "AKIA", "secret_access_key": "s", "configuration_set": "events"});
        assert_eq!(read(keys.clone()), None);
        let mut endpoint = keys.clone();
        endpoint["endpoint_url"] = "http://169.254.169.254".into();
        assert!(read(endpoint).unwrap().contains("settings.endpoint_url"));
        let no_keys = serde_json::json!({"region": "eu-west-1", "from": "a@example.com"});
        assert!(read(no_keys).unwrap().contains("settings.access_key_id"));
        let role = serde_json::json!({"region": "eu-west-1", "from": "a@example.com",
            "role_arn": "arn:aws:iam::123456789012:role/notify"});
        assert_eq!(read(role), None);
    }

    #[tokio::test]
    async fn the_content_carries_both_bodies_and_the_unsubscribe_headers() {
        let provider = provider(&format!(
            "[email.ses]\nregion = \"us-east-1\"\nfrom = \"noreply@example.com\"\n{TESTING}list_unsubscribe = \"https://example.com/u/{{delivery_id}}\"\n"
        ))
        .await;
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
