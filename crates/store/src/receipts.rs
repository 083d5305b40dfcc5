//! Delivery receipts: what a provider reports about a message after accepting it, and the
//! suppression list that hard bounces and complaints fill.
//!
//! Receipts arrive duplicated and out of order, so they move a delivery only forwards
//! (see [`replaceable_by`]): applying one twice, or an older one after a newer one, changes
//! nothing.

use std::collections::BTreeSet;

use domain::{Channel, DeliveryStatus, status::Phase};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::{
    Result, Store, corrupt,
    deliveries::{refresh_notification_statuses, truncate},
};

/// A provider's report on one message, by the provider's id for it.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The provider's name as the worker recorded it on the delivery (`twilio`, `ses`, ...).
    pub provider: &'static str,
    pub provider_message_id: String,
    /// The tenant whose own integration sent the message, when the receipt came through
    /// that tenant's receipt route (signed with its secret): it moves and suppresses only
    /// that tenant's deliveries. `None`: the operator's provider account, any tenant's.
    pub tenant_id: Option<Uuid>,
    /// The delivery's new status: `delivered`, `bounced`, `undelivered` or `failed`.
    /// `None` changes no status (the receipt may still suppress addresses).
    pub status: Option<DeliveryStatus>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub suppress: Option<Suppression>,
}

/// Addresses to put on the suppression list of the tenant whose delivery the receipt
/// names.
#[derive(Debug, Clone)]
pub struct Suppression {
    pub channel: Channel,
    pub reason: SuppressionReason,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuppressionReason {
    Bounce,
    Complaint,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::Bounce => "bounce",
            SuppressionReason::Complaint => "complaint",
        }
    }
}

/// What applying a receipt did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptApplied {
    /// Some delivery the receipt may touch (its tenant's, when it has one) has its
    /// provider message id.
    pub known: bool,
    /// None has it yet: the receipt is kept until an outcome records the id.
    pub pending: bool,
    /// Of those, deliveries whose status changed.
    pub changed: u64,
    /// Addresses newly put on a suppression list.
    pub suppressed: u64,
}

/// The statuses a receipt may move a delivery out of, into `to`. Receipts only confirm or
/// refute a send, so they start from a success (`sent`, or `delivered`, which an email may
/// still leave for `bounced`: a receiving server can accept a message and bounce it later),
/// along the moves [`DeliveryStatus::next`] allows. A delivery in any other state (retried
/// by an operator, say) is left alone.
fn replaceable_by(to: DeliveryStatus) -> Vec<&'static str> {
    DeliveryStatus::ALL
        .into_iter()
        .filter(|from| from.phase() == Phase::Succeeded && from.can_become(to))
        .map(DeliveryStatus::as_str)
        .collect()
}

/// The form an address has on the suppression list, so that the intake matches it however
/// the producer wrote it: email addresses are compared without regard to ASCII case (as
/// mail providers do in practice); other addresses as they are.
pub(crate) fn suppression_address(channel: Channel, address: &str) -> String {
    match channel {
        Channel::Email => address.trim().to_ascii_lowercase(),
        _ => address.trim().to_owned(),
    }
}

/// How many of the newest pending receipts are kept, whatever their age: receipts of other
/// systems' messages on a shared provider account are stored too, and must not fill the
/// table faster than the purge empties it.
const PENDING_RECEIPTS_KEPT: i64 = 100_000;

/// How long a pending receipt waits for its send to be recorded. An outcome is recorded
/// within seconds of the provider's answer (at worst a lease, `worker.lease`, later); an
/// older receipt names another system's message or a send whose worker died, which is
/// sent again under a new id.
pub const PENDING_RECEIPT_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long a callback's token is remembered: providers retry a callback within minutes
/// (Twilio), and SNS messages older than an hour are refused anyway.
pub const RECEIPT_TOKEN_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

/// A receipt as applying it needs it, borrowed from a [`Receipt`] or a pending row.
struct Report<'a> {
    provider: &'a str,
    provider_message_id: &'a str,
    tenant_id: Option<Uuid>,
    status: Option<DeliveryStatus>,
    error_code: Option<&'a str>,
    error_message: Option<&'a str>,
    suppress: Option<&'a Suppression>,
}

impl Receipt {
    fn report(&self) -> Report<'_> {
        Report {
            provider: self.provider,
            provider_message_id: &self.provider_message_id,
            tenant_id: self.tenant_id,
            status: self.status,
            error_code: self.error_code.as_deref(),
            error_message: self.error_message.as_deref(),
            suppress: self.suppress.as_ref(),
        }
    }
}

impl Store {
    /// Applies a receipt in one transaction: moves the deliveries it names forwards (never
    /// backwards), suppresses its addresses for their tenants, and refreshes the status of
    /// every notification whose delivery changed. A receipt for a message no delivery has
    /// yet is kept as pending, and applied when the outcome that records the message's id
    /// commits (see [`apply_reports`]).
    pub async fn apply_receipt(&self, receipt: &Receipt) -> Result<ReceiptApplied> {
        let mut conn = self.pool.acquire().await?;
        apply_reports(&mut conn, receipt.provider, &receipt.provider_message_id, Some(receipt)).await
    }

    /// Applies the pending receipts whose message a delivery has now: those an outcome
    /// record left behind when its process died between its commit and applying them.
    /// Returns how many messages had some.
    pub async fn apply_claimable_receipts(&self) -> Result<u64> {
        let messages: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT p.provider, p.provider_message_id FROM pending_receipts p
             WHERE EXISTS (SELECT 1 FROM deliveries d
                           WHERE d.provider = p.provider AND d.provider_message_id = p.provider_message_id)",
        )
        .fetch_all(&self.pool)
        .await?;
        if messages.is_empty() {
            return Ok(0);
        }
        let mut conn = self.pool.acquire().await?;
        for (provider, id) in &messages {
            apply_reports(&mut conn, provider, id, None).await?;
        }
        Ok(messages.len() as u64)
    }

    /// Whether the provider's callback `token` (its own id for the callback, the same on its
    /// retries) was taken already.
    pub async fn receipt_token_seen(&self, provider: &str, token: &str) -> Result<bool> {
        let seen: Option<i32> = sqlx::query_scalar("SELECT 1 FROM receipt_tokens WHERE provider = $1 AND token = $2")
            .bind(provider)
            .bind(token)
            .fetch_optional(&self.pool)
            .await?;
        Ok(seen.is_some())
    }

    /// Records that the callback `token` was taken: after it was applied, so a failure in
    /// between lets the provider's retry apply it (applying twice moves nothing backwards).
    pub async fn remember_receipt_token(&self, provider: &str, token: &str) -> Result<()> {
        sqlx::query("INSERT INTO receipt_tokens (provider, token) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(provider)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets callback tokens seen more than `retention` ago; returns how many.
    pub async fn purge_receipt_tokens(&self, retention: std::time::Duration) -> Result<u64> {
        let done = sqlx::query("DELETE FROM receipt_tokens WHERE seen_at <= now() - $1::interval")
            .bind(sqlx::postgres::types::PgInterval::try_from(retention).unwrap_or_default())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Deletes pending receipts older than `retention`; returns how many.
    pub async fn purge_pending_receipts(&self, retention: std::time::Duration) -> Result<u64> {
        let done = sqlx::query("DELETE FROM pending_receipts WHERE received_at < now() - $1::interval")
            .bind(sqlx::postgres::types::PgInterval::try_from(retention).unwrap_or_default())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Whether `address` is on the tenant's suppression list for `channel`, and why.
    pub async fn suppression(&self, tenant_id: Uuid, channel: Channel, address: &str) -> Result<Option<String>> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT reason FROM suppressions WHERE tenant_id = $1 AND channel = $2 AND address = $3")
                .bind(tenant_id)
                .bind(channel.as_str())
                .bind(suppression_address(channel, address))
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.0))
    }
}

/// Stores a receipt that names no delivery yet, and drops the oldest beyond the window.
async fn keep_pending(tx: &mut sqlx::PgConnection, receipt: &Receipt) -> Result<()> {
    let suppress = receipt.suppress.as_ref();
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO pending_receipts (provider, provider_message_id, status, error_code, error_message,
                                       suppress_channel, suppress_reason, suppress_addresses, tenant_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(receipt.provider)
    .bind(&receipt.provider_message_id)
    .bind(receipt.status.map(|s| s.as_str()))
    .bind(receipt.error_code.as_deref())
    .bind(receipt.error_message.as_deref().map(|m| truncate(m, 1000)))
    .bind(suppress.map(|s| s.channel.as_str()))
    .bind(suppress.map(|s| s.reason.as_str()))
    .bind(suppress.map(|s| &s.addresses))
    .bind(receipt.tenant_id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM pending_receipts WHERE id <= $1")
        .bind(id - PENDING_RECEIPTS_KEPT)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

type PendingRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<String>>,
    Option<Uuid>,
);

/// Applies, in one transaction, the pending receipts of one message, in the order they
/// arrived, then `new` (if any); or, when no delivery has the message yet, keeps `new` as
/// pending.
///
/// It first takes the message's advisory lock (`lock_provider_message`), as the outcome
/// record that gives a delivery its message id does (`record_outcomes`), and reads in a
/// later statement: a receipt and that outcome cannot miss each other's uncommitted rows,
/// one waits for the other's commit and then sees it.
pub(crate) async fn apply_reports(
    conn: &mut PgConnection,
    provider: &str,
    provider_message_id: &str,
    new: Option<&Receipt>,
) -> Result<ReceiptApplied> {
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT lock_provider_message($1, $2)")
        .bind(provider)
        .bind(provider_message_id)
        .execute(&mut *tx)
        .await?;
    // The notifications first, as the outcome record locks them: concurrent outcomes and
    // receipts of one notification serialize, and its aggregate sees all of them.
    let locked: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT n.id FROM notifications n
         WHERE n.id IN (SELECT notification_id FROM deliveries WHERE provider = $1 AND provider_message_id = $2)
         ORDER BY n.id FOR NO KEY UPDATE",
    )
    .bind(provider)
    .bind(provider_message_id)
    .fetch_all(&mut *tx)
    .await?;
    if locked.is_empty() {
        if let Some(receipt) = new {
            keep_pending(&mut tx, receipt).await?;
        }
        tx.commit().await?;
        return Ok(ReceiptApplied { pending: new.is_some(), ..Default::default() });
    }
    let mut rows: Vec<PendingRow> = sqlx::query_as(
        "DELETE FROM pending_receipts WHERE provider = $1 AND provider_message_id = $2
         RETURNING id, status, error_code, error_message, suppress_channel, suppress_reason, suppress_addresses,
                   tenant_id",
    )
    .bind(provider)
    .bind(provider_message_id)
    .fetch_all(&mut *tx)
    .await?;
    rows.sort_by_key(|r| r.0);
    let mut applied = ReceiptApplied { known: true, ..Default::default() };
    let mut notifications = BTreeSet::new();
    for (_, status, error_code, error_message, channel, reason, addresses, tenant_id) in rows {
        let suppress = match (channel, reason, addresses) {
            (Some(channel), Some(reason), Some(addresses)) => Some(Suppression {
                channel: channel.parse().map_err(|_| corrupt(format!("pending receipt channel {channel}")))?,
                reason: match reason.as_str() {
                    "bounce" => SuppressionReason::Bounce,
                    "complaint" => SuppressionReason::Complaint,
                    other => return Err(corrupt(format!("pending receipt suppression reason {other}"))),
                },
                addresses,
            }),
            _ => None,
        };
        let status = status
            .map(|s| DeliveryStatus::parse(&s).ok_or_else(|| corrupt(format!("pending receipt status {s}"))))
            .transpose()?;
        let report = Report {
            provider,
            provider_message_id,
            tenant_id,
            status,
            error_code: error_code.as_deref(),
            error_message: error_message.as_deref(),
            suppress: suppress.as_ref(),
        };
        let (changed, _) = apply(&mut tx, &report).await?;
        notifications.extend(changed);
    }
    if let Some(receipt) = new {
        applied.known = names_a_delivery(&mut tx, &receipt.report()).await?;
        let (changed, suppressed) = apply(&mut tx, &receipt.report()).await?;
        applied.changed = changed.len() as u64;
        applied.suppressed = suppressed;
        notifications.extend(changed);
    }
    let notifications: Vec<Uuid> = notifications.into_iter().collect();
    refresh_notification_statuses(&mut tx, &notifications).await?;
    tx.commit().await?;
    Ok(applied)
}

/// Whether a delivery the report may touch has its message: one of its tenant's, or any
/// when it is the operator's. Another tenant's delivery of the same id stays untouched, and
/// the receipt is not kept for later either (provider ids are unique: it names nothing of
/// this tenant's, ever).
async fn names_a_delivery(tx: &mut sqlx::PgConnection, report: &Report<'_>) -> Result<bool> {
    let found: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM deliveries
         WHERE provider = $1 AND provider_message_id = $2 AND ($3::uuid IS NULL OR tenant_id = $3)
         LIMIT 1",
    )
    .bind(report.provider)
    .bind(report.provider_message_id)
    .bind(report.tenant_id)
    .fetch_optional(tx)
    .await?;
    Ok(found.is_some())
}

/// Moves the report's deliveries forwards and suppresses its addresses; returns the
/// notification of each delivery that changed, and how many addresses were new.
async fn apply(tx: &mut sqlx::PgConnection, report: &Report<'_>) -> Result<(Vec<Uuid>, u64)> {
    let changed = match report.status {
        Some(status) => move_forward(&mut *tx, report, status).await?,
        None => vec![],
    };
    let suppressed = match report.suppress {
        Some(suppression) => suppress(&mut *tx, report, suppression).await?,
        None => 0,
    };
    Ok((changed, suppressed))
}

/// Moves the report's deliveries to `status` where that is forwards; returns the
/// notification of each delivery that changed.
async fn move_forward(tx: &mut sqlx::PgConnection, report: &Report<'_>, status: DeliveryStatus) -> Result<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "UPDATE deliveries SET status = $3, last_error_code = $4, last_error_message = $5, updated_at = now()
         WHERE provider = $1 AND provider_message_id = $2 AND status = ANY($6)
           AND ($7::uuid IS NULL OR tenant_id = $7)
         RETURNING notification_id",
    )
    .bind(report.provider)
    .bind(report.provider_message_id)
    .bind(status.as_str())
    .bind(report.error_code)
    .bind(report.error_message.map(|m| truncate(m, 1000)))
    .bind(replaceable_by(status))
    .bind(report.tenant_id)
    .fetch_all(tx)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Puts the addresses on the suppression list of each tenant with a delivery of the
/// report's message on the suppression's channel (only the report's tenant when it has
/// one); returns how many were new.
async fn suppress(tx: &mut sqlx::PgConnection, report: &Report<'_>, suppression: &Suppression) -> Result<u64> {
    let addresses: BTreeSet<String> =
        suppression.addresses.iter().map(|a| suppression_address(suppression.channel, a)).collect();
    let addresses: Vec<String> = addresses.into_iter().filter(|a| !a.is_empty()).collect();
    if addresses.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "INSERT INTO suppressions (tenant_id, channel, address, reason, source)
         SELECT DISTINCT d.tenant_id, d.channel, a.address, $4, $1
         FROM deliveries d CROSS JOIN unnest($5::text[]) AS a(address)
         WHERE d.provider = $1 AND d.provider_message_id = $2 AND d.channel = $3
           AND ($6::uuid IS NULL OR d.tenant_id = $6)
         ON CONFLICT (tenant_id, channel, address) DO NOTHING",
    )
    .bind(report.provider)
    .bind(report.provider_message_id)
    .bind(suppression.channel.as_str())
    .bind(suppression.reason.as_str())
    .bind(&addresses)
    .bind(report.tenant_id)
    .execute(tx)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_only_move_forwards() {
        assert_eq!(replaceable_by(DeliveryStatus::Delivered), ["sent"]);
        assert_eq!(replaceable_by(DeliveryStatus::Failed), ["sent"]);
        assert_eq!(replaceable_by(DeliveryStatus::Undelivered), ["sent"]);
        // A delivered email may still bounce; nothing leaves bounced, failed or undelivered.
        assert_eq!(replaceable_by(DeliveryStatus::Bounced), ["sent", "delivered"]);
        for earlier in [DeliveryStatus::Pending, DeliveryStatus::Queued, DeliveryStatus::Sending, DeliveryStatus::Sent]
        {
            assert!(replaceable_by(earlier).is_empty(), "{earlier:?}");
        }
    }

    #[test]
    fn email_addresses_are_suppressed_whatever_their_case() {
        assert_eq!(suppression_address(Channel::Email, " Ada@Example.COM"), "ada@example.com");
        assert_eq!(suppression_address(Channel::Sms, "+15551234567"), "+15551234567");
    }
}
