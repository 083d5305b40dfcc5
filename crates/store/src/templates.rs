//! Template sources per notification type, channel and locale, and the tenant's default
//! locale they fall back to. The sources are stored as given; they compiled when they were
//! put (`domain::template::Template::compile`).

use domain::{Channel, Content, template::TemplateView};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Result, Store, corrupt};

/// A template as the intake needs it: which type, channel and locale, and its sources.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTemplate {
    pub kind: String,
    pub channel: Channel,
    pub locale: String,
    pub content: Content,
}

type TemplateRow = (String, String, String, serde_json::Value, OffsetDateTime, OffsetDateTime);

impl Store {
    /// Creates or replaces the template of a type, channel and locale. `None` if the
    /// tenant has no notification type `kind`.
    pub async fn put_template(
        &self,
        tenant_id: Uuid,
        kind: &str,
        channel: Channel,
        locale: &str,
        content: &Content,
    ) -> Result<Option<TemplateView>> {
        let json = serde_json::to_value(content).map_err(|e| corrupt(format!("template content: {e}")))?;
        // Inserts nothing when the type does not exist, so the foreign key never fails.
        let row: Option<TemplateRow> = sqlx::query_as(
            "INSERT INTO templates (tenant_id, type, channel, locale, content)
             SELECT tenant_id, key, $3, $4, $5 FROM notification_types WHERE tenant_id = $1 AND key = $2
             ON CONFLICT (tenant_id, type, channel, locale)
                DO UPDATE SET content = EXCLUDED.content, updated_at = now()
             RETURNING type, channel, locale, content, created_at, updated_at",
        )
        .bind(tenant_id)
        .bind(kind)
        .bind(channel.as_str())
        .bind(locale)
        .bind(json)
        .fetch_optional(&self.pool)
        .await?;
        self.cache.evict(tenant_id);
        row.map(view).transpose()
    }

    pub async fn get_template(
        &self,
        tenant_id: Uuid,
        kind: &str,
        channel: Channel,
        locale: &str,
    ) -> Result<Option<TemplateView>> {
        let row: Option<TemplateRow> = sqlx::query_as(
            "SELECT type, channel, locale, content, created_at, updated_at FROM templates
             WHERE tenant_id = $1 AND type = $2 AND channel = $3 AND locale = $4",
        )
        .bind(tenant_id)
        .bind(kind)
        .bind(channel.as_str())
        .bind(locale)
        .fetch_optional(&self.pool)
        .await?;
        row.map(view).transpose()
    }

    /// `false` if there was no such template.
    pub async fn delete_template(&self, tenant_id: Uuid, kind: &str, channel: Channel, locale: &str) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM templates WHERE tenant_id = $1 AND type = $2 AND channel = $3 AND locale = $4")
                .bind(tenant_id)
                .bind(kind)
                .bind(channel.as_str())
                .bind(locale)
                .execute(&self.pool)
                .await?;
        self.cache.evict(tenant_id);
        Ok(done.rows_affected() == 1)
    }

    /// Every template of these types, in every channel and locale, in one query (the
    /// intake asks for a whole batch's types at once).
    pub async fn templates_of(&self, tenant_id: Uuid, kinds: &[String]) -> Result<Vec<StoredTemplate>> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String, String, serde_json::Value)> = sqlx::query_as(
            "SELECT type, channel, locale, content FROM templates
             WHERE tenant_id = $1 AND type = ANY($2) ORDER BY type, channel, locale",
        )
        .bind(tenant_id)
        .bind(kinds)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(kind, channel, locale, content)| {
                Ok(StoredTemplate { channel: parse_channel(&channel)?, content: parse_content(content)?, kind, locale })
            })
            .collect()
    }

    /// The locale a tenant's templates fall back to.
    pub async fn default_locale(&self, tenant_id: Uuid) -> Result<String> {
        let row: Option<(String,)> = sqlx::query_as("SELECT default_locale FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(locale,)| locale).ok_or_else(|| corrupt(format!("no tenant {tenant_id}")))
    }
}

fn view((kind, channel, locale, content, created_at, updated_at): TemplateRow) -> Result<TemplateView> {
    Ok(TemplateView {
        kind,
        channel: parse_channel(&channel)?,
        locale,
        content: parse_content(content)?,
        created_at,
        updated_at,
    })
}

fn parse_channel(s: &str) -> Result<Channel> {
    s.parse().map_err(|_| corrupt(format!("template channel {s}")))
}

fn parse_content(content: serde_json::Value) -> Result<Content> {
    serde_json::from_value(content).map_err(|e| corrupt(format!("template content: {e}")))
}
