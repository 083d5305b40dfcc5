//! Delivery receipts from the providers (docs/providers.md §9). These take no API
//! key: a request must carry its provider's signature, checked on the raw request before
//! anything in it is used. A provider without receipt settings answers `404`.
//!
//! Two kinds of route: the operator's (`/v1/providers/twilio/status`, ...), checked with
//! the operator's secrets, for messages sent through the operator's provider accounts; and
//! each tenant's (`.../{tenant_id}`), checked with the secrets of that tenant's own
//! integrations, whose receipts move only that tenant's deliveries (`Receipt::tenant_id`).

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use bootstrap::ExposeSecret;
use domain::Channel;
use store::Receipt;
use uuid::Uuid;

use crate::{
    AppState,
    error::{ApiError, Problem},
    receipts::{meta, ses, sns::Envelope, twilio},
};

#[utoipa::path(post, path = "/v1/providers/twilio/status", operation_id = "receiveTwilioStatus", tag = "providers", security(()),
    params(("X-Twilio-Signature" = String, Header,
        description = "Base64 HMAC-SHA1, keyed with the auth token, of the public URL and the sorted parameters")),
    request_body(content = std::collections::HashMap<String, String>, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's status callback: `MessageSid`, `MessageStatus`, `ErrorCode`, ...", example = json!({"MessageSid": "SM0123456789abcdef0123456789abcdef", "MessageStatus": "delivered",
            "AccountSid": "AC0123456789abcdef0123456789abcdef", "To": "+15551234567"})),
    responses(
        (status = 200, description = "Taken: a `delivered`, `undelivered` or `failed` status moved the delivery forwards, anything else changed nothing"),
        (status = 400, description = "`MessageSid` or `MessageStatus` is missing", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Unsigned or mis-signed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Twilio receipts are not configured", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/providers/twilio/status`: Twilio's `StatusCallback`.
pub async fn twilio_status(
    State(app): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    // An unsigned request is refused first, whether or not the route is configured.
    let signature = header_str(&headers, "x-twilio-signature")
        .ok_or(ApiError::InvalidSignature("X-Twilio-Signature is missing"))?;
    let twilio = app.receipts.twilio.as_ref().ok_or(ApiError::NotFound)?;
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    if !twilio.verify(uri.query(), &params, signature) {
        return Err(ApiError::InvalidSignature("X-Twilio-Signature does not sign this request"));
    }
    take_twilio(&app, &params, &headers, None).await
}

#[utoipa::path(post, path = "/v1/providers/twilio/status/{tenant_id}", operation_id = "receiveTenantTwilioStatus", tag = "providers", security(()),
    params(("tenant_id" = Uuid, Path, description = "The tenant whose Twilio integration sent the message"),
        ("X-Twilio-Signature" = String, Header,
        description = "Base64 HMAC-SHA1, keyed with the auth token of one of the tenant's `twilio` integrations, of this route's public URL and the sorted parameters")),
    request_body(content = std::collections::HashMap<String, String>, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's status callback for a message sent through the tenant's own integration", example = json!({"MessageSid": "SM0123456789abcdef0123456789abcdef", "MessageStatus": "delivered",
            "AccountSid": "AC0123456789abcdef0123456789abcdef", "To": "+15551234567"})),
    responses(
        (status = 200, description = "Taken: a `delivered`, `undelivered` or `failed` status moved the tenant's delivery forwards (never another tenant's), anything else changed nothing"),
        (status = 400, description = "`MessageSid` or `MessageStatus` is missing", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not signed with the auth token of one of the tenant's Twilio integrations", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`integrations.receipts_url` is not configured", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/providers/twilio/status/{tenant_id}`: the `StatusCallback` a tenant's Twilio
/// client asks for (`IntegrationRules::twilio_status_callback`).
pub async fn tenant_twilio_status(
    State(app): State<AppState>,
    Path(tenant_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let tenant_id = Uuid::parse_str(&tenant_id).map_err(|_| ApiError::NotFound)?;
    let url = app.integrations.rules().twilio_status_callback(tenant_id).ok_or(ApiError::NotFound)?;
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let signature = header_str(&headers, "x-twilio-signature")
        .ok_or(ApiError::InvalidSignature("X-Twilio-Signature is missing"))?;
    let channels = [Channel::Sms, Channel::Whatsapp];
    let tokens = app.integrations.receipt_secrets(&app.store, tenant_id, "twilio", &channels, "auth_token").await?;
    let signed = tokens.iter().any(|token| {
        twilio::Twilio::signed_with(token.expose_secret().as_bytes(), &url)
            .is_ok_and(|twilio| twilio.verify(uri.query(), &params, signature))
    });
    if !signed {
        return Err(ApiError::InvalidSignature("X-Twilio-Signature is not of this tenant's Twilio integrations"));
    }
    take_twilio(&app, &params, &headers, Some(tenant_id)).await
}

/// Applies a signed Twilio callback, scoped to `tenant` when it came on a tenant's route.
async fn take_twilio(
    app: &AppState,
    params: &[(String, String)],
    headers: &HeaderMap,
    tenant: Option<Uuid>,
) -> Result<StatusCode, ApiError> {
    let Some(receipt) = twilio::receipt(params).map_err(|field| ApiError::field(field, "is required"))? else {
        return Ok(StatusCode::OK);
    };
    // Twilio's id for this callback, the same when it retries it (not signed: it spares
    // work, while applying a receipt twice would move nothing backwards anyway).
    let token = header_str(headers, "i-twilio-idempotency-token").filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN);
    apply_once(app, Receipt { tenant_id: tenant, ..receipt }, token).await?;
    Ok(StatusCode::OK)
}

#[utoipa::path(post, path = "/v1/providers/ses/events", operation_id = "receiveSesEvents", tag = "providers", security(()),
    params(("x-amz-sns-message-type" = Option<String>, Header,
        description = "`Notification`, `SubscriptionConfirmation` or `UnsubscribeConfirmation`; must agree with the signed `Type`")),
    request_body(content = String, content_type = "text/plain",
        description = "An SNS message (JSON, sent as text) signed by SNS; a `Notification`'s `Message` is an SES event", example = json!(r#"{"Type": "Notification", "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-events", "Timestamp": "2026-12-07T12:00:00.000Z", "SignatureVersion": "2", "Signature": "...", "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-example.pem", "Message": "{\"eventType\":\"Delivery\",\"mail\":{\"messageId\":\"0102018f-example\"}}"}"#)),
    responses(
        (status = 200, description = "Taken: a subscription confirmed, or an SES event applied (a `Delivery`, a permanent `Bounce` or a `Complaint`; anything else changes nothing)"),
        (status = 403, description = "Not signed by SNS under a certificate from an allowed host, or of a topic not on the allow-list", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "SES receipts are not configured", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The signing certificate or the subscription URL could not be reached; SNS sends again", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/providers/ses/events`: SES events through an SNS topic subscribed over HTTPS.
pub async fn ses_events(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<StatusCode, ApiError> {
    let sns = app.receipts.ses.as_ref().ok_or(ApiError::NotFound)?;
    let envelope = sns_envelope(&headers, &body)?;
    sns.verify(&envelope).await?;
    take_sns(&app, sns, &envelope, None).await
}

#[utoipa::path(post, path = "/v1/providers/ses/events/{tenant_id}", operation_id = "receiveTenantSesEvents", tag = "providers", security(()),
    params(("tenant_id" = Uuid, Path, description = "The tenant whose SES integration sent the messages"),
        ("x-amz-sns-message-type" = Option<String>, Header,
        description = "`Notification`, `SubscriptionConfirmation` or `UnsubscribeConfirmation`; must agree with the signed `Type`")),
    request_body(content = String, content_type = "text/plain",
        description = "An SNS message signed by SNS, of the topic named by the tenant's `ses` integration (`events_topic_arn`)", example = json!(r#"{"Type": "Notification", "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-events", "Timestamp": "2026-12-07T12:00:00.000Z", "SignatureVersion": "2", "Signature": "...", "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-example.pem", "Message": "{\"eventType\":\"Delivery\",\"mail\":{\"messageId\":\"0102018f-example\"}}"}"#)),
    responses(
        (status = 200, description = "Taken: a subscription confirmed, or an SES event applied to the tenant's deliveries (never another tenant's)"),
        (status = 403, description = "Not signed by SNS, or not of the tenant's events topic", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "SES receipts are not configured", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The signing certificate or the subscription URL could not be reached; SNS sends again", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/providers/ses/events/{tenant_id}`: SES events of a tenant's own configuration
/// set, through the tenant's own SNS topic.
pub async fn tenant_ses_events(
    State(app): State<AppState>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let tenant_id = Uuid::parse_str(&tenant_id).map_err(|_| ApiError::NotFound)?;
    // SNS's certificates are checked under the operator's settings (hosts, issuers).
    let sns = app.receipts.ses.as_ref().ok_or(ApiError::NotFound)?;
    let envelope = sns_envelope(&headers, &body)?;
    // Anyone can have SNS sign a message of a topic of their own: only the tenant's topic
    // is taken, and its events move only the tenant's deliveries.
    let topics: Vec<String> = app
        .store
        .list_integrations(tenant_id)
        .await?
        .into_iter()
        .filter(|i| i.channel == Channel::Email && i.provider == ses::PROVIDER)
        .filter_map(|i| i.settings.get("events_topic_arn").and_then(serde_json::Value::as_str).map(str::to_owned))
        .collect();
    sns.verify_for(&envelope, &topics).await?;
    take_sns(&app, sns, &envelope, Some(tenant_id)).await
}

/// Acts on a verified SNS message: confirms a subscription, or applies an SES event,
/// scoped to `tenant` when it came on a tenant's route.
async fn take_sns(
    app: &AppState,
    sns: &crate::receipts::sns::Sns,
    envelope: &Envelope,
    tenant: Option<Uuid>,
) -> Result<StatusCode, ApiError> {
    match envelope.kind.as_str() {
        "SubscriptionConfirmation" => {
            sns.confirm(envelope).await?;
            tracing::info!(topic_arn = envelope.topic_arn, "SNS subscription confirmed");
        }
        "Notification" => match ses::receipt(&envelope.message) {
            // SNS repeats a message under its MessageId (signed).
            Ok(Some(receipt)) => {
                apply_once(app, Receipt { tenant_id: tenant, ..receipt }, Some(&envelope.message_id)).await?
            }
            Ok(None) => tracing::debug!(message_id = envelope.message_id, "SES event changes nothing"),
            // Sending it again would not make it readable: take it, and say so.
            Err(e) => tracing::warn!(message_id = envelope.message_id, error = %e, "SNS message is not an SES event"),
        },
        _ => tracing::info!(kind = envelope.kind, topic_arn = envelope.topic_arn, "SNS message taken"),
    }
    Ok(StatusCode::OK)
}

#[utoipa::path(get, path = "/v1/providers/meta/webhook", operation_id = "verifyMetaWebhook", tag = "providers", security(()),
    params(
        ("hub.mode" = String, Query, description = "`subscribe`"),
        ("hub.verify_token" = String, Query, description = "The configured verify token"),
        ("hub.challenge" = String, Query, description = "Echoed back"),
    ),
    responses(
        (status = 200, description = "`hub.challenge`, as text", body = String, content_type = "text/plain"),
        (status = 400, description = "`hub.challenge` is missing", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a subscription, or the verify token differs", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Meta receipts are not configured", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/providers/meta/webhook`: Meta verifying the webhook before subscribing it.
pub async fn meta_verify(
    State(app): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let meta = app.receipts.meta.as_ref().ok_or(ApiError::NotFound)?;
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if get("hub.mode") != Some("subscribe") || !get("hub.verify_token").is_some_and(|t| meta.is_verify_token(t)) {
        return Err(ApiError::InvalidSignature("not a subscription with the configured verify token"));
    }
    let challenge = get("hub.challenge").ok_or_else(|| ApiError::field("hub.challenge", "is required"))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], challenge.to_owned()).into_response())
}

#[utoipa::path(post, path = "/v1/providers/meta/webhook", operation_id = "receiveMetaWebhook", tag = "providers", security(()),
    params(("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the raw body, keyed with the app secret")),
    request_body(content = Object, content_type = "application/json",
        description = "A WhatsApp Cloud API webhook; `entry[].changes[].value.statuses[]` are applied", example = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages",
            "value": {"messaging_product": "whatsapp", "statuses": [{"id": "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI", "status": "delivered",
            "timestamp": "1765108800", "recipient_id": "15551234567"}]}}]}]})),
    responses(
        (status = 200, description = "Taken: `delivered`/`read` and `failed` statuses moved their deliveries forwards, anything else changed nothing"),
        (status = 403, description = "Unsigned or mis-signed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Meta receipts are not configured", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/providers/meta/webhook`: message statuses from the WhatsApp Cloud API.
pub async fn meta_webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    // An unsigned request is refused first, whether or not the route is configured.
    let signature = header_str(&headers, "x-hub-signature-256")
        .ok_or(ApiError::InvalidSignature("X-Hub-Signature-256 is missing"))?;
    let meta = app.receipts.meta.as_ref().ok_or(ApiError::NotFound)?;
    if !meta.verify(Some(signature), &body) {
        return Err(ApiError::InvalidSignature("X-Hub-Signature-256 does not sign this body"));
    }
    take_meta(&app, &body, None).await
}

#[utoipa::path(get, path = "/v1/providers/meta/webhook/{tenant_id}", operation_id = "verifyTenantMetaWebhook", tag = "providers", security(()),
    params(
        ("tenant_id" = Uuid, Path, description = "The tenant whose Meta integration's webhook this is"),
        ("hub.mode" = String, Query, description = "`subscribe`"),
        ("hub.verify_token" = String, Query, description = "The `verify_token` of the tenant's `meta` integration"),
        ("hub.challenge" = String, Query, description = "Echoed back"),
    ),
    responses(
        (status = 200, description = "`hub.challenge`, as text", body = String, content_type = "text/plain"),
        (status = 400, description = "`hub.challenge` is missing", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a subscription, or not the verify token of the tenant's Meta integration", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`tenant_id` is not a tenant id", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/providers/meta/webhook/{tenant_id}`: Meta verifying a tenant's webhook.
pub async fn tenant_meta_verify(
    State(app): State<AppState>,
    Path(tenant_id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let tenant_id = Uuid::parse_str(&tenant_id).map_err(|_| ApiError::NotFound)?;
    let get = |name: &str| params.iter().find(|(k, v)| k == name && !v.is_empty()).map(|(_, v)| v.as_str());
    let tokens = meta_secrets(&app, tenant_id, "verify_token").await?;
    let given = get("hub.verify_token").unwrap_or_default();
    if get("hub.mode") != Some("subscribe") || !tokens.iter().any(|t| meta::same_token(given, t.expose_secret())) {
        return Err(ApiError::InvalidSignature("not a subscription with this tenant's verify token"));
    }
    let challenge = get("hub.challenge").ok_or_else(|| ApiError::field("hub.challenge", "is required"))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], challenge.to_owned()).into_response())
}

#[utoipa::path(post, path = "/v1/providers/meta/webhook/{tenant_id}", operation_id = "receiveTenantMetaWebhook", tag = "providers", security(()),
    params(("tenant_id" = Uuid, Path, description = "The tenant whose Meta integration sent the messages"),
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the raw body, keyed with the `app_secret` of the tenant's `meta` integration")),
    request_body(content = Object, content_type = "application/json",
        description = "A WhatsApp Cloud API webhook of the tenant's own app; `entry[].changes[].value.statuses[]` are applied", example = json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"field": "messages",
            "value": {"messaging_product": "whatsapp", "statuses": [{"id": "wamid.HBgLMTU1NTEyMzQ1NjcVAgARGBI", "status": "delivered",
            "timestamp": "1765108800", "recipient_id": "15551234567"}]}}]}]})),
    responses(
        (status = 200, description = "Taken: statuses moved the tenant's deliveries forwards (never another tenant's), anything else changed nothing"),
        (status = 403, description = "Not signed with the app secret of the tenant's Meta integration", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`tenant_id` is not a tenant id", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/providers/meta/webhook/{tenant_id}`: statuses of messages a tenant's Meta
/// integration sent.
pub async fn tenant_meta_webhook(
    State(app): State<AppState>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let tenant_id = Uuid::parse_str(&tenant_id).map_err(|_| ApiError::NotFound)?;
    let secrets = meta_secrets(&app, tenant_id, "app_secret").await?;
    let header = header_str(&headers, "x-hub-signature-256");
    if !secrets.iter().any(|s| meta::signed_with(s.expose_secret().as_bytes(), header, &body)) {
        return Err(ApiError::InvalidSignature("X-Hub-Signature-256 is not of this tenant's Meta integration"));
    }
    take_meta(&app, &body, Some(tenant_id)).await
}

/// The secret `key` of the tenant's `meta` integration.
async fn meta_secrets(app: &AppState, tenant_id: Uuid, key: &str) -> Result<Vec<bootstrap::SecretString>, ApiError> {
    app.integrations.receipt_secrets(&app.store, tenant_id, meta::PROVIDER, &[Channel::Whatsapp], key).await
}

/// Applies the statuses of a signed Meta webhook, scoped to `tenant` when it came on a
/// tenant's route.
async fn take_meta(app: &AppState, body: &[u8], tenant: Option<Uuid>) -> Result<StatusCode, ApiError> {
    match meta::receipts(body) {
        Ok(receipts) => {
            for receipt in receipts {
                apply(app, Receipt { tenant_id: tenant, ..receipt }).await?;
            }
        }
        // Meta would send it again for days, and it would not become readable.
        Err(e) => tracing::warn!(error = %e, "Meta webhook body is not a WhatsApp webhook"),
    }
    Ok(StatusCode::OK)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The longest callback token remembered; a longer one is not Twilio's and is ignored.
const MAX_TOKEN: usize = 256;

/// Applies the receipt unless its callback's `token` was taken already, then remembers
/// the token (so a retry is acknowledged without applying it twice).
async fn apply_once(app: &AppState, receipt: Receipt, token: Option<&str>) -> Result<(), ApiError> {
    let provider = receipt.provider;
    // A tenant's tokens are its own: another tenant, signing with its own secret, cannot
    // mark a callback of this tenant's as taken (the token is not signed).
    let scoped = receipt.tenant_id.zip(token).map(|(tenant, token)| format!("{tenant}/{token}"));
    let token = scoped.as_deref().or(token);
    if let Some(token) = token
        && app.store.receipt_token_seen(provider, token).await?
    {
        tracing::debug!(provider, "callback seen already: acknowledged, not applied again");
        return Ok(());
    }
    apply(app, receipt).await?;
    if let Some(token) = token {
        app.store.remember_receipt_token(provider, token).await?;
    }
    Ok(())
}

/// Applies a receipt and logs what it did (never the addresses).
async fn apply(app: &AppState, receipt: Receipt) -> Result<(), ApiError> {
    let applied = app.store.apply_receipt(&receipt).await?;
    let status = receipt.status.map(|s| s.as_str());
    let tenant = receipt.tenant_id.map(tracing::field::display);
    if applied.known {
        tracing::info!(
            provider = receipt.provider,
            tenant,
            status,
            changed = applied.changed,
            suppressed = applied.suppressed,
            "receipt applied"
        );
    } else if applied.pending {
        // A send not recorded yet (its outcome applies it), or another system's message on
        // the same account (purged unclaimed).
        tracing::info!(provider = receipt.provider, tenant, status, "receipt kept until its send is recorded");
    } else {
        // Another tenant's message, named on this tenant's route: never applied.
        tracing::warn!(provider = receipt.provider, tenant, status, "receipt names no delivery of its tenant: dropped");
    }
    tracing::debug!(provider = receipt.provider, provider_message_id = receipt.provider_message_id, "receipt");
    Ok(())
}

/// The SNS message of a receipt's body, its type agreeing with the header's: anything but
/// a whole SNS message carries no signature to check.
fn sns_envelope(headers: &HeaderMap, body: &[u8]) -> Result<Envelope, ApiError> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|_| ApiError::InvalidSignature("the body is not a signed SNS message"))?;
    if header_str(headers, "x-amz-sns-message-type").is_some_and(|kind| kind != envelope.kind) {
        return Err(ApiError::InvalidSignature("x-amz-sns-message-type differs from the signed Type"));
    }
    Ok(envelope)
}
