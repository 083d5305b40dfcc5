//! The end-user inbox over REST (docs/contract.md §3.3): the tenant's backend gets a subscriber
//! token with its API key (`POST /v1/subscribers/{id}/token`); with that token the
//! subscriber's page lists, counts and changes its own items under `/v1/inbox`. Every
//! change answers the unread count after it, for the badge.

use axum::{
    Json,
    extract::{Path, Query, State},
};
use domain::inbox::InboxItem;
use serde::Serialize;
use store::{InboxChange, InboxFilter};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    auth::Authenticated,
    error::{ApiError, Problem},
    inbox::token::InboxCaller,
    routes::parse_id,
};

/// Page size of the inbox list: default and largest.
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

/// A subscriber token, to hand to the subscriber's page.
#[derive(Serialize, ToSchema)]
pub struct IssuedToken {
    /// Send as `Authorization: Bearer <token>` to `/v1/inbox`.
    token: String,
    /// The token is refused from then on: ask for a new one before.
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    subscriber_id: String,
}

#[utoipa::path(post, path = "/v1/subscribers/{id}/token", operation_id = "issueSubscriberToken", tag = "inbox",
    params(("id" = String, Path, description = "Your id for the subscriber", example = "u-42")),
    responses(
        (status = 200, description = "A token for this subscriber's inbox, valid for `inbox.token_ttl` (1 h by default)",
            body = IssuedToken),
        (status = 404, description = "No such subscriber for this tenant", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/subscribers/{id}/token`: a short-lived token that reads and changes this
/// subscriber's inbox and nothing else.
pub async fn issue_token(
    State(app): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<IssuedToken>, ApiError> {
    let incarnation = app.store.subscriber_incarnation(auth.0.tenant_id, &id).await?.ok_or(ApiError::NotFound)?;
    let (token, expires_at) = app.tokens.issue(auth.0.tenant_id, &id, incarnation, app.token_ttl);
    tracing::debug!(tenant_id = %auth.0.tenant_id, "subscriber token issued");
    Ok(Json(IssuedToken { token, expires_at, subscriber_id: id }))
}

#[derive(Serialize, ToSchema)]
pub struct InboxPage {
    /// Newest first.
    items: Vec<InboxItem>,
    /// Pass as `cursor` for the next page (the id of this page's last item); absent on the
    /// last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
    /// Items neither read nor archived, whatever the filters.
    unread_count: i64,
}

/// The subscriber's unread count after a change.
#[derive(Serialize, ToSchema)]
pub struct UnreadCount {
    /// Items neither read nor archived.
    unread_count: i64,
}

#[utoipa::path(get, path = "/v1/inbox", operation_id = "listInboxItems", tag = "inbox",
    security(("subscriber_token" = [])),
    params(
        ("unread_only" = Option<bool>, Query, description = "`true`: only items not yet read", example = true),
        ("type" = Option<String>, Query, description = "Only items of this notification type", example = "order.shipped"),
        ("tag" = Option<String>, Query, description = "Only items carrying this tag", example = "orders"),
        ("include_archived" = Option<bool>, Query, description = "`true`: archived items too (left out by default)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1 to 100, default 20", example = 20),
        ("cursor" = Option<Uuid>, Query, description = "`next_cursor` of the previous page: the id of the last item it held"),
    ),
    responses(
        (status = 200, description = "A page of the subscriber's items, newest first, and its unread count", body = InboxPage),
        (status = 401, description = "Missing, invalid or expired subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A query parameter is invalid or unknown", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The subscriber's request rate (`admission.inbox_rate`) is exhausted: retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/inbox?unread_only=&type=&tag=&include_archived=&limit=&cursor=`: newest first.
pub async fn list(
    State(app): State<AppState>,
    InboxCaller(me): InboxCaller,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Json<InboxPage>, ApiError> {
    let mut filter = InboxFilter { limit: DEFAULT_PAGE, ..Default::default() };
    let flag = |field: &str, v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::field(field, "must be `true` or `false`")),
    };
    for (name, value) in &params {
        match name.as_str() {
            "unread_only" => filter.unread_only = flag("unread_only", value)?,
            "include_archived" => filter.include_archived = flag("include_archived", value)?,
            "type" => filter.kind = Some(value.clone()),
            "tag" => filter.tag = Some(value.clone()),
            "limit" => filter.limit = super::page_limit(value, MAX_PAGE)?,
            "cursor" => {
                filter.before =
                    Some(value.parse().map_err(|_| ApiError::field("cursor", "is not a cursor this API gave"))?)
            }
            other => return Err(ApiError::field(other, "unknown query parameter")),
        }
    }
    let page_size = filter.limit;
    filter.limit += 1;
    let (mut items, unread_count) = tokio::try_join!(
        app.store.inbox_list(me.tenant_id, &me.subscriber_id, &filter),
        app.store.inbox_unread_count(me.tenant_id, &me.subscriber_id),
    )?;
    let next_cursor = if items.len() as i64 > page_size {
        items.truncate(page_size as usize);
        items.last().map(|last| last.id.to_string())
    } else {
        None
    };
    Ok(Json(InboxPage { items, next_cursor, unread_count }))
}

#[utoipa::path(get, path = "/v1/inbox/count", operation_id = "countInboxItems", tag = "inbox",
    security(("subscriber_token" = [])),
    responses(
        (status = 200, description = "The subscriber's unread count", body = UnreadCount),
        (status = 401, description = "Missing, invalid or expired subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The subscriber's request rate (`admission.inbox_rate`) is exhausted: retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json"),
    ))]
/// `GET /v1/inbox/count`: the badge.
pub async fn count(State(app): State<AppState>, InboxCaller(me): InboxCaller) -> Result<Json<UnreadCount>, ApiError> {
    Ok(Json(UnreadCount { unread_count: app.store.inbox_unread_count(me.tenant_id, &me.subscriber_id).await? }))
}

/// Applies `change` to the caller's item `id` (a 404 when it is not the caller's), then
/// answers the unread count.
async fn mark(
    app: &AppState,
    me: &crate::SubscriberClaims,
    id: &str,
    change: InboxChange,
) -> Result<Json<UnreadCount>, ApiError> {
    let id: Uuid = parse_id(id)?;
    if !app.store.inbox_mark(me.tenant_id, &me.subscriber_id, id, change).await? {
        return Err(ApiError::NotFound);
    }
    // Every socket of the subscriber, on any replica, gets the new count.
    app.inbox_hub.changed(me.tenant_id, &me.subscriber_id);
    Ok(Json(UnreadCount { unread_count: app.store.inbox_unread_count(me.tenant_id, &me.subscriber_id).await? }))
}

#[utoipa::path(post, path = "/v1/inbox/{id}/read", operation_id = "readInboxItem", tag = "inbox",
    security(("subscriber_token" = [])),
    params(("id" = Uuid, Path, description = "The item's id", example = "0193a5b0-7e1c-7cc0-9a1e-5f0c3b2a4d10")),
    responses(
        (status = 200, description = "Read (reading it again keeps the first time); the unread count after it", body = UnreadCount),
        (status = 401, description = "Missing, invalid or expired subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The subscriber's request rate (`admission.inbox_rate`) is exhausted: retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The subscriber has no such item", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/inbox/{id}/read`.
pub async fn read(
    State(app): State<AppState>,
    InboxCaller(me): InboxCaller,
    Path(id): Path<String>,
) -> Result<Json<UnreadCount>, ApiError> {
    mark(&app, &me, &id, InboxChange::Read).await
}

#[utoipa::path(post, path = "/v1/inbox/{id}/unread", operation_id = "unreadInboxItem", tag = "inbox",
    security(("subscriber_token" = [])),
    params(("id" = Uuid, Path, description = "The item's id", example = "0193a5b0-7e1c-7cc0-9a1e-5f0c3b2a4d10")),
    responses(
        (status = 200, description = "Unread again; the unread count after it", body = UnreadCount),
        (status = 401, description = "Missing, invalid or expired subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The subscriber's request rate (`admission.inbox_rate`) is exhausted: retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The subscriber has no such item", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/inbox/{id}/unread`.
pub async fn unread(
    State(app): State<AppState>,
    InboxCaller(me): InboxCaller,
    Path(id): Path<String>,
) -> Result<Json<UnreadCount>, ApiError> {
    mark(&app, &me, &id, InboxChange::Unread).await
}

#[utoipa::path(post, path = "/v1/inbox/{id}/archive", operation_id = "archiveInboxItem", tag = "inbox",
    security(("subscriber_token" = [])),
    params(("id" = Uuid, Path, description = "The item's id", example = "0193a5b0-7e1c-7cc0-9a1e-5f0c3b2a4d10")),
    responses(
        (status = 200, description = "Archived: it leaves the list (unless `include_archived=true`) and the unread count; \
            the unread count after it", body = UnreadCount),
        (status = 401, description = "Missing, invalid or expired subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The subscriber's request rate (`admission.inbox_rate`) is exhausted: retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The subscriber has no such item", body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/inbox/{id}/archive`.
pub async fn archive(
    State(app): State<AppState>,
    InboxCaller(me): InboxCaller,
    Path(id): Path<String>,
) -> Result<Json<UnreadCount>, ApiError> {
    mark(&app, &me, &id, InboxChange::Archive).await
}

#[utoipa::path(delete, path = "/v1/inbox/{id}", operation_id = "deleteInboxItem", tag = "inbox",
    security(("subscriber_token" = [])),
    params(("id" = Uuid, Path, description = "The item's id", example = "0193a5b0-7e1c-7cc0-9a1e-5f0c3b2a4d10")),
    responses(
        (status = 200, description = "Deleted (the delivery and its status stay); the unread count after it", body = UnreadCount),
        (status = 401, description = "Missing, invalid or expired subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The subscriber's request rate (`admission.inbox_rate`) is exhausted: retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The subscriber has no such item", body = Problem, content_type = "application/problem+json"),
    ))]
/// `DELETE /v1/inbox/{id}`.
pub async fn delete(
    State(app): State<AppState>,
    InboxCaller(me): InboxCaller,
    Path(id): Path<String>,
) -> Result<Json<UnreadCount>, ApiError> {
    mark(&app, &me, &id, InboxChange::Delete).await
}

#[utoipa::path(post, path = "/v1/inbox/read-all", operation_id = "readAllInboxItems", tag = "inbox",
    security(("subscriber_token" = [])),
    responses(
        (status = 200, description = "Every item is read; the unread count after it (0 unless items arrived meanwhile)",
            body = UnreadCount),
        (status = 401, description = "Missing, invalid or expired subscriber token", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The subscriber's request rate (`admission.inbox_rate`) is exhausted: retry after `Retry-After` seconds",
            body = Problem, content_type = "application/problem+json"),
    ))]
/// `POST /v1/inbox/read-all`.
pub async fn read_all(
    State(app): State<AppState>,
    InboxCaller(me): InboxCaller,
) -> Result<Json<UnreadCount>, ApiError> {
    if app.store.inbox_read_all(me.tenant_id, &me.subscriber_id).await? > 0 {
        app.inbox_hub.changed(me.tenant_id, &me.subscriber_id);
    }
    Ok(Json(UnreadCount { unread_count: app.store.inbox_unread_count(me.tenant_id, &me.subscriber_id).await? }))
}
