use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::header,
};
use domain::FieldError;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON body whose errors name the field: malformed JSON is `400`; a well-formed body
/// of the wrong shape (unknown field, wrong type, missing field) or with a NUL character
/// in a string is `422` with the JSON path of the field; a body over the limit is `413`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse(&read(req, state).await?).map(JsonBody)
    }
}

/// Like [`JsonBody`], but NUL characters are left to the checks of each item
/// ([`from_value`]), so a batch refuses the item that holds one, not the whole batch.
pub struct JsonItems<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonItems<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        parse_shape(&read(req, state).await?).map(JsonItems)
    }
}

/// The body of a JSON request: `415` unless it says it is JSON, `413` over the limit.
async fn read<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::MalformedJson(rejection.body_text())
            }
        })
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = parse_shape(bytes)?;
    // Only the escape `\u0000` puts a NUL in a JSON string (a raw one is a syntax error):
    // look for the rare body that has one, then find where.
    if bytes.windows(6).any(|w| w == br"\u0000") {
        reject_nul(&serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?)?;
    }
    Ok(value)
}

fn parse_shape<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        // Well-formed but not an object is a `422`, else the syntax error's `400`.
        let value: Value = serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        require_object(&value)?;
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(shape_error)?;
    de.end().map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// Like [`parse`], from a JSON value already parsed (the items of a batch).
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    require_object(&value)?;
    reject_nul(&value)?;
    serde_path_to_error::deserialize(value).map_err(shape_error)
}

/// Every body (and every item of a batch) is a JSON object. serde would also fill a
/// struct from an array of its fields in order, which no client means.
fn require_object(value: &Value) -> Result<(), ApiError> {
    match value {
        Value::Object(_) => Ok(()),
        _ => Err(ApiError::Validation(vec![FieldError::new("(body)", "must be a JSON object")])),
    }
}

/// PostgreSQL's `text` and `jsonb` cannot hold U+0000: a string (or key) with one is a
/// `422` naming its JSON path, before anything tries to write it.
pub fn reject_nul(value: &Value) -> Result<(), ApiError> {
    match nul_path(value, String::new()) {
        None => Ok(()),
        Some(path) => Err(ApiError::Validation(vec![FieldError::new(
            if path.is_empty() { "(body)".to_owned() } else { path },
            "must not contain a NUL character (\\u0000)",
        )])),
    }
}

fn nul_path(value: &Value, path: String) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then_some(path),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| nul_path(v, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            // A key with a NUL is named by the object that holds it.
            if k.contains('\0') {
                return Some(path.clone());
            }
            nul_path(v, if path.is_empty() { k.clone() } else { format!("{path}.{k}") })
        }),
        _ => None,
    }
}

fn shape_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let inner = e.inner();
    if !inner.is_data() {
        return ApiError::MalformedJson(inner.to_string());
    }
    let message = strip_position(&inner.to_string());
    ApiError::Validation(vec![field_error(&e.path().to_string(), message)])
}

/// serde names a missing field in its message, not in the path: move it to the path.
fn field_error(path: &str, message: String) -> FieldError {
    let parent = if path == "." { "" } else { path };
    if let Some(name) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
        let field = if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") };
        return FieldError::new(field, "is required");
    }
    FieldError::new(if parent.is_empty() { "(body)" } else { parent }, message)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use domain::NewNotification;

    use super::*;

    fn field(body: &str) -> (String, String) {
        match parse::<NewNotification>(body.as_bytes()) {
            Err(ApiError::Validation(errors)) => (errors[0].field.clone(), errors[0].message.clone()),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn names_the_field_of_shape_errors() {
        assert_eq!(field(r#"{"to": []}"#).0, "type");
        assert_eq!(field(r#"{"type": "t", "to": [], "channels": ["fax"]}"#).0, "channels[0]");
        assert_eq!(field(r#"{"type": "t", "to": [{"email": 5}]}"#).0, "to[0].email");
        assert_eq!(field(r#"{"type": "t", "to": [{"pager": "x"}]}"#).0, "to[0].pager");
        assert_eq!(field(r#"{"type": "t", "to": [], "extra": 1}"#).0, "extra");
    }

    #[test]
    fn a_nul_character_is_422_naming_its_path() {
        let body = r#"{"type": "t", "to": [{"email": "a@example.com"}], "data": {"a": ["x", "y\u0000"]}}"#;
        assert_eq!(field(body).0, "data.a[1]");
        assert_eq!(field(r#"{"type": "t", "to": [], "correlation_id": "\u0000"}"#).0, "correlation_id");
        assert_eq!(field(r#"{"type": "t", "to": [], "data": {"k\u0000": 1}}"#).0, "data");
        // An escaped backslash before `u0000` is no NUL.
        assert!(parse::<Value>(br#"{"a": "\\u0000"}"#).is_ok());
        let value: Value = serde_json::from_str(r#"{"content": {"text": "\u0000"}}"#).unwrap();
        assert!(matches!(from_value::<Value>(value), Err(ApiError::Validation(e)) if e[0].field == "content.text"));
    }

    #[test]
    fn syntax_errors_are_malformed() {
        assert!(matches!(parse::<NewNotification>(b"{\"type\": "), Err(ApiError::MalformedJson(_))));
        assert!(matches!(parse::<NewNotification>(br#"{"type": "t", "to": []} x"#), Err(ApiError::MalformedJson(_))));
    }
}
