//! Meta's WhatsApp Cloud API (docs/providers.md §7): one JSON POST per message to
//! `{base_url}/{api_version}/{phone_number_id}/messages` with a bearer token.
//!
//! What is sent: when `template_by_tenant[tenant][type]` maps the notification's tenant and
//! type to a template, that template (`type: template`) in its language, with one body
//! parameter per name in its `body_parameters`, taken in order from the notification's
//! `data` (strings, numbers and booleans as text; a missing one fails the delivery rather
//! than send a broken template); otherwise free-form text (`type: text`) from
//! `content.text`, which WhatsApp delivers only inside the 24-hour customer-service window
//! (error 131047 otherwise). The mapping is per tenant because an approved template speaks
//! in the name of the business that owns it: one tenant's type never picks another's
//! template, and a job with neither a template nor text fails as `template_not_configured`.

use std::{collections::BTreeMap, sync::Arc};

use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{Channel, DeliveryJob, FailureKind, SendFailure, SendOutcome, SendReceipt};
use futures_util::{FutureExt, future::BoxFuture};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    Checked, Context, ProviderSettings, ProviderUnit, Source,
    http::{self, Answer, Client},
    settings::{self, Refused, Section},
};

pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
pub const DEFAULT_API_VERSION: &str = "v21.0";
#[cfg(test)]
const SECTION: &str = "whatsapp.meta";

/// Meta's WhatsApp Cloud API (`whatsapp.meta`).
pub const UNIT: MetaUnit = MetaUnit;

pub struct MetaUnit;

const REFUSED: Refused<'static> = Refused {
    config: &[
        ("template_by_type", "the operator maps templates per tenant, in `template_by_tenant`"),
        ("app_secret", "the operator's webhook is checked with `receipts.meta.app_secret`"),
        ("verify_token", "the operator's webhook is verified with `receipts.meta.verify_token`"),
    ],
    integration: &[
        ("base_url", "a tenant's client calls Meta's Graph API"),
        ("template_by_tenant", "a tenant maps its own types, in `template_by_type`"),
    ],
};

impl ProviderUnit for MetaUnit {
    fn channel(&self) -> Channel {
        Channel::Whatsapp
    }

    fn name(&self) -> &'static str {
        "meta"
    }

    fn secrets(&self) -> &'static [&'static str] {
        &["access_token", "app_secret", "verify_token"]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        let (mut config, section) = settings::read::<MetaConfig>(&source, self.channel(), self.name(), &REFUSED)?;
        if let Source::Integration(integration) = &source {
            config.base_url = settings::integration_base_url(integration.rules, self.name(), DEFAULT_BASE_URL);
            // The tenant's own approved templates, for its own notifications only.
            let own = std::mem::take(&mut config.template_by_type);
            config.template_by_tenant = [(integration.tenant_id, own)].into();
        }
        let resolved = config.resolve(&section)?;
        Ok(Box::new(MetaSettings { resolved, template_by_tenant: config.template_by_tenant }))
    }
}

#[derive(Debug)]
struct MetaSettings {
    resolved: Resolved,
    template_by_tenant: BTreeMap<Uuid, BTreeMap<String, MetaTemplate>>,
}

impl ProviderSettings for MetaSettings {
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn domain::Provider>>> {
        async move {
            let provider = MetaProvider {
                http: ctx.http.get()?,
                url: format!("{}/messages", self.resolved.phone_url),
                token: self.resolved.token.clone(),
                template_by_tenant: self.template_by_tenant.clone(),
            };
            Ok(Arc::new(provider) as Arc<dyn domain::Provider>)
        }
        .boxed()
    }

    /// Reads the sending phone number (`GET /{version}/{phone_number_id}`).
    fn check<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        let r = &self.resolved;
        http::check(
            ctx.http,
            |client| client.get(&r.phone_url).bearer_auth(r.token.expose_secret()),
            |body| {
                let number = body["display_phone_number"].as_str().unwrap_or("the phone number");
                match body["verified_name"].as_str() {
                    Some(name) => format!("{number} ({name})"),
                    None => number.to_owned(),
                }
            },
        )
        .boxed()
    }
}

/// The settings, checked: the phone number's URL and the token.
#[derive(Clone, Debug)]
struct Resolved {
    /// `{base_url}/{api_version}/{phone_number_id}`.
    phone_url: String,
    token: SecretString,
}

/// `[whatsapp.meta]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetaConfig {
    /// A system-user access token with `whatsapp_business_messaging`.
    pub access_token: Option<SecretString>,
    /// The id of the sending WhatsApp business phone number (not the number itself).
    #[serde(deserialize_with = "settings::string_or_integer")]
    pub phone_number_id: Option<String>,
    /// The Graph API version in the URL.
    pub api_version: String,
    /// Per tenant (by id): notification type -> the approved template to send for it. The
    /// operator's settings only.
    pub template_by_tenant: BTreeMap<Uuid, BTreeMap<String, MetaTemplate>>,
    /// A tenant's own mapping of its types to its approved templates (an integration only).
    pub template_by_type: BTreeMap<String, MetaTemplate>,
    pub base_url: String,
    /// The tenant's Meta app secret, which signs its webhook's `X-Hub-Signature-256`
    /// (an integration only: the API's tenant receipt route reads it; sending does not).
    pub app_secret: Option<SecretString>,
    /// The token Meta echoes when it verifies the tenant's webhook (an integration only).
    pub verify_token: Option<SecretString>,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            access_token: None,
            phone_number_id: None,
            api_version: DEFAULT_API_VERSION.to_owned(),
            template_by_tenant: BTreeMap::new(),
            template_by_type: BTreeMap::new(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            app_secret: None,
            verify_token: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaTemplate {
    /// The template's name as approved in WhatsApp Manager.
    pub name: String,
    /// Its language code (`en_US`).
    pub language: String,
    /// Keys of the notification's `data` whose values fill the body's `{{1}}`, `{{2}}`, …
    #[serde(default)]
    pub body_parameters: Vec<String>,
}

impl MetaConfig {
    /// Checks the operator's settings, naming the first one missing or wrong (the units'
    /// `settings` is the one way in; this is its check, for the tests of the rules).
    #[cfg(test)]
    fn validate(&self) -> Result<(), ConfigError> {
        self.resolve(&Section::Config(SECTION.into())).map(drop)
    }

    fn resolve(&self, section: &Section) -> Result<Resolved, ConfigError> {
        let token = section.required_secret(&self.access_token, "access_token")?.clone();
        let phone_number_id = section.required(&self.phone_number_id, "phone_number_id")?;
        if !phone_number_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(section.invalid("phone_number_id", "must be the number's id, digits only"));
        }
        let version = self.api_version.trim();
        let digits = version.strip_prefix('v').unwrap_or_default();
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Err(section.invalid("api_version", "must be a Graph API version such as `v21.0`"));
        }
        for (tenant, mapping) in &self.template_by_tenant {
            if let Some((kind, _)) =
                mapping.iter().find(|(_, t)| t.name.trim().is_empty() || t.language.trim().is_empty())
            {
                let message = "needs a template `name` and `language`";
                return Err(if section.is_integration() {
                    section.invalid(&format!("template_by_type.{kind}"), message)
                } else {
                    section.invalid("template_by_tenant", format!("`{tenant}`: `{kind}` {message}"))
                });
            }
        }
        let base = settings::base_url(&self.base_url, section, "base_url")?;
        Ok(Resolved { phone_url: format!("{base}/{version}/{phone_number_id}"), token })
    }
}

pub struct MetaProvider {
    http: Client,
    url: String,
    token: SecretString,
    template_by_tenant: BTreeMap<Uuid, BTreeMap<String, MetaTemplate>>,
}

impl MetaProvider {
    /// The template of the job's tenant for its type, if that tenant mapped one.
    fn template(&self, job: &DeliveryJob) -> Option<&MetaTemplate> {
        self.template_by_tenant.get(&job.tenant_id)?.get(&job.kind)
    }

    /// The message's JSON, or why it cannot be sent.
    fn body(&self, job: &DeliveryJob) -> Result<Value, SendFailure> {
        // Meta writes numbers as E.164 digits, without the `+`.
        let to = job.recipient.strip_prefix('+').unwrap_or(&job.recipient);
        let mut body = json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to});
        match self.template(job) {
            Some(template) => {
                body["type"] = json!("template");
                body["template"] = template_json(template, &job.data)?;
            }
            None => match job.content.text.as_deref().filter(|t| !t.is_empty()) {
                Some(text) => {
                    body["type"] = json!("text");
                    body["text"] = json!({"body": text});
                }
                None => {
                    return Err(SendFailure::new(
                        FailureKind::Permanent,
                        "template_not_configured",
                        format!(
                            "no template is mapped for this tenant's type `{}` (`whatsapp.meta.template_by_tenant`) \
                             and the notification has no content.text: a business-initiated WhatsApp message \
                             needs a template",
                            job.kind
                        ),
                    ));
                }
            },
        }
        Ok(body)
    }

    async fn deliver(&self, job: &DeliveryJob) -> SendOutcome {
        let body = match self.body(job) {
            Ok(body) => body,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        tracing::debug!(%body, "meta request");
        let request = self.http.post(&self.url).bearer_auth(self.token.expose_secret()).json(&body);
        match http::send(request).await {
            Ok(answer) => outcome(&answer, &job.recipient),
            Err(failure) => SendOutcome::Failed(failure),
        }
    }
}

impl domain::Provider for MetaProvider {
    fn name(&self) -> &str {
        "meta"
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.deliver(job).boxed()
    }
}

fn template_json(template: &MetaTemplate, data: &serde_json::Map<String, Value>) -> Result<Value, SendFailure> {
    let mut json = json!({"name": template.name, "language": {"code": template.language}});
    if !template.body_parameters.is_empty() {
        let parameters = template
            .body_parameters
            .iter()
            .map(|key| parameter_text(data.get(key)).map(|text| json!({"type": "text", "text": text})).ok_or(key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|key| {
                SendFailure::new(
                    FailureKind::Permanent,
                    "missing_template_parameter",
                    format!("template `{}` needs `data.{key}` as a string, number or boolean", template.name),
                )
            })?;
        json["components"] = json!([{"type": "body", "parameters": parameters}]);
    }
    Ok(json)
}

fn parameter_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Reads Meta's answer: `{"messages": [{"id": "wamid…"}]}`, or `{"error": {code,
/// message, error_data: {details}}}`, sorted on its code (Meta's advice), not on the
/// HTTP status, which is 400 for most errors.
fn outcome(answer: &Answer, recipient: &str) -> SendOutcome {
    let body = answer.json().unwrap_or(Value::Null);
    if answer.status.is_success() {
        return match body["messages"][0]["id"].as_str() {
            Some(id) => SendOutcome::Sent(SendReceipt {
                provider_message_id: id.to_owned(),
                response_excerpt: body["messages"][0]["message_status"].as_str().map(|s| format!("message_status={s}")),
            }),
            None => SendOutcome::Failed(http::failure(
                FailureKind::Ambiguous,
                "unreadable_answer",
                &format!("Meta answered {} without a message id", answer.status),
                recipient,
                None,
            )),
        };
    }
    let error = &body["error"];
    let code = error["code"].as_i64();
    let message = match (error["message"].as_str(), error["error_data"]["details"].as_str()) {
        (Some(message), Some(details)) => format!("{message}: {details}"),
        (Some(text), None) | (None, Some(text)) => text.to_owned(),
        (None, None) => format!("Meta answered {}", answer.status),
    };
    SendOutcome::Failed(http::failure(
        classify(answer.status, code),
        code.map_or_else(|| http::status_code(answer.status), |c| c.to_string()),
        &message,
        recipient,
        answer.retry_after,
    ))
}

/// The buckets of docs/providers.md §7; a code not in the table, or no code, goes by status.
fn classify(status: StatusCode, code: Option<i64>) -> FailureKind {
    match code {
        // Temporary or overloaded, rate limits, throughput, generic, service unavailable,
        // pair rate limit.
        Some(1 | 2 | 4 | 80007 | 130429 | 131000 | 131016 | 133004 | 131056) => FailureKind::Retryable,
        // Parameters, undeliverable, outside the 24-hour window, unsupported type,
        // template problems, number not registered.
        Some(100 | 131008 | 131009 | 131026 | 131047 | 131051 | 132000..=132016 | 133010) => FailureKind::Permanent,
        // Token, permissions, restricted or locked account, payment, spam rate limit.
        Some(190 | 10 | 200..=299 | 368 | 131031 | 131042 | 131048) => FailureKind::Config,
        _ => http::kind_from_status(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sorted_into_the_buckets_whatever_the_status() {
        let bad = StatusCode::BAD_REQUEST;
        for code in [1, 2, 4, 80007, 130429, 131000, 131016, 133004, 131056] {
            assert_eq!(classify(bad, Some(code)), FailureKind::Retryable, "{code}");
        }
        for code in [100, 131008, 131009, 131026, 131047, 131051, 132000, 132012, 132016, 133010] {
            assert_eq!(classify(bad, Some(code)), FailureKind::Permanent, "{code}");
        }
        for code in [190, 10, 200, 250, 299, 368, 131031, 131042, 131048] {
            assert_eq!(classify(StatusCode::UNAUTHORIZED, Some(code)), FailureKind::Config, "{code}");
        }
        assert_eq!(classify(StatusCode::INTERNAL_SERVER_ERROR, Some(131000)), FailureKind::Retryable);
        assert_eq!(classify(StatusCode::INTERNAL_SERVER_ERROR, None), FailureKind::Ambiguous);
        assert_eq!(classify(bad, Some(999_999)), FailureKind::Permanent);
    }

    #[test]
    fn template_parameters_come_from_data_in_order() {
        let template = MetaTemplate {
            name: "order_shipped".into(),
            language: "en_US".into(),
            body_parameters: vec!["order".into(), "count".into()],
        };
        let data = json!({"count": 3, "order": "A-1", "other": "x"}).as_object().cloned().unwrap();
        assert_eq!(
            template_json(&template, &data).unwrap(),
            json!({"name": "order_shipped", "language": {"code": "en_US"}, "components": [{"type": "body",
                "parameters": [{"type": "text", "text": "A-1"}, {"type": "text", "text": "3"}]}]})
        );
        let missing = template_json(&template, &serde_json::Map::new()).unwrap_err();
        assert_eq!((missing.kind, missing.code.as_str()), (FailureKind::Permanent, "missing_template_parameter"));
        assert!(missing.message.contains("data.order"), "{}", missing.message);
    }

    #[test]
    fn settings_name_what_is_missing() {
        let ok = MetaConfig {
            access_token: Some("t".into()),
            phone_number_id: Some("106540352242922".into()),
            ..Default::default()
        };
        let resolved = ok.resolve(&Section::Config(SECTION.into())).unwrap();
        assert_eq!(resolved.phone_url, "https://graph.facebook.com/v21.0/106540352242922");
        let err = |c: MetaConfig| c.validate().unwrap_err().to_string();
        assert!(err(MetaConfig { access_token: None, ..ok.clone() }).contains("whatsapp.meta.access_token"));
        assert!(err(MetaConfig { phone_number_id: None, ..ok.clone() }).contains("NOTIFY_WHATSAPP__META__PHONE"));
        assert!(err(MetaConfig { phone_number_id: Some("1/../2".into()), ..ok.clone() }).contains("digits"));
        assert!(err(MetaConfig { api_version: "21".into(), ..ok.clone() }).contains("api_version"));
    }

    #[test]
    fn templates_are_mapped_per_tenant() {
        let tenant = Uuid::now_v7();
        let template = MetaTemplate { name: " ".into(), language: "en_US".into(), body_parameters: vec![] };
        let c = MetaConfig {
            access_token: Some("t".into()),
            phone_number_id: Some("1".into()),
            template_by_tenant: [(tenant, [("otp".to_owned(), template)].into())].into(),
            ..Default::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("whatsapp.meta.template_by_tenant") && err.contains(&tenant.to_string()), "{err}");
        // The former mapping shared by every tenant is refused, naming the one that replaced it.
        let figment = crate::settings::tests::figment(
            "[whatsapp.meta]\naccess_token = \"t\"\nphone_number_id = 1\ntemplate_by_type = {}\n",
        );
        let shared = UNIT.settings(Source::Config(&figment)).unwrap_err().to_string();
        assert!(shared.contains("template_by_type") && shared.contains("template_by_tenant"), "{shared}");
    }

    #[test]
    fn a_phone_number_id_may_be_given_as_a_number() {
        let c: MetaConfig =
            serde_json::from_value(json!({"access_token": "t", "phone_number_id": 106540352242922_u64})).unwrap();
        assert_eq!(c.phone_number_id.as_deref(), Some("106540352242922"));
    }
}
