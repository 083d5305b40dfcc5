//! `/v1/topics/{key}/subscribers`: a topic's members. A topic exists while it has members.

use std::collections::HashSet;

use axum::{
    Json,
    extract::{Path, Query, State},
};
use domain::{FieldError, notification_type::is_valid_key, subscriber::is_valid_subscriber_id};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{AppState, auth::Authenticated, error::ApiError, error::Problem, json::JsonBody};

/// Ids in one change, `add` and `remove` together.
pub const MAX_CHANGE: usize = 10_000;
/// Page size of the member list: default and largest.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1_000;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopicChangeRequest {
    /// Subscriber ids to make members; each must exist.
    #[serde(default)]
    add: Vec<String>,
    /// Subscriber ids to remove; ids that are not members are ignored.
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TopicChangeResponse {
    topic: String,
    /// Members added (those that already were are not counted).
    added: u64,
    /// Members removed.
    removed: u64,
}

#[utoipa::path(put, path = "/v1/topics/{key}/subscribers", operation_id = "changeTopicSubscribers", tag = "topics",
    params(("key" = String, Path, description = "The topic: 1 to 200 letters, digits and . _ - : /", example = "support")),
    request_body(content = TopicChangeRequest, example = json!({"add": ["u-42"], "remove": []})),
    responses(
        (status = 200, description = "Changed, all or nothing", body = TopicChangeResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An id is invalid or names no subscriber (`add[i]`), or more than 10,000 ids",
            body = Problem, content_type = "application/problem+json"),
    ))]
/// `PUT /v1/topics/{key}/subscribers`: adds and removes members, up to 10,000 ids at once.
pub async fn change(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(key): Path<String>,
    JsonBody(request): JsonBody<TopicChangeRequest>,
) -> Result<Json<TopicChangeResponse>, ApiError> {
    if !is_valid_key(&key) {
        return Err(ApiError::field("key", "must be 1 to 200 letters, digits and . _ - : /"));
    }
    if request.add.len() + request.remove.len() > MAX_CHANGE {
        return Err(ApiError::field("add", format!("add and remove may name at most {MAX_CHANGE} ids in all")));
    }
    let mut errors = Vec::new();
    for (field, ids) in [("add", &request.add), ("remove", &request.remove)] {
        for (i, _) in ids.iter().enumerate().filter(|(_, id)| !is_valid_subscriber_id(id)) {
            errors.push(FieldError::new(format!("{field}[{i}]"), "is not a valid subscriber id"));
        }
    }
    let adding: HashSet<&str> = request.add.iter().map(String::as_str).collect();
    for (i, _) in request.remove.iter().enumerate().filter(|(_, id)| adding.contains(id.as_str())) {
        errors.push(FieldError::new(format!("remove[{i}]"), "is also in add"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    match app.store.change_topic(auth.0.tenant_id, &key, &request.add, &request.remove).await? {
        Ok(change) => Ok(Json(TopicChangeResponse { topic: key, added: change.added, removed: change.removed })),
        Err(unknown) => {
            let unknown: HashSet<&str> = unknown.iter().map(String::as_str).collect();
            let errors = (request.add.iter().enumerate())
                .filter(|(_, id)| unknown.contains(id.as_str()))
                .map(|(i, _)| FieldError::new(format!("add[{i}]"), "no such subscriber"))
                .collect();
            Err(ApiError::Validation(errors))
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MemberPage {
    /// Subscriber ids, in order.
    items: Vec<String>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/topics/{key}/subscribers", operation_id = "listTopicSubscribers", tag = "topics",
    params(
        ("key" = String, Path, description = "The topic", example = "support"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "1 to 1,000, default 100", example = 50),
        ("cursor" = Option<String>, Query, pattern = "^([0-9a-fA-F]{2}){1,800}$",
            description = "`next_cursor` of the previous page: the last subscriber id it held, as hex of its UTF-8"),
    ),
    responses(
        (status = 200, description = "A page of the topic's members, by subscriber id (empty for a topic without members)",
            body = MemberPage),
        (status = 422, description = "A query parameter is invalid or unknown", body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/topics/{key}/subscribers?limit=&cursor=`.
pub async fn list(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(key): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<MemberPage>, ApiError> {
    let mut limit = DEFAULT_PAGE;
    let mut after = None;
    for (name, value) in &params {
        match name.as_str() {
            "limit" => limit = super::page_limit(value, MAX_PAGE)?,
            "cursor" => {
                // Any string is a position in the order of ids, whether or not it is a
                // member's (no id holds a NUL, which PostgreSQL's text cannot).
                let id = hex::decode(value).ok().filter(|id| !id.is_empty());
                let id = id.ok_or_else(|| ApiError::field("cursor", "must be hex, at least one byte"))?;
                after = Some(String::from_utf8_lossy(&id).replace('\0', ""))
            }
            other => return Err(ApiError::field(other, "unknown query parameter")),
        }
    }
    if !is_valid_key(&key) {
        return Err(ApiError::field("key", "must be 1 to 200 letters, digits and . _ - : /"));
    }
    let mut items = app.store.list_topic(auth.0.tenant_id, &key, limit + 1, after.as_deref()).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(hex::encode)
    } else {
        None
    };
    Ok(Json(MemberPage { items, next_cursor }))
}
