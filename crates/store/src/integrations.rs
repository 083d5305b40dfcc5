//! Tenants' own provider integrations: per tenant, channel and provider, the settings one
//! provider unit reads. Secret settings are stored sealed (`bootstrap::seal`, the tenant
//! and [`purpose`] bound in), each with a hint of its last four characters; the rest as
//! given. The API writes them (`PUT /v1/integrations/{channel}/{provider}`); a worker reads
//! a tenant's active ones for its channel in failover order ([`Store::active_integrations`])
//! and opens each ([`StoredIntegration::open`]) to build a client, which it may cache by
//! `version` until a change is heard on `notify_cache` ([`crate::CacheEvent::Integration`]).

use std::collections::BTreeMap;

use bootstrap::seal::{Keyring, SealError};
use domain::Channel;
use serde_json::{Map, Value};
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Result, Store, corrupt};

/// What a value is sealed for: `integration:<channel>/<provider>`. A value sealed for one
/// provider does not open as another's.
pub fn purpose(channel: Channel, provider: &str) -> String {
    format!("integration:{channel}/{provider}")
}

/// Secrets shorter than this get no hint: four characters would give away too much of them.
const HINT_MIN_CHARS: usize = 12;

/// One integration as stored: secrets sealed.
#[derive(Clone, Debug)]
pub struct StoredIntegration {
    pub tenant_id: Uuid,
    pub channel: Channel,
    pub provider: String,
    /// The settings that are not secrets.
    pub settings: Map<String, Value>,
    /// Secret setting -> its sealed value (its JSON text, sealed).
    pub secrets: BTreeMap<String, String>,
    /// Secret setting -> its last four characters (absent for short or non-text secrets).
    pub hints: BTreeMap<String, String>,
    pub active: bool,
    /// The failover order among the tenant's integrations of the channel, lowest first.
    pub position: i32,
    /// Moves on every change of the row (a worker's cached client compares it).
    pub version: i64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What a PUT writes.
pub struct IntegrationWrite<'a> {
    pub settings: &'a Map<String, Value>,
    pub secrets: &'a BTreeMap<String, String>,
    pub hints: &'a BTreeMap<String, String>,
    pub active: bool,
    pub position: i32,
}

impl StoredIntegration {
    /// The full settings a provider unit reads (`providers::Integration::settings`): the
    /// stored settings with every secret opened. The error names no secret.
    pub fn open(&self, keyring: &Keyring) -> Result<Value, SealError> {
        let mut settings = self.settings.clone();
        settings.extend(self.open_secrets(keyring)?);
        Ok(Value::Object(settings))
    }

    /// The secrets alone, opened.
    pub fn open_secrets(&self, keyring: &Keyring) -> Result<Map<String, Value>, SealError> {
        let purpose = purpose(self.channel, &self.provider);
        let mut opened = Map::new();
        for (key, sealed) in &self.secrets {
            let bytes = keyring.open(&self.tenant_id, &purpose, sealed)?;
            opened.insert(key.clone(), serde_json::from_slice(&bytes).map_err(|_| SealError::Corrupt)?);
        }
        Ok(opened)
    }
}

/// Seals plain secret values for the tenant's integration: the sealed values and their hints.
pub fn seal_secrets(
    keyring: &Keyring,
    tenant_id: Uuid,
    channel: Channel,
    provider: &str,
    plain: &Map<String, Value>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let purpose = purpose(channel, provider);
    let mut sealed = BTreeMap::new();
    let mut hints = BTreeMap::new();
    for (key, value) in plain {
        let json = serde_json::to_vec(value).expect("a JSON value serializes");
        sealed.insert(key.clone(), keyring.seal(&tenant_id, &purpose, &json));
        if let Some(hint) = value.as_str().and_then(hint) {
            hints.insert(key.clone(), hint);
        }
    }
    (sealed, hints)
}

/// The last four characters of a secret long enough to spare them.
fn hint(secret: &str) -> Option<String> {
    let chars: Vec<char> = secret.chars().collect();
    (chars.len() >= HINT_MIN_CHARS).then(|| chars[chars.len() - 4..].iter().collect())
}

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: Uuid,
    channel: String,
    provider: String,
    settings: Json<Map<String, Value>>,
    secrets: Json<BTreeMap<String, String>>,
    hints: Json<BTreeMap<String, String>>,
    active: bool,
    position: i32,
    version: i64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

const COLUMNS: &str =
    "tenant_id, channel, provider, settings, secrets, hints, active, position, version, created_at, updated_at";

impl TryFrom<Row> for StoredIntegration {
    type Error = crate::StoreError;

    fn try_from(row: Row) -> Result<Self> {
        let channel = row
            .channel
            .parse()
            .map_err(|_| corrupt(format!("integration {}/{} has an unknown channel", row.channel, row.provider)))?;
        Ok(StoredIntegration {
            tenant_id: row.tenant_id,
            channel,
            provider: row.provider,
            settings: row.settings.0,
            secrets: row.secrets.0,
            hints: row.hints.0,
            active: row.active,
            position: row.position,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

fn convert(rows: Vec<Row>) -> Result<Vec<StoredIntegration>> {
    rows.into_iter().map(StoredIntegration::try_from).collect()
}

impl Store {
    /// Writes the tenant's integration if it is as the caller read it: `expected` is the
    /// version read, `None` when there was none. `None` back when another write came first
    /// (read again and retry); else the row and whether it was created.
    pub async fn put_integration(
        &self,
        tenant_id: Uuid,
        channel: Channel,
        provider: &str,
        write: &IntegrationWrite<'_>,
        expected: Option<i64>,
    ) -> Result<Option<(StoredIntegration, bool)>> {
        let query = match expected {
            None => format!(
                "INSERT INTO integrations (tenant_id, channel, provider, settings, secrets, hints, active, position)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (tenant_id, channel, provider) DO NOTHING
                 RETURNING {COLUMNS}"
            ),
            Some(_) => format!(
                "UPDATE integrations SET settings = $4, secrets = $5, hints = $6, active = $7, position = $8,
                        version = version + 1, updated_at = now()
                 WHERE tenant_id = $1 AND channel = $2 AND provider = $3 AND version = $9
                 RETURNING {COLUMNS}"
            ),
        };
        let mut statement = sqlx::query_as(&query)
            .bind(tenant_id)
            .bind(channel.as_str())
            .bind(provider)
            .bind(Json(write.settings))
            .bind(Json(write.secrets))
            .bind(Json(write.hints))
            .bind(write.active)
            .bind(write.position);
        if let Some(version) = expected {
            statement = statement.bind(version);
        }
        let row: Option<Row> = statement.fetch_optional(&self.pool).await?;
        row.map(|row| Ok((StoredIntegration::try_from(row)?, expected.is_none()))).transpose()
    }

    pub async fn get_integration(
        &self,
        tenant_id: Uuid,
        channel: Channel,
        provider: &str,
    ) -> Result<Option<StoredIntegration>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM integrations WHERE tenant_id = $1 AND channel = $2 AND provider = $3"
        ))
        .bind(tenant_id)
        .bind(channel.as_str())
        .bind(provider)
        .fetch_optional(&self.pool)
        .await?;
        row.map(StoredIntegration::try_from).transpose()
    }

    /// Every integration of the tenant, by channel, then in failover order.
    pub async fn list_integrations(&self, tenant_id: Uuid) -> Result<Vec<StoredIntegration>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM integrations WHERE tenant_id = $1 ORDER BY channel, position, provider"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        convert(rows)
    }

    /// `false` when the tenant has no such integration.
    pub async fn delete_integration(&self, tenant_id: Uuid, channel: Channel, provider: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM integrations WHERE tenant_id = $1 AND channel = $2 AND provider = $3")
            .bind(tenant_id)
            .bind(channel.as_str())
            .bind(provider)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// What a worker sends with: the tenant's active integrations of `channel`, in
    /// failover order (`position`, then provider name), secrets sealed; open each with
    /// [`StoredIntegration::open`]. Empty when the tenant has none.
    pub async fn active_integrations(&self, tenant_id: Uuid, channel: Channel) -> Result<Vec<StoredIntegration>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM integrations
             WHERE tenant_id = $1 AND channel = $2 AND active
             ORDER BY position, provider"
        ))
        .bind(tenant_id)
        .bind(channel.as_str())
        .fetch_all(&self.pool)
        .await?;
        convert(rows)
    }

    /// Up to `limit` integrations, of any tenant, with a secret not sealed with the key
    /// `current`, after `after` (tenant, channel, provider) in key order: the rotation's
    /// batches. Reads the index on `key_ids` either side of `{current}`.
    pub async fn integrations_to_reseal(
        &self,
        current: &str,
        after: Option<(Uuid, Channel, &str)>,
        limit: i64,
    ) -> Result<Vec<StoredIntegration>> {
        let (tenant, channel, provider) = match after {
            Some((t, c, p)) => (Some(t), Some(c.as_str()), Some(p)),
            None => (None, None, None),
        };
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM integrations
             WHERE (key_ids < ARRAY[$1::text] OR key_ids > ARRAY[$1::text]) AND cardinality(key_ids) > 0
               AND ($2::uuid IS NULL OR (tenant_id, channel, provider) > ($2, $3::text, $4::text))
             ORDER BY tenant_id, channel, provider
             LIMIT $5"
        ))
        .bind(current)
        .bind(tenant)
        .bind(channel)
        .bind(provider)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        convert(rows)
    }

    /// Replaces the sealed secrets of `integration` (re-sealed with another key) if the row
    /// is still at its version; `false` when it changed meanwhile (its writer sealed with
    /// the current key, or a later pass will see it).
    pub async fn reseal_integration(
        &self,
        integration: &StoredIntegration,
        secrets: &BTreeMap<String, String>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE integrations SET secrets = $5, version = version + 1, updated_at = now()
             WHERE tenant_id = $1 AND channel = $2 AND provider = $3 AND version = $4",
        )
        .bind(integration.tenant_id)
        .bind(integration.channel.as_str())
        .bind(&integration.provider)
        .bind(integration.version)
        .bind(Json(secrets))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_only_for_long_secrets() {
        assert_eq!(hint("sk_live_0123456789ab").as_deref(), Some("89ab"));
        assert_eq!(hint("short-secret"), Some("cret".into()));
        assert_eq!(hint("shorter"), None);
    }
}
