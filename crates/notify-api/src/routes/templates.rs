//! Templates of a notification type per channel and locale (`PUT/GET/DELETE
//! /v1/templates/{type}/{channel}?locale=`), and their preview (`POST
//! /v1/templates/preview`). A template is compiled when it is put: one that does not
//! compile is refused there, not at send time.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
};
use domain::{
    Channel, Content, FieldError, locale,
    template::{RenderError, Template, TemplateView},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    auth::Authenticated,
    error::{ApiError, Problem},
    json::{self, JsonBody},
};

#[utoipa::path(put, path = "/v1/templates/{type}/{channel}", operation_id = "putTemplate", tag = "templates",
    params(
        ("type" = String, Path, description = "A notification type of the tenant", example = "invoice.overdue"),
        ("channel" = Channel, Path, description = "`email` (subject, text, html), `sms` or `whatsapp` (text), `chat` (text, structured: a JSON document whose strings may hold expressions), `in_app` (title, body, action_url), `push` (title, body, action_url, image, sound, data: an object whose values are templates, badge: a number)", example = "email"),
        ("locale" = Option<String>, Query, description = "BCP 47 tag, normalized (`pt-br` -> `pt-BR`); default: the tenant's default locale", example = "de"),
    ),
    request_body(content = Content, description = "The minijinja sources of the channel's fields. Variables come from the notification's `data`, and `subscriber` (its stored fields) when it goes to a subscriber; a variable missing at send time is a `422`. Only `html` is HTML-escaped.",
        example = json!({"subject": "Rechnung {{ invoice.number }} ist überfällig",
            "text": "Hallo {{ name }}, bitte begleichen Sie {{ invoice.amount }}.",
            "html": "<p>Hallo {{ name }}, bitte begleichen Sie <b>{{ invoice.amount }}</b>.</p>"})),
    responses(
        (status = 200, description = "Stored (created or replaced)", body = TemplateView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown channel, invalid locale, a type the tenant has not defined, a field that does not compile or that the channel does not use, or a required field missing; `errors` names each (`content.html`)",
            body = Problem, content_type = "application/problem+json"),
    ))]
/// `PUT /v1/templates/{type}/{channel}?locale=`: creates or replaces a template.
pub async fn put(
    State(app): State<AppState>,
    auth: Authenticated,
    Path((kind, channel)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<TemplateView>, ApiError> {
    let tenant = auth.0.tenant_id;
    let channel = parse_channel(&channel)?;
    let locale = locale_of(&app, tenant, &params).await?;
    let source: Content = json::from_value(body).map_err(|e| under(e, "content"))?;
    Template::compile(channel, &source).map_err(ApiError::Validation)?;
    match app.store.put_template(tenant, &kind, channel, &locale, &source).await? {
        Some(view) => {
            tracing::info!(tenant_id = %tenant, kind, %channel, locale, "template stored");
            Ok(Json(view))
        }
        None => Err(no_type(&kind)),
    }
}

#[utoipa::path(get, path = "/v1/templates/{type}/{channel}", operation_id = "getTemplate", tag = "templates",
    params(
        ("type" = String, Path, description = "A notification type of the tenant", example = "invoice.overdue"),
        ("channel" = Channel, Path, example = "email"),
        ("locale" = Option<String>, Query, description = "Default: the tenant's default locale (no fallback: exactly this locale)", example = "de"),
    ),
    responses(
        (status = 200, description = "The template's sources", body = TemplateView),
        (status = 404, description = "No template of this type, channel and locale for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown channel or invalid locale", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/templates/{type}/{channel}?locale=`.
pub async fn get(
    State(app): State<AppState>,
    auth: Authenticated,
    Path((kind, channel)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<TemplateView>, ApiError> {
    let tenant = auth.0.tenant_id;
    let channel = parse_channel(&channel)?;
    let locale = locale_of(&app, tenant, &params).await?;
    app.store.get_template(tenant, &kind, channel, &locale).await?.map(Json).ok_or(ApiError::NotFound)
}

#[utoipa::path(delete, path = "/v1/templates/{type}/{channel}", operation_id = "deleteTemplate", tag = "templates",
    params(
        ("type" = String, Path, description = "A notification type of the tenant", example = "invoice.overdue"),
        ("channel" = Channel, Path, example = "email"),
        ("locale" = Option<String>, Query, description = "Default: the tenant's default locale", example = "de"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No template of this type, channel and locale for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown channel or invalid locale", body = Problem, content_type = "application/problem+json"),
    ))]
/// `DELETE /v1/templates/{type}/{channel}?locale=`.
pub async fn delete(
    State(app): State<AppState>,
    auth: Authenticated,
    Path((kind, channel)): Path<(String, String)>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<StatusCode, ApiError> {
    let tenant = auth.0.tenant_id;
    let channel = parse_channel(&channel)?;
    let locale = locale_of(&app, tenant, &params).await?;
    if app.store.delete_template(tenant, &kind, channel, &locale).await? {
        tracing::info!(tenant_id = %tenant, kind, %channel, locale, "template deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// What to preview: inline sources (`content`), or the stored template of `type` found
/// through the locale fallback chain.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// A notification type: preview its stored template. Not with `content`.
    #[serde(rename = "type")]
    kind: Option<String>,
    channel: Channel,
    /// With `type`: the locale to look for (then its shorter forms, then the tenant's
    /// default). Default: the tenant's default locale.
    locale: Option<String>,
    /// Template sources to preview instead of a stored template.
    #[serde(default, deserialize_with = "domain::object::optional")]
    content: Option<Content>,
    /// The notification's `data`: the template's variables.
    #[serde(default)]
    #[schema(value_type = Object)]
    data: Map<String, Value>,
    /// A subscriber's fields, as `subscriber` in the template.
    #[schema(value_type = Option<Object>)]
    subscriber: Option<Map<String, Value>>,
}

#[derive(Serialize, ToSchema)]
pub struct Preview {
    channel: Channel,
    /// The locale of the stored template used (absent for inline sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<String>,
    /// The rendered fields.
    content: Content,
}

#[utoipa::path(post, path = "/v1/templates/preview", operation_id = "previewTemplate", tag = "templates",
    request_body(content = PreviewRequest, description = "Either `content` (inline sources) or `type` (a stored template, found by `locale` with fallback to its shorter forms and the tenant's default locale), with the `data` (and optionally `subscriber`) to render them with.",
        example = json!({"channel": "email",
            "content": {"subject": "Invoice {{ invoice.number }} is overdue",
                "text": "Hello {{ subscriber.name }}, please pay {{ invoice.amount }}.",
                "html": "<p>Hello {{ subscriber.name }}, please pay <b>{{ invoice.amount }}</b>.</p>"},
            "data": {"invoice": {"number": "2026-0042", "amount": "€120.00"}},
            "subscriber": {"name": "Ada <Lovelace>"}})),
    responses(
        (status = 200, description = "The rendered content", body = Preview),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Sources that do not compile (`content.<field>`); a variable missing from `data` (`data.<variable>`, the message names the template's field) or `subscriber`; a field that does not render (`content.<field>`); with `type`: no such type, or no template of it for the channel in any locale of the fallback chain (`type`)",
            body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/templates/preview`: renders inline sources or a stored template with the
/// given data, as a notification would be.
pub async fn preview(
    State(app): State<AppState>,
    auth: Authenticated,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Preview>, ApiError> {
    let tenant = auth.0.tenant_id;
    let request: PreviewRequest = json::from_value(body)?;
    let (template, locale) = match (request.content, request.kind) {
        (Some(_), Some(_)) => return Err(ApiError::field("type", "give either `type` or `content`, not both")),
        (None, None) => return Err(ApiError::field("type", "give `type` (a stored template) or `content` (sources)")),
        (Some(source), None) => {
            if request.locale.is_some() {
                return Err(ApiError::field("locale", "applies only to a stored template (with `type`)"));
            }
            (Template::compile(request.channel, &source).map_err(ApiError::Validation)?, None)
        }
        (None, Some(kind)) => {
            let wanted = match request.locale.as_deref() {
                Some(tag) => Some(locale::normalize(tag).ok_or_else(invalid_locale)?),
                None => None,
            };
            let default = app.store.default_locale(tenant).await?;
            let chain = locale::fallback_chain(wanted.as_deref(), &default);
            let stored = app.store.templates_of(tenant, std::slice::from_ref(&kind)).await?;
            let found =
                chain.iter().find_map(|l| stored.iter().find(|t| t.channel == request.channel && &t.locale == l));
            let Some(found) = found else {
                return Err(ApiError::field(
                    "type",
                    format!("no {} template of `{kind}` in {}", request.channel, chain.join(", ")),
                ));
            };
            (
                Template::compile(request.channel, &found.content).map_err(ApiError::Validation)?,
                Some(found.locale.clone()),
            )
        }
    };
    let mut context = request.data;
    if let Some(subscriber) = request.subscriber {
        context.insert("subscriber".into(), Value::Object(subscriber));
    }
    let content = template.render(&Value::Object(context)).map_err(render_error)?;
    Ok(Json(Preview { channel: request.channel, locale, content }))
}

/// A render error as the field of the request it comes from: `data.customer`, or
/// `subscriber.name` for the subscriber's fields.
fn render_error(e: RenderError) -> ApiError {
    match e {
        RenderError::MissingVariable { field, variable } => {
            let path = if variable == "subscriber" || variable.starts_with("subscriber.") {
                variable
            } else {
                format!("data.{variable}")
            };
            ApiError::field(&path, format!("is missing; the template's {field} uses it"))
        }
        RenderError::Failed { field, message } => {
            ApiError::field(&format!("content.{field}"), format!("does not render: {message}"))
        }
    }
}

fn parse_channel(channel: &str) -> Result<Channel, ApiError> {
    channel.parse().map_err(|_| {
        let known: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        ApiError::field("channel", format!("unknown channel `{channel}`; one of {}", known.join(", ")))
    })
}

/// The `locale` query parameter in normal form, or the tenant's default locale.
async fn locale_of(app: &AppState, tenant: Uuid, params: &[(String, String)]) -> Result<String, ApiError> {
    let mut locale = None;
    for (name, value) in params {
        match name.as_str() {
            "locale" => locale = Some(locale::normalize(value).ok_or_else(invalid_locale)?),
            other => return Err(ApiError::field(other, "unknown query parameter")),
        }
    }
    match locale {
        Some(locale) => Ok(locale),
        None => Ok(app.store.default_locale(tenant).await?),
    }
}

fn invalid_locale() -> ApiError {
    ApiError::field("locale", "must be a BCP 47 language tag such as `de` or `pt-BR`")
}

fn no_type(kind: &str) -> ApiError {
    ApiError::field("type", format!("no notification type `{kind}`; create it with PUT /v1/types/{kind}"))
}

/// A shape error of the body named under `prefix` (`content.subjet`).
fn under(e: ApiError, prefix: &str) -> ApiError {
    match e {
        ApiError::Validation(errors) => ApiError::Validation(
            errors
                .into_iter()
                .map(|e| {
                    let field = if e.field == "(body)" { prefix.to_owned() } else { format!("{prefix}.{}", e.field) };
                    FieldError { field, ..e }
                })
                .collect(),
        ),
        other => other,
    }
}
