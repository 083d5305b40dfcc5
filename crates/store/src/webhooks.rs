//! Tenants' webhook endpoints (`/v1/webhooks`) and the events written for them. The
//! events themselves are written by triggers in the transaction of each change they
//! report (migrations/20261210000100_webhooks.sql); this module stores the endpoints and
//! reads what was written.
//!
//! An endpoint's signing secret is stored sealed (`bootstrap::seal`, the tenant and
//! [`purpose`] bound in); the API seals it, the webhook-worker opens it to sign.

use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Result, Store};

/// What an endpoint's secret is sealed for: `webhook:<endpoint id>`.
pub fn purpose(endpoint_id: Uuid) -> String {
    format!("webhook:{endpoint_id}")
}

/// An endpoint as stored: its secrets sealed.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub url: String,
    pub description: String,
    /// Event types it takes; `["*"]` for all.
    pub events: Vec<String>,
    /// Notification types it takes events of; `None` for all.
    pub types: Option<Vec<String>>,
    pub enabled: bool,
    /// `gone` (it answered 410) or `failing` (failed for too long), when disabled so.
    pub disabled_reason: Option<String>,
    pub include_addresses: bool,
    /// The signing secret, sealed.
    pub secret: String,
    /// The secret before the last rotation, sealed, and until when it still signs.
    pub previous_secret: Option<String>,
    pub previous_until: Option<OffsetDateTime>,
    pub failing_since: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str = "id, tenant_id, url, description, events, types, enabled, disabled_reason, include_addresses, \
                       secret, previous_secret, previous_until, failing_since, created_at, updated_at";

/// A new endpoint; its secret already sealed for [`purpose`] of `id`.
pub struct NewWebhookEndpoint<'a> {
    pub id: Uuid,
    pub url: &'a str,
    pub description: &'a str,
    pub events: &'a [String],
    pub types: Option<&'a [String]>,
    pub enabled: bool,
    pub include_addresses: bool,
    pub sealed_secret: &'a str,
}

/// A change of an endpoint: each `Some` is set. `types: Some(None)` takes every type
/// again. Enabling an endpoint clears why it was disabled and its failure streak.
#[derive(Default)]
pub struct WebhookEndpointChange<'a> {
    pub url: Option<&'a str>,
    pub description: Option<&'a str>,
    pub events: Option<&'a [String]>,
    pub types: Option<Option<&'a [String]>>,
    pub enabled: Option<bool>,
    pub include_addresses: Option<bool>,
}

/// How long events are kept for replays.
pub const EVENT_RETENTION: std::time::Duration = std::time::Duration::from_secs(14 * 24 * 3600);

/// Events deleted per statement of a purge.
const PURGE_BATCH: i64 = 10_000;

/// Endpoints a tenant may have at most.
pub const ENDPOINTS_MAX: i64 = 50;

/// An event as written for a tenant, for tests and operators.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookEvent {
    pub id: Uuid,
    pub r#type: String,
    pub notification_id: Option<Uuid>,
    pub delivery_id: Option<Uuid>,
    pub payload: sqlx::types::Json<serde_json::Value>,
    pub created_at: OffsetDateTime,
}

impl Store {
    /// Creates the endpoint; `None` when the tenant already has [`ENDPOINTS_MAX`].
    pub async fn create_webhook_endpoint(
        &self,
        tenant_id: Uuid,
        new: &NewWebhookEndpoint<'_>,
    ) -> Result<Option<WebhookEndpoint>> {
        // The count and the insert in one statement; two creates racing past the cap by
        // one are harmless.
        let created = sqlx::query_as(&format!(
            "INSERT INTO webhook_endpoints (id, tenant_id, url, description, events, types, enabled, include_addresses,
                                            secret)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
             WHERE (SELECT count(*) FROM webhook_endpoints WHERE tenant_id = $2) < $10
             RETURNING {COLUMNS}"
        ))
        .bind(new.id)
        .bind(tenant_id)
        .bind(new.url)
        .bind(new.description)
        .bind(new.events)
        .bind(new.types)
        .bind(new.enabled)
        .bind(new.include_addresses)
        .bind(new.sealed_secret)
        .bind(ENDPOINTS_MAX)
        .fetch_optional(&self.pool)
        .await?;
        Ok(created)
    }

    pub async fn list_webhook_endpoints(&self, tenant_id: Uuid) -> Result<Vec<WebhookEndpoint>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_webhook_endpoint(&self, tenant_id: Uuid, id: Uuid) -> Result<Option<WebhookEndpoint>> {
        Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Applies `change`; `None` when the tenant has no such endpoint. A disabled endpoint
    /// enabled again sends the events that come from then on; those of the time it was
    /// disabled are sent only by a replay.
    pub async fn update_webhook_endpoint(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        change: &WebhookEndpointChange<'_>,
    ) -> Result<Option<WebhookEndpoint>> {
        let (set_types, types) = match change.types {
            Some(types) => (true, types),
            None => (false, None),
        };
        Ok(sqlx::query_as(&format!(
            "UPDATE webhook_endpoints SET
                 url = coalesce($3, url),
                 description = coalesce($4, description),
                 events = coalesce($5, events),
                 types = CASE WHEN $6 THEN $7 ELSE types END,
                 enabled = coalesce($8, enabled),
                 disabled_reason = CASE WHEN $8 THEN NULL ELSE disabled_reason END,
                 failing_since = CASE WHEN $8 THEN NULL ELSE failing_since END,
                 include_addresses = coalesce($9, include_addresses),
                 updated_at = now()
             WHERE tenant_id = $1 AND id = $2
             RETURNING {COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(change.url)
        .bind(change.description)
        .bind(change.events)
        .bind(set_types)
        .bind(types)
        .bind(change.enabled)
        .bind(change.include_addresses)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes the endpoint with its messages and attempts; the tenant's events stay
    /// until they age out (another endpoint may take them). False when there was none.
    pub async fn delete_webhook_endpoint(&self, tenant_id: Uuid, id: Uuid) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    /// Makes `sealed` the endpoint's secret and keeps the one it replaces signing for
    /// `overlap`; a secret replaced before its overlap ended stops signing at once.
    pub async fn rotate_webhook_secret(
        &self,
        tenant_id: Uuid,
        id: Uuid,
        sealed: &str,
        overlap: std::time::Duration,
    ) -> Result<Option<WebhookEndpoint>> {
        let overlap_ms = crate::millis(overlap);
        Ok(sqlx::query_as(&format!(
            "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3,
                 previous_until = now() + $4 * interval '1 millisecond', updated_at = now()
             WHERE tenant_id = $1 AND id = $2
             RETURNING {COLUMNS}"
        ))
        .bind(tenant_id)
        .bind(id)
        .bind(sealed)
        .bind(overlap_ms)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes the events older than `retention` (with their messages and attempts), a
    /// batch at a time so that no statement holds many locks; returns how many.
    pub async fn purge_webhook_events(&self, retention: std::time::Duration) -> Result<u64> {
        let retention = sqlx::postgres::types::PgInterval::try_from(retention).unwrap_or_default();
        let mut purged = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM webhook_events WHERE id IN (
                     SELECT id FROM webhook_events WHERE created_at < now() - $1::interval LIMIT $2)",
            )
            .bind(retention)
            .bind(PURGE_BATCH)
            .execute(&self.pool)
            .await?;
            purged += done.rows_affected();
            if done.rows_affected() < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    /// Up to `limit` endpoints, of any tenant, with a secret (current or previous) not
    /// sealed with the key `current` (`v1.<key id>.…`), after the id `after`: the key
    /// rotation's batches.
    pub async fn webhook_endpoints_to_reseal(
        &self,
        current: &str,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<WebhookEndpoint>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM webhook_endpoints
             WHERE (split_part(secret, '.', 2) <> $1 OR split_part(previous_secret, '.', 2) <> $1)
               AND ($2::uuid IS NULL OR id > $2)
             ORDER BY id LIMIT $3"
        ))
        .bind(current)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces the endpoint's sealed secrets (re-sealed with another key) if they are as
    /// `read`; `false` when they changed meanwhile (a rotation sealed with the current key).
    pub async fn reseal_webhook_endpoint(
        &self,
        read: &WebhookEndpoint,
        secret: &str,
        previous_secret: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET secret = $3, previous_secret = $4
             WHERE id = $1 AND secret = $2 AND previous_secret IS NOT DISTINCT FROM $5",
        )
        .bind(read.id)
        .bind(&read.secret)
        .bind(secret)
        .bind(previous_secret)
        .bind(&read.previous_secret)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The tenant's events, oldest first. For tests and operators.
    pub async fn webhook_events(&self, tenant_id: Uuid) -> Result<Vec<WebhookEvent>> {
        Ok(sqlx::query_as(
            "SELECT id, type, notification_id, delivery_id, payload, created_at FROM webhook_events
             WHERE tenant_id = $1 ORDER BY created_at, (payload->'data'->>'sequence')::bigint",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The events waiting to be sent to the endpoint (its pending messages), oldest first.
    /// For tests and operators.
    pub async fn pending_webhook_events(&self, tenant_id: Uuid, endpoint_id: Uuid) -> Result<Vec<WebhookEvent>> {
        Ok(sqlx::query_as(
            "SELECT e.id, e.type, e.notification_id, e.delivery_id, e.payload, e.created_at
             FROM webhook_messages m JOIN webhook_events e ON e.id = m.event_id
             WHERE m.tenant_id = $1 AND m.endpoint_id = $2 AND m.status = 'pending'
             ORDER BY e.created_at, (e.payload->'data'->>'sequence')::bigint",
        )
        .bind(tenant_id)
        .bind(endpoint_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
