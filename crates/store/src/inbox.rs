//! The end-user inbox: a subscriber's items (written by the intake, one per in-app
//! delivery), read and changed by the subscriber. Every query filters by tenant AND
//! subscriber: a subscriber sees and changes only its own items. A scheduled item's time
//! is its `send_at`: reads leave it out until then.

use domain::inbox::InboxItem;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Result, Store};

/// Filters and position of `GET /v1/inbox`.
#[derive(Debug, Default, Clone)]
pub struct InboxFilter {
    /// Only items not yet read.
    pub unread_only: bool,
    /// Only items of this notification type.
    pub kind: Option<String>,
    /// Only items carrying this tag.
    pub tag: Option<String>,
    /// Archived items too (by default they are left out).
    pub include_archived: bool,
    /// Cursor: only items with an id below this one (the last item of the previous page).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// What the subscriber does to one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxChange {
    /// Sets `read_at` (kept if already read).
    Read,
    /// Clears `read_at`.
    Unread,
    /// Sets `archived_at` (kept if already archived): the item leaves the list and the
    /// unread count.
    Archive,
    /// Deletes the item (the delivery and its status stay).
    Delete,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    id: Uuid,
    notification_id: Uuid,
    #[sqlx(rename = "type")]
    kind: String,
    title: Option<String>,
    body: Option<String>,
    action_url: Option<String>,
    tags: Vec<String>,
    created_at: OffsetDateTime,
    read_at: Option<OffsetDateTime>,
    archived_at: Option<OffsetDateTime>,
}

impl From<ItemRow> for InboxItem {
    fn from(r: ItemRow) -> Self {
        InboxItem {
            id: r.id,
            notification_id: r.notification_id,
            kind: r.kind,
            title: r.title,
            body: r.body,
            action_url: r.action_url,
            tags: r.tags,
            created_at: r.created_at,
            read_at: r.read_at,
            archived_at: r.archived_at,
        }
    }
}

const COLUMNS: &str = "id, notification_id, type, title, body, action_url, tags, created_at, read_at, archived_at";

impl Store {
    /// A page of the subscriber's items, newest first (`id DESC`).
    pub async fn inbox_list(
        &self,
        tenant_id: Uuid,
        subscriber_id: &str,
        filter: &InboxFilter,
    ) -> Result<Vec<InboxItem>> {
        let rows: Vec<ItemRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM inbox_items
             WHERE tenant_id = $1 AND subscriber_id = $2 AND created_at <= now()
               AND (NOT $3 OR read_at IS NULL)
               AND ($4::text IS NULL OR type = $4)
               AND ($5::text IS NULL OR $5 = ANY (tags))
               AND ($6 OR archived_at IS NULL)
               AND ($7::uuid IS NULL OR id < $7)
             ORDER BY id DESC
             LIMIT $8"
        ))
        .bind(tenant_id)
        .bind(subscriber_id)
        .bind(filter.unread_only)
        .bind(&filter.kind)
        .bind(&filter.tag)
        .bind(filter.include_archived)
        .bind(filter.before)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(InboxItem::from).collect())
    }

    /// The subscriber's items created after item `after` (all of them when `None`), oldest
    /// first, at most `limit`: what a reconnecting socket missed. Archived items are left
    /// out: the subscriber has dealt with them elsewhere.
    pub async fn inbox_items_after(
        &self,
        tenant_id: Uuid,
        subscriber_id: &str,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<InboxItem>> {
        let rows: Vec<ItemRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM inbox_items
             WHERE tenant_id = $1 AND subscriber_id = $2 AND created_at <= now() AND archived_at IS NULL
               AND ($3::uuid IS NULL OR id > $3)
             ORDER BY id
             LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(subscriber_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(InboxItem::from).collect())
    }

    /// Those of `ids` that are the subscriber's items (archived ones included), oldest
    /// first. Ids of other subscribers' items are left out.
    pub async fn inbox_items(&self, tenant_id: Uuid, subscriber_id: &str, ids: &[Uuid]) -> Result<Vec<InboxItem>> {
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let rows: Vec<ItemRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM inbox_items
             WHERE tenant_id = $1 AND subscriber_id = $2 AND created_at <= now() AND id = ANY ($3)
             ORDER BY id"
        ))
        .bind(tenant_id)
        .bind(subscriber_id)
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(InboxItem::from).collect())
    }

    /// Items neither read nor archived: the badge. Counted from the partial index
    /// `inbox_items_unread` alone.
    pub async fn inbox_unread_count(&self, tenant_id: Uuid, subscriber_id: &str) -> Result<i64> {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM inbox_items
             WHERE tenant_id = $1 AND subscriber_id = $2 AND created_at <= now() AND read_at IS NULL AND archived_at IS NULL",
        )
        .bind(tenant_id)
        .bind(subscriber_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }

    /// Applies `change` to item `id`; `false` when the subscriber has no such item. Marking
    /// an item read or archived again keeps the first time.
    pub async fn inbox_mark(
        &self,
        tenant_id: Uuid,
        subscriber_id: &str,
        id: Uuid,
        change: InboxChange,
    ) -> Result<bool> {
        let sql = match change {
            InboxChange::Read => {
                "UPDATE inbox_items SET read_at = coalesce(read_at, now())
                 WHERE tenant_id = $1 AND subscriber_id = $2 AND id = $3"
            }
            InboxChange::Unread => {
                "UPDATE inbox_items SET read_at = NULL WHERE tenant_id = $1 AND subscriber_id = $2 AND id = $3"
            }
            InboxChange::Archive => {
                "UPDATE inbox_items SET archived_at = coalesce(archived_at, now())
                 WHERE tenant_id = $1 AND subscriber_id = $2 AND id = $3"
            }
            InboxChange::Delete => "DELETE FROM inbox_items WHERE tenant_id = $1 AND subscriber_id = $2 AND id = $3",
        };
        let done = sqlx::query(sql).bind(tenant_id).bind(subscriber_id).bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks every unread item of the subscriber read (archived ones too); returns how
    /// many changed.
    pub async fn inbox_read_all(&self, tenant_id: Uuid, subscriber_id: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE inbox_items SET read_at = now()
             WHERE tenant_id = $1 AND subscriber_id = $2 AND read_at IS NULL",
        )
        .bind(tenant_id)
        .bind(subscriber_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
