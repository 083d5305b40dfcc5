use domain::api_key;
use uuid::Uuid;

use crate::{Result, Store};

#[derive(Debug)]
pub struct NewTenant {
    pub tenant_id: Uuid,
    /// Shown once; only its hash is stored.
    pub api_key: String,
}

impl Store {
    /// A tenant with its first API key.
    pub async fn create_tenant(&self, name: &str) -> Result<NewTenant> {
        let tenant_id = Uuid::now_v7();
        let key = api_key::generate();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
            .bind(tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO api_keys (id, tenant_id, key_hash, display_prefix) VALUES ($1, $2, $3, $4)")
            .bind(Uuid::now_v7())
            .bind(tenant_id)
            .bind(api_key::hash(&key))
            .bind(api_key::display_prefix(&key))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(NewTenant { tenant_id, api_key: key })
    }

    /// The tenant a key belongs to, if the key exists and is not revoked. Records when the
    /// key was last used, at most once a minute per key so hot keys do not write per request.
    pub async fn authenticate(&self, key: &str) -> Result<Option<Uuid>> {
        let row: Option<(Uuid,)> = sqlx::query_as(
            "WITH k AS (SELECT id, tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL),
                  touch AS (UPDATE api_keys SET last_used_at = now()
                            WHERE id = (SELECT id FROM k)
                              AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute'))
             SELECT tenant_id FROM k",
        )
        .bind(api_key::hash(key))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.0))
    }
}
