//! How one attempt reaches a provider: in the channel's order of preference, skipping a
//! provider paused by its circuit breaker, pacing each to its rate limit, and moving on
//! to the next after a failure that did not reach the recipient.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use domain::{DeliveryJob, FailureKind, SendFailure, SendOutcome};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{
    ChannelSettings, Provider,
    metrics::{METRICS, ProviderLabels},
};

/// What came of an attempt, and which provider it came from.
pub struct Dispatched {
    pub provider: String,
    pub outcome: SendOutcome,
}

struct Slot {
    provider: Arc<dyn Provider>,
    /// Minimum spacing between sends, from the provider's rate limit.
    spacing: Option<Duration>,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    next_send: Option<Instant>,
    paused_until: Option<Instant>,
}

/// A provider's rate slot, taken and waited for before the claim: the wait for a slow
/// rate limit is spent before the lease starts, so it cannot outlive the lease.
pub struct Paced {
    slot: usize,
}

pub struct Dispatcher {
    slots: Vec<Slot>,
    cool_down: Duration,
    timeout: Duration,
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
                Slot { provider, spacing, state: Mutex::default() }
            })
            .collect();
        Self { slots, cool_down: settings.circuit_cool_down, timeout }
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
            if let Some(at) = slot.reserve() {
                tokio::time::sleep_until(at).await;
                return Some(Paced { slot: i });
            }
        }
        None
    }

    /// Tries the providers in order. A success or a permanent or ambiguous failure ends the
    /// attempt (an ambiguous failure may have reached the recipient: another provider
    /// would send a duplicate). A retryable or configuration failure moves on to the next
    /// provider; a configuration failure also pauses its provider for the cool-down.
    /// `paced`: the slot already taken for this send, used without waiting again.
    pub async fn send(&self, job: &DeliveryJob, paced: Option<Paced>) -> Dispatched {
        let mut last: Option<Dispatched> = None;
        for (i, slot) in self.slots.iter().enumerate() {
            if paced.as_ref().is_none_or(|p| p.slot != i) {
                let Some(wait) = slot.reserve() else { continue };
                tokio::time::sleep_until(wait).await;
            }
            let name = slot.provider.name().to_owned();
            let started = Instant::now();
            let call = tracing::info_span!("provider", provider = %name);
            let outcome = tokio::time::timeout(self.timeout, slot.provider.send(job).instrument(call))
                .await
                .unwrap_or_else(|_| {
                    SendOutcome::Failed(SendFailure::new(
                        FailureKind::Ambiguous,
                        "timeout",
                        format!("no answer from the provider within {:?}", self.timeout),
                    ))
                });
            METRICS
                .provider_latency
                .get_or_create(&ProviderLabels { channel: job.channel.as_str(), provider: name.clone() })
                .observe(started.elapsed().as_secs_f64());
            let next = match &outcome {
                SendOutcome::Sent(_) => false,
                SendOutcome::Failed(f) => match f.kind {
                    FailureKind::Permanent | FailureKind::Ambiguous => false,
                    FailureKind::Retryable => true,
                    FailureKind::Config => {
                        slot.pause(self.cool_down);
                        tracing::warn!(provider = %name, code = %f.code, cool_down = ?self.cool_down,
                            "configuration or account error: provider paused");
                        true
                    }
                },
            };
            if !next {
                return Dispatched { provider: name, outcome };
            }
            if let SendOutcome::Failed(f) = &outcome {
                tracing::info!(provider = %name, code = %f.code, "provider failed; trying the next one");
            }
            last = Some(Dispatched { provider: name, outcome });
        }
        last.unwrap_or_else(|| Dispatched {
            provider: "none".into(),
            outcome: SendOutcome::Failed(SendFailure::new(
                FailureKind::Config,
                "providers_paused",
                "every provider of the channel is paused after configuration errors",
            )),
        })
    }
}

impl Slot {
    /// The time this send may go, or `None` while the provider is paused.
    fn reserve(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("never poisoned");
        if state.paused_until.is_some_and(|until| until > now) {
            return None;
        }
        let at = state.next_send.map_or(now, |n| n.max(now));
        if let Some(spacing) = self.spacing {
            state.next_send = Some(at + spacing);
        }
        Some(at)
    }

    fn pause(&self, cool_down: Duration) {
        self.state.lock().expect("never poisoned").paused_until = Some(Instant::now() + cool_down);
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
        }
    }

    fn dispatcher(providers: Vec<Arc<Scripted>>, settings: ChannelSettings) -> Dispatcher {
        Dispatcher::new(
            providers.into_iter().map(|p| p as Arc<dyn Provider>).collect(),
            &settings,
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn a_retryable_failure_fails_over_and_an_ambiguous_one_does_not() {
        let (first, second) = (provider("first", Some(FailureKind::Retryable)), provider("second", None));
        let d = dispatcher(vec![first.clone(), second.clone()], ChannelSettings::default());
        let result = d.send(&job(), None).await;
        assert_eq!(result.provider, "second");
        assert!(matches!(result.outcome, SendOutcome::Sent(_)));

        let (first, second) = (provider("first", Some(FailureKind::Ambiguous)), provider("second", None));
        let d = dispatcher(vec![first, second.clone()], ChannelSettings::default());
        assert_eq!(d.send(&job(), None).await.provider, "first");
        assert_eq!(second.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_configuration_error_pauses_the_provider_for_the_cool_down() {
        let broken = provider("broken", Some(FailureKind::Config));
        let d = dispatcher(vec![broken.clone()], ChannelSettings::default());
        let result = d.send(&job(), None).await;
        assert_eq!(result.provider, "broken");
        assert_eq!(d.paused(), vec!["broken"]);
        assert!(d.all_paused_until().is_some());
        // Paused: not called again.
        let result = d.send(&job(), None).await;
        assert_eq!(result.provider, "none");
        assert_eq!(broken.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(d.all_paused_until().is_none());
        d.send(&job(), None).await;
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
            d.send(&job(), None).await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
