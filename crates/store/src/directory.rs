//! Loading what a batch of notifications refers to (the tenant's settings, the types it
//! names, their templates, the subscribers it names directly or through topics, and their
//! push devices when the batch may go out as a push) in at most four statements, however
//! many notifications and topic members there are; and the
//! subscribers' `data` (up to 64 KiB each), which planning reads a page at a time. The
//! tenant, its types and their compiled templates come from the cache when it has them
//! (`cache.rs`).

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
};

use domain::{
    Channel, ValidNotification,
    notification_type::NotificationType,
    plan::{Directory, Listed, ListedDevice, SubscriberData},
    push::Platform,
    subscriber::{Preferences, Subscriber},
    template::Template,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    Result, Store, StoreError,
    cache::{Templates, TenantSettings},
    corrupt,
};

/// The tenant's settings, and one of the types asked for when there is one (LEFT JOIN).
#[derive(sqlx::FromRow)]
struct TypeRow {
    default_locale: String,
    adhoc_types: bool,
    http_action_urls: bool,
    key: Option<String>,
    channels: Option<Vec<String>>,
    critical: Option<bool>,
    novu_workflow: Option<String>,
    retry: Option<serde_json::Value>,
    category: Option<String>,
    preferences: Option<serde_json::Value>,
    audience: Option<String>,
    error_class: Option<String>,
    created_at: Option<OffsetDateTime>,
    updated_at: Option<OffsetDateTime>,
}

#[derive(sqlx::FromRow)]
struct SubscriberRow {
    id: String,
    email: Option<String>,
    phone: Option<String>,
    whatsapp: Option<String>,
    chat: sqlx::types::Json<domain::chat::StoredChat>,
    locale: Option<String>,
    timezone: Option<String>,
    preferences: serde_json::Value,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    /// The topics of the batch this subscriber is a member of.
    topics: Vec<String>,
}

/// The part of a subscriber's preferences that planning the batch consults, for the
/// directory's statements: `$3` the batch's types, `$4` their categories.
const PREFERENCES: &str = "jsonb_build_object(
    'channels', coalesce(s.preferences->'channels', '{}'),
    'quiet_hours', s.preferences->'quiet_hours',
    'types', coalesce((SELECT jsonb_object_agg(k, s.preferences->'types'->k) FROM unnest($3::text[]) k
                       WHERE s.preferences->'types' ? k), '{}'),
    'categories', coalesce((SELECT jsonb_object_agg(c, s.preferences->'categories'->c)
                            FROM unnest($4::text[]) c WHERE s.preferences->'categories' ? c), '{}'))";

/// A push device of a listed subscriber.
#[derive(sqlx::FromRow)]
struct DeviceRow {
    subscriber_id: String,
    device_id: String,
    platform: String,
    locale: Option<String>,
    timezone: Option<String>,
}

/// The devices of the subscribers `$2`, by primary key (no token: the worker's claim reads
/// it), in a stable order.
const DEVICES: &str = "SELECT d.subscriber_id, d.device_id, d.platform, d.locale, d.timezone
     FROM unnest($2::text[]) AS w(id) JOIN devices d ON d.tenant_id = $1 AND d.subscriber_id = w.id
     ORDER BY d.subscriber_id, d.device_id";

/// The subscribers named (`$2`), by primary key.
static BY_KEY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT s.id, s.email, s.phone, s.whatsapp, s.chat, s.locale, s.timezone, {PREFERENCES} AS preferences,
                    s.created_at, s.updated_at, '{{}}'::text[] AS topics
             FROM unnest($2::text[]) AS w(id) JOIN subscribers s ON s.tenant_id = $1 AND s.id = w.id
             ORDER BY s.id"
    )
});

/// The subscribers named (`$2`) and the members of the topics named (`$5`).
static WITH_TOPICS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT s.id, s.email, s.phone, s.whatsapp, s.chat, s.locale, s.timezone, {PREFERENCES} AS preferences,
                    s.created_at, s.updated_at,
                    coalesce(array_agg(m.topic) FILTER (WHERE m.topic IS NOT NULL), '{{}}') AS topics
             FROM subscribers s
             LEFT JOIN topic_members m
                    ON m.tenant_id = s.tenant_id AND m.subscriber_id = s.id AND m.topic = ANY($5)
             WHERE s.tenant_id = $1 AND (s.id = ANY($2) OR m.topic IS NOT NULL)
             GROUP BY s.tenant_id, s.id
             ORDER BY s.id"
    )
});

impl Store {
    /// The members of each of `topics`, counted up to `cap + 1` (no more index entries are
    /// read, however large a topic): enough to refuse a fan-out over `cap` before loading it.
    pub async fn topic_sizes(&self, tenant_id: Uuid, topics: &[&str], cap: usize) -> Result<HashMap<String, usize>> {
        if topics.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT t.topic, c.members
             FROM unnest($2::text[]) AS t(topic)
             CROSS JOIN LATERAL (
                 SELECT count(*) AS members FROM (
                     SELECT 1 FROM topic_members m WHERE m.tenant_id = $1 AND m.topic = t.topic LIMIT $3
                 ) capped
             ) c",
        )
        .bind(tenant_id)
        .bind(topics)
        .bind(i64::try_from(cap).unwrap_or(i64::MAX).saturating_add(1))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(topic, n)| (topic, usize::try_from(n).unwrap_or(usize::MAX))).collect())
    }

    /// Everything `items` refer to, for [`domain::plan::plan_all`], but the subscribers' `data`.
    pub async fn directory(&self, tenant_id: Uuid, items: &[&ValidNotification]) -> Result<Directory> {
        let mut directory = self.tenant_types(tenant_id, items).await?;
        self.add_templates(tenant_id, items, &mut directory).await?;

        let ids: Vec<&str> = unique(items.iter().flat_map(|n| n.subscriber_ids()));
        let topics: Vec<&str> = unique(items.iter().flat_map(|n| n.topics()));
        if ids.is_empty() && topics.is_empty() {
            return Ok(directory);
        }
        // A preference may name a type the tenant has not defined (an ad-hoc one): every kind.
        let kinds: Vec<&str> = unique(items.iter().map(|n| n.kind.as_str()));
        let categories: Vec<&str> = unique(directory.types.values().filter_map(|t| t.category.as_deref()));
        // One statement for the subscribers named and every member of the topics named: a
        // topic of 10,000 members is one index range scan, not 10,000 lookups. Without their
        // `data`: 50,000 members of 64 KiB each would be 3 GB; planning reads it by pages
        // ([`Store::subscriber_data`]). Of their preferences only what planning these items
        // consults (a document may hold 1,000 entries, up to 256 KiB): the channels, quiet
        // hours, and the entries of the batch's types and their categories.
        let rows: Vec<SubscriberRow> = if topics.is_empty() {
            // Named subscribers only (most requests): primary-key lookups, prepared once on
            // the indexed pool (its generic plans probe indexes whatever the tables hold).
            sqlx::query_as(&BY_KEY)
                .bind(tenant_id)
                .bind(&ids)
                .bind(&kinds)
                .bind(&categories)
                .fetch_all(&self.indexed)
                .await?
        } else {
            sqlx::query_as(&WITH_TOPICS)
                .persistent(false)
                .bind(tenant_id)
                .bind(&ids)
                .bind(&kinds)
                .bind(&categories)
                .bind(&topics)
                .fetch_all(&self.pool)
                .await?
        };
        for row in rows {
            for topic in &row.topics {
                directory.topics.entry(topic.clone()).or_default().push(row.id.clone());
            }
            let preferences: Preferences = serde_json::from_value(row.preferences)
                .map_err(|e| corrupt(format!("preferences of subscriber {}: {e}", row.id)))?;
            let subscriber = Subscriber {
                id: row.id,
                email: row.email,
                phone: row.phone,
                whatsapp: row.whatsapp,
                chat: row.chat.0,
                locale: row.locale,
                timezone: row.timezone,
                data: serde_json::Map::new(),
                created_at: row.created_at,
                updated_at: row.updated_at,
            };
            directory.subscribers.insert(subscriber.id.clone(), Listed { subscriber, preferences });
        }
        if items.iter().any(|n| may_push(n, &directory)) {
            self.add_devices(tenant_id, &mut directory).await?;
        }
        Ok(directory)
    }

    /// The push devices of the directory's subscribers, in one statement.
    async fn add_devices(&self, tenant_id: Uuid, directory: &mut Directory) -> Result<()> {
        let ids: Vec<&str> = directory.subscribers.keys().map(String::as_str).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let rows: Vec<DeviceRow> = sqlx::query_as(DEVICES).bind(tenant_id).bind(&ids).fetch_all(&self.indexed).await?;
        for row in rows {
            let platform = Platform::parse(&row.platform)
                .ok_or_else(|| corrupt(format!("device {} has platform {}", row.device_id, row.platform)))?;
            let device = ListedDevice { id: row.device_id, platform, locale: row.locale, timezone: row.timezone };
            directory.devices.entry(row.subscriber_id).or_default().push(device);
        }
        Ok(())
    }

    /// Where [`domain::plan::plan_all`] reads the `data` of `tenant_id`'s subscribers, a
    /// page at a time.
    pub fn subscriber_data(&self, tenant_id: Uuid) -> impl SubscriberData<Error = StoreError> + Send + '_ {
        DataPages { store: self, tenant_id }
    }
}

struct DataPages<'a> {
    store: &'a Store,
    tenant_id: Uuid,
}

impl SubscriberData for DataPages<'_> {
    type Error = StoreError;

    /// One statement per page, by primary key (prepared, on the indexed pool), matching the `created_at` the directory
    /// read (one erased since, or erased and created again, is left out). As text: parsed
    /// one subscriber at a time while rendering.
    async fn load(&mut self, subscribers: &[&Subscriber]) -> Result<HashMap<String, String>> {
        let ids: Vec<&str> = subscribers.iter().map(|s| s.id.as_str()).collect();
        let created_at: Vec<OffsetDateTime> = subscribers.iter().map(|s| s.created_at).collect();
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT s.id, s.data::text
             FROM unnest($2::text[], $3::timestamptz[]) AS w(id, created_at)
             JOIN subscribers s ON s.tenant_id = $1 AND s.id = w.id AND s.created_at = w.created_at",
        )
        .bind(self.tenant_id)
        .bind(&ids)
        .bind(&created_at)
        .fetch_all(&self.store.indexed)
        .await?;
        Ok(rows.into_iter().collect())
    }
}

/// The type on a row of the tenant's settings, if the row has one.
fn notification_type(row: TypeRow) -> Result<Option<NotificationType>> {
    let (Some(key), Some(channels), Some(critical), Some(preferences), Some(created_at), Some(updated_at)) =
        (row.key, row.channels, row.critical, row.preferences, row.created_at, row.updated_at)
    else {
        return Ok(None);
    };
    let row = crate::types::TypeRow {
        key,
        channels,
        critical,
        novu_workflow: row.novu_workflow,
        retry: row.retry,
        category: row.category,
        preferences,
        audience: row.audience,
        error_class: row.error_class,
        created_at,
        updated_at,
    };
    row.try_into().map(Some)
}

impl Store {
    /// The tenant's settings and the types `items` name (none for a type it lacks), from
    /// the cache where it has them, the rest in one statement.
    async fn tenant_types(&self, tenant_id: Uuid, items: &[&ValidNotification]) -> Result<Directory> {
        let kinds: Vec<&str> = unique(items.iter().map(|n| n.kind.as_str()));
        let mut directory = Directory::default();
        let mut missing = Vec::new();
        for kind in kinds {
            match self.cache.notification_type(tenant_id, kind) {
                Some(Some(t)) => {
                    directory.types.insert(t.key.clone(), t);
                }
                Some(None) => {}
                None => missing.push(kind),
            }
        }
        let settings = match self.cache.settings(tenant_id) {
            Some(settings) if missing.is_empty() => settings,
            _ => {
                let fill = self.cache.fill();
                let rows: Vec<TypeRow> = sqlx::query_as(
                    "SELECT t.default_locale, t.adhoc_types, t.http_action_urls, nt.key, nt.channels, nt.critical, nt.novu_workflow,
                            nt.retry, nt.category, nt.preferences, nt.audience, nt.error_class, nt.created_at,
                            nt.updated_at
                     FROM tenants t LEFT JOIN notification_types nt ON nt.tenant_id = t.id AND nt.key = ANY($2)
                     WHERE t.id = $1",
                )
                .bind(tenant_id)
                .bind(&missing)
                .fetch_all(&self.indexed)
                .await?;
                let first = rows.first().ok_or_else(|| corrupt(format!("tenant {tenant_id} does not exist")))?;
                let settings = TenantSettings {
                    default_locale: first.default_locale.clone(),
                    adhoc_types: first.adhoc_types,
                    http_action_urls: first.http_action_urls,
                };
                self.cache.put_settings(fill, tenant_id, settings.clone());
                for row in rows {
                    if let Some(t) = notification_type(row)? {
                        directory.types.insert(t.key.clone(), t);
                    }
                }
                for kind in missing {
                    self.cache.put_type(fill, tenant_id, kind.to_owned(), directory.types.get(kind).cloned());
                }
                settings
            }
        };
        directory.default_locale = settings.default_locale;
        directory.adhoc_types = settings.adhoc_types;
        directory.http_action_urls = settings.http_action_urls;
        Ok(directory)
    }

    /// The compiled templates of the defined types that notifications without inline
    /// content name, from the cache where it has them, the rest in one statement.
    async fn add_templates(
        &self,
        tenant_id: Uuid,
        items: &[&ValidNotification],
        directory: &mut Directory,
    ) -> Result<()> {
        let templated = unique(
            items
                .iter()
                .filter(|n| n.content.is_none() && directory.types.contains_key(&n.kind))
                .map(|n| n.kind.as_str()),
        );
        let mut missing = Vec::new();
        for kind in templated {
            match self.cache.templates(tenant_id, kind) {
                Some(templates) => add(directory, kind, &templates),
                None => missing.push(kind.to_owned()),
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let fill = self.cache.fill();
        let mut compiled: HashMap<String, Vec<(Channel, String, Template)>> =
            missing.iter().map(|kind| (kind.clone(), Vec::new())).collect();
        for stored in self.templates_of(tenant_id, &missing).await? {
            let template = Template::compile(stored.channel, &stored.content).map_err(|e| {
                corrupt(format!(
                    "stored template {} {} {} does not compile: {e:?}",
                    stored.kind, stored.channel, stored.locale
                ))
            })?;
            compiled.entry(stored.kind).or_default().push((stored.channel, stored.locale, template));
        }
        for (kind, templates) in compiled {
            let templates: Templates = templates.into();
            add(directory, &kind, &templates);
            self.cache.put_templates(fill, tenant_id, kind, templates);
        }
        Ok(())
    }
}

/// Whether `n` may go out as a push: asked for, on its type's channels, or a type the
/// tenant has not defined (then every channel a recipient has an address on).
fn may_push(n: &ValidNotification, directory: &Directory) -> bool {
    match (&n.channels, directory.types.get(&n.kind)) {
        (Some(channels), _) => channels.contains(&Channel::Push),
        (None, Some(kind)) => kind.channels.contains(&Channel::Push),
        (None, None) => directory.adhoc_types,
    }
}

/// A type's templates into the directory.
fn add(directory: &mut Directory, kind: &str, templates: &[(Channel, String, Template)]) {
    for (channel, locale, template) in templates {
        directory.templates.insert((kind.to_owned(), *channel, locale.clone()), template.clone());
    }
}

/// The distinct values, in first-seen order.
fn unique<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    values.filter(|v| seen.insert(*v)).collect()
}
