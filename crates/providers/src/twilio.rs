//! Twilio Programmable Messaging (docs/providers.md §6), for SMS and for WhatsApp: one form
//! POST per message to `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`.
//!
//! What is sent: when `content_sid_by_tenant[tenant][type]` maps the notification's tenant
//! and type to a Content template, the template (`ContentSid`) with the notification's
//! `data` as its `ContentVariables` (a JSON object whose keys are the template's variables,
//! `"1"` or named); otherwise free-form text, `Body` = `content.text`. The mapping is per
//! tenant because a template goes out under the name of the business that had it
//! approved: one tenant's type never picks another's template. WhatsApp outside the
//! 24-hour customer-service window takes templates only (Twilio error 63016 otherwise), so
//! a WhatsApp job with neither a template nor text fails as `template_not_configured`.

use std::{collections::BTreeMap, sync::Arc};

use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{Channel, DeliveryJob, FailureKind, SendFailure, SendOutcome, SendReceipt};
use futures_util::{FutureExt, future::BoxFuture};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    Checked, Context, ProviderSettings, ProviderUnit, Source,
    http::{self, Answer, Client},
    settings::{self, Refused, Section},
};

/// Twilio for SMS (`sms.twilio`).
pub const SMS_UNIT: TwilioUnit = TwilioUnit(TwilioMode::Sms);
/// Twilio for WhatsApp (`whatsapp.twilio`).
pub const WHATSAPP_UNIT: TwilioUnit = TwilioUnit(TwilioMode::Whatsapp);

/// The Twilio unit of one channel.
pub struct TwilioUnit(pub TwilioMode);

const REFUSED: Refused<'static> = Refused {
    config: &[("content_sid_by_type", "the operator maps templates per tenant, in `content_sid_by_tenant`")],
    integration: &[
        ("base_url", "a tenant's client calls Twilio's API"),
        ("status_callback", "status callbacks go to this platform's receipt endpoint"),
        ("content_sid_by_tenant", "a tenant maps its own types, in `content_sid_by_type`"),
    ],
};

impl ProviderUnit for TwilioUnit {
    fn channel(&self) -> Channel {
        match self.0 {
            TwilioMode::Sms => Channel::Sms,
            TwilioMode::Whatsapp => Channel::Whatsapp,
        }
    }

    fn name(&self) -> &'static str {
        "twilio"
    }

    fn secrets(&self) -> &'static [&'static str] {
        &["auth_token", "api_key_secret"]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        let (mut config, section) = settings::read::<TwilioConfig>(&source, self.channel(), self.name(), &REFUSED)?;
        if let Source::Integration(integration) = &source {
            config.base_url = settings::integration_base_url(integration.rules, self.name(), DEFAULT_BASE_URL);
            // The tenant's own templates, for its own notifications only.
            let own = std::mem::take(&mut config.content_sid_by_type);
            config.content_sid_by_tenant = [(integration.tenant_id, own)].into();
            // Its statuses come back on the tenant's own receipt route, checked with its
            // own auth token (a tenant cannot choose the URL: `status_callback` is refused).
            config.status_callback = integration.rules.twilio_status_callback(integration.tenant_id);
        }
        let resolved = config.resolve(&section)?;
        Ok(Box::new(TwilioSettings { mode: self.0, resolved, content_sid_by_tenant: config.content_sid_by_tenant }))
    }
}

#[derive(Debug)]
struct TwilioSettings {
    mode: TwilioMode,
    resolved: Resolved,
    content_sid_by_tenant: BTreeMap<Uuid, BTreeMap<String, String>>,
}

impl ProviderSettings for TwilioSettings {
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn domain::Provider>>> {
        async move {
            let provider = TwilioProvider {
                http: ctx.http.get()?,
                mode: self.mode,
                settings: self.resolved.clone(),
                content_sid_by_tenant: self.content_sid_by_tenant.clone(),
            };
            Ok(Arc::new(provider) as Arc<dyn domain::Provider>)
        }
        .boxed()
    }

    /// Fetches the account (`GET /2010-04-01/Accounts/{sid}.json`): its name and status.
    fn check<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        async move {
            let r = &self.resolved;
            let url = format!("{}/2010-04-01/Accounts/{}.json", r.base, r.account_sid);
            http::check(
                ctx.http,
                |client| client.get(url).basic_auth(&r.user, Some(r.password.expose_secret())),
                |body| {
                    let name = body["friendly_name"].as_str().unwrap_or("the account");
                    format!("{name} ({})", body["status"].as_str().unwrap_or("status unknown"))
                },
            )
            .await
        }
        .boxed()
    }
}

pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Whether the provider sends SMS or WhatsApp messages: WhatsApp addresses, ours and the
/// sender's, are written `whatsapp:+E164`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TwilioMode {
    Sms,
    Whatsapp,
}

impl TwilioMode {
    /// Where the settings live, for error messages.
    pub fn section(self) -> &'static str {
        match self {
            TwilioMode::Sms => "sms.twilio",
            TwilioMode::Whatsapp => "whatsapp.twilio",
        }
    }

    fn address(self, number: &str) -> String {
        match self {
            TwilioMode::Whatsapp if !number.starts_with("whatsapp:") => format!("whatsapp:{number}"),
            _ => number.to_owned(),
        }
    }
}

/// `[sms.twilio]`, `[whatsapp.twilio]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwilioConfig {
    /// The account (`AC…`): part of the URL, and the Basic-auth user with `auth_token`.
    pub account_sid: Option<String>,
    /// The account's auth token. Either this, or `api_key_sid` and `api_key_secret`.
    pub auth_token: Option<SecretString>,
    /// An API key (`SK…`) and its secret; used instead of `auth_token` when set.
    pub api_key_sid: Option<String>,
    pub api_key_secret: Option<SecretString>,
    /// The sender: an E.164 number (WhatsApp: the WhatsApp-enabled number, with or without
    /// `whatsapp:`), or an alphanumeric sender id for SMS.
    #[serde(deserialize_with = "settings::text")]
    pub from: Option<String>,
    /// A Messaging Service (`MG…`) that picks the sender; instead of, or with, `from`.
    pub messaging_service_sid: Option<String>,
    /// Where Twilio posts the message's status changes (`StatusCallback`).
    pub status_callback: Option<String>,
    /// Per tenant (by id): notification type -> Content template sid (`HX…`); that
    /// tenant's notifications of the type are sent as the template with `data` as its
    /// variables. The operator's settings only.
    pub content_sid_by_tenant: BTreeMap<Uuid, BTreeMap<String, String>>,
    /// A tenant's own mapping of its types to its Content templates (an integration only).
    pub content_sid_by_type: BTreeMap<String, String>,
    pub base_url: String,
}

impl Default for TwilioConfig {
    fn default() -> Self {
        Self {
            account_sid: None,
            auth_token: None,
            api_key_sid: None,
            api_key_secret: None,
            from: None,
            messaging_service_sid: None,
            status_callback: None,
            content_sid_by_tenant: BTreeMap::new(),
            content_sid_by_type: BTreeMap::new(),
            base_url: DEFAULT_BASE_URL.to_owned(),
        }
    }
}

/// The settings, checked and resolved.
#[derive(Clone, Debug)]
struct Resolved {
    base: String,
    account_sid: String,
    url: String,
    user: String,
    password: SecretString,
    from: Option<String>,
    messaging_service_sid: Option<String>,
    status_callback: Option<String>,
}

impl TwilioConfig {
    /// Checks the operator's settings, naming the first one missing or wrong (the units'
    /// `settings` is the one way in; this is its check, for the tests of the rules).
    #[cfg(test)]
    fn validate(&self, mode: TwilioMode) -> Result<(), ConfigError> {
        self.resolve(&Section::Config(mode.section().into())).map(drop)
    }

    fn resolve(&self, section: &Section) -> Result<Resolved, ConfigError> {
        let account_sid = section.required(&self.account_sid, "account_sid")?;
        if !account_sid.starts_with("AC") {
            return Err(section.invalid("account_sid", "must be an account sid, starting with `AC`"));
        }
        settings::path_segment(account_sid, section, "account_sid")?;
        let (user, password) = match (settings::given(&self.api_key_sid), settings::given_secret(&self.api_key_secret))
        {
            (Some(sid), Some(secret)) => (sid.to_owned(), secret.clone()),
            (Some(_), None) => return Err(section.missing("api_key_secret")),
            (None, Some(_)) => return Err(section.missing("api_key_sid")),
            (None, None) => match settings::given_secret(&self.auth_token) {
                Some(token) => (account_sid.to_owned(), token.clone()),
                None => {
                    let hint = section.hint("auth_token");
                    let message = format!("missing: set `auth_token`{hint}, or `api_key_sid` and `api_key_secret`");
                    return Err(section.invalid("auth_token", message));
                }
            },
        };
        let from = settings::given(&self.from).map(str::to_owned);
        let messaging_service_sid = settings::given(&self.messaging_service_sid).map(str::to_owned);
        if from.is_none() && messaging_service_sid.is_none() {
            let message = format!("missing: set `from`{} or `messaging_service_sid`", section.hint("from"));
            return Err(section.invalid("from", message));
        }
        let status_callback = settings::given(&self.status_callback).map(str::to_owned);
        if let Some(url) = &status_callback {
            settings::base_url(url, section, "status_callback")
                .map_err(|_| section.invalid("status_callback", "must be an http or https URL"))?;
        }
        for (tenant, mapping) in &self.content_sid_by_tenant {
            if let Some((kind, _)) = mapping.iter().find(|(_, sid)| sid.trim().is_empty()) {
                // A tenant's own mapping is named as it wrote it.
                let (key, message) = if section.is_integration() {
                    (format!("content_sid_by_type.{kind}"), "must not be empty".to_owned())
                } else {
                    ("content_sid_by_tenant".to_owned(), format!("`{tenant}`: `{kind}` maps to an empty sid"))
                };
                return Err(section.invalid(&key, message));
            }
        }
        let base = settings::base_url(&self.base_url, section, "base_url")?;
        Ok(Resolved {
            url: format!("{base}/2010-04-01/Accounts/{account_sid}/Messages.json"),
            base,
            account_sid: account_sid.to_owned(),
            user,
            password,
            from,
            messaging_service_sid,
            status_callback,
        })
    }
}

pub struct TwilioProvider {
    http: Client,
    mode: TwilioMode,
    settings: Resolved,
    content_sid_by_tenant: BTreeMap<Uuid, BTreeMap<String, String>>,
}

impl TwilioProvider {
    /// The Content template of the job's tenant for its type, if that tenant mapped one.
    fn content_sid(&self, job: &DeliveryJob) -> Option<&String> {
        self.content_sid_by_tenant.get(&job.tenant_id)?.get(&job.kind)
    }

    /// The form fields of the message, or why it cannot be sent.
    fn form(&self, job: &DeliveryJob) -> Result<Vec<(&'static str, String)>, SendFailure> {
        let mut form = vec![("To", self.mode.address(&job.recipient))];
        if let Some(from) = &self.settings.from {
            form.push(("From", self.mode.address(from)));
        }
        if let Some(sid) = &self.settings.messaging_service_sid {
            form.push(("MessagingServiceSid", sid.clone()));
        }
        match self.content_sid(job) {
            Some(content_sid) => {
                form.push(("ContentSid", content_sid.clone()));
                form.push(("ContentVariables", Value::Object(job.data.clone()).to_string()));
            }
            None => match job.content.text.as_deref().filter(|t| !t.is_empty()) {
                Some(text) => form.push(("Body", text.to_owned())),
                None if self.mode == TwilioMode::Whatsapp => {
                    return Err(SendFailure::new(
                        FailureKind::Permanent,
                        "template_not_configured",
                        format!(
                            "no Content template is mapped for this tenant's type `{}` \
                             (`whatsapp.twilio.content_sid_by_tenant`) and the notification has no \
                             content.text: a business-initiated WhatsApp message needs a template",
                            job.kind
                        ),
                    ));
                }
                None => {
                    return Err(SendFailure::new(
                        FailureKind::Permanent,
                        "missing_body",
                        "the notification has no content.text and its tenant has no Content template for its type",
                    ));
                }
            },
        }
        if let Some(url) = &self.settings.status_callback {
            form.push(("StatusCallback", url.clone()));
        }
        Ok(form)
    }

    async fn deliver(&self, job: &DeliveryJob) -> SendOutcome {
        let form = match self.form(job) {
            Ok(form) => form,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        tracing::debug!(to = %job.recipient, fields = ?form, "twilio request");
        let request = self
            .http
            .post(&self.settings.url)
            .basic_auth(&self.settings.user, Some(self.settings.password.expose_secret()))
            .form(&form);
        match http::send(request).await {
            Ok(answer) => outcome(&answer, &job.recipient),
            Err(failure) => SendOutcome::Failed(failure),
        }
    }
}

impl domain::Provider for TwilioProvider {
    fn name(&self) -> &str {
        "twilio"
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.deliver(job).boxed()
    }
}

/// Reads Twilio's answer: `201` with the message's `sid`, or an error in the legacy
/// `{code, message, more_info, status}` shape or the RFC 9457 `{type, title, status,
/// code, detail}` shape.
fn outcome(answer: &Answer, recipient: &str) -> SendOutcome {
    let body = answer.json().unwrap_or(Value::Null);
    if answer.status.is_success() {
        return match body["sid"].as_str() {
            Some(sid) => SendOutcome::Sent(SendReceipt {
                provider_message_id: sid.to_owned(),
                response_excerpt: Some(excerpt(&body)),
            }),
            // Created, most likely, but we cannot tell which message it is.
            None => SendOutcome::Failed(http::failure(
                FailureKind::Ambiguous,
                "unreadable_answer",
                &format!("Twilio answered {} without a message sid", answer.status),
                recipient,
                None,
            )),
        };
    }
    let code = error_code(&body);
    let message = ["message", "detail", "title"]
        .iter()
        .find_map(|key| body[*key].as_str())
        .map_or_else(|| format!("Twilio answered {}", answer.status), str::to_owned);
    SendOutcome::Failed(http::failure(
        classify(answer.status, code),
        code.map_or_else(|| http::status_code(answer.status), |c| c.to_string()),
        &message,
        recipient,
        answer.retry_after,
    ))
}

/// Only the message's state: the body also echoes the recipient and the text.
fn excerpt(body: &Value) -> String {
    let status = body["status"].as_str().unwrap_or("unknown");
    match body["num_segments"].as_str() {
        Some(segments) => format!("status={status} num_segments={segments}"),
        None => format!("status={status}"),
    }
}

/// Twilio's error code, a number (or, defensively, a string of digits).
fn error_code(body: &Value) -> Option<i64> {
    let code = &body["code"];
    code.as_i64().or_else(|| code.as_str().and_then(|c| c.trim().parse().ok()))
}

/// The buckets of docs/providers.md §6.
fn classify(status: StatusCode, code: Option<i64>) -> FailureKind {
    if status == StatusCode::TOO_MANY_REQUESTS || code == Some(20429) {
        return FailureKind::Retryable;
    }
    if status.is_server_error() {
        return FailureKind::Ambiguous;
    }
    match code {
        // Invalid or unreachable `To`, opted out, body missing or too long, not found,
        // WhatsApp free-form outside the 24-hour window.
        Some(21211 | 21610 | 21614 | 21612 | 21617 | 21658 | 21602 | 20404 | 63016) => FailureKind::Permanent,
        // Credentials, geo permissions, a sender that cannot send SMS, a trial account.
        Some(20003 | 21408 | 21606 | 21219) => FailureKind::Config,
        _ => http::kind_from_status(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TwilioConfig {
        TwilioConfig {
            account_sid: Some("AC0123".into()),
            auth_token: Some("token".into()),
            from: Some("+15005550000".into()),
            ..Default::default()
        }
    }

    #[test]
    fn codes_are_sorted_into_the_buckets() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS, None), FailureKind::Retryable);
        assert_eq!(classify(bad, Some(20429)), FailureKind::Retryable);
        assert_eq!(classify(StatusCode::INTERNAL_SERVER_ERROR, Some(20500)), FailureKind::Ambiguous);
        assert_eq!(classify(StatusCode::BAD_GATEWAY, None), FailureKind::Ambiguous);
        for code in [21211, 21610, 21614, 21612, 21617, 21658, 21602, 20404, 63016] {
            assert_eq!(classify(bad, Some(code)), FailureKind::Permanent, "{code}");
        }
        for code in [20003, 21408, 21606, 21219] {
            assert_eq!(classify(bad, Some(code)), FailureKind::Config, "{code}");
        }
        assert_eq!(classify(StatusCode::UNAUTHORIZED, None), FailureKind::Config);
        assert_eq!(classify(bad, Some(21999)), FailureKind::Permanent);
        assert_eq!(classify(bad, None), FailureKind::Permanent);
    }

    #[test]
    fn the_code_is_read_from_either_error_shape() {
        let legacy = serde_json::json!({"code": 21211, "message": "m", "more_info": "u", "status": 400});
        let rfc9457 = serde_json::json!({"type": "t", "title": "x", "status": 400, "code": "21610", "detail": "d"});
        assert_eq!(error_code(&legacy), Some(21211));
        assert_eq!(error_code(&rfc9457), Some(21610));
        assert_eq!(error_code(&Value::Null), None);
    }

    #[test]
    fn settings_name_what_is_missing() {
        let err = |c: TwilioConfig| c.validate(TwilioMode::Sms).unwrap_err().to_string();
        assert!(err(TwilioConfig { account_sid: None, ..config() }).contains("sms.twilio.account_sid"));
        assert!(err(TwilioConfig { account_sid: Some("XY1".into()), ..config() }).contains("`AC`"));
        assert!(err(TwilioConfig { auth_token: None, ..config() }).contains("api_key_sid"));
        assert!(
            err(TwilioConfig { api_key_sid: Some("SK1".into()), ..config() }).contains("sms.twilio.api_key_secret")
        );
        let no_sender = TwilioConfig { from: None, ..config() }.validate(TwilioMode::Whatsapp).unwrap_err();
        assert!(no_sender.to_string().contains("whatsapp.twilio.from"), "{no_sender}");
        assert!(err(TwilioConfig { base_url: "nope".into(), ..config() }).contains("sms.twilio.base_url"));
        assert!(config().validate(TwilioMode::Sms).is_ok());
        let service = TwilioConfig { from: None, messaging_service_sid: Some("MG1".into()), ..config() };
        assert!(service.validate(TwilioMode::Sms).is_ok());
    }

    #[test]
    fn an_api_key_replaces_the_auth_token() {
        let c = TwilioConfig {
            auth_token: None,
            api_key_sid: Some("SK1".into()),
            api_key_secret: Some("secret".into()),
            ..config()
        };
        let resolved = c.resolve(&Section::Config("sms.twilio".into())).unwrap();
        assert_eq!((resolved.user.as_str(), resolved.password.expose_secret()), ("SK1", "secret"));
    }

    #[test]
    fn settings_come_from_toml_and_refuse_unknown_keys() {
        let c: TwilioConfig = serde_json::from_value(serde_json::json!({
            "account_sid": "AC1", "auth_token": "t", "from": "+1500",
            "content_sid_by_tenant": {"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b": {"otp": "HX1"}}
        }))
        .unwrap();
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        let tenant: Uuid = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".parse().unwrap();
        assert_eq!(c.content_sid_by_tenant[&tenant]["otp"], "HX1");
        assert!(serde_json::from_value::<TwilioConfig>(serde_json::json!({"acount_sid": "AC1"})).is_err());
        // The former mapping shared by every tenant is refused, naming the one that replaced it.
        let figment = crate::settings::tests::figment(
            "[sms.twilio]\naccount_sid = \"AC1\"\nauth_token = \"t\"\nfrom = \"+1500\"\ncontent_sid_by_type = { otp = \"HX1\" }\n",
        );
        let err = SMS_UNIT.settings(Source::Config(&figment)).unwrap_err().to_string();
        assert!(err.contains("sms.twilio.content_sid_by_type") && err.contains("content_sid_by_tenant"), "{err}");
    }

    #[test]
    fn a_tenants_templates_are_its_own_and_its_client_calls_twilio() {
        use crate::{IntegrationRules, settings::tests::integration};
        let rules = IntegrationRules::default();
        let settings = serde_json::json!({"account_sid": "AC1", "auth_token": "t", "from": "+1500",
            "content_sid_by_type": {"otp": "HX1"}});
        assert!(SMS_UNIT.settings(Source::Integration(&integration(&settings, &rules))).is_ok());
        for (key, value) in
            [("base_url", "http://127.0.0.1"), ("status_callback", "https://x"), ("content_sid_by_tenant", "{}")]
        {
            let mut bad = settings.clone();
            bad[key] = value.into();
            let err = SMS_UNIT.settings(Source::Integration(&integration(&bad, &rules))).unwrap_err();
            assert!(matches!(&err, ConfigError::Invalid { key: k, .. } if *k == format!("settings.{key}")), "{err}");
        }
        let mut empty = settings.clone();
        empty["content_sid_by_type"]["otp"] = " ".into();
        let err = SMS_UNIT.settings(Source::Integration(&integration(&empty, &rules))).unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { key, .. } if key == "settings.content_sid_by_type.otp"), "{err}");
    }

    #[test]
    fn a_tenants_status_callback_is_its_own_receipt_route_when_the_api_url_is_set() {
        let tenant = Uuid::now_v7();
        let mut rules = crate::IntegrationRules::default();
        assert_eq!(rules.twilio_status_callback(tenant), None);
        rules.receipts_url = Some("https://notify.example.com/".into());
        assert!(rules.validate().is_ok());
        for bad in ["notify.example.com", "ftp://notify.example.com", "https://notify.example.com/?x=1"] {
            let bad = crate::IntegrationRules { receipts_url: Some(bad.into()), ..Default::default() };
            assert!(bad.validate().is_err(), "{:?}", bad.receipts_url);
        }
        assert_eq!(
            rules.twilio_status_callback(tenant).unwrap(),
            format!("https://notify.example.com/v1/providers/twilio/status/{tenant}")
        );
    }

    #[test]
    fn an_empty_sid_is_refused_naming_the_tenant() {
        let tenant = Uuid::now_v7();
        let c = TwilioConfig {
            content_sid_by_tenant: [(tenant, [("otp".to_owned(), " ".to_owned())].into())].into(),
            ..config()
        };
        let err = c.validate(TwilioMode::Whatsapp).unwrap_err().to_string();
        assert!(err.contains("whatsapp.twilio.content_sid_by_tenant") && err.contains(&tenant.to_string()), "{err}");
    }
}
