use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{extract::FromRequestParts, http::request::Parts};
use store::{Caller, Origin, Store};
use tokio::sync::Semaphore;

use crate::{AppState, error::ApiError};

/// How long a request waits for one of the `admission.key_lookups`.
const KEY_LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How many requests may wait for each of the `admission.key_lookups`; past them a
/// request is refused at once. Each waiter holds one of `max_concurrent_requests` for up to
/// [`KEY_LOOKUP_WAIT`]: unbounded, a flood of new made-up keys would hold them all.
pub(crate) const WAITING_PER_LOOKUP: usize = 4;

/// The caller behind the request's API key (`Authorization: Bearer <key>`), and the
/// trace of the request.
pub struct Authenticated(pub Caller, String, Option<String>);

impl Authenticated {
    /// How audit events name this caller.
    pub fn actor(&self) -> &str {
        &self.1
    }

    /// The caller and the request's trace, for changes that write outbox rows.
    pub fn origin(&self) -> Origin<'_> {
        Origin { actor: &self.1, traceparent: self.2.as_deref() }
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("send an API key as `Authorization: Bearer <key>`"))?;
        let key = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized("the Authorization header must be `Bearer <key>`"))?;
        let caller = match state.store.authenticate_cached(key) {
            Some(answer) => answer,
            None => state.key_lookups.lookup(&state.store, key).await?,
        };
        match caller {
            Some(caller) => Ok(Authenticated(
                caller,
                format!("api_key:{}", caller.key_id),
                bootstrap::telemetry::traceparent(&tracing::Span::current()),
            )),
            None => Err(ApiError::Unauthorized("the API key is unknown or revoked")),
        }
    }
}

/// Database lookups of the API keys the cache cannot answer. Only the database knows: a
/// few lookups at a time, so made-up keys (each one new) cannot take every pooled
/// connection. A lookup is a millisecond: a burst of real ones waits its turn, and a burst
/// of requests carrying the same key (a cold cache) makes one lookup, the others waiting
/// for its answer. Only a queue that does not move is refused. The queue is short, and past
/// it the answer is at once: its waiters hold places among `max_concurrent_requests`, and
/// a flood of made-up keys must not hold them all.
pub(crate) struct KeyLookups {
    running: Semaphore,
    queue: Semaphore,
    /// The keys being looked up, each with a semaphore closed when its lookup ends.
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl KeyLookups {
    pub(crate) fn new(lookups: usize) -> Self {
        Self {
            running: Semaphore::new(lookups),
            queue: Semaphore::new(lookups.saturating_mul(1 + WAITING_PER_LOOKUP)),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    async fn lookup(&self, store: &Store, key: &str) -> Result<Option<Caller>, ApiError> {
        let running = {
            let mut in_flight = self.in_flight.lock().expect("never poisoned");
            match in_flight.get(key) {
                Some(done) => Some(Arc::clone(done)),
                None => {
                    in_flight.insert(key.to_owned(), Arc::new(Semaphore::new(0)));
                    None
                }
            }
        };
        if let Some(done) = running {
            // Closed when the other request's lookup ends; its answer is then cached (a
            // known key, or one remembered as unknown), unless the cache does not serve
            // yet (a replica just started) or the lookup failed: then this request looks
            // the key up itself, within the same bounds.
            let _ = tokio::time::timeout(KEY_LOOKUP_WAIT, done.acquire()).await;
            if let Some(answer) = store.authenticate_cached(key) {
                return Ok(answer);
            }
            return self.bounded(store, key).await;
        }
        let _ended = LookupEnds { lookups: self, key };
        self.bounded(store, key).await
    }

    /// A lookup in the database, if one of the `admission.key_lookups` frees up in time.
    async fn bounded(&self, store: &Store, key: &str) -> Result<Option<Caller>, ApiError> {
        let Ok(_queued) = self.queue.try_acquire() else {
            return Err(ApiError::Overloaded("too many API keys are waiting to be looked up"));
        };
        let Ok(Ok(_running)) = tokio::time::timeout(KEY_LOOKUP_WAIT, self.running.acquire()).await else {
            return Err(ApiError::Overloaded("too many API keys are being looked up at once"));
        };
        Ok(store.authenticate(key).await?)
    }
}

/// Ends a key's lookup however it ends (answered, refused, or its request dropped): the
/// requests waiting for it go on.
struct LookupEnds<'a> {
    lookups: &'a KeyLookups,
    key: &'a str,
}

impl Drop for LookupEnds<'_> {
    fn drop(&mut self) {
        if let Some(done) = self.lookups.in_flight.lock().expect("never poisoned").remove(self.key) {
            done.close();
        }
    }
}
