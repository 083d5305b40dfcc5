//! Delivery receipts: what a provider reports about a message after accepting it, and the
//! suppression list that hard bounces and complaints fill.
//!
//! Receipts arrive duplicated and out of order, so they move a delivery only forwards
//! (see [`replaceable_by`]): applying one twice, or an older one after a newer one, changes
//! nothing.

use std::collections::BTreeSet;

use domain::{Channel, DeliveryStatus};
use uuid::Uuid;

use crate::{
    Result, Store,
    deliveries::{refresh_notification_statuses, truncate},
};

/// A provider's report on one message, by the provider's id for it.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The provider's name as the worker recorded it on the delivery (`twilio`, `ses`, ...).
    pub provider: &'static str,
    pub provider_message_id: String,
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
    /// Some delivery has the receipt's provider message id.
    pub known: bool,
    /// Of those, deliveries whose status changed.
    pub changed: u64,
    /// Addresses newly put on a suppression list.
    pub suppressed: u64,
}

/// The statuses a receipt may move a delivery out of, into `to`. Receipts only confirm or
/// refute a send, so they start from `sent`; `delivered`, `bounced`, `undelivered` and
/// `failed` are final, except that a delivered email may still bounce (a receiving server
/// can accept a message and bounce it later). A delivery in any other state (retried by an
/// operator, say) is left alone.
fn replaceable_by(to: DeliveryStatus) -> &'static [&'static str] {
    match to {
        DeliveryStatus::Bounced => &["sent", "delivered"],
        DeliveryStatus::Delivered | DeliveryStatus::Undelivered | DeliveryStatus::Failed => &["sent"],
        _ => &[],
    }
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

impl Store {
    /// Applies a receipt in one transaction: moves the deliveries it names forwards (never
    /// backwards), suppresses its addresses for their tenants, and refreshes the status of
    /// every notification whose delivery changed. A receipt for a message we do not know
    /// (another system's, or one whose send is not recorded yet) does nothing.
    pub async fn apply_receipt(&self, receipt: &Receipt) -> Result<ReceiptApplied> {
        let mut tx = self.pool.begin().await?;
        // The notifications first, as `record_attempt` locks them: concurrent outcomes and
        // receipts of one notification serialize, and its aggregate sees all of them.
        let locked: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT n.id FROM notifications n
             WHERE n.id IN (SELECT notification_id FROM deliveries WHERE provider = $1 AND provider_message_id = $2)
             ORDER BY n.id FOR NO KEY UPDATE",
        )
        .bind(receipt.provider)
        .bind(&receipt.provider_message_id)
        .fetch_all(&mut *tx)
        .await?;
        if locked.is_empty() {
            return Ok(ReceiptApplied::default());
        }
        let changed = match receipt.status {
            Some(status) => move_forward(&mut tx, receipt, status).await?,
            None => vec![],
        };
        let suppressed = match &receipt.suppress {
            Some(suppression) => suppress(&mut tx, receipt, suppression).await?,
            None => 0,
        };
        let notifications: Vec<Uuid> = changed.iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
        refresh_notification_statuses(&mut tx, &notifications).await?;
        tx.commit().await?;
        Ok(ReceiptApplied { known: true, changed: changed.len() as u64, suppressed })
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

/// Moves the receipt's deliveries to `status` where that is forwards; returns the
/// notification of each delivery that changed.
async fn move_forward(tx: &mut sqlx::PgConnection, receipt: &Receipt, status: DeliveryStatus) -> Result<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "UPDATE deliveries SET status = $3, last_error_code = $4, last_error_message = $5, updated_at = now()
         WHERE provider = $1 AND provider_message_id = $2 AND status = ANY($6)
         RETURNING notification_id",
    )
    .bind(receipt.provider)
    .bind(&receipt.provider_message_id)
    .bind(status.as_str())
    .bind(receipt.error_code.as_deref())
    .bind(receipt.error_message.as_deref().map(|m| truncate(m, 1000)))
    .bind(replaceable_by(status))
    .fetch_all(tx)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Puts the addresses on the suppression list of each tenant with a delivery of the
/// receipt's message on the suppression's channel; returns how many were new.
async fn suppress(tx: &mut sqlx::PgConnection, receipt: &Receipt, suppression: &Suppression) -> Result<u64> {
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
         ON CONFLICT (tenant_id, channel, address) DO NOTHING",
    )
    .bind(receipt.provider)
    .bind(&receipt.provider_message_id)
    .bind(suppression.channel.as_str())
    .bind(suppression.reason.as_str())
    .bind(&addresses)
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
