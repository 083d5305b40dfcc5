//! `/v1/integrations`: each tenant's own provider credentials and sender settings, one
//! per channel and provider (`PUT/GET/DELETE /v1/integrations/{channel}/{provider}`), and
//! a check that proves them (`POST …/check`). The provider's unit (`providers::find`)
//! validates the settings and says which are secrets; secrets are sealed with the API's
//! keyring (`secrets`) before they are stored, and never returned, logged or put in an
//! error message: an answer says only that one is set, and its last four characters.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use bootstrap::{
    ConfigError, SecretString,
    seal::{Keyring, SealError},
};
use domain::{Channel, FieldError};
use providers::{Checked, Context, Integration, IntegrationRules, ProviderUnit, Source, http::SharedClient};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use store::{IntegrationWrite, StoredIntegration, integrations::seal_secrets};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    auth::Authenticated,
    error::{ApiError, Problem},
    json::{self, JsonBody},
    rate_limit::{Decision, Rate, RateLimiter},
};

/// A credentials check may take this long, as a worker's provider call.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// A PUT reads, merges and writes if nothing changed meanwhile; it tries this often.
const PUT_ATTEMPTS: usize = 3;

/// What the integration routes need of the API's settings.
pub struct Integrations {
    /// `None`: no `secrets.keys`, so nothing can be stored.
    keyring: Option<Arc<Keyring>>,
    rules: IntegrationRules,
    /// One client for every check, as a worker has one for its providers; it resolves
    /// hosts as tenants' clients do, refusing internal addresses.
    http: SharedClient,
    /// Each tenant's checks (`admission.check_rate`): each one calls the provider.
    check_limiter: RateLimiter,
    check_rate: Rate,
}

impl Integrations {
    /// `keyring`: the API's one keyring (`secrets`), shared with chat addresses.
    pub fn new(config: &crate::Config, keyring: Option<Arc<Keyring>>) -> Self {
        Self {
            keyring,
            rules: config.integrations.clone(),
            http: SharedClient::for_tenants(CHECK_TIMEOUT, &config.integrations),
            check_limiter: RateLimiter::default(),
            check_rate: config.admission.check_rate,
        }
    }

    pub fn rules(&self) -> &IntegrationRules {
        &self.rules
    }

    /// The secret `key` of each of the tenant's integrations of `provider` on `channels`,
    /// opened: what the tenant's receipt routes check a provider's signature with. Paused
    /// integrations count too: their messages sent before still have receipts to come.
    /// Empty when the tenant has none (or this deployment stores no secrets).
    pub async fn receipt_secrets(
        &self,
        store: &store::Store,
        tenant_id: Uuid,
        provider: &str,
        channels: &[Channel],
        key: &str,
    ) -> Result<Vec<SecretString>, ApiError> {
        let Some(keyring) = &self.keyring else { return Ok(vec![]) };
        let mut secrets = vec![];
        for integration in store.list_integrations(tenant_id).await? {
            if integration.provider != provider || !channels.contains(&integration.channel) {
                continue;
            }
            let opened = integration.open_secrets(keyring).map_err(unreadable)?;
            if let Some(secret) = opened.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()) {
                secrets.push(SecretString::from(secret.to_owned()));
            }
        }
        Ok(secrets)
    }

    pub(crate) fn keyring(&self) -> Result<&Keyring, ApiError> {
        self.keyring.as_deref().ok_or_else(|| ApiError::Conflict {
            code: "secrets_not_configured",
            detail: "this deployment cannot store integration secrets: the operator must configure secrets.keys".into(),
        })
    }
}

/// `PUT /v1/integrations/{channel}/{provider}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationInput {
    /// The provider's settings (docs/providers.md names them per provider). A secret left
    /// out keeps its stored value; a secret set to `null` is removed.
    #[schema(value_type = Object)]
    settings: Map<String, Value>,
    /// Whether workers send with it.
    #[serde(default = "yes")]
    active: bool,
    /// The failover order among the tenant's integrations of the channel, lowest first.
    #[serde(default)]
    order: i32,
}

fn yes() -> bool {
    true
}

/// A secret setting: whether it is set, and its last four characters (absent for secrets
/// shorter than 12 characters).
#[derive(Serialize, ToSchema)]
pub struct SecretState {
    set: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    last4: Option<String>,
}

/// An integration as the API shows it: never a secret.
#[derive(Serialize, ToSchema)]
pub struct IntegrationView {
    channel: Channel,
    provider: String,
    /// The settings that are not secrets.
    #[schema(value_type = Object)]
    settings: Map<String, Value>,
    /// Every secret setting of the provider, set or not.
    secrets: BTreeMap<String, SecretState>,
    active: bool,
    order: i32,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

fn view(stored: StoredIntegration) -> IntegrationView {
    let mut secrets: BTreeMap<String, SecretState> = providers::find(stored.channel, &stored.provider)
        .map(|unit| unit.secrets().iter().map(|k| ((*k).to_owned(), SecretState { set: false, last4: None })).collect())
        .unwrap_or_default();
    for key in stored.secrets.keys() {
        secrets.insert(key.clone(), SecretState { set: true, last4: stored.hints.get(key).cloned() });
    }
    IntegrationView {
        channel: stored.channel,
        provider: stored.provider,
        settings: stored.settings,
        secrets,
        active: stored.active,
        order: stored.position,
        created_at: stored.created_at,
        updated_at: stored.updated_at,
    }
}

#[utoipa::path(put, path = "/v1/integrations/{channel}/{provider}", operation_id = "putIntegration", tag = "integrations",
    params(
        ("channel" = Channel, Path, description = "The channel the provider sends on", example = "sms"),
        ("provider" = String, Path, description = "A provider of the channel (`twilio`, `ses`, `slack`, ...)", example = "twilio"),
    ),
    request_body(content = IntegrationInput, description = "The provider's settings, secrets included (they are sealed at rest and never returned); a secret left out keeps its stored value",
        example = json!({"settings": {"account_sid": "AC0123456789abcdef0123456789abcdef", "auth_token": "0123456789abcdef0123456789abcdef", "from": "+15550001111"}, "active": true, "order": 0})),
    responses(
        (status = 201, description = "Created", body = IntegrationView),
        (status = 200, description = "Replaced", body = IntegrationView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`secrets_not_configured`: the deployment has no key to seal secrets with; `secret_unreadable`: a stored secret was sealed with a key no longer configured (send it again); `concurrent_change`: changed meanwhile, send again", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown channel or provider, or a setting missing or invalid; `errors` names it (`settings.from`)", body = Problem, content_type = "application/problem+json"),
    ))]
/// `PUT /v1/integrations/{channel}/{provider}`: creates or replaces the tenant's integration.
pub async fn put(
    State(app): State<AppState>,
    auth: Authenticated,
    Path((channel, provider)): Path<(String, String)>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<IntegrationView>), ApiError> {
    let tenant = auth.0.tenant_id;
    let (channel, unit) = parse_unit(&channel, &provider)?;
    let input: IntegrationInput = json::from_value(body)?;
    let keyring = app.integrations.keyring()?;
    for _ in 0..PUT_ATTEMPTS {
        let existing = app.store.get_integration(tenant, channel, &provider).await?;
        let write = merge(&app.integrations, keyring, tenant, unit, &input, existing.as_ref())?;
        let write_ref = IntegrationWrite {
            settings: &write.settings,
            secrets: &write.secrets,
            hints: &write.hints,
            active: input.active,
            position: input.order,
        };
        let expected = existing.as_ref().map(|e| e.version);
        if let Some((stored, created)) =
            app.store.put_integration(tenant, channel, &provider, &write_ref, expected).await?
        {
            tracing::info!(tenant_id = %tenant, %channel, provider, created, "integration stored");
            return Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view(stored))));
        }
    }
    Err(ApiError::Conflict {
        code: "concurrent_change",
        detail: "the integration kept changing while this request was applied; send it again".into(),
    })
}

/// What a PUT writes: the non-secret settings as given, the secrets given sealed anew, the
/// stored ones not given kept as they are, all validated together by the unit.
struct Merged {
    settings: Map<String, Value>,
    secrets: BTreeMap<String, String>,
    hints: BTreeMap<String, String>,
}

fn merge(
    integrations: &Integrations,
    keyring: &Keyring,
    tenant: Uuid,
    unit: &dyn ProviderUnit,
    input: &IntegrationInput,
    existing: Option<&StoredIntegration>,
) -> Result<Merged, ApiError> {
    let is_secret = |key: &str| unit.secrets().contains(&key);
    let (mut settings, mut given) = (Map::new(), Map::new());
    for (key, value) in &input.settings {
        match (is_secret(key), value) {
            (false, _) => {
                settings.insert(key.clone(), value.clone());
            }
            (true, Value::Null) => {}
            (true, _) => {
                given.insert(key.clone(), value.clone());
            }
        }
    }
    // Kept: stored secrets neither given nor set to null.
    let mut kept = existing.cloned();
    if let Some(kept) = &mut kept {
        kept.secrets.retain(|key, _| is_secret(key) && !input.settings.contains_key(key));
        kept.hints.retain(|key, _| kept.secrets.contains_key(key));
    }
    let kept_plain = match &kept {
        Some(kept) => kept.open_secrets(keyring).map_err(unreadable)?,
        None => Map::new(),
    };
    let mut full = settings.clone();
    full.extend(given.clone());
    full.extend(kept_plain.clone());
    let full = Value::Object(full);
    let source = Integration { tenant_id: tenant, settings: &full, rules: &integrations.rules };
    if let Err(e) = unit.settings(Source::Integration(&source)) {
        let plain: Vec<&Value> = given.values().chain(kept_plain.values()).collect();
        return Err(ApiError::Validation(vec![field_error(e, &plain)]));
    }
    let (mut secrets, mut hints) = seal_secrets(keyring, tenant, unit.channel(), unit.name(), &given);
    if let Some(kept) = kept {
        secrets.extend(kept.secrets);
        hints.extend(kept.hints);
    }
    Ok(Merged { settings, secrets, hints })
}

/// A unit's complaint as a field error. Units never quote a secret; should one, the
/// message is replaced rather than returned.
fn field_error(e: ConfigError, secrets: &[&Value]) -> FieldError {
    let (field, message) = match e {
        ConfigError::Missing { key, .. } => (key, "is required".to_owned()),
        ConfigError::Invalid { key, message } => (key, message),
        ConfigError::Figment(e) => ("settings".to_owned(), e.to_string()),
    };
    let quotes_a_secret = secrets.iter().any(|secret| {
        let text = secret.as_str().map_or_else(|| secret.to_string(), str::to_owned);
        text.chars().count() >= 4 && message.contains(&text)
    });
    FieldError::new(field, if quotes_a_secret { "is invalid".to_owned() } else { message })
}

/// A stored secret that does not open: sealed with a key this replica lacks (the operator
/// removed it before rotating), or damaged. The message names neither value nor key.
fn unreadable(e: SealError) -> ApiError {
    match e {
        SealError::UnknownKey(_) => ApiError::Conflict {
            code: "secret_unreadable",
            detail: "a stored secret of this integration was sealed with a key that is no longer configured; \
                     send every secret again"
                .into(),
        },
        SealError::Corrupt => ApiError::Internal("a sealed integration secret does not open".into()),
    }
}

#[utoipa::path(get, path = "/v1/integrations", operation_id = "listIntegrations", tag = "integrations",
    responses((status = 200, description = "The tenant's integrations, by channel, in failover order; never a secret", body = [IntegrationView])))]
/// `GET /v1/integrations`.
pub async fn list(State(app): State<AppState>, auth: Authenticated) -> Result<Json<Vec<IntegrationView>>, ApiError> {
    let stored = app.store.list_integrations(auth.0.tenant_id).await?;
    Ok(Json(stored.into_iter().map(view).collect()))
}

#[utoipa::path(get, path = "/v1/integrations/{channel}/{provider}", operation_id = "getIntegration", tag = "integrations",
    params(
        ("channel" = Channel, Path, example = "sms"),
        ("provider" = String, Path, example = "twilio"),
    ),
    responses(
        (status = 200, description = "The integration; never a secret", body = IntegrationView),
        (status = 404, description = "The tenant has no such integration", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown channel", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/integrations/{channel}/{provider}`.
pub async fn get(
    State(app): State<AppState>,
    auth: Authenticated,
    Path((channel, provider)): Path<(String, String)>,
) -> Result<Json<IntegrationView>, ApiError> {
    let channel = parse_channel(&channel)?;
    let stored = app.store.get_integration(auth.0.tenant_id, channel, &provider).await?;
    stored.map(|s| Json(view(s))).ok_or(ApiError::NotFound)
}

#[utoipa::path(delete, path = "/v1/integrations/{channel}/{provider}", operation_id = "deleteIntegration", tag = "integrations",
    params(
        ("channel" = Channel, Path, example = "sms"),
        ("provider" = String, Path, example = "twilio"),
    ),
    responses(
        (status = 204, description = "Deleted: workers stop sending with it"),
        (status = 404, description = "The tenant has no such integration", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown channel", body = Problem, content_type = "application/problem+json"),
    ))]
/// `DELETE /v1/integrations/{channel}/{provider}`.
pub async fn delete(
    State(app): State<AppState>,
    auth: Authenticated,
    Path((channel, provider)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = auth.0.tenant_id;
    let channel = parse_channel(&channel)?;
    if !app.store.delete_integration(tenant, channel, &provider).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(tenant_id = %tenant, %channel, provider, "integration deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/integrations/{channel}/{provider}/check", operation_id = "checkIntegration", tag = "integrations",
    params(
        ("channel" = Channel, Path, example = "sms"),
        ("provider" = String, Path, example = "twilio"),
    ),
    responses(
        (status = 200, description = "What the provider said of the credentials (`ok` false when it refused them); nothing is sent to anyone", body = Checked),
        (status = 404, description = "The tenant has no such integration", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`secrets_not_configured` or `secret_unreadable`, as for PUT", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown channel or provider, or stored settings the provider no longer accepts (`settings.<key>`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant's rate of checks (`admission.check_rate`) is exhausted; `Retry-After` says when to try again", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/integrations/{channel}/{provider}/check`: proves the stored credentials with
/// a call that sends nothing (a Twilio account fetch, SES GetAccount, Slack `auth.test`).
pub async fn check(
    State(app): State<AppState>,
    auth: Authenticated,
    Path((channel, provider)): Path<(String, String)>,
) -> Result<Json<Checked>, ApiError> {
    let tenant = auth.0.tenant_id;
    let (channel, unit) = parse_unit(&channel, &provider)?;
    if let Decision::Limited { quota, retry_after } =
        app.integrations.check_limiter.take(tenant, app.integrations.check_rate, 1)
    {
        return Err(ApiError::CheckRateLimited { quota, retry_after });
    }
    let stored = app.store.get_integration(tenant, channel, &provider).await?.ok_or(ApiError::NotFound)?;
    let keyring = app.integrations.keyring()?;
    let full = stored.open(keyring).map_err(unreadable)?;
    let source = Integration { tenant_id: tenant, settings: &full, rules: &app.integrations.rules };
    let settings = unit.settings(Source::Integration(&source)).map_err(|e| {
        let secrets: Vec<&Value> = unit.secrets().iter().filter_map(|k| full.get(*k)).collect();
        ApiError::Validation(vec![field_error(e, &secrets)])
    })?;
    let context = Context { http: &app.integrations.http, provider_timeout: CHECK_TIMEOUT };
    let checked = settings.check(&context).await;
    tracing::info!(tenant_id = %tenant, %channel, provider, ok = checked.ok, status = checked.status, "integration checked");
    Ok(Json(checked))
}

fn parse_channel(channel: &str) -> Result<Channel, ApiError> {
    channel.parse().map_err(|_| {
        let known: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        ApiError::field("channel", format!("unknown channel `{channel}`; one of {}", known.join(", ")))
    })
}

/// The provider unit named by the path, or a `422` naming the parameter that is wrong.
fn parse_unit(channel: &str, provider: &str) -> Result<(Channel, &'static dyn ProviderUnit), ApiError> {
    let channel = parse_channel(channel)?;
    let unit = providers::find(channel, provider).ok_or_else(|| {
        let known: Vec<&str> = providers::units(channel).map(|u| u.name()).collect();
        let message = if known.is_empty() {
            format!("unknown provider `{provider}`: the {channel} channel takes no integrations")
        } else {
            format!("unknown provider `{provider}` for {channel}; one of {}", known.join(", "))
        };
        ApiError::field("provider", message)
    })?;
    Ok((channel, unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complaint_quoting_a_secret_is_not_returned() {
        let secret = Value::String("tok-0123456789".into());
        let quoting =
            ConfigError::Invalid { key: "settings.auth_token".into(), message: "`tok-0123456789` is bad".into() };
        assert_eq!(field_error(quoting, &[&secret]), FieldError::new("settings.auth_token", "is invalid"));
        let plain = ConfigError::Invalid { key: "settings.from".into(), message: "must be E.164".into() };
        assert_eq!(field_error(plain, &[&secret]), FieldError::new("settings.from", "must be E.164"));
        let missing = ConfigError::Missing { key: "settings.from".into(), env: "NOTIFY_X".into() };
        assert_eq!(field_error(missing, &[]), FieldError::new("settings.from", "is required"));
    }
}
