//! Delivery receipts from the providers (docs/providers.md §9). These take no API
//! key: a request must carry its provider's signature, checked on the raw request before
//! anything in it is used. A provider without receipt settings answers `404`.

use axum::{
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use store::Receipt;

use crate::{
    AppState,
    error::{ApiError, Problem},
    receipts::{meta, ses, sns::Envelope, twilio},
};

#[utoipa::path(post, path = "/v1/providers/twilio/status", tag = "providers", security(()),
    params(("X-Twilio-Signature" = String, Header,
        description = "Base64 HMAC-SHA1, keyed with the auth token, of the public URL and the sorted parameters")),
    request_body(content = std::collections::HashMap<String, String>, content_type = "application/x-www-form-urlencoded",
        description = "Twilio's status callback: `MessageSid`, `MessageStatus`, `ErrorCode`, ..."),
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
    let twilio = app.receipts.twilio.as_ref().ok_or(ApiError::NotFound)?;
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let signature = header_str(&headers, "x-twilio-signature")
        .ok_or(ApiError::InvalidSignature("X-Twilio-Signature is missing"))?;
    if !twilio.verify(uri.query(), &params, signature) {
        return Err(ApiError::InvalidSignature("X-Twilio-Signature does not sign this request"));
    }
    let Some(receipt) = twilio::receipt(&params).map_err(|field| ApiError::field(field, "is required"))? else {
        return Ok(StatusCode::OK);
    };
    // Twilio's id for this callback, the same when it retries it (not signed: it spares
    // work, while applying a receipt twice would move nothing backwards anyway).
    let token = header_str(&headers, "i-twilio-idempotency-token").filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN);
    apply_once(&app, receipt, token).await?;
    Ok(StatusCode::OK)
}

#[utoipa::path(post, path = "/v1/providers/ses/events", tag = "providers", security(()),
    params(("x-amz-sns-message-type" = Option<String>, Header,
        description = "`Notification`, `SubscriptionConfirmation` or `UnsubscribeConfirmation`; must agree with the signed `Type`")),
    request_body(content = String, content_type = "text/plain",
        description = "An SNS message (JSON, sent as text) signed by SNS; a `Notification`'s `Message` is an SES event"),
    responses(
        (status = 200, description = "Taken: a subscription confirmed, or an SES event applied (a `Delivery`, a permanent `Bounce` or a `Complaint`; anything else changes nothing)"),
        (status = 403, description = "Not signed by SNS under a certificate from an allowed host, or of a topic not on the allow-list", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "SES receipts are not configured", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The signing certificate or the subscription URL could not be reached; SNS sends again", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/providers/ses/events`: SES events through an SNS topic subscribed over HTTPS.
pub async fn ses_events(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<StatusCode, ApiError> {
    let sns = app.receipts.ses.as_ref().ok_or(ApiError::NotFound)?;
    // Anything but a whole SNS message carries no signature to check.
    let envelope: Envelope = serde_json::from_slice(&body)
        .map_err(|_| ApiError::InvalidSignature("the body is not a signed SNS message"))?;
    if header_str(&headers, "x-amz-sns-message-type").is_some_and(|kind| kind != envelope.kind) {
        return Err(ApiError::InvalidSignature("x-amz-sns-message-type differs from the signed Type"));
    }
    sns.verify(&envelope).await?;
    match envelope.kind.as_str() {
        "SubscriptionConfirmation" => {
            sns.confirm(&envelope).await?;
            tracing::info!(topic_arn = envelope.topic_arn, "SNS subscription confirmed");
        }
        "Notification" => match ses::receipt(&envelope.message) {
            // SNS repeats a message under its MessageId (signed).
            Ok(Some(receipt)) => apply_once(&app, receipt, Some(&envelope.message_id)).await?,
            Ok(None) => tracing::debug!(message_id = envelope.message_id, "SES event changes nothing"),
            // Sending it again would not make it readable: take it, and say so.
            Err(e) => tracing::warn!(message_id = envelope.message_id, error = %e, "SNS message is not an SES event"),
        },
        _ => tracing::info!(kind = envelope.kind, topic_arn = envelope.topic_arn, "SNS message taken"),
    }
    Ok(StatusCode::OK)
}

#[utoipa::path(get, path = "/v1/providers/meta/webhook", tag = "providers", security(()),
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

#[utoipa::path(post, path = "/v1/providers/meta/webhook", tag = "providers", security(()),
    params(("X-Hub-Signature-256" = String, Header, description = "`sha256=` and the hex HMAC-SHA256 of the raw body, keyed with the app secret")),
    request_body(content = Object, content_type = "application/json",
        description = "A WhatsApp Cloud API webhook; `entry[].changes[].value.statuses[]` are applied"),
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
    let meta = app.receipts.meta.as_ref().ok_or(ApiError::NotFound)?;
    if !meta.verify(header_str(&headers, "x-hub-signature-256"), &body) {
        return Err(ApiError::InvalidSignature("X-Hub-Signature-256 does not sign this body"));
    }
    match meta::receipts(&body) {
        Ok(receipts) => {
            for receipt in receipts {
                apply(&app, receipt).await?;
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
    if applied.known {
        tracing::info!(
            provider = receipt.provider,
            status,
            changed = applied.changed,
            suppressed = applied.suppressed,
            "receipt applied"
        );
    } else {
        // A send not recorded yet (its outcome applies it), or another system's message on
        // the same account (purged unclaimed).
        tracing::info!(provider = receipt.provider, status, "receipt kept until its send is recorded");
    }
    tracing::debug!(provider = receipt.provider, provider_message_id = receipt.provider_message_id, "receipt");
    Ok(())
}
