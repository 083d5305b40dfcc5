//! Migrations whose comments were reworded after they had been applied: they cited design
//! notes kept outside the repository, and now cite docs/contract.md and docs/providers.md.
//! Their SQL is unchanged, but sqlx refuses to migrate a database whose applied migration
//! has another checksum (SHA-384 of the file, comments included), so a database migrated
//! before the rewording has the old checksums replaced by the new ones first.

use sqlx::PgPool;

use crate::{MIGRATOR, Result};

/// Version and the checksum (hex) each had before its comments were reworded.
const REWORDED: [(i64, &str); 4] = [
    (
        20261125000003,
        "63c758d1331d05babd70ef9bd8cdcccb229379d8dea1cd97e176df59efab31d719d33953d6b18eaff126ea90c662002c",
    ),
    (
        20261125000005,
        "a900fb13bd87c4f2505687acfd2d136349efaa547b20867848c8f4d5c8b52925efc9afc1ce350d413f03f0af5fd32eee",
    ),
    (
        20261125000006,
        "b8da101096be86655cc376248a474188cb0cd7571cc043f7fee5a973d9bb673e28dd4154834ca4184f5ab14c7f470696",
    ),
    (
        20261203000013,
        "824d0291627155eaefdccb46b23c53f0ffe847dc78cc55003f4f0fa82c937ffee5e72d28d04cfd3c34e5469a487113fb",
    ),
];

/// Replaces the old checksums of [`REWORDED`] migrations with the current ones, where a
/// database still has them; touches nothing else (a migration changed in its SQL is still
/// refused by sqlx).
pub(crate) async fn accept_reworded(pool: &PgPool) -> Result<u64> {
    let migrated: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
    if !migrated {
        return Ok(0);
    }
    let (mut versions, mut old, mut new) = (Vec::new(), Vec::new(), Vec::new());
    for (version, checksum) in REWORDED {
        let current = MIGRATOR.iter().find(|m| m.version == version).expect("a reworded migration is embedded");
        versions.push(version);
        old.push(checksum);
        new.push(current.checksum.to_vec());
    }
    let done = sqlx::query(
        "UPDATE _sqlx_migrations m SET checksum = r.new
         FROM unnest($1::bigint[], $2::text[], $3::bytea[]) AS r(version, old, new)
         WHERE m.version = r.version AND m.checksum = decode(r.old, 'hex')",
    )
    .bind(&versions)
    .bind(&old)
    .bind(&new)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
