//! Reading a unit's settings from either source and naming a missing or wrong one where it
//! was written: the operator's `sms.twilio.account_sid` (with its variable,
//! `NOTIFY_SMS__TWILIO__ACCOUNT_SID`), or a tenant's `settings.account_sid`.

use std::net::IpAddr;

use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::Channel;
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use crate::{IntegrationRules, Source};

/// Where a unit's settings were read from, for naming a setting in an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Section {
    /// The operator's section, `email.ses`.
    Config(String),
    /// A tenant's integration: its settings are the request body's `settings`.
    Integration,
}

impl Section {
    pub(crate) fn key(&self, key: &str) -> String {
        match self {
            Section::Config(section) => format!("{section}.{key}"),
            Section::Integration => format!("settings.{key}"),
        }
    }

    /// `(NOTIFY_EMAIL__SES__FROM)` for the operator's settings; nothing for a tenant's.
    pub(crate) fn hint(&self, key: &str) -> String {
        match self {
            Section::Config(_) => format!(" ({})", env_name(&self.key(key))),
            Section::Integration => String::new(),
        }
    }

    pub(crate) fn missing(&self, key: &str) -> ConfigError {
        match self {
            Section::Config(_) => ConfigError::Missing { env: env_name(&self.key(key)), key: self.key(key) },
            Section::Integration => self.invalid(key, "is required"),
        }
    }

    pub(crate) fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key: self.key(key), message: message.into() }
    }

    pub(crate) fn is_integration(&self) -> bool {
        *self == Section::Integration
    }

    pub(crate) fn required<'a>(&self, value: &'a Option<String>, key: &str) -> Result<&'a str, ConfigError> {
        given(value).ok_or_else(|| self.missing(key))
    }

    pub(crate) fn required_secret<'a>(
        &self,
        value: &'a Option<SecretString>,
        key: &str,
    ) -> Result<&'a SecretString, ConfigError> {
        given_secret(value).ok_or_else(|| self.missing(key))
    }
}

/// Keys one source may not hold, each with what to write instead: a tenant cannot point a
/// client elsewhere (`base_url`), and the operator maps templates per tenant, not per type.
pub(crate) struct Refused<'a> {
    pub config: &'a [(&'a str, &'a str)],
    pub integration: &'a [(&'a str, &'a str)],
}

/// The unit's settings as `T` (unknown keys refused by `T`), and where they came from. An
/// operator's section that is absent is missing as a whole (`email.ses`).
pub(crate) fn read<T: DeserializeOwned>(
    source: &Source<'_>,
    channel: Channel,
    name: &str,
    refused: &Refused<'_>,
) -> Result<(T, Section), ConfigError> {
    let (raw, section, refused) = match source {
        Source::Config(figment) => {
            let path = format!("{channel}.{name}");
            if !figment.contains(&path) {
                return Err(ConfigError::Missing {
                    env: format!("NOTIFY_{}__{}__*", channel.as_str().to_uppercase(), name.to_uppercase()),
                    key: path,
                });
            }
            (figment.extract_inner::<serde_json::Value>(&path)?, Section::Config(path), refused.config)
        }
        Source::Integration(integration) => (integration.settings.clone(), Section::Integration, refused.integration),
    };
    let Some(object) = raw.as_object() else {
        return Err(ConfigError::Invalid {
            key: section.key("").trim_end_matches('.').to_owned(),
            message: "must be an object".into(),
        });
    };
    if let Some((key, instead)) = refused.iter().find(|(key, _)| object.contains_key(*key)) {
        return Err(section.invalid(key, format!("cannot be set here: {instead}")));
    }
    let value = serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." { section.key("").trim_end_matches('.').to_owned() } else { section.key(&path) };
        ConfigError::Invalid { key, message: e.into_inner().to_string() }
    })?;
    Ok((value, section))
}

/// As [`read`], for a unit whose settings may all be left out: an operator's section that
/// is absent holds the defaults.
pub(crate) fn read_or_default<T: DeserializeOwned + Default>(
    source: &Source<'_>,
    channel: Channel,
    name: &str,
    refused: &Refused<'_>,
) -> Result<(T, Section), ConfigError> {
    match source {
        Source::Config(figment) if !figment.contains(&format!("{channel}.{name}")) => {
            Ok((T::default(), Section::Config(format!("{channel}.{name}"))))
        }
        _ => read(source, channel, name, refused),
    }
}

/// The operator's rules on integrations as a unit sees them: the worker's own
/// (`[integrations]`) for its configured providers, those of the reader for a tenant's.
pub(crate) fn rules(source: &Source<'_>) -> Result<IntegrationRules, ConfigError> {
    match source {
        Source::Config(figment) if figment.contains("integrations") => Ok(figment.extract_inner("integrations")?),
        Source::Config(_) => Ok(IntegrationRules::default()),
        Source::Integration(integration) => Ok(integration.rules.clone()),
    }
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

/// Two settings that only make sense together (a key id and its secret, a user name and
/// its password): both or neither, so that half a credential is not silently ignored.
pub(crate) fn both_or_neither(
    (first, first_key): (&Option<SecretString>, &str),
    (second, second_key): (&Option<SecretString>, &str),
    section: &Section,
) -> Result<bool, ConfigError> {
    match (given_secret(first).is_some(), given_secret(second).is_some()) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(section.invalid(second_key, format!("is required with `{first_key}`"))),
        (false, true) => Err(section.invalid(first_key, format!("is required with `{second_key}`"))),
    }
}

/// A provider's base URL, `http` or `https` (plain `http` is for local stand-ins), without
/// query or fragment; returned without a trailing `/` so that paths append to it.
pub(crate) fn base_url(value: &str, section: &Section, key: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(value.trim()).map_err(|e| section.invalid(key, format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(section.invalid(key, "must be an http or https URL with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(section.invalid(key, "must not have a query or a fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The base URL of a tenant's client: the operator's for this provider
/// (`integrations.base_urls.<name>`, a stand-in), else the provider's own.
pub(crate) fn integration_base_url(rules: &IntegrationRules, name: &str, default: &str) -> String {
    rules.base_urls.get(name).map_or(default, String::as_str).trim_end_matches('/').to_owned()
}

/// A host a tenant chose (Novu's regional base URL, an SMTP server): never `localhost` nor a
/// private, loopback, link-local or unspecified address, unless the operator allows private
/// hosts (tests). A name that resolves to such an address is caught when it is resolved:
/// tenants' HTTP clients resolve through [`crate::http::PublicResolver`], SMTP through
/// [`crate::http::resolve_public`].
pub(crate) fn public_host(
    host: &str,
    rules: &IntegrationRules,
    section: &Section,
    key: &str,
) -> Result<(), ConfigError> {
    if rules.allow_private_hosts {
        return Ok(());
    }
    let host = host.trim().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
    let private = match host.parse::<IpAddr>() {
        Ok(ip) => is_private(ip),
        Err(_) => host == "localhost" || host.ends_with(".localhost"),
    };
    if private {
        return Err(section.invalid(key, "must not name a private, loopback or link-local address"));
    }
    Ok(())
}

/// An address a tenant's client must not reach (`domain::address::is_private_ip`, which
/// the API's checks of browser-given URLs share).
pub fn is_private(ip: IpAddr) -> bool {
    domain::address::is_private_ip(ip)
}

/// An id that goes into a URL path: letters, digits, `-`, `_` and `.` only, so that a
/// setting cannot change which resource we call.
pub(crate) fn path_segment<'a>(value: &'a str, section: &Section, key: &str) -> Result<&'a str, ConfigError> {
    if value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        Ok(value)
    } else {
        Err(section.invalid(key, "may hold only letters, digits, `-`, `_` and `.`"))
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
pub(crate) mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::Integration;

    /// The figment of a config file holding `toml`.
    pub(crate) fn figment(toml: &str) -> figment::Figment {
        use figment::providers::{Format, Toml};
        figment::Figment::from(Toml::string(toml))
    }

    /// A tenant's integration with `settings`, under `rules`.
    pub(crate) fn integration<'a>(settings: &'a Value, rules: &'a IntegrationRules) -> Integration<'a> {
        Integration { tenant_id: uuid::Uuid::nil(), settings, rules }
    }

    fn section() -> Section {
        Section::Config("sms.twilio".into())
    }

    #[test]
    fn a_missing_setting_is_named_with_its_environment_variable_or_as_the_tenants_field() {
        let err = section().missing("account_sid").to_string();
        assert!(err.contains("`sms.twilio.account_sid`") && err.contains("NOTIFY_SMS__TWILIO__ACCOUNT_SID"), "{err}");
        match Section::Integration.missing("account_sid") {
            ConfigError::Invalid { key, .. } => assert_eq!(key, "settings.account_sid"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn base_urls_are_checked_and_lose_their_trailing_slash() {
        let s = section();
        assert_eq!(base_url("https://api.twilio.com/", &s, "base_url").unwrap(), "https://api.twilio.com");
        assert_eq!(base_url("http://127.0.0.1:8080/prefix/", &s, "base_url").unwrap(), "http://127.0.0.1:8080/prefix");
        for bad in ["api.twilio.com", "ftp://x", "https://x/?a=b", ""] {
            assert!(base_url(bad, &s, "base_url").is_err(), "{bad}");
        }
    }

    #[test]
    fn path_segments_refuse_separators() {
        assert!(path_segment("AC0123", &section(), "k").is_ok());
        assert!(path_segment("AC01/../x", &section(), "k").is_err());
        assert!(path_segment("a?b", &section(), "k").is_err());
    }

    #[test]
    fn private_hosts_are_refused_unless_allowed() {
        let strict = IntegrationRules::default();
        let s = Section::Integration;
        for bad in ["localhost", "LOCALHOST.", "a.localhost", "127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254"]
        {
            assert!(public_host(bad, &strict, &s, "host").is_err(), "{bad}");
        }
        for bad in ["[::1]", "::", "fd00::1", "fe80::1", "::ffff:127.0.0.1", "100.64.0.1", "0.0.0.0"] {
            assert!(public_host(bad, &strict, &s, "host").is_err(), "{bad}");
        }
        for good in ["smtp.example.com", "eu.api.novu.co", "8.8.8.8", "2001:4860::8888"] {
            assert!(public_host(good, &strict, &s, "host").is_ok(), "{good}");
        }
        let lax = IntegrationRules { allow_private_hosts: true, ..Default::default() };
        assert!(public_host("127.0.0.1", &lax, &s, "host").is_ok());
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[allow(dead_code)]
        name: String,
    }

    const REFUSED: Refused<'static> =
        Refused { config: &[("shared", "use `by_tenant`")], integration: &[("base_url", "the operator's")] };

    #[test]
    fn settings_are_read_from_the_section_or_the_integration_naming_a_bad_key() {
        let config = figment("[sms.twilio]\nname = 1\n");
        let err = read::<Settings>(&Source::Config(&config), Channel::Sms, "twilio", &REFUSED).unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "sms.twilio.name"), "{err}");
        let absent = read::<Settings>(&Source::Config(&config), Channel::Sms, "sns", &REFUSED).unwrap_err();
        assert!(absent.to_string().contains("`sms.sns`") && absent.to_string().contains("NOTIFY_SMS__SNS__*"));
        let shared = figment("[sms.twilio]\nname = \"a\"\nshared = 1\n");
        let err = read::<Settings>(&Source::Config(&shared), Channel::Sms, "twilio", &REFUSED).unwrap_err();
        assert!(err.to_string().contains("sms.twilio.shared") && err.to_string().contains("by_tenant"), "{err}");

        let rules = IntegrationRules::default();
        let unknown = json!({"name": "a", "nmae": "b"});
        let err = read::<Settings>(&Source::Integration(&integration(&unknown, &rules)), Channel::Sms, "x", &REFUSED)
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, message } if key == "settings.nmae" && message.contains("nmae")),
            "{err}"
        );
        let base = json!({"name": "a", "base_url": "http://evil"});
        let err = read::<Settings>(&Source::Integration(&integration(&base, &rules)), Channel::Sms, "x", &REFUSED)
            .unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "settings.base_url"), "{err}");
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nothing {}

    #[test]
    fn a_unit_without_required_settings_reads_an_absent_section_as_its_defaults() {
        let none = Refused { config: &[], integration: &[] };
        let empty = figment("[integrations]\nallow_private_hosts = true\n");
        let (_, section) = read_or_default::<Nothing>(&Source::Config(&empty), Channel::Chat, "teams", &none).unwrap();
        assert_eq!(section, Section::Config("chat.teams".into()));
        assert!(rules(&Source::Config(&empty)).unwrap().allow_private_hosts);
        let keyed = figment("[chat.teams]\nurl = \"https://x\"\n");
        let err = read_or_default::<Nothing>(&Source::Config(&keyed), Channel::Chat, "teams", &none).unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "chat.teams.url"), "{err}");
    }

    #[test]
    fn text_that_arrived_as_a_number_is_refused_with_a_hint() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "text")]
            from: Option<String>,
        }
        let parse = |v| serde_json::from_value::<T>(v).map(|t| t.from);
        assert_eq!(parse(json!({"from": "+1555"})).unwrap().as_deref(), Some("+1555"));
        assert_eq!(parse(json!({})).unwrap(), None);
        let err = parse(json!({"from": 1555})).unwrap_err().to_string();
        assert!(err.contains("quote it"), "{err}");
    }

    #[test]
    fn blank_values_count_as_unset() {
        assert_eq!(given(&Some("  ".into())), None);
        assert_eq!(given(&Some(" x ".into())), Some("x"));
        assert!(given_secret(&Some(SecretString::from(""))).is_none());
    }

    #[test]
    fn credentials_come_in_pairs() {
        let s = |v: &str| Some(SecretString::from(v));
        let ses = Section::Config("email.ses".into());
        assert!(both_or_neither((&s("id"), "a"), (&s("secret"), "b"), &ses).unwrap());
        assert!(!both_or_neither((&None, "a"), (&None, "b"), &ses).unwrap());
        let err = both_or_neither((&s("id"), "a"), (&None, "b"), &ses).unwrap_err().to_string();
        assert!(err.contains("email.ses.b") && err.contains("required with `a`"), "{err}");
    }
}
