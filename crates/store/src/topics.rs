//! Topics: named sets of a tenant's subscribers. A topic exists while it has members;
//! a notification to a topic goes to each member.

use uuid::Uuid;

use crate::{Result, Store};

/// What a change of a topic's members did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicChange {
    /// Subscribers that became members (those already members are not counted).
    pub added: u64,
    /// Members that left (ids that were not members are not counted).
    pub removed: u64,
}

impl Store {
    /// Adds the subscribers `add` to `topic` and removes `remove`, in one transaction of
    /// two set-based statements whatever the number of ids. If some id of `add` names no
    /// subscriber of the tenant, nothing changes and those ids are returned, in the order
    /// given.
    pub async fn change_topic(
        &self,
        tenant_id: Uuid,
        topic: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<Result<TopicChange, Vec<String>>> {
        let mut tx = self.pool.begin().await?;
        let mut sorted: Vec<&str> = add.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut added = 0;
        if !sorted.is_empty() {
            // The subscribers are locked against erasure until the members are written;
            // in id order, so concurrent changes do not deadlock.
            let (known,): (Vec<String>,) = sqlx::query_as(
                "SELECT coalesce(array_agg(id), '{}') FROM
                    (SELECT id FROM subscribers WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR KEY SHARE) s",
            )
            .bind(tenant_id)
            .bind(&sorted)
            .fetch_one(&mut *tx)
            .await?;
            if known.len() < sorted.len() {
                let known: std::collections::HashSet<&str> = known.iter().map(String::as_str).collect();
                let mut unknown: Vec<String> = Vec::new();
                for id in add {
                    if !known.contains(id.as_str()) && !unknown.contains(id) {
                        unknown.push(id.clone());
                    }
                }
                return Ok(Err(unknown));
            }
            added = sqlx::query(
                "INSERT INTO topic_members (tenant_id, topic, subscriber_id)
                 SELECT $1, $2, id FROM unnest($3::text[]) AS u(id)
                 ON CONFLICT (tenant_id, topic, subscriber_id) DO NOTHING",
            )
            .bind(tenant_id)
            .bind(topic)
            .bind(&sorted)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        let mut removed = 0;
        if !remove.is_empty() {
            removed = sqlx::query(
                "DELETE FROM topic_members WHERE tenant_id = $1 AND topic = $2 AND subscriber_id = ANY($3)",
            )
            .bind(tenant_id)
            .bind(topic)
            .bind(remove)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(Ok(TopicChange { added, removed }))
    }

    /// A page of the topic's members, by subscriber id, after the id `after`.
    pub async fn list_topic(
        &self,
        tenant_id: Uuid,
        topic: &str,
        limit: i64,
        after: Option<&str>,
    ) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT subscriber_id FROM topic_members
             WHERE tenant_id = $1 AND topic = $2 AND ($3::text IS NULL OR subscriber_id > $3)
             ORDER BY subscriber_id LIMIT $4",
        )
        .bind(tenant_id)
        .bind(topic)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }
}
