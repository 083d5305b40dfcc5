//! The end-user inbox (docs/contract.md §3.3): what an in-app delivery leaves for its subscriber.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// One inbox item as the subscriber sees it. Its id is the in-app delivery's (a UUIDv7),
/// so ids order items by creation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct InboxItem {
    pub id: Uuid,
    pub notification_id: Uuid,
    /// The notification's type.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: Option<String>,
    pub body: Option<String>,
    /// Where the item leads when clicked.
    pub action_url: Option<String>,
    pub tags: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the subscriber read it; `null` while unread.
    #[serde(with = "time::serde::rfc3339::option")]
    pub read_at: Option<OffsetDateTime>,
    /// When the subscriber archived it; archived items leave the list and the unread count.
    #[serde(with = "time::serde::rfc3339::option")]
    pub archived_at: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_rfc3339_times_and_type() {
        let item = InboxItem {
            id: Uuid::nil(),
            notification_id: Uuid::nil(),
            kind: "order.shipped".into(),
            title: Some("Shipped".into()),
            body: None,
            action_url: None,
            tags: vec!["orders".into()],
            created_at: time::macros::datetime!(2026-11-25 10:00:00 UTC),
            read_at: None,
            archived_at: None,
        };
        let json = serde_json::to_value(&item).unwrap();
        assert_eq!(json["type"], "order.shipped");
        assert_eq!(json["created_at"], "2026-11-25T10:00:00Z");
        assert!(json["read_at"].is_null());
        assert_eq!(serde_json::from_value::<InboxItem>(json).unwrap(), item);
    }
}
