use domain::api_key;
use uuid::Uuid;

use crate::{Result, Store};

#[derive(Debug)]
pub struct NewTenant {
    pub tenant_id: Uuid,
    pub key_id: Uuid,
    /// Shown once; only its hash is stored.
    pub api_key: String,
}

/// Who is calling: the tenant and key of a valid API key, and the tenant's intake rate.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub tenant_id: Uuid,
    pub key_id: Uuid,
    /// Notifications per second and burst, when the tenant has its own.
    pub rate_limit: Option<(u32, u32)>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub display_prefix: String,
    pub created_at: time::OffsetDateTime,
    pub last_used_at: Option<time::OffsetDateTime>,
    pub revoked_at: Option<time::OffsetDateTime>,
}

impl Store {
    /// A tenant with its first API key.
    pub async fn create_tenant(&self, name: &str) -> Result<NewTenant> {
        let tenant_id = Uuid::now_v7();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
            .bind(tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let (key_id, api_key) = insert_key(&mut tx, tenant_id).await?;
        tx.commit().await?;
        // Forgets the unknown keys (the triggers do for the other processes).
        self.cache.evict(tenant_id);
        Ok(NewTenant { tenant_id, key_id, api_key })
    }

    /// Another key for a tenant: `None` if there is no such tenant.
    pub async fn create_api_key(&self, tenant_id: Uuid) -> Result<Option<(Uuid, String)>> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM tenants WHERE id = $1").bind(tenant_id).fetch_optional(&mut *tx).await?;
        if exists.is_none() {
            return Ok(None);
        }
        let key = insert_key(&mut tx, tenant_id).await?;
        tx.commit().await?;
        self.cache.evict(tenant_id);
        Ok(Some(key))
    }

    /// Revokes a key at once: the next request with it gets `401` (from an API replica of
    /// another process, once the change notification reached it). `false` if there is no
    /// such key, or it was already revoked.
    pub async fn revoke_api_key(&self, key_id: Uuid) -> Result<bool> {
        let revoked: Option<(Uuid,)> = sqlx::query_as(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING tenant_id",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((tenant_id,)) = revoked {
            self.cache.evict(tenant_id);
        }
        Ok(revoked.is_some())
    }

    pub async fn list_api_keys(&self, tenant_id: Uuid) -> Result<Vec<ApiKeyInfo>> {
        Ok(sqlx::query_as(
            "SELECT id, display_prefix, created_at, last_used_at, revoked_at FROM api_keys
             WHERE tenant_id = $1 ORDER BY created_at",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Sets a tenant's intake rate (notifications per second, burst); `None` returns it
    /// to the API's default. `false` if there is no such tenant.
    pub async fn set_rate_limit(&self, tenant_id: Uuid, limit: Option<(u32, u32)>) -> Result<bool> {
        let done = sqlx::query("UPDATE tenants SET rate_limit_per_second = $2, rate_limit_burst = $3 WHERE id = $1")
            .bind(tenant_id)
            .bind(limit.map(|l| l.0 as i32))
            .bind(limit.map(|l| l.1 as i32))
            .execute(&self.pool)
            .await?;
        self.cache.evict(tenant_id);
        Ok(done.rows_affected() == 1)
    }

    /// Sets a tenant's fallback locale for templates, whether its notifications may name
    /// types it has not defined, and whether its in-app action URLs may be `http`; `None`
    /// leaves a setting as it is. `false` if there is no such tenant.
    pub async fn set_tenant_settings(
        &self,
        tenant_id: Uuid,
        default_locale: Option<&str>,
        adhoc_types: Option<bool>,
        http_action_urls: Option<bool>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE tenants SET default_locale = coalesce($2, default_locale), adhoc_types = coalesce($3, adhoc_types),
                                http_action_urls = coalesce($4, http_action_urls)
             WHERE id = $1",
        )
        .bind(tenant_id)
        .bind(default_locale)
        .bind(adhoc_types)
        .bind(http_action_urls)
        .execute(&self.pool)
        .await?;
        self.cache.evict(tenant_id);
        Ok(done.rows_affected() == 1)
    }

    /// Registers (or with `None` removes) the public key that verifies the tenant's own
    /// subscriber tokens: an Ed25519 JWK's `x`. `false` if there is no such tenant.
    pub async fn set_subscriber_token_key(&self, tenant_id: Uuid, x: Option<&str>) -> Result<bool> {
        let done = sqlx::query("UPDATE tenants SET subscriber_token_key = $2 WHERE id = $1")
            .bind(tenant_id)
            .bind(x)
            .execute(&self.pool)
            .await?;
        self.cache.evict(tenant_id);
        Ok(done.rows_affected() == 1)
    }

    /// The tenant's subscriber token key (`set_subscriber_token_key`), if it registered
    /// one: from the cache (kept true by the `tenants` trigger's NOTIFY), else one
    /// primary-key read, remembered only for a tenant that exists (tokens naming random
    /// tenants fill nothing).
    pub async fn subscriber_token_key(&self, tenant_id: Uuid) -> Result<Option<String>> {
        if let Some(key) = self.cache.subscriber_token_key(tenant_id) {
            return Ok(key);
        }
        let fill = self.cache.fill();
        let key: Option<Option<String>> = sqlx::query_scalar("SELECT subscriber_token_key FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(key) = &key {
            self.cache.put_subscriber_token_key(fill, tenant_id, key.clone());
        }
        Ok(key.flatten())
    }

    /// The answer for a key without reading the database, when there is one: a key not of
    /// the form keys are made in, or found unknown within `unknown_key_ttl`, is refused
    /// (`Some(None)`); a cached one is its caller. `None`: only the database knows. Records
    /// when the key was last used, as [`Store::authenticate`].
    pub fn authenticate_cached(&self, key: &str) -> Option<Option<Caller>> {
        if !api_key::is_well_formed(key) {
            return Some(None);
        }
        let key_hash = api_key::hash(key);
        if let Some((caller, touch)) = self.cache.caller(&key_hash) {
            if touch {
                self.touch_api_key(caller.key_id);
            }
            return Some(Some(caller));
        }
        self.cache.unknown_key(&key_hash).then_some(None)
    }

    /// The caller a key belongs to, if the key exists and is not revoked: without a
    /// database read when [`Store::authenticate_cached`] knows, else from the database.
    /// An unknown key is remembered only for `unknown_key_ttl`, and forgotten as soon as
    /// any key is created, so a new key works at once. Records when the key was last used,
    /// at most once a minute per key and process, so hot keys do not write per request; a
    /// cache hit does it in the background.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Caller>> {
        if let Some(answer) = self.authenticate_cached(key) {
            return Ok(answer);
        }
        let key_hash = api_key::hash(key);
        let fill = self.cache.fill();
        let row: Option<(Uuid, Uuid, Option<i32>, Option<i32>)> = sqlx::query_as(
            "WITH k AS (SELECT k.id, k.tenant_id, t.rate_limit_per_second, t.rate_limit_burst
                        FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                        WHERE k.key_hash = $1 AND k.revoked_at IS NULL),
                  touch AS (UPDATE api_keys SET last_used_at = now()
                            WHERE id = (SELECT id FROM k)
                              AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute'))
             SELECT id, tenant_id, rate_limit_per_second, rate_limit_burst FROM k",
        )
        .bind(&key_hash)
        .fetch_optional(&self.pool)
        .await?;
        let caller = row.map(|(key_id, tenant_id, per_second, burst)| Caller {
            tenant_id,
            key_id,
            rate_limit: per_second.zip(burst).map(|(p, b)| (p as u32, b as u32)),
        });
        match caller {
            Some(caller) => self.cache.put_caller(fill, key_hash, caller),
            None => self.cache.put_unknown_key(fill, key_hash),
        }
        Ok(caller)
    }

    /// Writes a key's `last_used_at` (unless another process did within the minute),
    /// without making the request wait for it.
    fn touch_api_key(&self, key_id: Uuid) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let touched = sqlx::query(
                "UPDATE api_keys SET last_used_at = now()
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
            )
            .bind(key_id)
            .execute(&pool)
            .await;
            if let Err(e) = touched {
                tracing::debug!(error = %e, "recording when an API key was last used failed");
            }
        });
    }
}

async fn insert_key(tx: &mut sqlx::PgConnection, tenant_id: Uuid) -> Result<(Uuid, String)> {
    let id = Uuid::now_v7();
    let key = api_key::generate();
    sqlx::query("INSERT INTO api_keys (id, tenant_id, key_hash, display_prefix) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(tenant_id)
        .bind(api_key::hash(&key))
        .bind(api_key::display_prefix(&key))
        .execute(tx)
        .await?;
    Ok((id, key))
}
