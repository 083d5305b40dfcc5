//! The clients a worker builds from tenants' own integrations: per tenant (a worker has one
//! channel), its active integrations of the channel in failover order, each opened with
//! the worker's keyring, read through its provider's unit as `Source::Integration` and
//! built with the worker's one client for tenants, whose resolver refuses internal
//! addresses (`SharedClient::for_tenants`).
//!
//! Kept until `notify_cache` says the tenant's integrations of this channel changed
//! ([`store::CacheEvent::Integration`]), in a bounded LRU, each entry at most [`MAX_AGE`]
//! old in case a notification was missed. While LISTEN is down nothing is kept: every
//! attempt reads the tenant's integrations afresh, as the API's cache does.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bootstrap::seal::Keyring;
use domain::{Channel, FailureKind, Provider, SendFailure};
use providers::{Context, IntegrationRules, Source, http::SharedClient};
use store::{CacheEvent, CacheListener, Store, StoredIntegration};
use uuid::Uuid;

/// Tenants whose clients are kept at once.
pub const CAPACITY: usize = 1_000;
/// The longest a tenant's clients are kept without a read of its integrations.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// One of a tenant's integrations, ready to send, or why it cannot.
pub struct TenantIntegration {
    /// The provider unit's name (`twilio`), recorded with the attempt.
    pub provider: String,
    /// The row's version when the client was built: a pause applies to this version only.
    pub version: i64,
    /// The client, or the `config` failure that names the integration and why it is
    /// unusable (a key gone, settings refused), never its secret.
    pub client: Result<Arc<dyn Provider>, SendFailure>,
}

/// A tenant's integrations of the channel, in failover order (empty: it has none).
pub type Integrations = Arc<[TenantIntegration]>;

pub struct TenantClients {
    channel: Channel,
    store: Store,
    keyring: Option<Keyring>,
    rules: IntegrationRules,
    /// The worker's one HTTP client for tenants' integrations (internal addresses refused).
    http: Arc<SharedClient>,
    provider_timeout: Duration,
    state: Mutex<State>,
}

struct State {
    /// LISTEN is up: entries may be kept.
    listening: bool,
    /// Moves on every eviction, so a read that started before it keeps nothing.
    epoch: u64,
    entries: hashlink::LruCache<Uuid, (Instant, Integrations)>,
}

impl TenantClients {
    pub fn new(
        channel: Channel,
        store: Store,
        keyring: Option<Keyring>,
        rules: IntegrationRules,
        http: Arc<SharedClient>,
        provider_timeout: Duration,
    ) -> Self {
        let state = State { listening: false, epoch: 0, entries: hashlink::LruCache::new(CAPACITY) };
        Self { channel, store, keyring, rules, http, provider_timeout, state: Mutex::new(state) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kept clients of the tenant, if any are kept and young enough.
    pub fn kept(&self, tenant_id: Uuid) -> Option<Integrations> {
        let mut state = self.state();
        match state.entries.get(&tenant_id) {
            Some((at, integrations)) if at.elapsed() < MAX_AGE => Some(integrations.clone()),
            Some(_) => {
                state.entries.remove(&tenant_id);
                None
            }
            None => None,
        }
    }

    /// The tenant's integrations of the channel, built: kept ones, else read and built
    /// (and kept while LISTEN is up). A database error is a retryable failure.
    pub async fn of(&self, tenant_id: Uuid) -> Result<Integrations, SendFailure> {
        if let Some(kept) = self.kept(tenant_id) {
            return Ok(kept);
        }
        let epoch = {
            let state = self.state();
            state.listening.then_some(state.epoch)
        };
        let stored = self.store.active_integrations(tenant_id, self.channel).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot read the tenant's integrations");
            SendFailure::new(
                FailureKind::Retryable,
                "integrations_unreadable",
                "the tenant's integrations could not be read",
            )
        })?;
        let mut built = Vec::with_capacity(stored.len());
        for integration in &stored {
            built.push(self.build(integration).await);
        }
        let built: Integrations = built.into();
        let mut state = self.state();
        if state.listening && epoch == Some(state.epoch) {
            state.entries.insert(tenant_id, (Instant::now(), built.clone()));
        }
        Ok(built)
    }

    async fn build(&self, stored: &StoredIntegration) -> TenantIntegration {
        let provider = stored.provider.clone();
        let unusable = |why: String| {
            tracing::warn!(provider = %stored.provider, version = stored.version, why = %why,
                "a tenant's integration is unusable: skipped");
            SendFailure::new(
                FailureKind::Config,
                "integration_unusable",
                format!("the tenant's {} integration `{}` is unusable: {why}", self.channel, stored.provider),
            )
        };
        let client = async {
            let unit = providers::find(self.channel, &stored.provider)
                .ok_or_else(|| unusable("this worker has no such provider".into()))?;
            let keyring = self
                .keyring
                .as_ref()
                .ok_or_else(|| unusable("this worker has no secrets.keys to open its secrets".into()))?;
            // The error names the key id or says the value does not open; never the value.
            let settings = stored.open(keyring).map_err(|e| unusable(format!("its secrets do not open: {e}")))?;
            let integration =
                providers::Integration { tenant_id: stored.tenant_id, settings: &settings, rules: &self.rules };
            // Errors name `settings.<key>` and what is wrong with it, not its value.
            let settings = unit.settings(Source::Integration(&integration)).map_err(|e| unusable(format!("{e}")))?;
            let ctx = Context { http: &self.http, provider_timeout: self.provider_timeout };
            // A build error may quote what it was given: not repeated.
            settings.build(&ctx).await.map_err(|_| unusable("its client could not be built".into()))
        }
        .await;
        TenantIntegration { provider, version: stored.version, client }
    }
}

impl CacheListener for TenantClients {
    fn set_listening(&self, listening: bool) {
        let mut state = self.state();
        state.epoch += 1;
        state.entries.clear();
        state.listening = listening;
    }

    fn changed(&self, event: CacheEvent) {
        let mut state = self.state();
        match event {
            CacheEvent::Integration { tenant_id, channel } if channel == self.channel.as_str() => {
                state.epoch += 1;
                state.entries.remove(&tenant_id);
            }
            // Another channel's integrations, or what the API caches.
            CacheEvent::Integration { .. } | CacheEvent::Tenant(_) => {}
            CacheEvent::All => {
                state.epoch += 1;
                state.entries.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> TenantClients {
        let store = Store::connect_lazy("postgres://127.0.0.1:1/none", 2).unwrap();
        let http = Arc::new(SharedClient::new(Duration::from_secs(5)));
        TenantClients::new(Channel::Sms, store, None, IntegrationRules::default(), http, Duration::from_secs(5))
    }

    fn keep(clients: &TenantClients, tenant: Uuid, at: Instant) {
        let one = TenantIntegration {
            provider: "twilio".into(),
            version: 1,
            client: Err(SendFailure::new(FailureKind::Config, "x", "x")),
        };
        clients.state().entries.insert(tenant, (at, Arc::from(vec![one])));
    }

    #[tokio::test]
    async fn a_tenants_clients_go_when_its_integrations_of_this_channel_change() {
        let clients = clients();
        clients.set_listening(true);
        let (tenant, other) = (Uuid::now_v7(), Uuid::now_v7());
        keep(&clients, tenant, Instant::now());
        keep(&clients, other, Instant::now());
        clients.changed(CacheEvent::Integration { tenant_id: tenant, channel: "email".into() });
        clients.changed(CacheEvent::Tenant(tenant));
        assert!(clients.kept(tenant).is_some(), "another channel's or the API's change keeps them");
        clients.changed(CacheEvent::Integration { tenant_id: tenant, channel: "sms".into() });
        assert!(clients.kept(tenant).is_none());
        assert!(clients.kept(other).is_some(), "another tenant's stay");
        clients.changed(CacheEvent::All);
        assert!(clients.kept(other).is_none());
    }

    #[tokio::test]
    async fn nothing_is_kept_without_listen_nor_past_its_age() {
        let clients = clients();
        clients.set_listening(true);
        let tenant = Uuid::now_v7();
        keep(&clients, tenant, Instant::now());
        clients.set_listening(false);
        assert!(clients.kept(tenant).is_none(), "a lost LISTEN drops everything");
        clients.set_listening(true);
        keep(&clients, tenant, Instant::now().checked_sub(MAX_AGE).unwrap());
        assert!(clients.kept(tenant).is_none(), "too old");
        assert!(clients.state().entries.is_empty());
    }
}
