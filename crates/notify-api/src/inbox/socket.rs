//! `GET /v1/inbox/ws?token=<subscriber token>&since=<item id>`: the subscriber's live
//! inbox (docs/contract.md §3.3). Not in the OpenAPI document, which cannot describe a WebSocket;
//! README "Inbox WebSocket" is its reference.
//!
//! The token travels in the query: a browser's `WebSocket` cannot send an `Authorization`
//! header, and a token in the first message would mean upgrading unauthenticated
//! connections and holding them open until they speak. A subscriber token is short-lived
//! and good for one subscriber's inbox only, so its appearing in an access log costs
//! little; it is checked before the upgrade (`401` otherwise).
//!
//! Server to client, JSON text frames:
//! - `{"type":"unread_count","unread_count":n}` on connect and after every change;
//! - `{"type":"notification.created","item":{..},"unread_count":n}` for each new item,
//!   and first, with `since`, for each item created after that one (oldest first, at most
//!   [`MAX_REPLAY`]; beyond that `{"type":"reload"}`: fetch `GET /v1/inbox` instead).
//!
//! Pings every `heartbeat`; a client silent for two intervals (no pong, no message) is
//! closed. A client that does not keep up (its queue of `send_queue` messages is full, or a
//! write stalls for a heartbeat) is closed with 1013, so it reconnects with `since`; the
//! token's expiry closes with 1008; the server's shutdown with 1001. A subscriber may hold
//! `max_per_subscriber` sockets on a replica and a tenant `max_per_tenant`: one more is
//! closed with 1008 as soon as it opens (a browser's `WebSocket` sees no HTTP status).

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::{
    extract::{
        Query, State,
        rejection::QueryRejection,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use store::Store;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use super::{
    hub::{Hub, created_frame, unread_count_frame},
    token::SubscriberClaims,
};
use crate::{AppState, error::ApiError};

/// Missed items a socket replays from `since`.
pub const MAX_REPLAY: usize = 1_000;
const REPLAY_PAGE: i64 = 100;
/// The largest message a client may send (it has nothing to say but pongs), and the size
/// of each socket's read buffer (128 KiB by default: 1.3 GB for 10,000 sockets).
const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// `inbox_socket` in the configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketSettings {
    /// How often the server pings; a client silent for two intervals is closed.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Messages a socket may have waiting; a client that lets more pile up is closed.
    pub send_queue: usize,
    /// Sockets one subscriber may hold open on this replica (its tabs and devices); one
    /// more is closed with 1008.
    pub max_per_subscriber: usize,
    /// Sockets one tenant's subscribers may hold open on this replica together; one more
    /// is closed with 1008.
    pub max_per_tenant: usize,
}

impl Default for SocketSettings {
    fn default() -> Self {
        Self { heartbeat: Duration::from_secs(20), send_queue: 64, max_per_subscriber: 8, max_per_tenant: 10_000 }
    }
}

impl SocketSettings {
    pub fn validate(&self) -> Result<(), bootstrap::ConfigError> {
        let invalid =
            |key: &str, message: &str| bootstrap::ConfigError::Invalid { key: key.into(), message: message.into() };
        if self.heartbeat < Duration::from_millis(10) {
            return Err(invalid("inbox_socket.heartbeat", "must be at least 10ms"));
        }
        if self.send_queue == 0 {
            return Err(invalid("inbox_socket.send_queue", "must be at least 1"));
        }
        if self.max_per_subscriber == 0 || self.max_per_tenant == 0 {
            return Err(invalid("inbox_socket", "max_per_subscriber and max_per_tenant must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
pub struct Params {
    token: Option<String>,
    since: Option<String>,
}

/// `GET /v1/inbox/ws`: checks the token and `since`, then upgrades.
pub async fn connect(
    State(app): State<AppState>,
    params: Result<Query<Params>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(params) => params,
        Err(e) => return ApiError::field("query", e.body_text()).into_response(),
    };
    let Some(token) = params.token.filter(|t| !t.is_empty()) else {
        return ApiError::Unauthorized("send a subscriber token as `?token=<token>`").into_response();
    };
    // Takes from the subscriber's bucket first: a page reconnecting in a loop is a page
    // polling.
    let claims = match super::token::authorize(&app, &token).await {
        Ok(claims) => claims,
        Err(e) => return e.into_response(),
    };
    let since = match params.since.as_deref().filter(|s| !s.is_empty()).map(str::parse::<Uuid>) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return ApiError::field("since", "must be the id of an inbox item").into_response(),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let hub = Arc::clone(&app.inbox_hub);
    let (store, settings) = (app.store.clone(), app.inbox_socket.clone());
    let seat = hub.seat(claims.tenant_id, &claims.subscriber_id, settings.max_per_subscriber, settings.max_per_tenant);
    let alive = hub.sockets_tracker.token();
    let span = tracing::info_span!("inbox_socket", tenant_id = %claims.tenant_id);
    let upgrade = upgrade
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(MAX_CLIENT_MESSAGE);
    upgrade.on_upgrade(move |socket| {
        async move {
            let _alive = alive;
            let mut socket = Socket { socket, settings };
            match seat {
                Ok(_seat) => socket.serve(&store, &hub, claims, since).await,
                Err(reason) => {
                    tracing::info!(reason, "inbox socket refused");
                    socket.close(1008, reason).await;
                }
            }
        }
        .instrument(span)
    })
}

/// Why the server closes a socket.
enum Closing {
    /// The peer is gone or stalled: no close frame can be expected to get through.
    Drop,
    Close(u16, &'static str),
}

struct Socket {
    socket: WebSocket,
    settings: SocketSettings,
}

impl Socket {
    async fn serve(&mut self, store: &Store, hub: &Arc<Hub>, claims: SubscriberClaims, since: Option<Uuid>) {
        tracing::debug!("inbox socket open");
        let closing = self.run(store, hub, &claims, since).await;
        if let Closing::Close(code, reason) = closing {
            self.close(code, reason).await;
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        tracing::debug!(code, reason, "closing inbox socket");
        let frame = CloseFrame { code, reason: reason.into() };
        let _ = self.send(Message::Close(Some(frame))).await;
    }

    async fn run(&mut self, store: &Store, hub: &Arc<Hub>, claims: &SubscriberClaims, since: Option<Uuid>) -> Closing {
        let (tenant_id, subscriber_id) = (claims.tenant_id, claims.subscriber_id.as_str());
        // Registered before anything is read, so no change between the reads and the live
        // events is missed (an item may come twice: `replayed` drops the second).
        let mut registration = hub.register(tenant_id, subscriber_id);
        let count = match store.inbox_unread_count(tenant_id, subscriber_id).await {
            Ok(count) => count,
            Err(e) => {
                tracing::warn!(error = %e, "inbox socket: cannot read the unread count");
                return Closing::Close(1011, "the inbox is unavailable; try again");
            }
        };
        if !self.send(Message::Text(unread_count_frame(count))).await {
            return Closing::Drop;
        }
        let mut replayed = HashSet::new();
        if let Some(since) = since {
            match self.replay(store, claims, since, count, &mut replayed).await {
                Ok(true) => {}
                Ok(false) => return Closing::Drop,
                Err(e) => {
                    tracing::warn!(error = %e, "inbox socket: cannot read the missed items");
                    return Closing::Close(1011, "the inbox is unavailable; try again");
                }
            }
        }

        let heartbeat = self.settings.heartbeat;
        let expires_in = Duration::try_from(claims.expires_at - OffsetDateTime::now_utc()).unwrap_or_default();
        let expiry = tokio::time::sleep(expires_in);
        tokio::pin!(expiry);
        let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                _ = hub.shutdown.cancelled() => return Closing::Close(1001, "server shutting down"),
                _ = registration.overflow.cancelled() => return Closing::Close(1013, "too slow: reconnect with since"),
                _ = &mut expiry => return Closing::Close(1008, "token expired"),
                _ = registration.erased.cancelled() => return Closing::Close(1008, "subscriber erased"),
                push = registration.pushes.recv() => {
                    let Some(push) = push else { return Closing::Close(1013, "too slow: reconnect with since") };
                    if push.item_id.is_some_and(|id| replayed.contains(&id)) {
                        continue;
                    }
                    if !self.send(Message::Text(push.text)).await {
                        return Closing::Drop;
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() >= heartbeat * 2 {
                        tracing::debug!("inbox socket: no pong for two heartbeats");
                        return Closing::Drop;
                    }
                    if !self.send(Message::Ping(Default::default())).await {
                        return Closing::Drop;
                    }
                }
                message = self.socket.recv() => match message {
                    // The library answers a client's close frame itself.
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Closing::Drop,
                    Some(Ok(_)) => last_heard = Instant::now(),
                },
            }
        }
    }

    /// Sends the items created after `since`, oldest first; `Ok(false)` when the client is
    /// gone.
    async fn replay(
        &mut self,
        store: &Store,
        claims: &SubscriberClaims,
        since: Uuid,
        count: i64,
        replayed: &mut HashSet<Uuid>,
    ) -> store::Result<bool> {
        let mut after = since;
        loop {
            let page =
                store.inbox_items_after(claims.tenant_id, &claims.subscriber_id, Some(after), REPLAY_PAGE).await?;
            for item in &page {
                if replayed.len() == MAX_REPLAY {
                    let reload = Utf8Bytes::from(json!({"type": "reload"}).to_string());
                    return Ok(self.send(Message::Text(reload)).await);
                }
                if !self.send(Message::Text(created_frame(item, count))).await {
                    return Ok(false);
                }
                replayed.insert(item.id);
            }
            match page.last() {
                Some(last) if page.len() as i64 == REPLAY_PAGE => after = last.id,
                _ => return Ok(true),
            }
        }
    }

    /// Sends one message; `false` if the client is gone or has not taken it within a
    /// heartbeat (a stalled reader is not waited for).
    async fn send(&mut self, message: Message) -> bool {
        matches!(tokio::time::timeout(self.settings.heartbeat, self.socket.send(message)).await, Ok(Ok(())))
    }
}
