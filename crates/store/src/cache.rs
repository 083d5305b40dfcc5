//! What every request reads, cached in the API process: callers by API key, tenant
//! settings, notification types (and the answer that a type does not exist) and compiled
//! templates by type. A bounded LRU: at most `capacity` entries, whoever fills it.
//!
//! Kept true to the database by `LISTEN notify_cache`: the triggers of migration 000012
//! name the tenant of every change to tenants, api_keys, notification_types and templates,
//! whoever made it, and [`Store::keep_cache`] drops that tenant's entries. While that
//! connection is down (at start, after it dropped) notifications may be missed, so the
//! cache is empty and takes nothing: every request reads through to the database until
//! LISTEN is back. The store's own writes also drop the tenant's entries before they
//! return, so this process never serves what it has just changed.
//!
//! A read that started before a change may finish after its notification was applied; it
//! must not put the old row back. Each read-through takes a [`Fill`] (the epoch) before it
//! reads, and its result is kept only if no eviction happened since.
//!
//! Beside it, apart so a flood of made-up keys cannot push the callers out, the keys
//! found unknown: at most `unknown_keys` of them, each for `unknown_key_ttl`, so a client
//! repeating a wrong or revoked key costs no database read per request. A new key names
//! its tenant like any change (migration 20261207000030); any notification forgets every
//! unknown key, since nothing links an unknown key to a tenant.

use std::{
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use domain::{Channel, backoff::Backoff, notification_type::NotificationType, template::Template};
use hashlink::LruCache;
use sqlx::{
    PgPool,
    postgres::{PgListener, PgPoolOptions},
};
use uuid::Uuid;

use crate::{Caller, Store};

/// The channel the triggers notify, with a tenant id (or `*`, everything) as payload.
pub const CACHE_CHANNEL: &str = "notify_cache";
/// How the LISTEN connection shows in `pg_stat_activity`.
pub const CACHE_LISTENER_NAME: &str = "notify-cache";
/// `last_used_at` is written at most this often per key and process.
const TOUCH_EVERY: Duration = Duration::from_secs(60);
/// A LISTEN connection quiet this long is checked with a query, so one that died without
/// a word (a half-open TCP connection) stops the cache within a bound.
const HEARTBEAT: Duration = Duration::from_secs(10);
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
/// The defaults of the API's `cache.unknown_keys` and `cache.unknown_key_ttl`.
pub const UNKNOWN_KEYS: usize = 10_000;
pub const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(30);

/// What a notification on [`CACHE_CHANNEL`] says changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheEvent {
    /// A row the API caches (tenant, key, type, template) of this tenant: payload `<tenant id>`.
    Tenant(Uuid),
    /// The tenant's integrations of this channel (migration 20261208000200): payload
    /// `integration:<tenant id>:<channel>`. Workers drop the clients they built from them.
    Integration { tenant_id: Uuid, channel: String },
    /// Anything (a TRUNCATE, or a payload not understood): drop everything.
    All,
}

impl CacheEvent {
    pub fn parse(payload: &str) -> Self {
        if let Some(rest) = payload.strip_prefix("integration:")
            && let Some((tenant, channel)) = rest.split_once(':')
            && let Ok(tenant_id) = tenant.parse()
        {
            return CacheEvent::Integration { tenant_id, channel: channel.to_owned() };
        }
        payload.parse().map_or(CacheEvent::All, CacheEvent::Tenant)
    }
}

/// The tenant's settings the intake reads.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TenantSettings {
    pub default_locale: String,
    pub adhoc_types: bool,
    pub http_action_urls: bool,
}

/// A type's compiled templates: channel, locale, template.
pub(crate) type Templates = Arc<[(Channel, String, Template)]>;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    /// By the SHA-256 of the key, as stored.
    Caller(Vec<u8>),
    Tenant(Uuid),
    Type(Uuid, String),
    Templates(Uuid, String),
    SubscriberToken(Uuid),
}

enum Entry {
    /// `touched`: when this process last had `last_used_at` written (or read it fresh).
    Caller {
        caller: Caller,
        touched: Instant,
    },
    Tenant(TenantSettings),
    /// `None`: the tenant has no such type.
    Type(Option<NotificationType>),
    Templates(Templates),
    /// The public key of the tenant's own subscriber tokens, if it registered one.
    SubscriberTokenKey(Option<String>),
}

fn of_tenant(key: &Key, entry: &Entry, tenant_id: Uuid) -> bool {
    match (key, entry) {
        (_, Entry::Caller { caller, .. }) => caller.tenant_id == tenant_id,
        (Key::Tenant(t) | Key::Type(t, _) | Key::Templates(t, _) | Key::SubscriberToken(t), _) => *t == tenant_id,
        (Key::Caller(_), _) => false,
    }
}

/// Where a read-through started: the epoch, or `None` while the cache is off.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fill(Option<u64>);

pub(crate) struct Cache {
    capacity: usize,
    unknown_key_ttl: Duration,
    state: Mutex<State>,
}

struct State {
    /// LISTEN is up: entries may be served and kept.
    listening: bool,
    /// Moves on every eviction, so a read that started before it keeps nothing.
    epoch: u64,
    entries: LruCache<Key, Entry>,
    /// The hashes of keys found unknown, and when they were.
    unknown: LruCache<Vec<u8>, Instant>,
}

impl State {
    fn clear(&mut self) {
        self.epoch += 1;
        self.entries.clear();
        self.unknown.clear();
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl Cache {
    /// Off (capacity 0) or on with room for `capacity` entries; it serves only once
    /// [`Cache::start_listening`] was called.
    pub(crate) fn new(capacity: usize) -> Self {
        Self::remembering_unknown_keys(capacity, UNKNOWN_KEYS, UNKNOWN_KEY_TTL)
    }

    /// As [`Cache::new`], remembering up to `unknown_keys` keys found unknown for
    /// `unknown_key_ttl` each (0 keys: none).
    pub(crate) fn remembering_unknown_keys(capacity: usize, unknown_keys: usize, unknown_key_ttl: Duration) -> Self {
        let entries = LruCache::new(capacity.max(1));
        // With the cache off nothing is kept, unknown keys included: `put` needs LISTEN.
        let unknown_key_ttl = if unknown_keys == 0 { Duration::ZERO } else { unknown_key_ttl };
        let unknown = LruCache::new(unknown_keys.max(1));
        Self { capacity, unknown_key_ttl, state: Mutex::new(State { listening: false, epoch: 0, entries, unknown }) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one holds consistent data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// To be taken before reading what will be put.
    pub(crate) fn fill(&self) -> Fill {
        let state = self.state();
        Fill(state.listening.then_some(state.epoch))
    }

    fn put(&self, fill: Fill, key: Key, entry: Entry) {
        let mut state = self.state();
        if state.listening && fill.0 == Some(state.epoch) {
            state.entries.insert(key, entry);
        }
    }

    /// The caller of a key, and whether its `last_used_at` is due to be written (which
    /// this answer counts as done).
    pub(crate) fn caller(&self, key_hash: &[u8]) -> Option<(Caller, bool)> {
        match self.state().entries.get_mut(&Key::Caller(key_hash.to_vec()))? {
            Entry::Caller { caller, touched } => {
                let due = touched.elapsed() >= TOUCH_EVERY;
                if due {
                    *touched = Instant::now();
                }
                Some((*caller, due))
            }
            _ => None,
        }
    }

    pub(crate) fn put_caller(&self, fill: Fill, key_hash: Vec<u8>, caller: Caller) {
        self.put(fill, Key::Caller(key_hash), Entry::Caller { caller, touched: Instant::now() });
    }

    /// Whether the key was found unknown within `unknown_key_ttl`.
    pub(crate) fn unknown_key(&self, key_hash: &[u8]) -> bool {
        let mut state = self.state();
        match state.unknown.get(key_hash) {
            Some(at) if at.elapsed() < self.unknown_key_ttl => true,
            Some(_) => {
                state.unknown.remove(key_hash);
                false
            }
            None => false,
        }
    }

    pub(crate) fn put_unknown_key(&self, fill: Fill, key_hash: Vec<u8>) {
        let mut state = self.state();
        if state.listening && fill.0 == Some(state.epoch) && !self.unknown_key_ttl.is_zero() {
            state.unknown.insert(key_hash, Instant::now());
        }
    }

    pub(crate) fn settings(&self, tenant_id: Uuid) -> Option<TenantSettings> {
        match self.state().entries.get(&Key::Tenant(tenant_id))? {
            Entry::Tenant(settings) => Some(settings.clone()),
            _ => None,
        }
    }

    pub(crate) fn put_settings(&self, fill: Fill, tenant_id: Uuid, settings: TenantSettings) {
        self.put(fill, Key::Tenant(tenant_id), Entry::Tenant(settings));
    }

    /// `Some(None)`: known not to exist.
    pub(crate) fn notification_type(&self, tenant_id: Uuid, key: &str) -> Option<Option<NotificationType>> {
        match self.state().entries.get(&Key::Type(tenant_id, key.to_owned()))? {
            Entry::Type(found) => Some(found.clone()),
            _ => None,
        }
    }

    pub(crate) fn put_type(&self, fill: Fill, tenant_id: Uuid, key: String, found: Option<NotificationType>) {
        self.put(fill, Key::Type(tenant_id, key), Entry::Type(found));
    }

    pub(crate) fn templates(&self, tenant_id: Uuid, kind: &str) -> Option<Templates> {
        match self.state().entries.get(&Key::Templates(tenant_id, kind.to_owned()))? {
            Entry::Templates(templates) => Some(Arc::clone(templates)),
            _ => None,
        }
    }

    pub(crate) fn put_templates(&self, fill: Fill, tenant_id: Uuid, kind: String, templates: Templates) {
        self.put(fill, Key::Templates(tenant_id, kind), Entry::Templates(templates));
    }

    /// `Some(None)`: the tenant registered no key.
    pub(crate) fn subscriber_token_key(&self, tenant_id: Uuid) -> Option<Option<String>> {
        match self.state().entries.get(&Key::SubscriberToken(tenant_id))? {
            Entry::SubscriberTokenKey(key) => Some(key.clone()),
            _ => None,
        }
    }

    pub(crate) fn put_subscriber_token_key(&self, fill: Fill, tenant_id: Uuid, key: Option<String>) {
        self.put(fill, Key::SubscriberToken(tenant_id), Entry::SubscriberTokenKey(key));
    }

    /// Drops every entry of the tenant, its callers included, and every unknown key (one
    /// may be the tenant's new key).
    pub(crate) fn evict(&self, tenant_id: Uuid) {
        let mut state = self.state();
        state.epoch += 1;
        state.unknown.clear();
        let doomed: Vec<Key> =
            state.entries.iter().filter(|(k, e)| of_tenant(k, e, tenant_id)).map(|(k, _)| k.clone()).collect();
        for key in doomed {
            state.entries.remove(&key);
        }
    }

    /// A notification's payload: a tenant id, else everything goes.
    #[cfg(test)]
    fn invalidate(&self, payload: &str) {
        self.changed(CacheEvent::parse(payload));
    }

    fn clear(&self) {
        self.state().clear();
    }

    fn listening(&self) -> bool {
        self.state().listening
    }
}

/// What follows `notify_cache` through [`Store::follow_cache_events`]: the API's cache, a
/// worker's clients built from tenants' integrations.
pub trait CacheListener: Send + Sync {
    /// LISTEN is up (what was kept before may have missed a change: drop it and keep
    /// from now on) or lost (drop everything and keep nothing until it is back).
    fn set_listening(&self, listening: bool);
    /// A change was heard.
    fn changed(&self, event: CacheEvent);
}

impl CacheListener for Cache {
    /// Empties the cache, and serves (or stops serving) from now on.
    fn set_listening(&self, listening: bool) {
        let mut state = self.state();
        state.clear();
        state.listening = listening;
    }

    fn changed(&self, event: CacheEvent) {
        match event {
            CacheEvent::Tenant(tenant_id) => self.evict(tenant_id),
            // Nothing here is built from integrations: that event is the workers'.
            CacheEvent::Integration { .. } => {}
            CacheEvent::All => self.clear(),
        }
    }
}

impl Store {
    /// This store (and its clones) with a cache of up to `capacity` entries, served once
    /// [`Store::keep_cache`] runs; 0 leaves it off.
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = Arc::new(Cache::new(capacity));
        self
    }

    /// As [`Store::with_cache`], remembering up to `unknown_keys` API keys found unknown
    /// for `unknown_key_ttl` each, so they are refused without a database read.
    pub fn with_cache_of_unknown_keys(
        mut self,
        capacity: usize,
        unknown_keys: usize,
        unknown_key_ttl: Duration,
    ) -> Self {
        self.cache = Arc::new(Cache::remembering_unknown_keys(capacity, unknown_keys, unknown_key_ttl));
        self
    }

    /// Whether the cache serves: on, and LISTEN is up. Otherwise every request reads the
    /// database.
    pub fn cache_listening(&self) -> bool {
        self.cache.listening()
    }

    /// Keeps the cache true to the database until `stop`: LISTENs on [`CACHE_CHANNEL`]
    /// over a connection of its own (named [`CACHE_LISTENER_NAME`]) and drops the entries
    /// of each tenant named. The cache serves only while that connection is up; when it
    /// drops, the cache is emptied and off until LISTEN is back. Returns at once when the
    /// cache is off.
    pub async fn keep_cache(&self, stop: impl Future<Output = ()>) {
        if self.cache.capacity == 0 {
            return;
        }
        self.follow_cache_events(&*self.cache, stop).await;
    }

    /// Tells `listener` of every change heard on [`CACHE_CHANNEL`] until `stop`, over a
    /// connection of its own (named [`CACHE_LISTENER_NAME`]), and whether LISTEN is up:
    /// after a lost connection it is told `false`, then `true` once LISTEN is back.
    pub async fn follow_cache_events(&self, listener: &dyn CacheListener, stop: impl Future<Output = ()>) {
        let options = (*self.pool.connect_options()).clone().application_name(CACHE_LISTENER_NAME);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(options);
        tokio::select! {
            () = stop => {}
            () = listen(&pool, listener) => {}
        }
        listener.set_listening(false);
        pool.close().await;
    }
}

async fn listen(pool: &PgPool, cache: &dyn CacheListener) {
    let mut backoff = Backoff::default();
    loop {
        match subscribe(pool).await {
            Ok(mut listener) => {
                // Anything cached before may have missed a notification.
                cache.set_listening(true);
                backoff.reset();
                tracing::info!("cache on: listening for changes");
                follow(&mut listener, cache).await;
                cache.set_listening(false);
            }
            Err(e) => tracing::warn!(error = %e, "cache off: LISTEN failed; reading through to the database"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn subscribe(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    // A lost connection is reported at once, not after a silent reconnect.
    listener.eager_reconnect(false);
    listener.listen(CACHE_CHANNEL).await?;
    Ok(listener)
}

/// Applies notifications until the connection is lost.
async fn follow(listener: &mut PgListener, cache: &dyn CacheListener) {
    loop {
        let why = match tokio::time::timeout(HEARTBEAT, listener.try_recv()).await {
            Ok(Ok(Some(notification))) => {
                cache.changed(CacheEvent::parse(notification.payload()));
                continue;
            }
            Ok(Ok(None)) => "connection lost".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(_quiet) => {
                let ping = sqlx::query("SELECT 1").execute(&mut *listener);
                match tokio::time::timeout(HEARTBEAT_TIMEOUT, ping).await {
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "heartbeat timed out".to_owned(),
                }
            }
        };
        tracing::warn!(error = %why, "cache off until LISTEN is back; reading through to the database");
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(tenant_id: Uuid) -> Caller {
        Caller { tenant_id, key_id: Uuid::now_v7(), rate_limit: None }
    }

    fn settings() -> TenantSettings {
        TenantSettings { default_locale: "en".into(), adhoc_types: true, http_action_urls: false }
    }

    fn listening(capacity: usize) -> Cache {
        let cache = Cache::new(capacity);
        cache.set_listening(true);
        cache
    }

    #[test]
    fn nothing_is_kept_while_not_listening() {
        let cache = Cache::new(10);
        let tenant = Uuid::now_v7();
        cache.put_settings(cache.fill(), tenant, settings());
        assert_eq!(cache.settings(tenant), None);
        cache.set_listening(true);
        cache.put_settings(cache.fill(), tenant, settings());
        assert_eq!(cache.settings(tenant), Some(settings()));
        cache.set_listening(false);
        assert_eq!(cache.settings(tenant), None, "stopping empties the cache");
    }

    #[test]
    fn a_read_that_started_before_an_eviction_keeps_nothing() {
        let cache = listening(10);
        let (tenant, other) = (Uuid::now_v7(), Uuid::now_v7());
        let fill = cache.fill();
        cache.evict(other);
        cache.put_settings(fill, tenant, settings());
        assert_eq!(cache.settings(tenant), None);
        cache.put_settings(cache.fill(), tenant, settings());
        assert_eq!(cache.settings(tenant), Some(settings()));
    }

    #[test]
    fn eviction_drops_the_tenants_entries_and_callers_only() {
        let cache = listening(10);
        let (tenant, other) = (Uuid::now_v7(), Uuid::now_v7());
        let fill = cache.fill();
        cache.put_caller(fill, vec![1], caller(tenant));
        cache.put_caller(fill, vec![2], caller(other));
        cache.put_type(fill, tenant, "a".into(), None);
        cache.put_templates(fill, tenant, "a".into(), Arc::from(vec![]));
        cache.put_settings(fill, other, settings());
        cache.evict(tenant);
        assert!(cache.caller(&[1]).is_none());
        assert!(cache.notification_type(tenant, "a").is_none());
        assert!(cache.templates(tenant, "a").is_none());
        assert!(cache.caller(&[2]).is_some());
        assert_eq!(cache.settings(other), Some(settings()));
        cache.invalidate("*");
        assert!(cache.caller(&[2]).is_none());
    }

    #[test]
    fn the_least_recently_used_entry_goes_when_full() {
        let cache = listening(2);
        let tenant = Uuid::now_v7();
        for key in ["a", "b"] {
            cache.put_type(cache.fill(), tenant, key.into(), None);
        }
        assert!(matches!(cache.notification_type(tenant, "a"), Some(None)));
        cache.put_type(cache.fill(), tenant, "c".into(), None);
        assert!(cache.notification_type(tenant, "b").is_none());
        assert!(matches!(cache.notification_type(tenant, "a"), Some(None)));
        assert_eq!(cache.state().entries.len(), 2);
    }

    #[test]
    fn unknown_keys_are_remembered_for_their_ttl_and_forgotten_on_any_change() {
        let cache = Cache::remembering_unknown_keys(10, 2, Duration::from_secs(60));
        cache.put_unknown_key(cache.fill(), vec![1]);
        assert!(!cache.unknown_key(&[1]), "nothing is kept while not listening");
        cache.set_listening(true);
        let fill = cache.fill();
        cache.put_unknown_key(fill, vec![1]);
        assert!(cache.unknown_key(&[1]));
        // A key created for any tenant may be one found unknown before.
        cache.evict(Uuid::now_v7());
        assert!(!cache.unknown_key(&[1]));
        cache.put_unknown_key(fill, vec![1]);
        assert!(!cache.unknown_key(&[1]), "a read that started before the change keeps nothing");
        for key in 1..=3 {
            cache.put_unknown_key(cache.fill(), vec![key]);
        }
        assert!(!cache.unknown_key(&[1]), "bounded: the oldest goes");
        assert!(cache.unknown_key(&[3]));
        if let Some(at) = cache.state().unknown.get_mut(&vec![3]) {
            *at = at.checked_sub(Duration::from_secs(60)).unwrap();
        }
        assert!(!cache.unknown_key(&[3]), "expired");
    }

    #[test]
    fn payloads_name_a_tenant_an_integration_or_everything() {
        let tenant = Uuid::now_v7();
        assert_eq!(CacheEvent::parse(&tenant.to_string()), CacheEvent::Tenant(tenant));
        assert_eq!(
            CacheEvent::parse(&format!("integration:{tenant}:sms")),
            CacheEvent::Integration { tenant_id: tenant, channel: "sms".into() }
        );
        assert_eq!(CacheEvent::parse("*"), CacheEvent::All);
        assert_eq!(CacheEvent::parse("integration:nope:sms"), CacheEvent::All);
        let cache = listening(10);
        cache.put_settings(cache.fill(), tenant, settings());
        cache.invalidate(&format!("integration:{tenant}:sms"));
        assert_eq!(cache.settings(tenant), Some(settings()), "the API caches nothing of integrations");
    }

    #[test]
    fn a_key_is_due_a_touch_once_a_minute() {
        let cache = listening(10);
        let tenant = Uuid::now_v7();
        cache.put_caller(cache.fill(), vec![1], caller(tenant));
        assert!(!cache.caller(&[1]).unwrap().1);
        if let Some(Entry::Caller { touched, .. }) = cache.state().entries.get_mut(&Key::Caller(vec![1])) {
            *touched = touched.checked_sub(TOUCH_EVERY).unwrap();
        }
        assert!(cache.caller(&[1]).unwrap().1);
        assert!(!cache.caller(&[1]).unwrap().1, "the touch is counted as done");
    }
}
