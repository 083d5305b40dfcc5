//! Subscribers: the tenant's own ids for the people it notifies, their addresses and
//! preferences, and erasure on request.

use domain::{
    Channel,
    chat::StoredChat,
    subscriber::{Preferences, Subscriber, SubscriberInput},
};
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Result, Store, corrupt, receipts::suppression_address};

/// What a delivery's recipient becomes when its subscriber is erased.
pub const ERASED: &str = "[erased]";

#[derive(sqlx::FromRow)]
struct SubscriberRow {
    id: String,
    email: Option<String>,
    phone: Option<String>,
    whatsapp: Option<String>,
    chat: Json<StoredChat>,
    locale: Option<String>,
    timezone: Option<String>,
    data: serde_json::Value,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, email, phone, whatsapp, chat, locale, timezone, data, created_at, updated_at";

impl TryFrom<SubscriberRow> for Subscriber {
    type Error = crate::StoreError;

    fn try_from(row: SubscriberRow) -> Result<Self> {
        let data = match row.data {
            serde_json::Value::Object(map) => map,
            other => return Err(corrupt(format!("data of subscriber {} is not an object: {other}", row.id))),
        };
        Ok(Subscriber {
            id: row.id,
            email: row.email,
            phone: row.phone,
            whatsapp: row.whatsapp,
            chat: row.chat.0,
            locale: row.locale,
            timezone: row.timezone,
            data,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Statuses of a delivery not yet handed to a provider: erasure cancels them, as there is
/// no address left to send to.
const UNSENT: &str = "('pending', 'queued', 'retrying')";

impl Store {
    /// Creates or replaces the subscriber `id` (fields not given are cleared); its
    /// preferences and topic memberships stay. `chat` is its chat addresses as stored
    /// (webhook URLs sealed by the caller). `true` when it was created.
    pub async fn put_subscriber(
        &self,
        tenant_id: Uuid,
        id: &str,
        input: &SubscriberInput,
        chat: &StoredChat,
    ) -> Result<(Subscriber, bool)> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            subscriber: SubscriberRow,
            created: bool,
        }
        let row: Row = sqlx::query_as(&format!(
            "INSERT INTO subscribers AS s (tenant_id, id, email, phone, whatsapp, locale, timezone, data, chat)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, id) DO UPDATE
                SET email = EXCLUDED.email, phone = EXCLUDED.phone, whatsapp = EXCLUDED.whatsapp, chat = EXCLUDED.chat,
                    locale = EXCLUDED.locale, timezone = EXCLUDED.timezone, data = EXCLUDED.data, updated_at = now()
             RETURNING {COLUMNS}, (xmax = 0) AS created"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(input.email.as_deref())
        .bind(input.phone.as_deref())
        .bind(input.whatsapp.as_deref())
        .bind(input.locale.as_deref())
        .bind(input.timezone.as_deref())
        .bind(Json(input.data.clone().unwrap_or_default()))
        .bind(Json(chat))
        .fetch_one(&self.pool)
        .await?;
        Ok((row.subscriber.try_into()?, row.created))
    }

    pub async fn get_subscriber(&self, tenant_id: Uuid, id: &str) -> Result<Option<Subscriber>> {
        let row: Option<SubscriberRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM subscribers WHERE tenant_id = $1 AND id = $2"))
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(Subscriber::try_from).transpose()
    }

    /// Which incarnation of the subscriber `id` is current: its row's creation time in
    /// microseconds, which an erasure and a later `PUT` of the same id change. `None` if
    /// there is no such subscriber. Subscriber tokens carry it, so that a token issued
    /// before an erasure reads no inbox of a namesake made after it.
    pub async fn subscriber_incarnation(&self, tenant_id: Uuid, id: &str) -> Result<Option<i64>> {
        let created: Option<OffsetDateTime> =
            sqlx::query_scalar("SELECT created_at FROM subscribers WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(created.map(incarnation))
    }

    /// The subscriber's preferences (the defaults if never set); `None` if there is no
    /// such subscriber.
    pub async fn get_preferences(&self, tenant_id: Uuid, id: &str) -> Result<Option<Preferences>> {
        let row: Option<(serde_json::Value,)> =
            sqlx::query_as("SELECT preferences FROM subscribers WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(p,)| serde_json::from_value(p).map_err(|e| corrupt(format!("preferences of subscriber {id}: {e}"))))
            .transpose()
    }

    /// Replaces the subscriber's preferences; `false` if there is no such subscriber.
    pub async fn put_preferences(&self, tenant_id: Uuid, id: &str, preferences: &Preferences) -> Result<bool> {
        let done =
            sqlx::query("UPDATE subscribers SET preferences = $3, updated_at = now() WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(id)
                .bind(Json(preferences))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Erases the subscriber in one transaction (docs/contract.md §2): deletes it with its
    /// preferences and topic memberships, and redacts it from history. Every delivery of
    /// the tenant that went to it (by `subscriber_id`, or to one of its addresses on that
    /// channel, email without regard to case) keeps its id and status but loses its
    /// recipient (`[erased]`), rendered content and error message; their attempts lose
    /// error messages and response excerpts; a notification whose every delivery went to
    /// the subscriber loses its data and inline content; stored idempotent answers lose
    /// the recipients; the subscriber's addresses leave the suppression list; its inbox items
    /// and push devices are deleted. Deliveries
    /// not yet handed to a provider are cancelled. An audit event `subscriber_erased`
    /// records the counts. `false` if there is no such subscriber.
    pub async fn erase_subscriber(&self, tenant_id: Uuid, id: &str, actor: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        // Locked first: the accept statement locks the subscribers its plan sends to with
        // `FOR KEY SHARE`, which this waits for. An accept that locked it first commits
        // before the erasure goes on (its deliveries are then found below); one that comes
        // later finds it gone and writes nothing.
        type Found = (Option<String>, Option<String>, Option<String>, Json<StoredChat>);
        let found: Option<Found> = sqlx::query_as(
            "SELECT email, phone, whatsapp, chat FROM subscribers WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        )
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((email, phone, whatsapp, Json(chat))) = found else { return Ok(false) };
        // Sealed webhook URLs are stored as the deliveries carry them, so they compare equal.
        let chat: Vec<&str> = chat.recipients().collect();

        // The deliveries that went to this person, as a condition on `deliveries d`.
        let theirs = "d.tenant_id = $1 AND (d.subscriber_id = $2
                 OR (d.channel = 'email' AND lower(d.recipient) = lower($3))
                 OR (d.channel = 'sms' AND d.recipient = $4)
                 OR (d.channel = 'whatsapp' AND d.recipient = $5)
                 OR (d.channel = 'novu' AND d.recipient = $2)
                 OR (d.channel = 'chat' AND d.recipient = ANY($7)))";

        // Lock order as everywhere: outbox rows, then deliveries, then notifications.
        sqlx::query(&format!(
            "DELETE FROM outbox o USING deliveries d
             WHERE o.tenant_id = $1 AND o.delivery_id = d.id AND d.status IN {UNSENT} AND {theirs}"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(email.as_deref())
        .bind(phone.as_deref())
        .bind(whatsapp.as_deref())
        .bind(ERASED)
        .bind(&chat)
        .execute(&mut *tx)
        .await?;
        let redacted: Vec<(Uuid, Uuid, bool)> = sqlx::query_as(&format!(
            "WITH t AS (
                SELECT d.id, d.status IN {UNSENT} AS cancel FROM deliveries d WHERE {theirs} ORDER BY d.id FOR UPDATE)
             UPDATE deliveries d
                SET recipient = $6, content = NULL, last_error_message = NULL,
                    status = CASE WHEN t.cancel THEN 'cancelled' ELSE d.status END,
                    next_attempt_at = CASE WHEN t.cancel THEN NULL ELSE d.next_attempt_at END, updated_at = now()
             FROM t WHERE d.id = t.id
             RETURNING d.id, d.notification_id, t.cancel"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(email.as_deref())
        .bind(phone.as_deref())
        .bind(whatsapp.as_deref())
        .bind(ERASED)
        .bind(&chat)
        .fetch_all(&mut *tx)
        .await?;
        let delivery_ids: Vec<Uuid> = redacted.iter().map(|r| r.0).collect();
        let mut notification_ids: Vec<Uuid> = redacted.iter().map(|r| r.1).collect();
        notification_ids.sort_unstable();
        notification_ids.dedup();
        let mut touched: Vec<Uuid> = redacted.iter().filter(|r| r.2).map(|r| r.1).collect();
        touched.sort_unstable();
        touched.dedup();
        let cancelled = redacted.iter().filter(|r| r.2).count();

        let mut notifications_redacted = 0;
        if !delivery_ids.is_empty() {
            sqlx::query(
                "UPDATE delivery_attempts SET response_excerpt = NULL, error_message = NULL
                 WHERE tenant_id = $1 AND delivery_id = ANY($2)
                   AND (response_excerpt IS NOT NULL OR error_message IS NOT NULL)",
            )
            .bind(tenant_id)
            .bind(&delivery_ids)
            .execute(&mut *tx)
            .await?;
            // A notification that went to this person alone: its data and inline content
            // are about them. (One with other recipients keeps what it shares with them.)
            notifications_redacted = sqlx::query(
                "UPDATE notifications n SET data = '{}', content = '{}', updated_at = now()
                 WHERE n.tenant_id = $1 AND n.id = ANY($2)
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.notification_id = n.id AND d.id <> ALL($3))",
            )
            .bind(tenant_id)
            .bind(&notification_ids)
            .bind(&delivery_ids)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            crate::deliveries::refresh_notification_statuses(&mut tx, &touched).await?;
            // The `202` answers kept for idempotent replays name the recipients.
            sqlx::query(
                "UPDATE idempotency_keys k SET response = jsonb_set(k.response, '{deliveries}', coalesce(
                    (SELECT jsonb_agg(CASE WHEN e.d->>'id' = ANY($3::text[])
                                           THEN jsonb_set(e.d, '{recipient}', to_jsonb($4::text)) ELSE e.d END
                                      ORDER BY e.i)
                     FROM jsonb_array_elements(k.response->'deliveries') WITH ORDINALITY AS e(d, i)), '[]'))
                 WHERE k.tenant_id = $1 AND k.notification_id = ANY($2)
                   AND jsonb_typeof(k.response->'deliveries') = 'array'",
            )
            .bind(tenant_id)
            .bind(&notification_ids)
            .bind(delivery_ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
            .bind(ERASED)
            .execute(&mut *tx)
            .await?;
        }

        let (channels, addresses): (Vec<&str>, Vec<String>) = [
            (Channel::Email, email.as_deref()),
            (Channel::Sms, phone.as_deref()),
            (Channel::Whatsapp, whatsapp.as_deref()),
            (Channel::Novu, Some(id)),
        ]
        .into_iter()
        .chain(chat.iter().map(|to| (Channel::Chat, Some(*to))))
        .filter_map(|(c, a)| a.map(|a| (c.as_str(), suppression_address(c, a))))
        .unzip();
        let suppressions = sqlx::query(
            "DELETE FROM suppressions s USING unnest($2::text[], $3::text[]) AS u(channel, address)
             WHERE s.tenant_id = $1 AND s.channel = u.channel AND s.address = u.address",
        )
        .bind(tenant_id)
        .bind(&channels)
        .bind(&addresses)
        .execute(&mut *tx)
        .await?
        .rows_affected();

        let inbox = sqlx::query("DELETE FROM inbox_items WHERE tenant_id = $1 AND subscriber_id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Its push devices: deleted here to be counted (the cascade would too).
        let devices = sqlx::query("DELETE FROM devices WHERE tenant_id = $1 AND subscriber_id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Topic memberships go with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM subscribers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO audit_events (tenant_id, notification_id, subscriber_id, action, actor, detail)
             VALUES ($1, NULL, $2, 'subscriber_erased', $3,
                     jsonb_build_object('deliveries_redacted', $4::bigint, 'deliveries_cancelled', $5::bigint,
                                        'notifications_redacted', $6::bigint, 'suppressions_removed', $7::bigint,
                                        'inbox_items_deleted', $8::bigint, 'devices_removed', $9::bigint))",
        )
        .bind(tenant_id)
        .bind(id)
        .bind(actor)
        .bind(delivery_ids.len() as i64)
        .bind(cancelled as i64)
        .bind(notifications_redacted as i64)
        .bind(suppressions as i64)
        .bind(inbox as i64)
        .bind(devices as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// A subscriber's incarnation from its row's creation time (microseconds since the epoch,
/// PostgreSQL's precision).
fn incarnation(created_at: OffsetDateTime) -> i64 {
    (created_at.unix_timestamp_nanos() / 1_000) as i64
}
