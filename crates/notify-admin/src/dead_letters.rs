//! `notify-admin dlq list|replay|discard <channel|webhooks>`: an operator's pass over a
//! dead-letter queue (`notify_api::dlq`).

use anyhow::bail;
use domain::OutboxMessage;

use crate::Dlq;

pub async fn run(amqp_url: &str, command: Dlq) -> anyhow::Result<()> {
    use notify_api::dlq;
    match command {
        Dlq::List { queue, limit } => {
            let letters = dlq::list(amqp_url, queue, dlq::Selection { limit: Some(limit), delivery: None }).await?;
            for letter in &letters {
                println!("{}", describe(letter));
            }
            println!("{} listed", letters.len());
        }
        Dlq::Replay { queue, selection } => {
            let done = dlq::replay(amqp_url, queue, selection.into()).await?;
            println!("{} replayed", done.replayed);
            if done.unreadable > 0 {
                println!("{} unreadable, left in the queue (remove them with discard)", done.unreadable);
            }
        }
        Dlq::Discard { queue, selection, yes } => {
            if !yes {
                bail!("discard deletes dead letters for good: add --yes");
            }
            println!("{} discarded", dlq::discard(amqp_url, queue, selection.into()).await?);
        }
    }
    Ok(())
}

/// One line per dead letter: its ids (never content), and the broker's latest `x-death`.
fn describe(letter: &queue::DeadLetter) -> String {
    let what = match &letter.message {
        Ok(OutboxMessage::Delivery(m)) => format!(
            "delivery={} notification={} tenant={} attempt={}",
            m.delivery_id, m.notification_id, m.tenant_id, m.attempt
        ),
        Ok(OutboxMessage::Webhook(m)) => {
            format!("webhook_message={} tenant={} attempt={}", m.message_id, m.tenant_id, m.attempt)
        }
        Err(e) => format!("unreadable ({} bytes): {e}", letter.body.len()),
    };
    let death = match letter.deaths.first() {
        Some(d) => {
            let time = d.time.and_then(|t| time::OffsetDateTime::from_unix_timestamp(i64::try_from(t).ok()?).ok());
            let time = time.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
            let time = time.unwrap_or_else(|| "?".into());
            format!(" reason={} count={} time={time} queue={}", d.reason, d.count, d.queue)
        }
        None => String::new(),
    };
    format!("{what}{death}")
}
