//! The OpenAPI document, generated from the handlers' annotations and the types they
//! take and return, served at `GET /openapi.json`.

use axum::Json;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Content, RefOr, Response,
        path::ParameterIn,
        schema::{ObjectBuilder, Schema, SchemaType, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{error::Problem, routes};

#[derive(OpenApi)]
#[openapi(
    info(title = "Notify", description = "Notification delivery: accept over HTTP, deliver reliably over email, SMS, WhatsApp, chat, push, \
        Novu and the in-app inbox. No string, in a parameter or a JSON body, may hold a NUL character (U+0000): \
        the answer is `422` naming the field. Every JSON body is an object."),
    paths(
        routes::notifications::create,
        routes::notifications::batch,
        routes::notifications::list,
        routes::notifications::get,
        routes::notifications::deliveries,
        routes::notifications::cancel,
        routes::deliveries::retry,
        routes::templates::put,
        routes::templates::get,
        routes::templates::delete,
        routes::templates::preview,
        routes::subscribers::put,
        routes::subscribers::get,
        routes::subscribers::erase,
        routes::subscribers::get_preferences,
        routes::subscribers::put_preferences,
        routes::devices::put,
        routes::devices::list,
        routes::devices::get,
        routes::devices::delete,
        routes::topics::change,
        routes::topics::list,
        routes::types::put,
        routes::types::get,
        routes::types::list,
        routes::integrations::put,
        routes::integrations::list,
        routes::integrations::get,
        routes::integrations::delete,
        routes::integrations::check,
        routes::webhooks::create,
        routes::webhooks::list,
        routes::webhooks::get,
        routes::webhooks::patch,
        routes::webhooks::delete,
        routes::webhooks::rotate_secret,
        routes::webhooks::attempts,
        routes::webhooks::test,
        routes::webhooks::replay,
        routes::providers::twilio_status,
        routes::providers::ses_events,
        routes::providers::meta_verify,
        routes::providers::meta_webhook,
        routes::providers::tenant_twilio_status,
        routes::providers::tenant_ses_events,
        routes::providers::tenant_meta_verify,
        routes::providers::tenant_meta_webhook,
        routes::inbox::issue_token,
        routes::inbox::list,
        routes::inbox::count,
        routes::inbox::read,
        routes::inbox::unread,
        routes::inbox::archive,
        routes::inbox::read_all,
        routes::inbox::delete,
        routes::health::healthz,
        routes::health::readyz,
    ),
    components(schemas(Problem)),
    modifiers(&Security),
    security(("api_key" = [])),
    tags(
        (name = "notifications", description = "Send notifications and follow them"),
        (name = "deliveries", description = "One recipient on one channel"),
        (name = "templates", description = "Content of a notification type per channel and locale, as minijinja sources"),
        (name = "subscribers", description = "The people you notify, by your own ids: addresses, locale, time zone, preferences; erasure"),
        (name = "topics", description = "Named sets of subscribers: a notification to a topic goes to each member"),
        (name = "types", description = "Notification types: default channels, critical flag, category, Novu workflow, retry policy, default preferences"),
        (name = "devices", description = "A subscriber's push devices (FCM, APNs, Web Push), registered with the tenant's API key or by the subscriber's own app with its subscriber token"),
        (name = "inbox", description = "The end-user inbox: a subscriber token from `POST /v1/subscribers/{id}/token` (API key) reads and changes one subscriber's items"),
        (name = "integrations", description = "The tenant's own provider credentials and senders, per channel and provider, in failover order; secrets are sealed at rest and never returned"),
        (name = "webhooks", description = "Endpoints that receive the tenant's events (outcomes of notifications and deliveries, inbox reads), signed per Standard Webhooks"),
        (name = "providers", description = "Delivery receipts from the providers: signed by the provider, no API key"),
        (name = "operations", description = "Health of the process"),
    )
)]
pub struct ApiDoc;

/// The bearer API key, and the answers every `/v1/` operation can give (`401` only those
/// that take the key).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key of the tenant: `Authorization: Bearer <key>`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "subscriber_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A subscriber token from `POST /v1/subscribers/{id}/token`, for that subscriber's inbox and devices only: \
                         `Authorization: Bearer <token>`",
                    ))
                    .build(),
            ),
        );
        declare_preference_keys(components);
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            for operation in
                [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten()
            {
                let keyless = operation.security.as_ref().is_some_and(|s| s.iter().all(is_empty_requirement));
                for (status, description) in [
                    ("401", "Missing, unknown or revoked API key"),
                    ("500", "Internal error (logged)"),
                    (
                        "503",
                        "Database unreachable (`unavailable`), this replica at its admission limits (`overloaded`), \
                         or the request outlived `admission.request_timeout` (`timeout`); retry after `Retry-After`",
                    ),
                ] {
                    if keyless && status == "401" {
                        continue;
                    }
                    operation.responses.responses.entry(status.into()).or_insert_with(|| problem(description));
                }
                declare_refusals(path, operation);
            }
        }
    }
}

/// What the API refuses of every operation alike, declared on each: a JSON body without
/// its content type or over the size limit (`JsonBody`; the providers' receipts read
/// theirs raw, to check its signature), and a NUL character in a path or query parameter
/// (`routes::refuse_nul`, as PostgreSQL's text cannot hold one).
fn declare_refusals(path: &str, operation: &mut utoipa::openapi::path::Operation) {
    let json_body = operation.request_body.as_ref().is_some_and(|b| match b {
        RefOr::T(body) => body.content.contains_key("application/json"),
        RefOr::Ref(_) => true,
    }) && !operation.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == "providers"));
    if json_body {
        for (status, description) in [
            ("413", "The body is over the size limit"),
            ("415", "The body is not sent as `Content-Type: application/json`"),
        ] {
            operation.responses.responses.entry(status.into()).or_insert_with(|| problem(description));
        }
    }
    let mut any_string = false;
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else { continue };
        if matches!(parameter.parameter_in, ParameterIn::Path | ParameterIn::Query)
            && let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema
            && is_free_string(schema)
        {
            let own = PATH_IDS.iter().find(|(prefix, name, _)| {
                parameter.parameter_in == ParameterIn::Path && path.starts_with(prefix) && parameter.name == *name
            });
            schema.pattern = Some(own.map_or(NO_NUL, |(_, _, pattern)| pattern).to_owned());
            any_string = true;
        }
    }
    if any_string {
        operation
            .responses
            .responses
            .entry("422".into())
            .or_insert_with(|| problem("A parameter is invalid; `errors` names it"));
    }
}

/// The shapes of the ids the paths carry, as the domain checks them: a subscriber id
/// (`domain::subscriber::is_valid_subscriber_id`) and a key of a type, topic or template
/// (`domain::notification_type::is_valid_key`). A path under the prefix with the named
/// parameter takes its pattern.
const PATH_IDS: [(&str, &str, &str); 4] = [
    ("/v1/subscribers/{id}", "id", "^[^\\u0000-\\u001F\\u007F-\\u009F/]{1,200}$"),
    ("/v1/types/{key}", "key", KEY),
    ("/v1/topics/{key}", "key", KEY),
    ("/v1/templates/{type}", "type", KEY),
];
const KEY: &str = "^[A-Za-z0-9._:/-]{1,200}$";

/// The keys of a subscriber's `types` and `categories` preferences: type keys, at most
/// `domain::subscriber::MAX_PREFERENCE_ENTRIES` of each (a map's keys have no attribute
/// of their own to say so).
fn declare_preference_keys(components: &mut utoipa::openapi::Components) {
    let Some(RefOr::T(Schema::Object(preferences))) = components.schemas.get_mut("Preferences") else {
        return;
    };
    for field in ["types", "categories"] {
        if let Some(RefOr::T(Schema::Object(map))) = preferences.properties.get_mut(field) {
            map.property_names = Some(Box::new(ObjectBuilder::new().schema_type(Type::String).pattern(Some(KEY)).into()));
            map.max_properties = Some(domain::subscriber::MAX_PREFERENCE_ENTRIES);
        }
    }
}

/// Any string but one holding a NUL character.
const NO_NUL: &str = "^[^\\u0000]*$";

/// A string schema with no pattern, format or list of values of its own.
fn is_free_string(schema: &utoipa::openapi::schema::Object) -> bool {
    let string = match &schema.schema_type {
        SchemaType::Type(t) => *t == Type::String,
        SchemaType::Array(types) => types.contains(&Type::String),
        SchemaType::AnyValue => false,
    };
    string && schema.pattern.is_none() && schema.format.is_none() && schema.enum_values.is_none()
}

/// `security(())`: the operation takes no credentials.
fn is_empty_requirement(requirement: &utoipa::openapi::security::SecurityRequirement) -> bool {
    serde_json::to_value(requirement).is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
}

fn problem(description: &str) -> RefOr<Response> {
    let mut response = Response::new(description);
    response.content.insert(
        "application/problem+json".into(),
        RefOr::T(Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Problem"))))),
    );
    RefOr::T(response)
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The document as `openapi.json` at the repository's root holds it (`cargo xtask
/// openapi` writes it): pretty-printed, with a final newline.
pub fn openapi_json() -> String {
    serde_json::to_string_pretty(&ApiDoc::openapi()).expect("the document serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    #[test]
    fn every_route_is_documented() {
        let doc = serde_json::to_value(super::ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/v1/notifications", "post"),
            ("/v1/notifications", "get"),
            ("/v1/notifications/batch", "post"),
            ("/v1/notifications/{id}", "get"),
            ("/v1/notifications/{id}/cancel", "post"),
            ("/v1/deliveries/{id}/retry", "post"),
            ("/v1/templates/{type}/{channel}", "put"),
            ("/v1/templates/{type}/{channel}", "get"),
            ("/v1/templates/{type}/{channel}", "delete"),
            ("/v1/templates/preview", "post"),
            ("/v1/subscribers/{id}", "put"),
            ("/v1/subscribers/{id}", "get"),
            ("/v1/subscribers/{id}", "delete"),
            ("/v1/subscribers/{id}/preferences", "get"),
            ("/v1/subscribers/{id}/preferences", "put"),
            ("/v1/subscribers/{id}/devices", "get"),
            ("/v1/subscribers/{id}/devices/{device_id}", "put"),
            ("/v1/subscribers/{id}/devices/{device_id}", "get"),
            ("/v1/subscribers/{id}/devices/{device_id}", "delete"),
            ("/v1/topics/{key}/subscribers", "put"),
            ("/v1/topics/{key}/subscribers", "get"),
            ("/v1/types", "get"),
            ("/v1/types/{key}", "put"),
            ("/v1/types/{key}", "get"),
            ("/v1/subscribers/{id}/token", "post"),
            ("/v1/inbox", "get"),
            ("/v1/inbox/count", "get"),
            ("/v1/inbox/{id}/read", "post"),
            ("/v1/inbox/{id}/unread", "post"),
            ("/v1/inbox/{id}/archive", "post"),
            ("/v1/inbox/read-all", "post"),
            ("/v1/inbox/{id}", "delete"),
            ("/v1/providers/twilio/status", "post"),
            ("/v1/providers/ses/events", "post"),
            ("/v1/providers/meta/webhook", "get"),
            ("/v1/providers/meta/webhook", "post"),
            ("/healthz", "get"),
            ("/readyz", "get"),
        ] {
            assert!(paths[path].get(method).is_some(), "{method} {path}");
        }
    }
}
