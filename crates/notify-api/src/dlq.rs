//! `notify-admin dlq list|replay|discard <channel|webhooks>`: an operator's look at a
//! dead-letter queue, and its redrive. The broker mechanics are `queue::dead_letters`;
//! this picks the messages and counts what was done.
//!
//! A pass takes at most the messages the queue held when it began, so a replayed message
//! that is dead-lettered again is not taken a second time, and a pass always ends.

use std::time::Duration;

use domain::{Publishable, Route};
use queue::{DeadLetter, DeadLetters};
use uuid::Uuid;

/// How long a replay waits for the broker to confirm one republished message.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Which dead letters a command acts on: all, or those of one delivery (or webhook
/// message), at most `limit`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Selection {
    pub limit: Option<usize>,
    pub delivery: Option<Uuid>,
}

impl Selection {
    /// An unreadable message names no delivery: only a selection without one takes it.
    fn takes(&self, letter: &DeadLetter) -> bool {
        match (self.delivery, &letter.message) {
            (None, _) => true,
            (Some(id), Ok(message)) => message.id() == id,
            (Some(_), Err(_)) => false,
        }
    }
}

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Published again and removed from the dead-letter queue.
    pub replayed: usize,
    /// Unreadable, so left in the dead-letter queue (`discard` removes them).
    pub unreadable: usize,
}

/// The first `limit` dead letters of `route` (all when `None`), left in the queue.
pub async fn list(amqp_url: &str, route: Route, selection: Selection) -> anyhow::Result<Vec<DeadLetter>> {
    let mut listed = Vec::new();
    pass(amqp_url, route, selection, async |_, letter| {
        listed.push(letter);
        Ok(true)
    })
    .await?;
    Ok(listed)
}

/// Publishes the selected dead letters to their queue again, removing each from
/// the dead-letter queue once the broker confirmed its copy. Unreadable ones stay.
pub async fn replay(amqp_url: &str, route: Route, selection: Selection) -> anyhow::Result<Replayed> {
    let mut done = Replayed::default();
    pass(amqp_url, route, selection, async |dlq, letter| {
        if letter.message.is_err() {
            done.unreadable += 1;
            return Ok(false);
        }
        dlq.replay(&letter).await?;
        done.replayed += 1;
        Ok(true)
    })
    .await?;
    Ok(done)
}

/// Deletes the selected dead letters, unreadable ones included; returns how many.
pub async fn discard(amqp_url: &str, route: Route, selection: Selection) -> anyhow::Result<usize> {
    let mut discarded = 0;
    pass(amqp_url, route, selection, async |dlq, letter| {
        dlq.remove(&letter).await?;
        discarded += 1;
        Ok(true)
    })
    .await?;
    Ok(discarded)
}

/// Takes the queue's messages in order and hands the selected ones to `act`, which answers
/// whether it counts towards the limit; every message not replayed or removed goes back
/// at the end, errors included.
async fn pass(
    amqp_url: &str,
    route: Route,
    selection: Selection,
    mut act: impl AsyncFnMut(&mut DeadLetters, DeadLetter) -> queue::Result<bool>,
) -> anyhow::Result<()> {
    let conn = queue::connect(amqp_url, "notify-api-dlq").await?;
    let mut dlq = DeadLetters::open(&conn, route, CONFIRM_TIMEOUT).await?;
    let walked = async {
        let (mut left, mut counted) = (dlq.depth(), 0);
        while left > 0 && selection.limit.is_none_or(|limit| counted < limit) {
            let Some(letter) = dlq.next().await? else { break };
            left -= 1;
            if selection.takes(&letter) && act(&mut dlq, letter).await? {
                counted += 1;
            }
        }
        Ok::<_, queue::QueueError>(())
    }
    .await;
    let released = dlq.release().await;
    let _ = conn.close(200, "done".into()).await;
    walked?;
    released?;
    Ok(())
}
