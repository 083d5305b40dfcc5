//! Amazon SNS `Publish` to a phone number (docs/providers.md §4, §2): one SMS per delivery,
//! transactional or promotional by the notification's priority, and every failure sorted
//! into the buckets of docs/providers.md §1.

use std::time::Duration;

use aws_sdk_sns::{Client, types::MessageAttributeValue};
use aws_support::ClientSettings;
use bootstrap::{ConfigError, SecretString};
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
        Ok(())
    }
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
        let client = Client::new(&config.client().sdk_config().await);
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
            Err(err) => SendOutcome::Failed(aws_support::failure(&err, classify, |text| redact(text, &job.recipient))),
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
