//! The rows that hold sealed chat addresses (purpose `chat-address`), as a key rotation
//! reads and rewrites them: subscribers' chat addresses, and the recipients of chat
//! deliveries that may still be sent. Each is written only if it did not change since it
//! was read.
//!
//! A sealed address is `<provider>:v1.<key id>.<…>` (`domain::chat`); SQL picks the rows
//! with one not sealed with the current key, the caller opens and seals them anew.

use domain::chat::StoredChat;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{Result, Store, StoreError};

/// A delivery still to be sent may be claimed by a worker that must open its address:
/// in flight, or `failed` (it can be retried by hand). Final ones keep their recipient.
const MAY_SEND: &str = "('pending', 'queued', 'sending', 'retrying', 'failed')";

/// Whether the chat recipient `{column}` is sealed with a key other than `$1`.
fn sealed_with_another_key(column: &str) -> String {
    format!(
        "(split_part({column}, ':', 2) LIKE 'v1.%' AND split_part(split_part({column}, ':', 2), '.', 2) <> $1::text)"
    )
}

/// A subscriber's chat addresses as read for re-sealing.
#[derive(Clone, Debug)]
pub struct SubscriberChat {
    pub tenant_id: Uuid,
    pub id: String,
    pub chat: StoredChat,
    /// The column as read, for the only-if-unchanged write.
    read: serde_json::Value,
}

/// A chat delivery's recipient as read for re-sealing.
#[derive(Clone, Debug)]
pub struct DeliveryRecipient {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub recipient: String,
}

impl Store {
    /// Up to `limit` subscribers, of any tenant, with a chat address not sealed with the
    /// key `current`, after `after` (tenant, id) in key order: the rotation's batches.
    pub async fn subscribers_to_reseal(
        &self,
        current: &str,
        after: Option<(Uuid, &str)>,
        limit: i64,
    ) -> Result<Vec<SubscriberChat>> {
        let (tenant, id) = after.unzip();
        let rows: Vec<(Uuid, String, Json<serde_json::Value>)> = sqlx::query_as(&format!(
            "SELECT s.tenant_id, s.id, s.chat FROM subscribers s
             WHERE ($2::uuid IS NULL OR (s.tenant_id, s.id) > ($2, $3::text))
               AND EXISTS (SELECT 1 FROM jsonb_each(s.chat) AS e(key, value) WHERE {})
             ORDER BY s.tenant_id, s.id
             LIMIT $4",
            sealed_with_another_key("(e.value->>'to')")
        ))
        .bind(current)
        .bind(tenant)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(tenant_id, id, Json(read))| {
                // The error leaves the value out: it holds sealed addresses.
                let chat = serde_json::from_value(read.clone()).map_err(|_| {
                    StoreError::Corrupt(format!("chat addresses of a subscriber of tenant {tenant_id} do not read"))
                })?;
                Ok(SubscriberChat { tenant_id, id, chat, read })
            })
            .collect()
    }

    /// Replaces the chat addresses of `subscriber` with `chat` if they are still as read;
    /// `false` when they changed meanwhile (written anew, hence sealed with the current
    /// key, or erased).
    pub async fn reseal_subscriber_chat(&self, subscriber: &SubscriberChat, chat: &StoredChat) -> Result<bool> {
        let done = sqlx::query("UPDATE subscribers SET chat = $4 WHERE tenant_id = $1 AND id = $2 AND chat = $3")
            .bind(subscriber.tenant_id)
            .bind(&subscriber.id)
            .bind(Json(&subscriber.read))
            .bind(Json(chat))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Up to `limit` chat deliveries, of any tenant, that may still be sent and whose
    /// recipient is not sealed with the key `current`, after the id `after`.
    pub async fn deliveries_to_reseal(
        &self,
        current: &str,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<DeliveryRecipient>> {
        let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(&format!(
            "SELECT id, tenant_id, recipient FROM deliveries
             WHERE channel = 'chat' AND status IN {MAY_SEND} AND {}
               AND ($2::uuid IS NULL OR id > $2)
             ORDER BY id
             LIMIT $3",
            sealed_with_another_key("recipient")
        ))
        .bind(current)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id, tenant_id, recipient)| DeliveryRecipient { id, tenant_id, recipient }).collect())
    }

    /// Replaces the recipient of `delivery` with `recipient` (the same address sealed with
    /// another key) if it is still as read; `false` when it changed meanwhile (erased).
    /// `updated_at` stays: the sweeper reads it as the time of the delivery's last step.
    pub async fn reseal_delivery_recipient(&self, delivery: &DeliveryRecipient, recipient: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE deliveries SET recipient = $3 WHERE id = $1 AND recipient = $2")
            .bind(delivery.id)
            .bind(&delivery.recipient)
            .bind(recipient)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
