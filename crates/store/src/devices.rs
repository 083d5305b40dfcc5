//! Subscribers' push devices (docs/contract.md §2): registered by the tenant's backend or
//! the subscriber's own app. A token belongs to one device of one subscriber of one tenant
//! (`token_hash` is unique): registering it elsewhere moves it. A subscriber keeps a bounded
//! number of devices, the one updated least recently evicted. Every removal writes an
//! audit event `device_removed` in the transaction that removes the device.

use domain::push::{Device, NewDevice, Platform, token_hint};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Result, Store, StoreError, corrupt};

/// The class of the advisory locks of push tokens (apart from the receipts' 1316).
const TOKEN_LOCK_CLASS: i32 = 2401;

/// How often a registration is tried when a concurrent one took the same token first.
const REGISTER_TRIES: usize = 3;

/// The SHA-256 of `<platform>:<token>`, the unique key of a token (as the migration says).
const TOKEN_HASH: &str = "sha256(convert_to($4 || ':' || $5, 'UTF8'))";

#[derive(sqlx::FromRow)]
struct DeviceRow {
    device_id: String,
    platform: String,
    token: String,
    app: Option<String>,
    locale: Option<String>,
    timezone: Option<String>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

const COLUMNS: &str = "device_id, platform, token, app, locale, timezone, created_at, updated_at";

impl TryFrom<DeviceRow> for Device {
    type Error = StoreError;

    fn try_from(row: DeviceRow) -> Result<Self> {
        let platform = Platform::parse(&row.platform)
            .ok_or_else(|| corrupt(format!("device {} has platform {}", row.device_id, row.platform)))?;
        Ok(Device {
            token_hint: token_hint(platform, &row.token),
            device_id: row.device_id,
            platform,
            app: row.app,
            locale: row.locale,
            timezone: row.timezone,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// Why a device was removed: `detail.reason` of its audit event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalReason {
    /// Deleted through the API.
    Removed,
    /// Its token was registered for another device (of any subscriber, any tenant).
    Moved,
    /// Its subscriber registered more than `limits.max_devices_per_subscriber`.
    Evicted,
    /// A provider reported the token gone.
    Gone,
}

impl RemovalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalReason::Removed => "removed",
            RemovalReason::Moved => "moved",
            RemovalReason::Evicted => "evicted",
            RemovalReason::Gone => "gone",
        }
    }
}

/// A device removed, as its audit event names it (never its token).
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct Removed {
    pub tenant_id: Uuid,
    pub subscriber_id: String,
    pub device_id: String,
    pub platform: String,
}

/// Writes one `device_removed` audit event per removed device, in the caller's
/// transaction: `detail = {"device_id", "platform", "reason", "code"?}`.
pub(crate) async fn audit_removals(
    conn: &mut sqlx::PgConnection,
    removed: &[Removed],
    reason: RemovalReason,
    code: Option<&str>,
    delivery_id: Option<Uuid>,
    actor: &str,
) -> Result<()> {
    if removed.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Removed) -> String| removed.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO audit_events (tenant_id, subscriber_id, delivery_id, notification_id, action, actor, detail)
         SELECT r.tenant_id, r.subscriber_id, $5, NULL, 'device_removed', $6,
                jsonb_strip_nulls(jsonb_build_object('device_id', r.device_id, 'platform', r.platform,
                                                     'reason', $7::text, 'code', $8::text))
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS r(tenant_id, subscriber_id, device_id, platform)",
    )
    .bind(removed.iter().map(|r| r.tenant_id).collect::<Vec<_>>())
    .bind(column(|r| r.subscriber_id.clone()))
    .bind(column(|r| r.device_id.clone()))
    .bind(column(|r| r.platform.clone()))
    .bind(delivery_id)
    .bind(actor)
    .bind(reason.as_str())
    .bind(code)
    .execute(conn)
    .await?;
    Ok(())
}

/// The actor named on the audit event of a device moved away from another tenant: the
/// caller's own id (its key or subscriber) is not that tenant's to see.
pub const OTHER_TENANT: &str = "another_tenant";

impl Store {
    /// Creates or replaces the device `device_id` of the subscriber. The same token on any
    /// other device (of any subscriber of any tenant) is removed (`moved`); past
    /// `max_devices` the subscriber's devices updated least recently are removed
    /// (`evicted`); both with their audit events, in one transaction. `None` if there is no
    /// such subscriber; else the device and `true` when it was created.
    pub async fn register_device(
        &self,
        tenant_id: Uuid,
        subscriber_id: &str,
        device_id: &str,
        device: &NewDevice,
        max_devices: usize,
        actor: &str,
    ) -> Result<Option<(Device, bool)>> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.try_register(tenant_id, subscriber_id, device_id, device, max_devices, actor).await {
                // Another registration of the same token committed between our removal of
                // its other rows and our insert: move it again. Or two registrations each
                // moving a token from the other's subscriber deadlocked: one goes on.
                Err(StoreError::Db(sqlx::Error::Database(e)))
                    if tries < REGISTER_TRIES
                        && (e.constraint() == Some("devices_token") || e.code().as_deref() == Some("40P01")) => {}
                other => return other,
            }
        }
    }

    async fn try_register(
        &self,
        tenant_id: Uuid,
        subscriber_id: &str,
        device_id: &str,
        device: &NewDevice,
        max_devices: usize,
        actor: &str,
    ) -> Result<Option<(Device, bool)>> {
        let mut tx = self.pool.begin().await?;
        // Registrations of one token take turns (whichever subscribers they are for): each
        // then finds the one before it and moves the token, where racing inserts would
        // fail on the unique `token_hash` one after the other.
        sqlx::query(&format!("SELECT pg_advisory_xact_lock({TOKEN_LOCK_CLASS}, hashtext($1 || ':' || $2))"))
            .bind(device.platform.as_str())
            .bind(&device.token)
            .execute(&mut *tx)
            .await?;
        // Registrations of one subscriber take turns (the bound counts its devices); an
        // accept's `FOR KEY SHARE` is not blocked, an erasure's `FOR UPDATE` is.
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM subscribers WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE")
                .bind(tenant_id)
                .bind(subscriber_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let moved: Vec<Removed> = sqlx::query_as(&format!(
            "DELETE FROM devices
             WHERE token_hash = {TOKEN_HASH}
               AND (tenant_id, subscriber_id, device_id) <> ($1, $2, $3)
             RETURNING tenant_id, subscriber_id, device_id, platform"
        ))
        .bind(tenant_id)
        .bind(subscriber_id)
        .bind(device_id)
        .bind(device.platform.as_str())
        .bind(&device.token)
        .fetch_all(&mut *tx)
        .await?;
        let (ours, theirs): (Vec<Removed>, Vec<Removed>) = moved.into_iter().partition(|r| r.tenant_id == tenant_id);
        audit_removals(&mut tx, &ours, RemovalReason::Moved, None, None, actor).await?;
        audit_removals(&mut tx, &theirs, RemovalReason::Moved, None, None, OTHER_TENANT).await?;

        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            device: DeviceRow,
            created: bool,
        }
        let row: Row = sqlx::query_as(&format!(
            "INSERT INTO devices AS d (tenant_id, subscriber_id, device_id, platform, token, token_hash, app, locale,
                                       timezone)
             VALUES ($1, $2, $3, $4, $5, {TOKEN_HASH}, $6, $7, $8)
             ON CONFLICT (tenant_id, subscriber_id, device_id) DO UPDATE
                SET platform = EXCLUDED.platform, token = EXCLUDED.token, token_hash = EXCLUDED.token_hash,
                    app = EXCLUDED.app, locale = EXCLUDED.locale, timezone = EXCLUDED.timezone, updated_at = now()
             RETURNING {COLUMNS}, (xmax = 0) AS created"
        ))
        .bind(tenant_id)
        .bind(subscriber_id)
        .bind(device_id)
        .bind(device.platform.as_str())
        .bind(&device.token)
        .bind(device.app.as_deref())
        .bind(device.locale.as_deref())
        .bind(device.timezone.as_deref())
        .fetch_one(&mut *tx)
        .await?;

        let evicted: Vec<Removed> = sqlx::query_as(
            "DELETE FROM devices d
             WHERE d.tenant_id = $1 AND d.subscriber_id = $2 AND d.device_id IN (
                SELECT device_id FROM devices
                WHERE tenant_id = $1 AND subscriber_id = $2 AND device_id <> $3
                ORDER BY updated_at DESC, created_at DESC, device_id
                OFFSET $4)
             RETURNING d.tenant_id, d.subscriber_id, d.device_id, d.platform",
        )
        .bind(tenant_id)
        .bind(subscriber_id)
        .bind(device_id)
        .bind(max_devices.saturating_sub(1) as i64)
        .fetch_all(&mut *tx)
        .await?;
        audit_removals(&mut tx, &evicted, RemovalReason::Evicted, None, None, actor).await?;
        tx.commit().await?;
        Ok(Some((row.device.try_into()?, row.created)))
    }

    /// The subscriber's devices, most recently updated first; `None` if there is no such
    /// subscriber.
    pub async fn list_devices(&self, tenant_id: Uuid, subscriber_id: &str) -> Result<Option<Vec<Device>>> {
        let mut tx = self.pool.begin().await?;
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM subscribers WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(subscriber_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let rows: Vec<DeviceRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM devices WHERE tenant_id = $1 AND subscriber_id = $2
             ORDER BY updated_at DESC, device_id"
        ))
        .bind(tenant_id)
        .bind(subscriber_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter().map(Device::try_from).collect::<Result<Vec<_>>>().map(Some)
    }

    /// One device of the subscriber; `None` if either is unknown.
    pub async fn get_device(&self, tenant_id: Uuid, subscriber_id: &str, device_id: &str) -> Result<Option<Device>> {
        let row: Option<DeviceRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM devices WHERE tenant_id = $1 AND subscriber_id = $2 AND device_id = $3"
        ))
        .bind(tenant_id)
        .bind(subscriber_id)
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Device::try_from).transpose()
    }

    /// Removes the device with its audit event (`removed`); `false` if there is no such
    /// device.
    pub async fn delete_device(
        &self,
        tenant_id: Uuid,
        subscriber_id: &str,
        device_id: &str,
        actor: &str,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let removed: Vec<Removed> = sqlx::query_as(
            "DELETE FROM devices WHERE tenant_id = $1 AND subscriber_id = $2 AND device_id = $3
             RETURNING tenant_id, subscriber_id, device_id, platform",
        )
        .bind(tenant_id)
        .bind(subscriber_id)
        .bind(device_id)
        .fetch_all(&mut *tx)
        .await?;
        audit_removals(&mut tx, &removed, RemovalReason::Removed, None, None, actor).await?;
        tx.commit().await?;
        Ok(!removed.is_empty())
    }
}
