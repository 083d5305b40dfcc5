//! The OpenAPI document, generated from the handlers' annotations and the types they
//! take and return as `routes::routes` lists them, served at `GET /openapi.json`.

use utoipa::{
    OpenApi,
    openapi::{
        Content, RefOr, Response,
        path::ParameterIn,
        schema::{AdditionalProperties, ArrayItems, ObjectBuilder, Schema, SchemaType, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::error::Problem;

#[derive(OpenApi)]
#[openapi(
    info(title = "Notify", description = "Notification delivery: accept over HTTP, deliver reliably over email, SMS, WhatsApp, chat, push, \
        Novu and the in-app inbox. No string, in a parameter or a JSON body, may hold a NUL character (U+0000): \
        the answer is `422` naming the field. Every JSON body is an object."),
    components(schemas(Problem)),
    security(("api_key" = [])),
    tags(
        (name = "notifications", description = "Send notifications and follow them"),
        (name = "deliveries", description = "One recipient on one channel"),
        (name = "templates", description = "Content of a notification type per channel and locale, as minijinja sources"),
        (name = "subscribers", description = "The people you notify, by your own ids: addresses, locale, time zone, preferences; erasure"),
        (name = "topics", description = "Named sets of subscribers: a notification to a topic goes to each member"),
        (name = "types", description = "Notification types: default channels, critical flag, category, Novu workflow, retry policy, default preferences, audience and error class"),
        (name = "classifications", description = "The tenant's error classes: a notification that names no recipients goes to the audience of its error class (or its type's), with the class's priority"),
        (name = "devices", description = "A subscriber's push devices (FCM, APNs, Web Push), registered with the tenant's API key or by the subscriber's own app with its subscriber token"),
        (name = "inbox", description = "What end users manage themselves, with a subscriber token from `POST /v1/subscribers/{id}/token` (API key): their inbox's items and their preferences"),
        (name = "integrations", description = "The tenant's own provider credentials and senders, per channel and provider, in failover order; secrets are sealed at rest and never returned"),
        (name = "webhooks", description = "Endpoints that receive the tenant's events (outcomes of notifications and deliveries, inbox reads), signed per Standard Webhooks"),
        (name = "providers", description = "Delivery receipts from the providers: signed by the provider, no API key"),
        (name = "operations", description = "Health of the process"),
    )
)]
pub struct ApiDoc;

/// Completes the document of the routes (`routes::routes`): the bearer API key, the
/// answers every `/v1/` operation can give (`401` only those that take the key), and the
/// refusals and shapes no handler's annotation states alone.
pub(crate) fn complete(openapi: &mut utoipa::openapi::OpenApi) {
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
                    "A subscriber token, from `POST /v1/subscribers/{id}/token` or a JWT the tenant signs with the key of \
                     `PUT /v1/subscriber-token-key`, for that subscriber's inbox, preferences and devices only: \
                     `Authorization: Bearer <token>`",
                ))
                .build(),
        ),
    );
    declare_map_keys(components);
    for schema in components.schemas.values_mut() {
        if let RefOr::T(schema) = schema {
            declare_free_form(schema);
        }
    }
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

/// The keys of a subscriber's `types` and `categories` preferences, and of the error
/// classes of a classification: keys, as many as the domain allows (a map's keys have no
/// attribute of their own to say so).
fn declare_map_keys(components: &mut utoipa::openapi::Components) {
    let Some(RefOr::T(Schema::Object(preferences))) = components.schemas.get_mut("Preferences") else {
        return;
    };
    for field in ["types", "categories"] {
        if let Some(RefOr::T(Schema::Object(map))) = preferences.properties.get_mut(field) {
            map.property_names =
                Some(Box::new(ObjectBuilder::new().schema_type(Type::String).pattern(Some(KEY)).into()));
            map.max_properties = Some(domain::subscriber::MAX_PREFERENCE_ENTRIES);
        }
    }
    if let Some(RefOr::T(Schema::Object(table))) = components.schemas.get_mut("Classifications")
        && let Some(RefOr::T(Schema::Object(map))) = table.properties.get_mut("classes")
    {
        map.property_names = Some(Box::new(ObjectBuilder::new().schema_type(Type::String).pattern(Some(KEY)).into()));
        map.max_properties = Some(domain::classification::MAX_CLASSES);
    }
}

/// An object with no properties of its own (`data`, a template's content, a retry policy
/// given as `Object`) takes any: say so (`additionalProperties: true`), or a generator
/// reads it as an object with nothing in it (TypeScript's `Record<string, never>`).
fn declare_free_form(schema: &mut Schema) {
    match schema {
        Schema::Object(object) => {
            let is_object = match &object.schema_type {
                SchemaType::Type(t) => *t == Type::Object,
                SchemaType::Array(types) => types.contains(&Type::Object),
                SchemaType::AnyValue => false,
            };
            if is_object && object.properties.is_empty() && object.additional_properties.is_none() {
                object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(true)));
            }
            for property in object.properties.values_mut() {
                if let RefOr::T(property) = property {
                    declare_free_form(property);
                }
            }
        }
        Schema::Array(array) => {
            if let ArrayItems::RefOrSchema(items) = &mut array.items
                && let RefOr::T(items) = items.as_mut()
            {
                declare_free_form(items);
            }
        }
        Schema::OneOf(one_of) => one_of.items.iter_mut().for_each(|item| {
            if let RefOr::T(item) = item {
                declare_free_form(item);
            }
        }),
        Schema::AllOf(all_of) => all_of.items.iter_mut().for_each(|item| {
            if let RefOr::T(item) = item {
                declare_free_form(item);
            }
        }),
        _ => {}
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

/// The document as `openapi.json` at the repository's root holds it (`cargo xtask
/// openapi` writes it): pretty-printed, with a final newline.
pub fn openapi_json() -> String {
    let (_, doc) = crate::routes::routes(None);
    serde_json::to_string_pretty(&doc).expect("the document serializes") + "\n"
}
