//! Amazon SNS `Publish` to a phone number (providers.md §2, §8): one SMS per delivery,
//! transactional or promotional by the notification's priority, and every failure sorted
//! into the buckets of providers.md §0.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_sns::{
    Client,
    config::Credentials,
    error::{ConnectorError, ProvideErrorMetadata, SdkError},
    types::MessageAttributeValue,
};
use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{DeliveryJob, FailureKind, Priority, SendFailure, SendOutcome, SendReceipt, address::is_valid_e164};
use futures_util::{FutureExt, future::BoxFuture};
use serde::{Deserialize, Deserializer};
use worker::Provider;

const SECTION: &str = "sms.sns";

/// `[sms.sns]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsConfig {
    /// The AWS region that sends the SMS (`eu-west-1`).
    pub region: String,
    /// Another endpoint than the region's (a VPC endpoint; moto in tests).
    pub endpoint_url: Option<String>,
    /// The alphanumeric sender shown where the destination country allows one (1 to 11
    /// letters and digits, at least one letter).
    pub sender_id: Option<String>,
    /// The number to send from (E.164), one of the account's origination numbers.
    #[serde(default, deserialize_with = "e164")]
    pub origination_number: Option<String>,
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

/// serde: a phone number given as a string or as a number. An environment variable
/// `+15551234567` reaches us as the number 15551234567 (the configuration layer reads
/// unquoted digits as numbers), and E.164 has no leading zero to lose, so `+` and the
/// digits are the number.
fn e164<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Text(String),
        Digits(u64),
    }
    Ok(Option::<Number>::deserialize(deserializer)?.map(|n| match n {
        Number::Text(text) => text,
        Number::Digits(digits) => format!("+{digits}"),
    }))
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: format!("{SECTION}.{key}"), message: message.into() }
}

impl SnsConfig {
    /// The settings with only what has no default.
    pub fn new(region: impl Into<String>) -> Self {
        Self {
            region: region.into(),
            endpoint_url: None,
            sender_id: None,
            origination_number: None,
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
            return Err(invalid("region", "must be an AWS region such as `eu-west-1`"));
        }
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid("endpoint_url", "must be an http or https URL"));
        }
        if let Some(id) = &self.sender_id {
            let ok = (1..=11).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric())
                && id.bytes().any(|b| b.is_ascii_alphabetic());
            if !ok {
                return Err(invalid("sender_id", "must be 1 to 11 letters and digits, at least one a letter"));
            }
        }
        if let Some(number) = &self.origination_number
            && !is_valid_e164(number)
        {
            return Err(invalid("origination_number", "must be an E.164 number such as `+15551234567`"));
        }
        let given = |s: &Option<SecretString>| s.as_ref().is_some_and(|s| !s.expose_secret().is_empty());
        match (given(&self.access_key_id), given(&self.secret_access_key)) {
            (true, false) => return Err(invalid("secret_access_key", "is required with `access_key_id`")),
            (false, true) => return Err(invalid("access_key_id", "is required with `secret_access_key`")),
            _ => {}
        }
        if self.connect_timeout.is_zero() || self.attempt_timeout.is_zero() {
            return Err(invalid("attempt_timeout", "timeouts must be above zero"));
        }
        if self.attempt_timeout >= provider_timeout {
            return Err(invalid(
                "attempt_timeout",
                format!("must be below worker.provider_timeout ({provider_timeout:?})"),
            ));
        }
        Ok(())
    }
}

/// The AWS configuration of the client: the SDK's own retries off, since the worker's
/// retry policy retries and an attempt must be one request, and explicit timeouts
/// (providers.md §8).
async fn sdk_config(config: &SnsConfig) -> SdkConfig {
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

pub struct SnsProvider {
    client: Client,
    sender_id: Option<String>,
    origination_number: Option<String>,
}

impl SnsProvider {
    /// Builds the SDK client, once per process: it holds the connection pool and the
    /// credentials cache. Credentials are resolved at the first send, so a missing one
    /// shows as a configuration failure of that send.
    pub async fn new(config: &SnsConfig) -> Self {
        let client = Client::new(&sdk_config(config).await);
        tracing::info!(region = %config.region, endpoint = ?config.endpoint_url, "SNS provider ready");
        Self { client, sender_id: config.sender_id.clone(), origination_number: config.origination_number.clone() }
    }

    /// Publishes the job's text to its phone number.
    pub async fn publish(&self, job: &DeliveryJob) -> SendOutcome {
        let Some(text) = job.content.text.as_deref().filter(|t| !t.is_empty()) else {
            return SendOutcome::Failed(SendFailure::new(
                FailureKind::Permanent,
                "content_invalid",
                "an SMS needs a text",
            ));
        };
        let mut request = self.client.publish().phone_number(&job.recipient).message(text);
        for (name, value) in self.attributes(job.priority) {
            match string_attribute(value) {
                Ok(attribute) => request = request.message_attributes(name, attribute),
                Err(failure) => return SendOutcome::Failed(failure),
            }
        }
        match request.send().await {
            Ok(output) => match output.message_id {
                Some(id) => SendOutcome::Sent(SendReceipt { provider_message_id: id, response_excerpt: None }),
                None => SendOutcome::Failed(SendFailure::new(
                    FailureKind::Ambiguous,
                    "no_message_id",
                    "SNS accepted the message but returned no MessageId",
                )),
            },
            Err(err) => SendOutcome::Failed(failure(&err, &job.recipient)),
        }
    }

    /// The SMS attributes of a message. Transactional SMS are routed for reliability (and
    /// cost more); only `high` and `urgent` notifications need that.
    fn attributes(&self, priority: Priority) -> Vec<(&'static str, &str)> {
        let sms_type = match priority {
            Priority::High | Priority::Urgent => "Transactional",
            Priority::Normal | Priority::Low => "Promotional",
        };
        let mut attributes = vec![("AWS.SNS.SMS.SMSType", sms_type)];
        if let Some(id) = &self.sender_id {
            attributes.push(("AWS.SNS.SMS.SenderID", id));
        }
        if let Some(number) = &self.origination_number {
            attributes.push(("AWS.MM.SMS.OriginationNumber", number));
        }
        attributes
    }
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue, SendFailure> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| SendFailure::new(FailureKind::Permanent, "request_invalid", e.to_string()))
}

impl Provider for SnsProvider {
    fn name(&self) -> &str {
        "sns"
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.publish(job).boxed()
    }
}

/// Sorts a failed call into the buckets of providers.md §0 (§8 "Classifying SdkError").
/// The message is redacted: SNS quotes the phone number in some of its errors.
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
        // The request went out and no full answer came back: SNS may have sent the SMS.
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

/// The bucket of an error answer of SNS, by its code, else by its HTTP status.
fn classify(code: Option<&str>, status: u16) -> FailureKind {
    match code {
        // Rate exceeded: the message was not taken, later it will be.
        Some("Throttling" | "ThrottlingException" | "ThrottledException" | "Throttled" | "RequestLimitExceeded") => {
            FailureKind::Retryable
        }
        // Our credentials or the account's permissions: every send fails until an
        // operator acts.
        Some(
            "AuthorizationError"
            | "InvalidSecurity"
            | "AccessDenied"
            | "AccessDeniedException"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "ExpiredToken"
            | "OptInRequired",
        ) => FailureKind::Config,
        Some(code) if code.starts_with("KMS") => FailureKind::Config,
        _ if status == 429 => FailureKind::Retryable,
        _ if status == 401 || status == 403 => FailureKind::Config,
        // InternalError: SNS may have published before failing.
        _ if status >= 500 => FailureKind::Ambiguous,
        // InvalidParameter (a number SNS cannot reach, a text too long),
        // ParameterValueInvalid, ValidationException: this message, as it is.
        _ => FailureKind::Permanent,
    }
}

/// A failure before any answer came. Only a connection lost once the request may have
/// gone out is ambiguous; the rest never reached SNS.
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

/// `text` without the phone number, with or without its `+`: the attempt log must not
/// hold it.
fn redact(text: &str, recipient: &str) -> String {
    let digits = recipient.trim_start_matches('+');
    if digits.is_empty() {
        return text.to_owned();
    }
    text.replace(recipient, "<recipient>").replace(digits, "<recipient>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sns_error_codes_fall_into_the_providers_md_buckets() {
        let cases = [
            (Some("InvalidParameter"), 400, FailureKind::Permanent),
            (Some("ParameterValueInvalid"), 400, FailureKind::Permanent),
            (Some("ValidationException"), 400, FailureKind::Permanent),
            (Some("Throttling"), 400, FailureKind::Retryable),
            (Some("InternalError"), 500, FailureKind::Ambiguous),
            (Some("AuthorizationError"), 403, FailureKind::Config),
            (Some("InvalidSecurity"), 403, FailureKind::Config),
            (Some("InvalidClientTokenId"), 403, FailureKind::Config),
            (Some("KMSDisabled"), 400, FailureKind::Config),
            (None, 503, FailureKind::Ambiguous),
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
        assert_eq!(classify_dispatch(&io(BrokenPipe)), (FailureKind::Ambiguous, "connection_lost"));
        assert_eq!(classify_dispatch(&ConnectorError::timeout("connect".into())).0, FailureKind::Retryable);
        assert_eq!(classify_dispatch(&ConnectorError::other("no credentials".into(), None)).0, FailureKind::Config);
    }

    #[test]
    fn the_phone_number_is_redacted_with_or_without_its_plus() {
        let text = "Invalid parameter: PhoneNumber Reason: +15551234567 (15551234567) is not valid";
        assert_eq!(
            redact(text, "+15551234567"),
            "Invalid parameter: PhoneNumber Reason: <recipient> (<recipient>) is not valid"
        );
    }

    #[tokio::test]
    async fn priority_picks_the_sms_type_and_the_sender_is_set_when_configured() {
        let config = SnsConfig {
            sender_id: Some("Notify".into()),
            origination_number: Some("+15550001111".into()),
            ..SnsConfig::new("us-east-1")
        };
        let provider = SnsProvider::new(&config).await;
        assert_eq!(
            provider.attributes(Priority::Urgent),
            vec![
                ("AWS.SNS.SMS.SMSType", "Transactional"),
                ("AWS.SNS.SMS.SenderID", "Notify"),
                ("AWS.MM.SMS.OriginationNumber", "+15550001111")
            ]
        );
        assert_eq!(provider.attributes(Priority::High)[0].1, "Transactional");
        assert_eq!(provider.attributes(Priority::Normal)[0].1, "Promotional");
        assert_eq!(SnsProvider::new(&SnsConfig::new("us-east-1")).await.attributes(Priority::Low).len(), 1);
    }

    #[test]
    fn the_settings_are_checked() {
        let ok = SnsConfig::new("eu-west-1");
        let limit = Duration::from_secs(10);
        ok.validate(limit).unwrap();
        let cases: [(&str, SnsConfig); 5] = [
            ("region", SnsConfig { region: String::new(), ..ok.clone() }),
            ("sender_id", SnsConfig { sender_id: Some("Notify Inc".into()), ..ok.clone() }),
            ("sender_id", SnsConfig { sender_id: Some("123".into()), ..ok.clone() }),
            ("origination_number", SnsConfig { origination_number: Some("5551234".into()), ..ok.clone() }),
            ("access_key_id", SnsConfig { secret_access_key: Some("s".into()), ..ok.clone() }),
        ];
        for (key, config) in cases {
            let err = config.validate(limit).unwrap_err().to_string();
            assert!(err.contains(&format!("sms.sns.{key}")), "{key}: {err}");
        }
        let err = SnsConfig { attempt_timeout: limit, ..ok }.validate(limit).unwrap_err().to_string();
        assert!(err.contains("sms.sns.attempt_timeout"), "{err}");
    }

    #[test]
    fn an_origination_number_given_as_a_number_gets_its_plus_back() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(default, deserialize_with = "e164")]
            n: Option<String>,
        }
        let from_number: Holder = serde_json::from_str(r#"{"n": 15551234567}"#).unwrap();
        let from_text: Holder = serde_json::from_str(r#"{"n": "+15551234567"}"#).unwrap();
        let absent: Holder = serde_json::from_str("{}").unwrap();
        assert_eq!(
            (from_number.n.as_deref(), from_text.n.as_deref(), absent.n),
            (Some("+15551234567"), Some("+15551234567"), None)
        );
    }
}
