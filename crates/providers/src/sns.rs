//! Amazon SNS `Publish` to a phone number (docs/providers.md §4, §2): one SMS per delivery,
//! transactional or promotional by the notification's priority, and every failure sorted
//! into the buckets of docs/providers.md §1.

use aws_config::SdkConfig;
use aws_sdk_sns::{Client, types::MessageAttributeValue};
use bootstrap::ConfigError;
use domain::{
    Channel, DeliveryJob, FailureKind, Priority, Provider, SendFailure, SendOutcome, SendReceipt,
    address::is_valid_e164,
};
use futures_util::{FutureExt, future::BoxFuture};
use serde::{Deserialize, Deserializer};

use crate::{Checked, aws, settings::Section};

/// Amazon SNS SMS (`sms.sns`).
pub const UNIT: aws::Unit<Sns> = aws::Unit::new();

#[derive(Debug)]
pub struct Sns;

/// `[sms.sns]`: the AWS client's settings and SNS's own.
pub type SnsConfig = aws::AwsConfig<SnsOptions>;

/// What SNS adds to the AWS client's settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnsOptions {
    /// The alphanumeric sender shown where the destination country allows one (1 to 11
    /// letters and digits, at least one letter).
    pub sender_id: Option<String>,
    /// The number to send from (E.164), one of the account's origination numbers.
    #[serde(default, deserialize_with = "e164")]
    pub origination_number: Option<String>,
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

impl SnsOptions {
    fn validate(&self, section: &Section) -> Result<(), ConfigError> {
        if let Some(id) = &self.sender_id {
            let ok = (1..=11).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric())
                && id.bytes().any(|b| b.is_ascii_alphabetic());
            if !ok {
                return Err(section.invalid("sender_id", "must be 1 to 11 letters and digits, at least one a letter"));
            }
        }
        if let Some(number) = &self.origination_number
            && !is_valid_e164(number)
        {
            return Err(section.invalid("origination_number", "must be an E.164 number such as `+15551234567`"));
        }
        Ok(())
    }
}

impl aws::Service for Sns {
    const CHANNEL: Channel = Channel::Sms;
    const NAME: &'static str = "sns";
    type Options = SnsOptions;
    type Provider = SnsProvider;

    fn validate(options: &SnsOptions, section: &Section) -> Result<(), ConfigError> {
        options.validate(section)
    }

    fn provider(sdk: &SdkConfig, options: &SnsOptions, _: &Section) -> Result<SnsProvider, ConfigError> {
        Ok(SnsProvider {
            client: Client::new(sdk),
            sender_id: options.sender_id.clone(),
            origination_number: options.origination_number.clone(),
        })
    }

    /// `GetSMSAttributes`: the account's SMS settings, readable only with valid credentials.
    fn check<'a>(provider: &'a SnsProvider, _: &'a SnsOptions) -> BoxFuture<'a, Checked> {
        async move {
            aws::checked(provider.client.get_sms_attributes().send().await, |output| {
                match output.attributes.unwrap_or_default().get("DefaultSMSType") {
                    Some(kind) => format!("SMS settings readable, default type {kind}"),
                    None => "SMS settings readable".to_owned(),
                }
            })
        }
        .boxed()
    }
}

pub struct SnsProvider {
    client: Client,
    sender_id: Option<String>,
    origination_number: Option<String>,
}

impl SnsProvider {
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
            Err(err) => SendOutcome::Failed(aws::failure(&err, classify, |text| redact(text, &job.recipient))),
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
    use std::time::Duration;

    use super::*;
    use crate::{ProviderUnit, Source};

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

    async fn sns(toml: &str) -> SnsProvider {
        let settings = aws::Settings::<Sns>::read(&Source::Config(&crate::settings::tests::figment(toml))).unwrap();
        settings.provider(Duration::from_secs(10)).await.unwrap()
    }

    #[tokio::test]
    async fn priority_picks_the_sms_type_and_the_sender_is_set_when_configured() {
        let provider =
            sns("[sms.sns]\nregion = \"us-east-1\"\nsender_id = \"Notify\"\norigination_number = \"+15550001111\"\n")
                .await;
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
        assert_eq!(sns("[sms.sns]\nregion = \"us-east-1\"\n").await.attributes(Priority::Low).len(), 1);
    }

    #[test]
    fn the_settings_are_checked() {
        let read = |body: &str| {
            UNIT.settings(Source::Config(&crate::settings::tests::figment(&format!("[sms.sns]\n{body}\n"))))
        };
        read("region = \"eu-west-1\"").unwrap();
        let cases = [
            ("region", "region = \"\""),
            ("sender_id", "region = \"eu-west-1\"\nsender_id = \"Notify Inc\""),
            ("sender_id", "region = \"eu-west-1\"\nsender_id = \"123\""),
            ("origination_number", "region = \"eu-west-1\"\norigination_number = \"5551234\""),
            ("access_key_id", "region = \"eu-west-1\"\nsecret_access_key = \"s\""),
        ];
        for (key, body) in cases {
            let err = read(body).unwrap_err().to_string();
            assert!(err.contains(&format!("sms.sns.{key}")), "{key}: {err}");
        }
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
