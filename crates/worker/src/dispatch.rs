//! How one attempt reaches a provider: in the channel's order of preference, skipping a
//! provider paused by its circuit breaker, pacing each to its rate limit, and moving on
//! to the next after a failure that did not reach the recipient. A tenant's own
//! integrations come first, under the same rules, then the operator's providers where
//! `<channel>.tenant_fallback` allows.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use domain::{Channel, DeliveryJob, FailureKind, SendFailure, SendOutcome};
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    ChannelSettings, Provider,
    metrics::{METRICS, ProviderLabels},
    tenant_clients::TenantIntegration,
};

/// Left of a claim's lease after a provider call, to record its outcome.
const RECORD_MARGIN: Duration = Duration::from_secs(1);

/// What came of an attempt, and which provider it came from.
pub struct Dispatched {
    pub provider: String,
    /// The tenant's own integration of `provider`, not the operator's provider.
    pub integration: bool,
    pub outcome: SendOutcome,
}

impl Dispatched {
    fn operator(provider: impl Into<String>, outcome: SendOutcome) -> Self {
        Self { provider: provider.into(), integration: false, outcome }
    }
}

/// The failure of a delivery no provider of the channel serves: no unit configured for its
/// address's kind (a push device of a platform the worker has no provider of, a chat
/// address of a provider not configured). Retrying would not change it.
fn no_provider() -> Dispatched {
    Dispatched::operator(
        "none",
        SendOutcome::Failed(SendFailure::new(
            FailureKind::Permanent,
            "no_provider",
            "no provider of this channel sends to this kind of address (none configured serves it)",
        )),
    )
}

/// What comes of one provider's answer: whether the attempt moves on to the next. An
/// address the provider reported gone ends it whatever its kind: it is dead for every
/// provider, and the record removes it.
fn moves_on(outcome: &SendOutcome) -> bool {
    match outcome {
        SendOutcome::Sent(_) => false,
        SendOutcome::Failed(f) => !f.address_gone && matches!(f.kind, FailureKind::Retryable | FailureKind::Config),
    }
}

struct Slot {
    provider: Arc<dyn Provider>,
    /// Minimum spacing between sends, from the provider's rate limit.
    spacing: Option<Duration>,
    /// Sends waiting for a paced slot take turns, in the order they came.
    turn: tokio::sync::Mutex<()>,
    /// Wakes the send whose turn it is when a slot is given back.
    given_back: tokio::sync::Notify,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    next_send: Option<Instant>,
    paused_until: Option<Instant>,
    /// Slots taken so far: the ticket of the last one.
    taken: u64,
    /// Sends waiting for their turn or their time.
    waiting: u32,
}

/// A provider's rate slot, taken and waited for before the claim: the wait for a slow
/// rate limit is spent before the lease starts, so it cannot outlive the lease. Given back
/// ([`Dispatcher::give_back`]) when the claim finds nothing to send.
pub struct Paced {
    slot: usize,
    taken: Taken,
}

/// One slot of one provider, and what the slot's schedule was before it was taken.
struct Taken {
    ticket: u64,
    before: Option<Instant>,
}

/// Why a provider has no slot for this send.
enum NoSlot {
    /// Paused by its circuit breaker.
    Paused,
    /// Its next slot comes too late.
    Busy,
}

pub struct Dispatcher {
    slots: Vec<Slot>,
    cool_down: Duration,
    timeout: Duration,
    /// Whether a tenant's delivery may use `slots` (`<channel>.tenant_fallback`).
    tenant_fallback: bool,
    /// Tenants' integrations paused after a configuration error: (tenant, provider) ->
    /// the integration's version and until when. Pruned of expired ones as it grows.
    tenant_pauses: Mutex<HashMap<(Uuid, String), (i64, Instant)>>,
}

impl Dispatcher {
    pub fn new(providers: Vec<Arc<dyn Provider>>, settings: &ChannelSettings, timeout: Duration) -> Self {
        let slots = providers
            .into_iter()
            .map(|provider| {
                let spacing = settings
                    .rate_limits
                    .get(provider.name())
                    .map(|per_second| Duration::from_secs_f64(1.0 / per_second));
                Slot {
                    provider,
                    spacing,
                    turn: tokio::sync::Mutex::new(()),
                    given_back: tokio::sync::Notify::new(),
                    state: Mutex::default(),
                }
            })
            .collect();
        Self {
            slots,
            cool_down: settings.circuit_cool_down,
            timeout,
            tenant_fallback: settings.tenant_fallback,
            tenant_pauses: Mutex::default(),
        }
    }

    /// Whether tenants' deliveries may use the operator's providers at all.
    pub fn tenant_fallback(&self) -> bool {
        self.tenant_fallback
    }

    /// The providers' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.provider.name()).collect()
    }

    /// When every provider is paused, the earliest time one resumes.
    pub fn all_paused_until(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        for slot in &self.slots {
            match slot.state.lock().expect("never poisoned").paused_until {
                Some(until) if until > now => earliest = Some(earliest.map_or(until, |e| e.min(until))),
                _ => return None,
            }
        }
        earliest
    }

    /// Providers paused now, for readiness and the log.
    pub fn paused(&self) -> Vec<String> {
        let now = Instant::now();
        self.slots
            .iter()
            .filter(|s| s.state.lock().expect("never poisoned").paused_until.is_some_and(|u| u > now))
            .map(|s| s.provider.name().to_owned())
            .collect()
    }

    /// Takes the rate slot of the first provider not paused and waits for it; `None` if
    /// every provider is paused. For the send that follows the claim ([`Self::send`]).
    pub async fn pace(&self) -> Option<Paced> {
        for (i, slot) in self.slots.iter().enumerate() {
            if let Ok(taken) = slot.take(None).await {
                return Some(Paced { slot: i, taken });
            }
        }
        None
    }

    /// Gives back a slot the claim found no use for (a stale copy, an unknown delivery),
    /// so duplicates do not use up a tightly limited provider's sends: the next send may
    /// have it, unless a later slot was taken meanwhile (then spacing them would not hold).
    pub fn give_back(&self, paced: Option<Paced>) {
        if let Some(paced) = paced {
            self.slots[paced.slot].give_back(paced.taken);
        }
    }

    /// Tries the providers in order. A success or a permanent or ambiguous failure ends the
    /// attempt (an ambiguous failure may have reached the recipient: another provider
    /// would send a duplicate). A retryable or configuration failure moves on to the next
    /// provider; a configuration failure also pauses its provider for the cool-down.
    /// `paced`: the slot already taken for this send, used without waiting again. Any
    /// other provider's slot is waited for inside the claim's lease, which ends at
    /// `lease_ends`: a provider whose slot would come too late for its call (and
    /// [`RECORD_MARGIN`] to record it) to end within the lease is skipped, as if
    /// unavailable, and the delivery retries.
    #[cfg(test)]
    pub async fn send(&self, job: &DeliveryJob, paced: Option<Paced>, lease_ends: Instant) -> Dispatched {
        let mut paced = paced;
        let dispatched = self.send_operator(job, &mut paced, lease_ends, false, false).await;
        self.give_back(paced);
        dispatched
    }

    /// As the operator's providers alone (`send`), the tenant's own integrations (`own`, in order) first: the same
    /// failover rules, a configuration error pausing that integration alone (not the
    /// operator's provider of its name, not another tenant's), a client whose `serves` is
    /// false skipped, one that could not be built counted as its configuration failure.
    /// Then the operator's providers if `<channel>.tenant_fallback` allows; without it, a
    /// tenant with no integration gets `no_integration` (a `config` failure, retried). The
    /// rate slot `paced` is the operator's first provider's: given back unless used.
    pub async fn send_for_tenant(
        &self,
        job: &DeliveryJob,
        own: &[TenantIntegration],
        paced: Option<Paced>,
        lease_ends: Instant,
    ) -> Dispatched {
        let mut paced = paced;
        let dispatched = self.send_tenant(job, own, &mut paced, lease_ends).await;
        self.give_back(paced);
        dispatched
    }

    async fn send_tenant(
        &self,
        job: &DeliveryJob,
        own: &[TenantIntegration],
        paced: &mut Option<Paced>,
        lease_ends: Instant,
    ) -> Dispatched {
        let send_by = lease_ends.checked_sub(self.timeout + RECORD_MARGIN).unwrap_or_else(Instant::now);
        let mut last: Option<Dispatched> = None;
        // The first call of an attempt always fits: the lease is checked at start to hold
        // every provider's call. Only later ones can find it used up.
        let mut called = false;
        // Whether one of the tenant's integrations serves the address, paused or not.
        let mut served = false;
        for integration in own {
            let own_failure =
                |outcome| Dispatched { provider: integration.provider.clone(), integration: true, outcome };
            let client = match &integration.client {
                Ok(client) => client,
                Err(unusable) => {
                    last = Some(own_failure(SendOutcome::Failed(unusable.clone())));
                    continue;
                }
            };
            if !client.serves(job) {
                continue;
            }
            served = true;
            if self.tenant_paused(job.tenant_id, integration) {
                continue;
            }
            if called && Instant::now() > send_by {
                tracing::info!(provider = %integration.provider, "no time left in the lease for the tenant's integration");
                break;
            }
            called = true;
            let outcome = self.call(client.as_ref(), job).await;
            if let SendOutcome::Failed(f) = &outcome
                && f.kind == FailureKind::Config
            {
                self.pause_tenant(job.tenant_id, integration);
                tracing::warn!(provider = %integration.provider, code = %f.code, cool_down = ?self.cool_down,
                    "configuration or account error: the tenant's integration paused");
            }
            if !moves_on(&outcome) {
                return own_failure(outcome);
            }
            if let SendOutcome::Failed(f) = &outcome {
                tracing::info!(provider = %integration.provider, code = %f.code, "tenant's integration failed; trying the next");
            }
            last = Some(own_failure(outcome));
        }
        // A push token works only with the credentials it was issued for (an FCM project,
        // an APNs team and topic, a VAPID key): the operator's providers would be refused,
        // or answer that the token belongs to another sender, which can read as a dead
        // device. So a tenant whose integration serves the device never falls back.
        let bound = served && job.channel == Channel::Push;
        if self.tenant_fallback && !bound {
            let operator = self.send_operator(job, paced, lease_ends, called, served).await;
            // Nothing of the operator's was tried: the tenant's last failure says more.
            return match (last, operator.provider.as_str()) {
                (Some(own), "none") => own,
                (_, _) => operator,
            };
        }
        last.unwrap_or_else(|| {
            let (code, message) = if own.is_empty() {
                ("no_integration", "the tenant has no active integration for this channel, and the operator's providers are not used for tenants (tenant_fallback = false)")
            } else {
                ("integrations_unavailable", "none of the tenant's integrations could take this delivery (paused or not serving its address), and the operator's providers are not used for tenants (tenant_fallback = false)")
            };
            Dispatched::operator("none", SendOutcome::Failed(SendFailure::new(FailureKind::Config, code, message)))
        })
    }

    fn tenant_paused(&self, tenant_id: Uuid, integration: &TenantIntegration) -> bool {
        let pauses = self.tenant_pauses.lock().expect("never poisoned");
        pauses
            .get(&(tenant_id, integration.provider.clone()))
            .is_some_and(|(version, until)| *version == integration.version && *until > Instant::now())
    }

    fn pause_tenant(&self, tenant_id: Uuid, integration: &TenantIntegration) {
        let mut pauses = self.tenant_pauses.lock().expect("never poisoned");
        let now = Instant::now();
        pauses.retain(|_, (_, until)| *until > now);
        pauses.insert((tenant_id, integration.provider.clone()), (integration.version, now + self.cool_down));
    }

    /// One provider call, bounded by the provider timeout (no answer: ambiguous).
    async fn call(&self, provider: &dyn Provider, job: &DeliveryJob) -> SendOutcome {
        let name = provider.name();
        let started = Instant::now();
        let span = tracing::info_span!("provider", provider = %name);
        let outcome =
            tokio::time::timeout(self.timeout, provider.send(job).instrument(span)).await.unwrap_or_else(|_| {
                SendOutcome::Failed(SendFailure::new(
                    FailureKind::Ambiguous,
                    "timeout",
                    format!("no answer from the provider within {:?}", self.timeout),
                ))
            });
        METRICS
            .provider_latency
            .get_or_create(&ProviderLabels { channel: job.channel.as_str(), provider: name.to_owned() })
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    /// `called`: a provider was already called in this attempt (a tenant's integration);
    /// `served`: one of the tenant's integrations serves the address (paused or not).
    async fn send_operator(
        &self,
        job: &DeliveryJob,
        paced: &mut Option<Paced>,
        lease_ends: Instant,
        mut called: bool,
        mut served: bool,
    ) -> Dispatched {
        let send_by = lease_ends.checked_sub(self.timeout + RECORD_MARGIN).unwrap_or_else(Instant::now);
        let mut last: Option<Dispatched> = None;
        let mut busy = None;
        for (i, slot) in self.slots.iter().enumerate() {
            if !slot.provider.serves(job) {
                continue;
            }
            served = true;
            if called && Instant::now() > send_by {
                // The calls before used up the lease.
                busy.get_or_insert_with(|| slot.provider.name().to_owned());
                continue;
            }
            if paced.as_ref().is_some_and(|p| p.slot == i) {
                // The slot taken before the claim is used now.
                *paced = None;
            } else {
                match slot.take(Some(send_by)).await {
                    // Its slot came, but too late for its call within the lease.
                    Ok(taken) if called && Instant::now() > send_by => {
                        slot.give_back(taken);
                        tracing::info!(provider = %slot.provider.name(), "no time left in the lease; skipping the provider");
                        busy.get_or_insert_with(|| slot.provider.name().to_owned());
                        continue;
                    }
                    Ok(_) => {}
                    Err(NoSlot::Paused) => continue,
                    Err(NoSlot::Busy) => {
                        tracing::info!(provider = %slot.provider.name(), "no rate slot within the lease; skipping the provider");
                        busy.get_or_insert_with(|| slot.provider.name().to_owned());
                        continue;
                    }
                }
            }
            let name = slot.provider.name().to_owned();
            called = true;
            let outcome = self.call(slot.provider.as_ref(), job).await;
            if let SendOutcome::Failed(f) = &outcome
                && f.kind == FailureKind::Config
            {
                slot.pause(self.cool_down);
                tracing::warn!(provider = %name, code = %f.code, cool_down = ?self.cool_down,
                    "configuration or account error: provider paused");
            }
            if !moves_on(&outcome) {
                return Dispatched::operator(name, outcome);
            }
            if let SendOutcome::Failed(f) = &outcome {
                tracing::info!(provider = %name, code = %f.code, "provider failed; trying the next one");
            }
            last = Some(Dispatched::operator(name, outcome));
        }
        if let (None, Some(provider)) = (&last, busy) {
            return Dispatched::operator(
                provider,
                SendOutcome::Failed(SendFailure::new(
                    FailureKind::Retryable,
                    "rate_limited",
                    "no provider of the channel had a rate slot within the claim's lease",
                )),
            );
        }
        if !served {
            return no_provider();
        }
        last.unwrap_or_else(|| {
            Dispatched::operator(
                "none",
                SendOutcome::Failed(SendFailure::new(
                    FailureKind::Config,
                    "providers_paused",
                    "every provider of the channel serving this address is paused after configuration errors",
                )),
            )
        })
    }
}

impl Slot {
    /// Takes the provider's next slot and waits for its time, or fails at once when the
    /// provider is paused, or when the slot would come after `deadline`.
    async fn take(&self, deadline: Option<Instant>) -> Result<Taken, NoSlot> {
        let Some(spacing) = self.spacing else {
            return if self.is_paused() { Err(NoSlot::Paused) } else { Ok(Taken { ticket: 0, before: None }) };
        };
        let waiting = {
            let mut state = self.state.lock().expect("never poisoned");
            let now = Instant::now();
            if state.paused_until.is_some_and(|until| until > now) {
                return Err(NoSlot::Paused);
            }
            // The earliest this send could go, with every send waiting ahead of it.
            let next = state.next_send.map_or(now, |n| n.max(now)) + spacing * state.waiting;
            if deadline.is_some_and(|d| next > d) {
                return Err(NoSlot::Busy);
            }
            state.waiting += 1;
            Waiting(&self.state)
        };
        let taken = async {
            let _turn = self.turn.lock().await;
            loop {
                let given_back = self.given_back.notified();
                let at = {
                    let mut state = self.state.lock().expect("never poisoned");
                    let now = Instant::now();
                    if state.paused_until.is_some_and(|until| until > now) {
                        return Err(NoSlot::Paused);
                    }
                    match state.next_send {
                        Some(at) if at > now => at,
                        before => {
                            // On time, or late by less than a spacing: the schedule holds.
                            let at = before.filter(|b| *b + spacing > now).unwrap_or(now);
                            state.next_send = Some(at + spacing);
                            state.taken += 1;
                            return Ok(Taken { ticket: state.taken, before });
                        }
                    }
                };
                if deadline.is_some_and(|d| at > d) {
                    return Err(NoSlot::Busy);
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = given_back => {}
                }
            }
        };
        let taken = match deadline {
            Some(d) => tokio::time::timeout_at(d, taken).await.unwrap_or(Err(NoSlot::Busy)),
            None => taken.await,
        };
        drop(waiting);
        taken
    }

    /// Puts the schedule back as it was before `taken`, if no later slot was taken since.
    fn give_back(&self, taken: Taken) {
        let mut state = self.state.lock().expect("never poisoned");
        if self.spacing.is_some() && state.taken == taken.ticket {
            state.next_send = taken.before;
            drop(state);
            self.given_back.notify_one();
        }
    }

    fn is_paused(&self) -> bool {
        self.state.lock().expect("never poisoned").paused_until.is_some_and(|until| until > Instant::now())
    }

    fn pause(&self, cool_down: Duration) {
        self.state.lock().expect("never poisoned").paused_until = Some(Instant::now() + cool_down);
    }
}

/// One send counted as waiting for a slot until it has one (or gave up).
struct Waiting<'a>(&'a Mutex<SlotState>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("never poisoned").waiting -= 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use domain::{Channel, Content, Priority, SendReceipt};
    use futures_util::{FutureExt, future::BoxFuture};
    use uuid::Uuid;

    use super::*;

    struct Scripted {
        name: &'static str,
        kind: Option<FailureKind>,
        calls: AtomicUsize,
    }

    impl Provider for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        fn send<'a>(&'a self, _: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let outcome = match self.kind {
                None => SendOutcome::Sent(SendReceipt { provider_message_id: "id".into(), response_excerpt: None }),
                Some(kind) => SendOutcome::Failed(SendFailure::new(kind, "x", "scripted")),
            };
            async move { outcome }.boxed()
        }
    }

    #[test]
    fn an_address_gone_ends_the_attempt_whatever_its_kind() {
        let gone = SendFailure::gone("UNREGISTERED", "not registered");
        assert!(!moves_on(&SendOutcome::Failed(gone.clone())));
        // Even one a provider would sort as retryable: the address is dead for all of them.
        assert!(!moves_on(&SendOutcome::Failed(SendFailure { kind: FailureKind::Retryable, ..gone })));
        assert!(moves_on(&SendOutcome::Failed(SendFailure::new(FailureKind::Retryable, "busy", "429"))));
    }

    fn provider(name: &'static str, kind: Option<FailureKind>) -> Arc<Scripted> {
        Arc::new(Scripted { name, kind, calls: AtomicUsize::new(0) })
    }

    fn job() -> DeliveryJob {
        DeliveryJob {
            delivery_id: Uuid::now_v7(),
            notification_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            channel: Channel::Sms,
            attempt: 1,
            retry_base: 0,
            recipient: "+15551234567".into(),
            kind: "t".into(),
            priority: Priority::Normal,
            content: Content::default(),
            data: Default::default(),
            workflow: None,
            retry: None,
            device: None,
        }
    }

    fn dispatcher(providers: Vec<Arc<Scripted>>, settings: ChannelSettings) -> Dispatcher {
        Dispatcher::new(
            providers.into_iter().map(|p| p as Arc<dyn Provider>).collect(),
            &settings,
            Duration::from_secs(5),
        )
    }

    /// A lease that ends long after anything these tests wait for.
    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test]
    async fn a_retryable_failure_fails_over_and_an_ambiguous_one_does_not() {
        let (first, second) = (provider("first", Some(FailureKind::Retryable)), provider("second", None));
        let d = dispatcher(vec![first.clone(), second.clone()], ChannelSettings::default());
        let result = d.send(&job(), None, far()).await;
        assert_eq!(result.provider, "second");
        assert!(matches!(result.outcome, SendOutcome::Sent(_)));

        let (first, second) = (provider("first", Some(FailureKind::Ambiguous)), provider("second", None));
        let d = dispatcher(vec![first, second.clone()], ChannelSettings::default());
        assert_eq!(d.send(&job(), None, far()).await.provider, "first");
        assert_eq!(second.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_configuration_error_pauses_the_provider_for_the_cool_down() {
        let broken = provider("broken", Some(FailureKind::Config));
        let d = dispatcher(vec![broken.clone()], ChannelSettings::default());
        let result = d.send(&job(), None, far()).await;
        assert_eq!(result.provider, "broken");
        assert_eq!(d.paused(), vec!["broken"]);
        assert!(d.all_paused_until().is_some());
        // Paused: not called again.
        let result = d.send(&job(), None, far()).await;
        assert_eq!(result.provider, "none");
        assert_eq!(broken.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(d.all_paused_until().is_none());
        d.send(&job(), None, far()).await;
        assert_eq!(broken.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_are_spaced_to_the_rate_limit() {
        let p = provider("paced", None);
        let mut settings = ChannelSettings::default();
        settings.rate_limits.insert("paced".into(), 10.0);
        let d = dispatcher(vec![p], settings);
        let start = Instant::now();
        for _ in 0..5 {
            d.send(&job(), None, far()).await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_given_back_goes_to_the_next_send_at_once() {
        let mut settings = ChannelSettings::default();
        settings.rate_limits.insert("paced".into(), 1.0);
        let d = Arc::new(dispatcher(vec![provider("paced", None)], settings));
        let start = Instant::now();
        let stale = d.pace().await;
        let next = tokio::spawn({
            let d = d.clone();
            async move { d.pace().await.map(|_| Instant::now()) }
        });
        // The next send waits for its slot, a second away, until the claim of the first
        // finds nothing to send.
        tokio::task::yield_now().await;
        d.give_back(stale);
        assert_eq!(next.await.unwrap().unwrap(), start);
        // The one after that keeps the spacing.
        let _ = d.pace().await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_is_not_given_back_once_a_later_one_was_taken() {
        let mut settings = ChannelSettings::default();
        settings.rate_limits.insert("paced".into(), 1.0);
        let d = dispatcher(vec![provider("paced", None)], settings);
        let start = Instant::now();
        let stale = d.pace().await;
        let _ = d.pace().await;
        d.give_back(stale);
        let _ = d.pace().await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failover_provider_whose_slot_comes_after_the_lease_is_skipped() {
        let first = provider("first", Some(FailureKind::Retryable));
        let second = provider("second", None);
        let mut settings = ChannelSettings::default();
        settings.rate_limits.insert("second".into(), 0.1);
        let d = dispatcher(vec![first.clone(), second.clone()], settings);
        // The second's next slot is 10 s away.
        let _ = d.slots[1].take(None).await;
        let start = Instant::now();
        // Its call (5 s at most) and the record would not end within the lease: skipped,
        // at once, and the attempt is the first's retryable failure.
        let lease_ends = start + Duration::from_secs(15);
        let result = d.send(&job(), None, lease_ends).await;
        assert_eq!(result.provider, "first");
        assert!(matches!(&result.outcome, SendOutcome::Failed(f) if f.kind == FailureKind::Retryable));
        assert_eq!(second.calls.load(Ordering::SeqCst), 0);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // With room for the wait in the lease, the second is waited for.
        let result = d.send(&job(), None, start + Duration::from_secs(17)).await;
        assert_eq!(result.provider, "second");
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_provider_skipped_for_its_rate_the_delivery_retries() {
        let only = provider("only", None);
        let mut settings = ChannelSettings::default();
        settings.rate_limits.insert("only".into(), 0.1);
        let d = dispatcher(vec![only.clone()], settings);
        let _ = d.pace().await;
        let result = d.send(&job(), None, Instant::now() + Duration::from_secs(7)).await;
        assert_eq!(result.provider, "only");
        assert!(
            matches!(&result.outcome, SendOutcome::Failed(f) if f.kind == FailureKind::Retryable && f.code == "rate_limited")
        );
        assert_eq!(only.calls.load(Ordering::SeqCst), 0);
    }

    fn own(provider: &'static str, kind: Option<FailureKind>, version: i64) -> (Arc<Scripted>, TenantIntegration) {
        let p = provider_named(provider, kind);
        let client: Arc<dyn Provider> = p.clone();
        (p, TenantIntegration { provider: provider.into(), version, client: Ok(client) })
    }

    fn provider_named(name: &'static str, kind: Option<FailureKind>) -> Arc<Scripted> {
        provider(name, kind)
    }

    fn fallback(allowed: bool) -> ChannelSettings {
        ChannelSettings { tenant_fallback: allowed, ..Default::default() }
    }

    #[tokio::test]
    async fn a_tenants_integrations_fail_over_in_order_before_the_operators() {
        let operator = provider("twilio", None);
        let d = dispatcher(vec![operator.clone()], fallback(true));
        let (first, a) = own("twilio", Some(FailureKind::Retryable), 1);
        let (second, b) = own("sns", None, 1);
        let result = d.send_for_tenant(&job(), &[a, b], None, far()).await;
        assert_eq!((result.provider.as_str(), result.integration), ("sns", true));
        assert!(matches!(result.outcome, SendOutcome::Sent(_)));
        assert_eq!((first.calls.load(Ordering::SeqCst), second.calls.load(Ordering::SeqCst)), (1, 1));
        assert_eq!(operator.calls.load(Ordering::SeqCst), 0);

        // An ambiguous answer stops there: neither the next integration nor the operator.
        let (_, a) = own("twilio", Some(FailureKind::Ambiguous), 1);
        let (second, b) = own("sns", None, 1);
        let result = d.send_for_tenant(&job(), &[a, b], None, far()).await;
        assert_eq!((result.provider.as_str(), result.integration), ("twilio", true));
        assert_eq!(second.calls.load(Ordering::SeqCst), 0);
        assert_eq!(operator.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_operators_providers_take_over_only_where_fallback_is_allowed() {
        let operator = provider("twilio", None);
        let d = dispatcher(vec![operator.clone()], fallback(true));
        let (_, a) = own("twilio", Some(FailureKind::Retryable), 1);
        let result = d.send_for_tenant(&job(), &[a], None, far()).await;
        assert_eq!((result.provider.as_str(), result.integration), ("twilio", false));
        assert!(matches!(result.outcome, SendOutcome::Sent(_)));
        let result = d.send_for_tenant(&job(), &[], None, far()).await;
        assert_eq!((result.provider.as_str(), result.integration), ("twilio", false));

        let operator = provider("twilio", None);
        let d = dispatcher(vec![operator.clone()], fallback(false));
        let (_, a) = own("twilio", Some(FailureKind::Retryable), 1);
        let result = d.send_for_tenant(&job(), &[a], None, far()).await;
        assert!(matches!(&result.outcome, SendOutcome::Failed(f) if f.kind == FailureKind::Retryable));
        assert!(result.integration);
        let result = d.send_for_tenant(&job(), &[], None, far()).await;
        assert!(
            matches!(&result.outcome, SendOutcome::Failed(f) if f.kind == FailureKind::Config && f.code == "no_integration" && f.message.contains("no active integration")),
        );
        assert_eq!(operator.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_configuration_error_pauses_that_tenants_integration_only() {
        let operator = provider("twilio", None);
        let d = dispatcher(vec![operator.clone()], fallback(true));
        let (broken, a) = own("twilio", Some(FailureKind::Config), 3);
        let job_a = job();
        let result = d.send_for_tenant(&job_a, &[a], None, far()).await;
        assert_eq!((result.provider.as_str(), result.integration), ("twilio", false), "failed over");
        assert!(d.paused().is_empty(), "the operator's provider of that name is not paused");
        let (_, a) = own("twilio", Some(FailureKind::Config), 3);
        d.send_for_tenant(&job_a, &[a], None, far()).await;
        assert_eq!(broken.calls.load(Ordering::SeqCst), 1, "paused: not called again");
        // Another tenant's integration of that name, and a changed one, are not paused.
        let (other, b) = own("twilio", Some(FailureKind::Config), 3);
        d.send_for_tenant(&job(), &[b], None, far()).await;
        assert_eq!(other.calls.load(Ordering::SeqCst), 1);
        let (changed, c) = own("twilio", None, 4);
        let result = d.send_for_tenant(&job_a, &[c], None, far()).await;
        assert_eq!(changed.calls.load(Ordering::SeqCst), 1);
        assert!(result.integration);
    }

    #[tokio::test]
    async fn an_unusable_integration_or_one_not_serving_the_address_is_skipped() {
        let d = dispatcher(vec![], fallback(false));
        let unusable = TenantIntegration {
            provider: "twilio".into(),
            version: 1,
            client: Err(SendFailure::new(FailureKind::Config, "integration_unusable", "named")),
        };
        let result = d.send_for_tenant(&job(), &[unusable], None, far()).await;
        assert!(matches!(&result.outcome, SendOutcome::Failed(f) if f.code == "integration_unusable"));
        assert_eq!((result.provider.as_str(), result.integration), ("twilio", true));

        struct Picky(Arc<Scripted>);
        impl Provider for Picky {
            fn name(&self) -> &str {
                self.0.name()
            }
            fn serves(&self, job: &DeliveryJob) -> bool {
                job.recipient.starts_with("slack:")
            }
            fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
                self.0.send(job)
            }
        }
        let slack = provider("slack", None);
        let picky =
            TenantIntegration { provider: "slack".into(), version: 1, client: Ok(Arc::new(Picky(slack.clone()))) };
        let (discord, other) = own("discord", None, 1);
        let result = d.send_for_tenant(&job(), &[picky, other], None, far()).await;
        assert_eq!(result.provider, "discord");
        assert_eq!((slack.calls.load(Ordering::SeqCst), discord.calls.load(Ordering::SeqCst)), (0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_device_a_tenants_integration_serves_never_goes_to_the_operators_provider() {
        let operator = provider("fcm", None);
        let d = dispatcher(vec![operator.clone()], fallback(true));
        let push = DeliveryJob { channel: Channel::Push, recipient: "phone-1".into(), ..job() };
        // The tenant's credentials refused: its integration is paused, and the device waits
        // for it (retried) rather than going to the operator's project, which would refuse it.
        let (broken, a) = own("fcm", Some(FailureKind::Config), 1);
        let result = d.send_for_tenant(&push, &[a], None, far()).await;
        assert_eq!((result.provider.as_str(), result.integration), ("fcm", true));
        assert!(matches!(&result.outcome, SendOutcome::Failed(f) if f.kind == FailureKind::Config));
        let (_, a) = own("fcm", Some(FailureKind::Config), 1);
        let result = d.send_for_tenant(&push, &[a], None, far()).await;
        assert!(matches!(&result.outcome, SendOutcome::Failed(f) if f.kind == FailureKind::Config), "paused");
        assert_eq!((broken.calls.load(Ordering::SeqCst), operator.calls.load(Ordering::SeqCst)), (1, 0));
        // A tenant without a push integration still uses the operator's.
        let result = d.send_for_tenant(&push, &[], None, far()).await;
        assert_eq!((result.provider.as_str(), result.integration), ("fcm", false));
        // Other channels fail over to the operator as before.
        let (_, a) = own("twilio", Some(FailureKind::Config), 1);
        let result = d.send_for_tenant(&job(), &[a], None, far()).await;
        assert!(!result.integration);
    }

    #[tokio::test]
    async fn an_address_no_provider_serves_fails_at_once() {
        struct Never(Arc<Scripted>);
        impl Provider for Never {
            fn name(&self) -> &str {
                self.0.name()
            }
            fn serves(&self, _: &DeliveryJob) -> bool {
                false
            }
            fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
                self.0.send(job)
            }
        }
        let apns = provider("apns", None);
        let d = Dispatcher::new(vec![Arc::new(Never(apns.clone()))], &fallback(true), Duration::from_secs(5));
        let no_provider = |r: &Dispatched| matches!(&r.outcome, SendOutcome::Failed(f) if f.kind == FailureKind::Permanent && f.code == "no_provider");
        assert!(no_provider(&d.send(&job(), None, far()).await));
        assert!(no_provider(&d.send_for_tenant(&job(), &[], None, far()).await));
        // One of the tenant's integrations serves it but is paused: that is worth waiting for.
        let client: Arc<dyn Provider> = provider("fcm", Some(FailureKind::Config));
        let paused = TenantIntegration { provider: "fcm".into(), version: 1, client: Ok(client) };
        d.send_for_tenant(&job(), std::slice::from_ref(&paused), None, far()).await;
        let result = d.send_for_tenant(&job(), &[paused], None, far()).await;
        assert!(
            matches!(&result.outcome, SendOutcome::Failed(f) if f.kind == FailureKind::Config),
            "{:?}",
            result.outcome
        );
        assert_eq!(apns.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_taken_before_the_claim_is_given_back_when_the_tenants_integration_sends() {
        let mut settings = ChannelSettings::default();
        settings.rate_limits.insert("paced".into(), 1.0);
        let d = dispatcher(vec![provider("paced", None)], settings);
        let start = Instant::now();
        let paced = d.pace().await;
        let (_, a) = own("twilio", None, 1);
        assert!(d.send_for_tenant(&job(), &[a], paced, far()).await.integration);
        // The operator's next send has the slot at once.
        let _ = d.pace().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_operators_provider_is_skipped_when_the_tenants_calls_used_up_the_lease() {
        struct Slow;
        impl Provider for Slow {
            fn name(&self) -> &str {
                "twilio"
            }
            fn send<'a>(&'a self, _: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
                async {
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    SendOutcome::Failed(SendFailure::new(FailureKind::Retryable, "busy", "slow"))
                }
                .boxed()
            }
        }
        let operator = provider("sandbox", None);
        let d = dispatcher(vec![operator.clone()], fallback(true));
        let slow = TenantIntegration { provider: "twilio".into(), version: 1, client: Ok(Arc::new(Slow)) };
        // 5 s per call and 1 s to record: after 4 s of the tenant's call, a 9 s lease has
        // no room left for another.
        let result = d.send_for_tenant(&job(), &[slow], None, Instant::now() + Duration::from_secs(9)).await;
        assert!(matches!(&result.outcome, SendOutcome::Failed(f) if f.kind == FailureKind::Retryable));
        assert_eq!(operator.calls.load(Ordering::SeqCst), 0);
    }
}
