//! Per-endpoint caps (`webhooks.endpoint_concurrency`, `webhooks.endpoint_rate`): one slow
//! or busy receiver must not take the worker's prefetch. A message over its endpoint's cap
//! is not held here: it goes back to the outbox to come again after [`Refused`]'s delay,
//! without counting an attempt. The caps are each worker replica's own.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

/// How long a message waits when its endpoint has as many in flight as it may: about the
/// time a send takes, spread so deferred messages do not all come back at once.
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
    in_flight: u32,
    tokens: f64,
    refilled: Instant,
}

/// An endpoint over its cap: come back after this long.
#[derive(Debug, PartialEq)]
pub(crate) struct Refused(pub Duration);

/// A message's place among its endpoint's in flight, given back when dropped.
pub(crate) struct Pass<'a> {
    gates: &'a Gates,
    endpoint: Uuid,
}

impl Gates {
    pub(crate) fn new(concurrency: u32, rate: Option<f64>) -> Self {
        Self { concurrency, rate, open: Mutex::default() }
    }

    fn burst(rate: f64) -> f64 {
        rate.max(1.0)
    }

    pub(crate) fn enter(&self, endpoint: Uuid) -> Result<Pass<'_>, Refused> {
        let mut open = self.open.lock().expect("no panic while the gates are locked");
        let now = Instant::now();
        if open.len() >= KEPT {
            let rate = self.rate;
            open.retain(|_, g| {
                g.in_flight > 0
                    || rate.is_some_and(|r| g.tokens + r * (now - g.refilled).as_secs_f64() < Self::burst(r))
            });
        }
        let full = self.rate.map_or(0.0, Self::burst);
        let gate = open.entry(endpoint).or_insert(Gate { in_flight: 0, tokens: full, refilled: now });
        if gate.in_flight >= self.concurrency {
            return Err(Refused(BUSY_DELAY.mul_f64(0.5 + rand::random::<f64>())));
        }
        if let Some(rate) = self.rate {
            gate.tokens = (gate.tokens + rate * (now - gate.refilled).as_secs_f64()).min(full);
            gate.refilled = now;
            if gate.tokens < 1.0 {
                return Err(Refused(Duration::from_secs_f64((1.0 - gate.tokens) / rate).max(RATE_DELAY_MIN)));
            }
            gate.tokens -= 1.0;
        }
        gate.in_flight += 1;
        Ok(Pass { gates: self, endpoint })
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut open = self.gates.open.lock().expect("no panic while the gates are locked");
        if let Some(gate) = open.get_mut(&self.endpoint) {
            gate.in_flight -= 1;
            if gate.in_flight == 0 && self.gates.rate.is_none() {
                open.remove(&self.endpoint);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_at_its_concurrency_is_refused_until_one_finishes_and_others_are_not() {
        let gates = Gates::new(2, None);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let first = gates.enter(a).unwrap();
        let _second = gates.enter(a).unwrap();
        let Err(Refused(wait)) = gates.enter(a) else { panic!("a third of a is over the cap") };
        assert!(wait >= BUSY_DELAY / 2 && wait <= BUSY_DELAY * 3 / 2, "{wait:?}");
        let _other = gates.enter(b).expect("b has its own cap");
        drop(first);
        let _third = gates.enter(a).expect("a has room again");
    }

    #[test]
    fn an_endpoint_over_its_rate_waits_for_the_next_slot() {
        let gates = Gates::new(100, Some(2.0));
        let a = Uuid::now_v7();
        // A burst of one second's worth, then one slot every half second.
        drop(gates.enter(a).unwrap());
        drop(gates.enter(a).unwrap());
        let Err(Refused(wait)) = gates.enter(a) else { panic!("the burst is used up") };
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
    }
}
