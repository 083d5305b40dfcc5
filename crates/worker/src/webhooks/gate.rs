//! Per-endpoint caps (`webhooks.endpoint_concurrency`, `webhooks.endpoint_rate`): one slow
//! or busy receiver must not take the worker's prefetch. An endpoint has at most its
//! concurrency of messages in flight in a worker, and as many again waiting for one of
//! those to finish; a message past that, or over the endpoint's rate, is not held here:
//! it goes back to the outbox to come again after [`Refused`]'s delay, without counting an
//! attempt. The caps are each worker replica's own.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// How long a message waits when its endpoint has as many in flight and waiting as it
/// may: about the time a send takes, spread so deferred messages do not all come back at
/// once.
const BUSY_DELAY: Duration = Duration::from_millis(500);
/// The shortest wait for a rate slot.
const RATE_DELAY_MIN: Duration = Duration::from_millis(50);
/// Endpoints remembered before idle ones are forgotten.
const KEPT: usize = 1024;

pub(crate) struct Gates {
    concurrency: u32,
    /// Messages per second, with a burst of one second's worth (at least one).
    rate: Option<f64>,
    open: Mutex<HashMap<Uuid, Gate>>,
}

struct Gate {
    slots: Arc<Semaphore>,
    /// Messages waiting for a slot.
    waiting: u32,
    tokens: f64,
    refilled: Instant,
}

/// An endpoint over its cap: come back after this long.
#[derive(Debug, PartialEq)]
pub(crate) struct Refused(pub Duration);

/// A message's slot among its endpoint's in flight, given back when dropped.
pub(crate) struct Pass {
    _slot: OwnedSemaphorePermit,
}

impl Gates {
    pub(crate) fn new(concurrency: u32, rate: Option<f64>) -> Self {
        Self { concurrency, rate, open: Mutex::default() }
    }

    fn burst(rate: f64) -> f64 {
        rate.max(1.0)
    }

    /// A slot for a message to `endpoint`, at once or once one is free; refused when as
    /// many messages as its concurrency wait already, or its rate is used up.
    pub(crate) async fn enter(&self, endpoint: Uuid) -> Result<Pass, Refused> {
        let slots = {
            let mut open = self.open.lock().expect("no panic while the gates are locked");
            let now = Instant::now();
            if open.len() >= KEPT {
                let (cap, rate) = (self.concurrency as usize, self.rate);
                open.retain(|_, g| {
                    let idle = g.waiting == 0 && g.slots.available_permits() == cap;
                    let refilled =
                        rate.is_none_or(|r| g.tokens + r * (now - g.refilled).as_secs_f64() >= Self::burst(r));
                    !(idle && refilled)
                });
            }
            let full = self.rate.map_or(0.0, Self::burst);
            let cap = self.concurrency;
            let gate = open.entry(endpoint).or_insert_with(|| Gate {
                slots: Arc::new(Semaphore::new(cap as usize)),
                waiting: 0,
                tokens: full,
                refilled: now,
            });
            if let Some(rate) = self.rate {
                gate.tokens = (gate.tokens + rate * (now - gate.refilled).as_secs_f64()).min(full);
                gate.refilled = now;
                if gate.tokens < 1.0 {
                    return Err(Refused(Duration::from_secs_f64((1.0 - gate.tokens) / rate).max(RATE_DELAY_MIN)));
                }
            }
            let slot = Arc::clone(&gate.slots).try_acquire_owned().ok();
            if slot.is_none() && gate.waiting >= cap {
                return Err(Refused(BUSY_DELAY.mul_f64(0.5 + rand::random::<f64>())));
            }
            // Let through, at once or after a wait: it takes its rate token now.
            if self.rate.is_some() {
                gate.tokens -= 1.0;
            }
            if let Some(permit) = slot {
                return Ok(Pass { _slot: permit });
            }
            gate.waiting += 1;
            Arc::clone(&gate.slots)
        };
        let permit = slots.acquire_owned().await.expect("a gate's semaphore is never closed");
        if let Some(gate) = self.open.lock().expect("no panic while the gates are locked").get_mut(&endpoint) {
            gate.waiting -= 1;
        }
        Ok(Pass { _slot: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endpoint_at_its_concurrency_queues_as_many_again_then_refuses_and_others_are_not() {
        let gates = Gates::new(2, None);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let first = gates.enter(a).await.unwrap();
        let _second = gates.enter(a).await.unwrap();
        let (waiting_1, waiting_2) = (gates.enter(a), gates.enter(a));
        let mut waiting = Box::pin(async { tokio::join!(waiting_1, waiting_2) });
        assert!(futures_util::poll!(&mut waiting).is_pending(), "two wait for a slot");
        let Err(Refused(wait)) = gates.enter(a).await else { panic!("a fifth of a is over the cap") };
        assert!(wait >= BUSY_DELAY / 2 && wait <= BUSY_DELAY * 3 / 2, "{wait:?}");
        let _other = gates.enter(b).await.expect("b has its own cap");
        drop(first);
        drop(_second);
        let (third, fourth) = waiting.await;
        assert!(third.is_ok() && fourth.is_ok(), "the waiting ones took the freed slots");
    }

    #[tokio::test]
    async fn an_endpoint_over_its_rate_waits_for_the_next_slot() {
        let gates = Gates::new(100, Some(2.0));
        let a = Uuid::now_v7();
        // A burst of one second's worth, then one slot every half second.
        drop(gates.enter(a).await.unwrap());
        drop(gates.enter(a).await.unwrap());
        let Err(Refused(wait)) = gates.enter(a).await else { panic!("the burst is used up") };
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
    }
}
