//! Novu (docs/providers.md §8): one workflow trigger per delivery, `POST
//! {base_url}/v1/events/trigger` with `Authorization: ApiKey <key>`.
//!
//! Every tenant shares the one Novu environment, so a trigger is scoped to its tenant: it
//! names the Novu tenant `{"identifier": <tenant id>}` (Novu creates it on first use), and
//! the subscriber is `<tenant id>:<subscriber id>` ([`subscriber_id`]), so two tenants'
//! `u-42` are two Novu subscribers and no tenant can reach another's. The workflow is the
//! type's `novu_workflow`, else `workflow_by_tenant[tenant][type]` (the operator's mapping
//! for that tenant alone), else the type itself. The payload is the notification's `data`.
//! The delivery id is both `transactionId` (Novu ignores a repeated one, so a retry after
//! an ambiguous failure triggers the workflow once) and the `Idempotency-Key` header
//! (where the organization has it enabled, a replay gets the first answer).

use std::{collections::BTreeMap, sync::Arc};

use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{Channel, DeliveryJob, FailureKind, SendOutcome, SendReceipt};
use futures_util::{FutureExt, future::BoxFuture};
use reqwest::{StatusCode, header::HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    Checked, Context, ProviderSettings, ProviderUnit, Source,
    http::{self, Answer, Client},
    settings::{self, Refused, Section},
};

pub const DEFAULT_BASE_URL: &str = "https://api.novu.co";
#[cfg(test)]
const SECTION: &str = "novu.novu";

/// Novu workflow triggers (`novu.novu`).
pub const UNIT: NovuUnit = NovuUnit;

pub struct NovuUnit;

const REFUSED: Refused<'static> = Refused {
    config: &[("workflow_by_type", "the operator maps workflows per tenant, in `workflow_by_tenant`")],
    integration: &[("workflow_by_tenant", "a tenant maps its own types, in `workflow_by_type`")],
};

impl ProviderUnit for NovuUnit {
    fn channel(&self) -> Channel {
        Channel::Novu
    }

    fn name(&self) -> &'static str {
        "novu"
    }

    fn secrets(&self) -> &'static [&'static str] {
        &["api_key"]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        let (mut config, section) = settings::read::<NovuConfig>(&source, self.channel(), self.name(), &REFUSED)?;
        if let Source::Integration(integration) = &source {
            // A tenant picks its Novu region (EU, US) itself: over https, and never at an
            // address of ours; the operator's stand-in replaces the default.
            if config.base_url == DEFAULT_BASE_URL {
                config.base_url = settings::integration_base_url(integration.rules, self.name(), DEFAULT_BASE_URL);
            } else {
                let url = settings::base_url(&config.base_url, &section, "base_url")?;
                let parsed = reqwest::Url::parse(&url).map_err(|e| section.invalid("base_url", e.to_string()))?;
                if parsed.scheme() != "https" && !integration.rules.allow_private_hosts {
                    return Err(section.invalid("base_url", "must be an https URL"));
                }
                settings::public_host(parsed.host_str().unwrap_or_default(), integration.rules, &section, "base_url")?;
            }
            let own = std::mem::take(&mut config.workflow_by_type);
            config.workflow_by_tenant = [(integration.tenant_id, own)].into();
        }
        let (url, authorization) = config.resolve(&section)?;
        let base = url.strip_suffix(TRIGGER).unwrap_or(&url).to_owned();
        Ok(Box::new(NovuSettings { base, authorization, workflow_by_tenant: config.workflow_by_tenant }))
    }
}

const TRIGGER: &str = "/v1/events/trigger";

#[derive(Debug)]
struct NovuSettings {
    base: String,
    authorization: HeaderValue,
    workflow_by_tenant: BTreeMap<Uuid, BTreeMap<String, String>>,
}

impl ProviderSettings for NovuSettings {
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn domain::Provider>>> {
        async move {
            let provider = NovuProvider {
                http: ctx.http.get()?,
                url: format!("{}{TRIGGER}", self.base),
                authorization: self.authorization.clone(),
                workflow_by_tenant: self.workflow_by_tenant.clone(),
            };
            Ok(Arc::new(provider) as Arc<dyn domain::Provider>)
        }
        .boxed()
    }

    /// Reads the environment the key belongs to (`GET /v1/environments/me`).
    fn check<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        let url = format!("{}/v1/environments/me", self.base);
        http::check(
            ctx.http,
            move |client| client.get(url).header(reqwest::header::AUTHORIZATION, self.authorization.clone()),
            |body| format!("environment {}", body["data"]["name"].as_str().unwrap_or("unnamed")),
        )
        .boxed()
    }
}

/// `[novu.novu]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NovuConfig {
    /// The environment's secret key.
    pub api_key: Option<SecretString>,
    /// Per tenant (by id): notification type -> workflow trigger id, where they differ.
    /// The operator's settings only.
    pub workflow_by_tenant: BTreeMap<Uuid, BTreeMap<String, String>>,
    /// A tenant's own mapping of its types to its workflows (an integration only).
    pub workflow_by_type: BTreeMap<String, String>,
    /// `https://eu.api.novu.co` for the EU region.
    pub base_url: String,
}

impl Default for NovuConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            workflow_by_tenant: BTreeMap::new(),
            workflow_by_type: BTreeMap::new(),
            base_url: DEFAULT_BASE_URL.to_owned(),
        }
    }
}

impl NovuConfig {
    /// Checks the operator's settings, naming the first one missing or wrong (the units'
    /// `settings` is the one way in; this is its check, for the tests of the rules).
    #[cfg(test)]
    fn validate(&self) -> Result<(), ConfigError> {
        self.resolve(&Section::Config(SECTION.into())).map(drop)
    }

    /// The trigger URL and the `Authorization` header.
    fn resolve(&self, section: &Section) -> Result<(String, HeaderValue), ConfigError> {
        let key = section.required_secret(&self.api_key, "api_key")?;
        let mut authorization = HeaderValue::try_from(format!("ApiKey {}", key.expose_secret().trim()))
            .map_err(|_| section.invalid("api_key", "holds characters a header cannot carry"))?;
        authorization.set_sensitive(true);
        for (tenant, mapping) in &self.workflow_by_tenant {
            if let Some((kind, _)) = mapping.iter().find(|(_, w)| w.trim().is_empty()) {
                return Err(if section.is_integration() {
                    section.invalid(&format!("workflow_by_type.{kind}"), "must not be empty")
                } else {
                    section.invalid("workflow_by_tenant", format!("`{tenant}`: `{kind}` maps to an empty workflow"))
                });
            }
        }
        let url = format!("{}{TRIGGER}", settings::base_url(&self.base_url, section, "base_url")?);
        Ok((url, authorization))
    }
}

pub struct NovuProvider {
    http: Client,
    url: String,
    /// `ApiKey <key>`, marked sensitive so that it never shows in a debug print.
    authorization: HeaderValue,
    workflow_by_tenant: BTreeMap<Uuid, BTreeMap<String, String>>,
}

impl NovuProvider {
    /// The type's own workflow key first, then this worker's mapping for the job's tenant,
    /// then the type's key.
    fn workflow<'a>(&'a self, job: &'a DeliveryJob) -> &'a str {
        let mapped = || self.workflow_by_tenant.get(&job.tenant_id)?.get(&job.kind);
        job.workflow.as_deref().unwrap_or_else(|| mapped().map_or(&job.kind, String::as_str))
    }

    async fn deliver(&self, job: &DeliveryJob) -> SendOutcome {
        let transaction_id = job.delivery_id.to_string();
        let body = json!({
            "name": self.workflow(job),
            "to": {"subscriberId": subscriber_id(job.tenant_id, &job.recipient)},
            "payload": job.data,
            "transactionId": transaction_id,
            "tenant": {"identifier": job.tenant_id.to_string()},
        });
        tracing::debug!(%body, "novu request");
        let request = self
            .http
            .post(&self.url)
            .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
            .header("Idempotency-Key", &transaction_id)
            .json(&body);
        match http::send(request).await {
            Ok(answer) => outcome(&answer, &job.recipient, &transaction_id),
            Err(failure) => SendOutcome::Failed(failure),
        }
    }
}

/// The Novu subscriber of a tenant's subscriber: `<tenant id>:<subscriber id>`, the tenant
/// id hyphenated in lower case. Stable: changing it would orphan every Novu subscriber.
pub fn subscriber_id(tenant_id: Uuid, subscriber: &str) -> String {
    format!("{tenant_id}:{subscriber}")
}

impl domain::Provider for NovuProvider {
    fn name(&self) -> &str {
        "novu"
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.deliver(job).boxed()
    }
}

/// Reads Novu's answer: `201 {"data": {"acknowledged": true, "status": "processed",
/// "transactionId": …}}` is sent; `201` with another status (`no_tenant_found`,
/// `trigger_not_active`, …) is refused for good, with that status as its code.
fn outcome(answer: &Answer, recipient: &str, transaction_id: &str) -> SendOutcome {
    let body = answer.json().unwrap_or(Value::Null);
    if answer.status.is_success() {
        let data = &body["data"];
        return match (data["status"].as_str(), data["acknowledged"].as_bool()) {
            (Some("processed"), Some(true)) => SendOutcome::Sent(SendReceipt {
                provider_message_id: data["transactionId"].as_str().unwrap_or(transaction_id).to_owned(),
                response_excerpt: Some("status=processed".to_owned()),
            }),
            (Some("processed"), _) => SendOutcome::Failed(http::failure(
                FailureKind::Permanent,
                "not_acknowledged",
                &format!("Novu processed the trigger but did not acknowledge it{}", error_detail(data)),
                recipient,
                None,
            )),
            (Some(status), _) => SendOutcome::Failed(http::failure(
                FailureKind::Permanent,
                // Novu's status enum, cut to a sane length should it send something else.
                status.chars().take(64).collect::<String>(),
                &format!("Novu did not process the trigger: {status}{}", error_detail(data)),
                recipient,
                None,
            )),
            // Accepted, perhaps, but unreadable: retrying is safe, the transaction id dedupes.
            (None, _) => SendOutcome::Failed(http::failure(
                FailureKind::Ambiguous,
                "unreadable_answer",
                &format!("Novu answered {} without a trigger status", answer.status),
                recipient,
                None,
            )),
        };
    }
    let message = match &body["message"] {
        Value::String(message) => message.clone(),
        Value::Array(messages) => messages.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "),
        _ => format!("Novu answered {}", answer.status),
    };
    SendOutcome::Failed(http::failure(
        classify(answer.status),
        http::status_code(answer.status),
        &message,
        recipient,
        answer.retry_after,
    ))
}

/// Novu's `error` list on a trigger it did not process, as `: a; b`.
fn error_detail(data: &Value) -> String {
    match data["error"].as_array() {
        Some(errors) if !errors.is_empty() => {
            format!(": {}", errors.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
        }
        _ => String::new(),
    }
}

/// docs/providers.md §8: 409 is an idempotency key still in flight, 429 the rate limit; 5xx
/// is safe to retry because the transaction id dedupes.
fn classify(status: StatusCode) -> FailureKind {
    match status.as_u16() {
        409 | 429 => FailureKind::Retryable,
        401 | 403 => FailureKind::Config,
        _ => http::kind_from_status(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_into_the_buckets() {
        let kind = |s: u16| classify(StatusCode::from_u16(s).unwrap());
        assert_eq!(kind(409), FailureKind::Retryable);
        assert_eq!(kind(429), FailureKind::Retryable);
        assert_eq!(kind(401), FailureKind::Config);
        assert_eq!(kind(403), FailureKind::Config);
        for status in [400, 404, 422] {
            assert_eq!(kind(status), FailureKind::Permanent, "{status}");
        }
        assert_eq!(kind(500), FailureKind::Ambiguous);
        assert_eq!(kind(503), FailureKind::Ambiguous);
    }

    fn answer(status: u16, body: Value) -> Answer {
        Answer { status: StatusCode::from_u16(status).unwrap(), retry_after: None, body: body.to_string().into_bytes() }
    }

    fn failure(outcome: SendOutcome) -> (FailureKind, String) {
        match outcome {
            SendOutcome::Failed(f) => (f.kind, f.code),
            SendOutcome::Sent(r) => panic!("unexpected send {r:?}"),
        }
    }

    #[test]
    fn a_trigger_counts_as_sent_only_when_processed_and_acknowledged() {
        let unacknowledged = answer(201, json!({"data": {"acknowledged": false, "status": "processed"}}));
        assert_eq!(failure(outcome(&unacknowledged, "s-1", "tx")), (FailureKind::Permanent, "not_acknowledged".into()));
        let inactive = answer(201, json!({"data": {"acknowledged": true, "status": "trigger_not_active"}}));
        assert_eq!(failure(outcome(&inactive, "s-1", "tx")), (FailureKind::Permanent, "trigger_not_active".into()));
        let unreadable = answer(201, json!("not the DTO"));
        assert_eq!(failure(outcome(&unreadable, "s-1", "tx")), (FailureKind::Ambiguous, "unreadable_answer".into()));
        // Without Novu's transaction id in the answer, ours is the id: it is the one we sent.
        let processed = answer(201, json!({"data": {"acknowledged": true, "status": "processed"}}));
        match outcome(&processed, "s-1", "tx") {
            SendOutcome::Sent(receipt) => assert_eq!(receipt.provider_message_id, "tx"),
            SendOutcome::Failed(f) => panic!("{f:?}"),
        }
    }

    #[test]
    fn the_mapping_is_per_tenant() {
        let tenant = Uuid::now_v7();
        let empty = [(tenant, [("t".to_owned(), " ".to_owned())].into())].into();
        let err = NovuConfig { api_key: Some("k".into()), workflow_by_tenant: empty, ..Default::default() }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("novu.novu.workflow_by_tenant") && err.contains(&tenant.to_string()), "{err}");
        assert_eq!(subscriber_id(tenant, "u-42"), format!("{tenant}:u-42"));
    }

    #[test]
    fn settings_are_read_from_novu_novu_and_a_mapping_shared_by_every_tenant_is_refused() {
        let figment = crate::settings::tests::figment(
            r#"
            [novu.novu]
            api_key = "key"
            base_url = "https://eu.api.novu.co"
            [novu.novu.workflow_by_tenant."0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"]
            "order.shipped" = "order-shipped"
            "#,
        );
        assert!(UNIT.settings(Source::Config(&figment)).is_ok());
        let shared = crate::settings::tests::figment(
            "[novu.novu]\napi_key = \"key\"\nworkflow_by_type = { \"order.shipped\" = \"order-shipped\" }\n",
        );
        let err = UNIT.settings(Source::Config(&shared)).unwrap_err().to_string();
        assert!(err.contains("workflow_by_type") && err.contains("workflow_by_tenant"), "{err}");
        let absent = UNIT.settings(Source::Config(&crate::settings::tests::figment(""))).unwrap_err().to_string();
        assert!(absent.contains("`novu.novu`") && absent.contains("NOTIFY_NOVU__NOVU__*"), "{absent}");
    }

    #[test]
    fn a_tenant_picks_its_region_over_https_and_never_a_private_host() {
        use crate::{IntegrationRules, settings::tests::integration};
        let strict = IntegrationRules::default();
        let read = |settings: Value, rules: &IntegrationRules| {
            UNIT.settings(Source::Integration(&integration(&settings, rules))).err().map(|e| e.to_string())
        };
        assert_eq!(read(json!({"api_key": "k", "base_url": "https://eu.api.novu.co"}), &strict), None);
        assert_eq!(read(json!({"api_key": "k", "workflow_by_type": {"a": "b"}}), &strict), None);
        for bad in ["http://eu.api.novu.co", "https://127.0.0.1", "https://localhost:3000", "https://[::1]/"] {
            let err = read(json!({"api_key": "k", "base_url": bad}), &strict).expect(bad);
            assert!(err.contains("settings.base_url"), "{bad}: {err}");
        }
        let lax = IntegrationRules { allow_private_hosts: true, ..Default::default() };
        assert_eq!(read(json!({"api_key": "k", "base_url": "http://127.0.0.1:9"}), &lax), None);
        assert!(read(json!({"api_key": "k", "workflow_by_tenant": {}}), &strict).unwrap().contains("settings."));
    }

    #[test]
    fn the_api_key_is_required() {
        let err = NovuConfig::default().validate().unwrap_err().to_string();
        assert!(err.contains("novu.novu.api_key") && err.contains("NOTIFY_NOVU__NOVU__API_KEY"), "{err}");
        assert!(NovuConfig { api_key: Some("k".into()), ..Default::default() }.validate().is_ok());
        let err = NovuConfig { api_key: Some("k\ney".into()), ..Default::default() }.validate().unwrap_err();
        assert!(err.to_string().contains("novu.novu.api_key"), "{err}");
    }
}
