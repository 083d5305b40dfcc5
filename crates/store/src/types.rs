//! Notification types: a tenant's defaults for the notifications of a type.

use std::collections::BTreeMap;

use domain::{
    Channel,
    notification_type::{NotificationType, NotificationTypeInput},
    request::Audience,
};
use sqlx::types::Json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Result, Store, corrupt};

#[derive(sqlx::FromRow)]
pub(crate) struct TypeRow {
    pub(crate) key: String,
    pub(crate) channels: Vec<String>,
    pub(crate) critical: bool,
    pub(crate) novu_workflow: Option<String>,
    pub(crate) retry: Option<serde_json::Value>,
    pub(crate) category: Option<String>,
    pub(crate) preferences: serde_json::Value,
    pub(crate) audience: Option<String>,
    pub(crate) error_class: Option<String>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) updated_at: OffsetDateTime,
}

const COLUMNS: &str = "key, channels, critical, novu_workflow, retry, category, preferences, audience, error_class, created_at, updated_at";

impl TryFrom<TypeRow> for NotificationType {
    type Error = crate::StoreError;

    fn try_from(row: TypeRow) -> Result<Self> {
        let key = row.key;
        let bad = |e: &dyn std::fmt::Display| corrupt(format!("notification type {key}: {e}"));
        let channels =
            row.channels.iter().map(|c| c.parse::<Channel>().map_err(|e| bad(&e))).collect::<Result<Vec<_>>>()?;
        let retry = row.retry.map(serde_json::from_value).transpose().map_err(|e| bad(&e))?;
        let preferences: BTreeMap<Channel, bool> = serde_json::from_value(row.preferences).map_err(|e| bad(&e))?;
        let audience = row.audience.map(|a| Audience::parse(&a).ok_or_else(|| bad(&a))).transpose()?;
        Ok(NotificationType {
            key,
            channels,
            critical: row.critical,
            novu_workflow: row.novu_workflow,
            retry,
            category: row.category,
            preferences,
            audience,
            error_class: row.error_class,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

impl Store {
    /// Creates or replaces the type `key`; `true` when it was created. Its templates stay.
    pub async fn put_type(
        &self,
        tenant_id: Uuid,
        key: &str,
        input: &NotificationTypeInput,
    ) -> Result<(NotificationType, bool)> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            row: TypeRow,
            created: bool,
        }
        let channels: Vec<&str> = input.channels.iter().map(|c| c.as_str()).collect();
        let row: Row = sqlx::query_as(&format!(
            "INSERT INTO notification_types AS t
                (tenant_id, key, channels, critical, novu_workflow, retry, category, preferences, audience,
                 error_class)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (tenant_id, key) DO UPDATE
                SET channels = EXCLUDED.channels, critical = EXCLUDED.critical,
                    novu_workflow = EXCLUDED.novu_workflow, retry = EXCLUDED.retry, category = EXCLUDED.category,
                    preferences = EXCLUDED.preferences, audience = EXCLUDED.audience,
                    error_class = EXCLUDED.error_class, updated_at = now()
             RETURNING {COLUMNS}, (xmax = 0) AS created"
        ))
        .bind(tenant_id)
        .bind(key)
        .bind(&channels)
        .bind(input.critical)
        .bind(input.novu_workflow.as_deref())
        .bind(input.retry.as_ref().map(Json))
        .bind(input.category.as_deref())
        .bind(Json(&input.preferences))
        .bind(input.audience.map(Audience::as_str))
        .bind(input.error_class.as_deref())
        .fetch_one(&self.pool)
        .await?;
        self.cache.evict(tenant_id);
        Ok((row.row.try_into()?, row.created))
    }

    pub async fn get_type(&self, tenant_id: Uuid, key: &str) -> Result<Option<NotificationType>> {
        let row: Option<TypeRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM notification_types WHERE tenant_id = $1 AND key = $2"))
                .bind(tenant_id)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        row.map(NotificationType::try_from).transpose()
    }

    /// Every type of the tenant, by key.
    pub async fn list_types(&self, tenant_id: Uuid) -> Result<Vec<NotificationType>> {
        let rows: Vec<TypeRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM notification_types WHERE tenant_id = $1 ORDER BY key"))
                .bind(tenant_id)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(NotificationType::try_from).collect()
    }
}
