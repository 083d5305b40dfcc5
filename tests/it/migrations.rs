//! A database migrated before four migrations' comments were reworded still migrates
//! (store/src/reworded.rs); any other difference is still refused.

use crate::harness::TestEnv;

/// The checksums sqlx stored for those migrations as first written.
const OLD: [(i64, &str); 4] = [
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

async fn set_checksum(env: &TestEnv, version: i64, hex: &str) {
    sqlx::query("UPDATE _sqlx_migrations SET checksum = decode($2, 'hex') WHERE version = $1")
        .bind(version)
        .bind(hex)
        .execute(env.store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_database_migrated_before_the_rewording_migrates() {
    let env = TestEnv::new().await;
    for (version, old) in OLD {
        set_checksum(&env, version, old).await;
    }
    env.store.migrate().await.expect("the reworded migrations are accepted");
    for m in store::MIGRATOR.iter().filter(|m| OLD.iter().any(|(v, _)| *v == m.version)) {
        let stored: Vec<u8> = sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_one(env.store.pool())
            .await
            .unwrap();
        assert_eq!(stored, m.checksum.to_vec(), "migration {}", m.version);
    }
}

#[tokio::test]
async fn another_checksum_is_still_refused() {
    let env = TestEnv::new().await;
    set_checksum(&env, OLD[0].0, &"00".repeat(48)).await;
    let refused = env.store.migrate().await.expect_err("a changed migration is refused");
    assert!(refused.to_string().contains("20261125000003"), "{refused}");
}
