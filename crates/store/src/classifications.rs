//! The tenant's classification of errors (`domain::classification`), and classifying
//! notifications by it.

use domain::{
    Priority,
    classification::{Classification, Classifications, Classified},
    request::Audience,
};
use uuid::Uuid;

use crate::{Result, Store, corrupt};

impl Store {
    /// Replaces the tenant's table with `table`, in one transaction.
    pub async fn put_classifications(&self, tenant_id: Uuid, table: &Classifications) -> Result<()> {
        let classes: Vec<&str> = table.classes.keys().map(String::as_str).collect();
        let audiences: Vec<&str> = table.classes.values().map(|c| c.audience.as_str()).collect();
        let priorities: Vec<Option<&str>> = table.classes.values().map(|c| c.priority.map(Priority::as_str)).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM classifications WHERE tenant_id = $1").bind(tenant_id).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO classifications (tenant_id, error_class, audience, priority)
             SELECT $1, c.class, c.audience, c.priority FROM unnest($2::text[], $3::text[], $4::text[])
                 AS c(class, audience, priority)",
        )
        .bind(tenant_id)
        .bind(&classes)
        .bind(&audiences)
        .bind(&priorities)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn classifications(&self, tenant_id: Uuid) -> Result<Classifications> {
        let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT error_class, audience, priority FROM classifications WHERE tenant_id = $1 ORDER BY error_class",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        let mut table = Classifications::default();
        for (class, audience, priority) in rows {
            let classification = Classification { audience: audience_of(&audience)?, priority: priority_of(priority)? };
            table.classes.insert(class, classification);
        }
        Ok(table)
    }

    /// Classifies notifications of the types `kinds` that report the error classes
    /// `classes` (`None`: their type's), one answer per item, in order, in one statement.
    pub async fn classify(&self, tenant_id: Uuid, kinds: &[&str], classes: &[Option<&str>]) -> Result<Vec<Classified>> {
        let rows: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT coalesce(i.class, t.error_class), coalesce(c.audience, t.audience), c.priority
             FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS i(kind, class, n)
             LEFT JOIN notification_types t ON t.tenant_id = $1 AND t.key = i.kind
             LEFT JOIN classifications c ON c.tenant_id = $1 AND c.error_class = coalesce(i.class, t.error_class)
             ORDER BY i.n",
        )
        .bind(tenant_id)
        .bind(kinds)
        .bind(classes)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(error_class, audience, priority)| {
                Ok(Classified {
                    error_class,
                    audience: audience.as_deref().map(audience_of).transpose()?,
                    priority: priority_of(priority)?,
                })
            })
            .collect()
    }
}

fn audience_of(s: &str) -> Result<Audience> {
    Audience::parse(s).ok_or_else(|| corrupt(format!("audience {s}")))
}

fn priority_of(s: Option<String>) -> Result<Option<Priority>> {
    s.map(|s| Priority::parse(&s).ok_or_else(|| corrupt(format!("priority {s}")))).transpose()
}
