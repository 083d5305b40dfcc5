//! Checking a provider's settings before the worker connects to anything, and naming a
//! missing or wrong one the way the config file and the environment spell it
//! (`sms.twilio.account_sid`, `NOTIFY_SMS__TWILIO__ACCOUNT_SID`).

use bootstrap::{ConfigError, ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

/// The setting `key` of the provider section `section` (`sms.twilio`) is absent.
pub(crate) fn missing(section: &str, key: &str) -> ConfigError {
    let key = format!("{section}.{key}");
    ConfigError::Missing { env: env_name(&key), key }
}

pub(crate) fn invalid(section: &str, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: format!("{section}.{key}"), message: message.into() }
}

/// `NOTIFY_` + the dotted path in capitals with `__` between levels.
pub(crate) fn env_name(key: &str) -> String {
    format!("NOTIFY_{}", key.to_uppercase().replace('.', "__"))
}

/// The value if it is set and not blank: an empty environment variable counts as unset.
pub(crate) fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

pub(crate) fn given_secret(value: &Option<SecretString>) -> Option<&SecretString> {
    value.as_ref().filter(|v| !v.expose_secret().trim().is_empty())
}

pub(crate) fn required<'a>(value: &'a Option<String>, section: &str, key: &str) -> Result<&'a str, ConfigError> {
    given(value).ok_or_else(|| missing(section, key))
}

pub(crate) fn required_secret<'a>(
    value: &'a Option<SecretString>,
    section: &str,
    key: &str,
) -> Result<&'a SecretString, ConfigError> {
    given_secret(value).ok_or_else(|| missing(section, key))
}

/// A provider's base URL, `http` or `https` (plain `http` is for local stand-ins), without
/// query or fragment; returned without a trailing `/` so that paths append to it.
pub(crate) fn base_url(value: &str, section: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(value.trim()).map_err(|e| invalid(section, "base_url", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(section, "base_url", "must be an http or https URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(section, "base_url", "must not have a query or a fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// An id that goes into a URL path: letters, digits, `-`, `_` and `.` only, so that a
/// setting cannot change which resource we call.
pub(crate) fn path_segment<'a>(value: &'a str, section: &str, key: &str) -> Result<&'a str, ConfigError> {
    if value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        Ok(value)
    } else {
        Err(invalid(section, key, "may hold only letters, digits, `-`, `_` and `.`"))
    }
}

/// serde: an optional id given as a string or as an integer. Environment variables and
/// unquoted TOML values turn an id made of digits (Meta's phone number id) into a number;
/// its digits are the id.
pub(crate) fn string_or_integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Text(String),
        Number(u64),
    }
    Ok(Option::<Id>::deserialize(deserializer)?.map(|id| match id {
        Id::Text(text) => text,
        Id::Number(number) => number.to_string(),
    }))
}

/// serde: optional text that must stay text, such as a phone number. An environment
/// variable of digits (`+15551234567`) arrives as a number that has lost its `+`, so it is
/// refused with a hint rather than guessed at.
pub(crate) fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Number(serde_json::Number),
    }
    match Option::<Text>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Text::Text(text)) => Ok(Some(text)),
        Some(Text::Number(number)) => Err(serde::de::Error::custom(format!(
            "found the number {number} where text is expected: quote it (in an environment variable, \
             `'\"+{number}\"'`), or its leading `+` or zeros are lost"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_setting_is_named_with_its_environment_variable() {
        let err = missing("sms.twilio", "account_sid").to_string();
        assert!(err.contains("`sms.twilio.account_sid`") && err.contains("NOTIFY_SMS__TWILIO__ACCOUNT_SID"), "{err}");
    }

    #[test]
    fn base_urls_are_checked_and_lose_their_trailing_slash() {
        assert_eq!(base_url("https://api.twilio.com/", "s").unwrap(), "https://api.twilio.com");
        assert_eq!(base_url("http://127.0.0.1:8080/prefix/", "s").unwrap(), "http://127.0.0.1:8080/prefix");
        for bad in ["api.twilio.com", "ftp://x", "https://x/?a=b", ""] {
            assert!(base_url(bad, "s").is_err(), "{bad}");
        }
    }

    #[test]
    fn path_segments_refuse_separators() {
        assert!(path_segment("AC0123", "s", "k").is_ok());
        assert!(path_segment("AC01/../x", "s", "k").is_err());
        assert!(path_segment("a?b", "s", "k").is_err());
    }

    #[test]
    fn text_that_arrived_as_a_number_is_refused_with_a_hint() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "text")]
            from: Option<String>,
        }
        let parse = |v| serde_json::from_value::<T>(v).map(|t| t.from);
        assert_eq!(parse(serde_json::json!({"from": "+1555"})).unwrap().as_deref(), Some("+1555"));
        assert_eq!(parse(serde_json::json!({})).unwrap(), None);
        let err = parse(serde_json::json!({"from": 1555})).unwrap_err().to_string();
        assert!(err.contains("quote it"), "{err}");
    }

    #[test]
    fn blank_values_count_as_unset() {
        assert_eq!(given(&Some("  ".into())), None);
        assert_eq!(given(&Some(" x ".into())), Some("x"));
        assert!(given_secret(&Some(SecretString::from(""))).is_none());
    }
}
