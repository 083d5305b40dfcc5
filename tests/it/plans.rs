//! The hot statements' generic plans read tables only by index probes, on an empty database
//! and on a filled one after ANALYZE: each is planned once per connection and that plan is
//! kept however the tables grow (migrations/20261206000014_generic_plans.sql), so a plan
//! made on empty tables must not scan them.
//!
//! The worker's and the relay's statements run inside plpgsql functions, where a plain
//! EXPLAIN does not reach: `auto_explain` logs the plan each nested statement ran with, and
//! `client_min_messages = log` sends those lines to the client. They are read from `psql`'s
//! standard error, because sqlx hands a server's notices to its own logger and not to the
//! caller; `psql` prints them whole, one JSON plan after each `plan:` line. The accept is a
//! statement prepared by sqlx: it is run once through a store on a single connection, and
//! the generic plan of every statement that session prepared is explained there
//! ([`prepared_plans`]), so whatever the accept path prepares is checked.

use std::process::Stdio;

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, postgres::PgPoolOptions};
use store::{Accept, IdempotencyKey, Intake, Store};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::harness::{TestEnv, intake_of};

/// The tables whose reads the statements prepared on the accept path are held to: all.
const PREPARED_TABLES: Option<&[&str]> = None;

#[tokio::test]
async fn hot_statements_read_tables_only_by_index_on_an_empty_and_a_filled_database() {
    let env = TestEnv::new().await;
    let tenant = env.store.create_tenant("plans").await.unwrap().tenant_id;
    let mut conn = PgConnection::connect(&env.database_url).await.unwrap();

    // Freshly migrated: only the rows the calls need, no statistics.
    check_all(&env, tenant, &mut conn, "an empty database").await;

    fill(&mut conn, tenant, 3_000).await;
    sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
    check_all(&env, tenant, &mut conn, "a filled database").await;
}

#[tokio::test]
async fn the_check_finds_a_sequential_scan() {
    let env = TestEnv::new().await;
    let plans = psql_plans(&env.database_url, "SELECT count(*) FROM deliveries;").await;
    let faults: Vec<String> = plans.iter().flat_map(|(_, plan)| non_index_reads(plan, None)).collect();
    assert_eq!(faults, ["Seq Scan on deliveries"], "{plans:#?}");
}

async fn check_all(env: &TestEnv, tenant: Uuid, conn: &mut PgConnection, state: &str) {
    let seed = Seed::insert(conn, tenant).await;
    let mut faults = Vec::new();
    for (call, statements) in seed.calls() {
        // A session of its own for each call, so each plan is made in the state under test.
        let plans = psql_plans(&env.database_url, &call).await;
        let nested: Vec<&(String, Value)> = plans.iter().filter(|(query, _)| !call.contains(query.trim())).collect();
        for expected in statements {
            assert!(
                nested.iter().any(|(query, _)| normalized(query).starts_with(expected)),
                "{state}: no plan of a statement starting `{expected}` from `{call}`: {nested:#?}"
            );
        }
        for (query, plan) in nested {
            faults.extend(non_index_reads(plan, None).into_iter().map(|f| format!("{f}\n  in: {}", normalized(query))));
        }
    }
    for (query, plan) in prepared_plans(env, tenant).await {
        faults.extend(
            non_index_reads(&plan, PREPARED_TABLES).into_iter().map(|f| format!("{f}\n  in: {}", normalized(&query))),
        );
    }
    assert!(faults.is_empty(), "{state}: tables read other than by index:\n{}", faults.join("\n"));
}

/// Rows for the calls: a notification with one delivery and one with two, each with an
/// outbox row, due.
struct Seed {
    tenant: Uuid,
    single: (Uuid, Uuid),
    pair: (Uuid, [Uuid; 2]),
}

impl Seed {
    async fn insert(conn: &mut PgConnection, tenant: Uuid) -> Self {
        let seed = Self {
            tenant,
            single: (Uuid::now_v7(), Uuid::now_v7()),
            pair: (Uuid::now_v7(), [Uuid::now_v7(), Uuid::now_v7()]),
        };
        let (n1, d1) = seed.single;
        let (n2, [d2, d3]) = seed.pair;
        sqlx::query(
            "WITH n AS (
                INSERT INTO notifications (id, tenant_id, type, priority, delivery_count)
                VALUES ($2, $1, 'plans', 'normal', 1), ($3, $1, 'plans', 'normal', 2)),
             d AS (
                INSERT INTO deliveries (id, tenant_id, notification_id, channel, recipient)
                VALUES ($4, $1, $2, 'email', 'a@example.com'), ($5, $1, $3, 'email', 'b@example.com'),
                       ($6, $1, $3, 'sms', '+15550000000'))
             INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority)
             VALUES ($1, $2, $4, 'email', 1, 1), ($1, $3, $5, 'email', 1, 1), ($1, $3, $6, 'sms', 1, 1)",
        )
        .bind(tenant)
        .bind(n1)
        .bind(n2)
        .bind(d1)
        .bind(d2)
        .bind(d3)
        .execute(conn)
        .await
        .unwrap();
        seed
    }

    /// Each hot call, as SQL, with the start of every statement it must have run.
    fn calls(&self) -> Vec<(String, Vec<&'static str>)> {
        let (t, (n1, d1), (n2, [d2, d3])) = (self.tenant, self.single, self.pair);
        let (c1, c2) = (Uuid::new_v4(), Uuid::new_v4());
        vec![
            (
                "BEGIN; SELECT * FROM claim_outbox(100, '{email,sms,whatsapp,novu}', '{100,100,0,100}'); ROLLBACK;"
                    .to_owned(),
                vec!["WITH claimed AS ( DELETE FROM outbox"],
            ),
            (
                format!("SELECT mark_queued('{{{d1},{d2},{d3}}}');"),
                vec!["UPDATE deliveries d SET status = 'queued'"],
            ),
            // The second message asks for an attempt its delivery is not at: the claim's
            // second statement reads it.
            (
                format!(
                    "SELECT * FROM claim_deliveries('{{{d1},{d2}}}', '{{{t},{t}}}', '{{email,email}}', '{{1,2}}',
                                                    '{{{c1},{c2}}}', '{{60000,60000}}', '[erased]', 'lost');"
                ),
                vec!["WITH m AS", "SELECT d.id, m.claim, false"],
            ),
            // One notification with one delivery, one with two (its aggregate is read); the
            // second outcome names a device gone, whose removal is looked up.
            (
                format!(
                    "SELECT * FROM record_outcomes('{{{d1},{d2}}}', '{{1,1}}', '{{sent,retrying}}', '{{sandbox,sandbox}}',
                        '{{m-1,NULL}}', '{{NULL,busy}}', '{{NULL,busy}}', '{{NULL,1000}}'::bigint[], '{{{t},{t}}}',
                        '{{sent,retryable}}', '{{NULL,NULL}}', '{{1,1}}', ARRAY[now(), now()], '{{{n1},{n2}}}',
                        '{{email,email}}', '{{1,1}}', '{{NULL,NULL}}', '{{{c1},{c2}}}', '[erased]', '{{false,true}}',
                        '{{NULL,phone-1}}', '{{NULL,token-1}}');"
                ),
                vec![
                    "SELECT coalesce(array_agg(l.id)",
                    "WITH r AS",
                    "UPDATE notifications n SET status = agg.status",
                    "SELECT d.subscriber_id FROM deliveries d",
                    "DELETE FROM devices v",
                ],
            ),
        ]
    }
}

/// Some thousands of notifications of one and two deliveries, settled and not, with
/// attempts, outbox rows due and scheduled, and pending receipts.
async fn fill(conn: &mut PgConnection, tenant: Uuid, notifications: i32) {
    let statements = [
        format!(
            "INSERT INTO notifications (id, tenant_id, type, priority, status, delivery_count, created_at)
             SELECT gen_random_uuid(), '{tenant}', 'fill', 'normal',
                    CASE WHEN i % 3 = 0 THEN 'pending' ELSE 'sent' END, 1 + i % 2, now() - i * interval '1 second'
             FROM generate_series(1, {notifications}) AS i"
        ),
        "INSERT INTO deliveries (id, tenant_id, notification_id, channel, recipient, status, attempts, provider,
                                 provider_message_id, updated_at)
         SELECT gen_random_uuid(), n.tenant_id, n.id, c.channel, 'fill@example.com',
                CASE WHEN n.status = 'sent' THEN 'sent' ELSE 'queued' END,
                CASE WHEN n.status = 'sent' THEN 1 ELSE 0 END, 'sandbox', gen_random_uuid()::text, n.created_at
         FROM notifications n CROSS JOIN LATERAL (VALUES ('email'), ('sms')) AS c(channel)
         WHERE n.type = 'fill' AND (c.channel = 'email' OR n.delivery_count = 2)"
            .to_owned(),
        "INSERT INTO delivery_attempts (tenant_id, delivery_id, number, provider, outcome, latency_ms, started_at)
         SELECT tenant_id, id, 1, 'sandbox', 'sent', 5, updated_at FROM deliveries WHERE status = 'sent'"
            .to_owned(),
        "INSERT INTO outbox (tenant_id, notification_id, delivery_id, channel, attempt, priority, available_at)
         SELECT tenant_id, notification_id, id, channel, 1, 1,
                now() + CASE WHEN random() < 0.5 THEN interval '1 day' ELSE interval '0' END
         FROM deliveries WHERE status = 'queued'"
            .to_owned(),
        format!(
            "INSERT INTO pending_receipts (provider, provider_message_id, status)
             SELECT 'sandbox', gen_random_uuid()::text, 'delivered' FROM generate_series(1, {notifications} / 10)"
        ),
        format!(
            "INSERT INTO subscribers (tenant_id, id) SELECT '{tenant}', 'fill-' || i
             FROM generate_series(1, {notifications}) AS i"
        ),
        "INSERT INTO devices (tenant_id, subscriber_id, device_id, platform, token, token_hash)
         SELECT s.tenant_id, s.id, d, 'fcm', s.id || d, sha256(convert_to(s.id || d, 'UTF8'))
         FROM subscribers s CROSS JOIN (VALUES ('phone'), ('tablet')) AS v(d) WHERE s.id LIKE 'fill-%'"
            .to_owned(),
    ];
    for statement in statements {
        sqlx::query(&statement).execute(&mut *conn).await.unwrap();
    }
}

/// Runs `calls` in a `psql` session with `auto_explain` logging every plan, nested ones
/// included, as JSON; returns each plan with its statement's text.
async fn psql_plans(database_url: &str, calls: &str) -> Vec<(String, Value)> {
    let script = format!(
        "LOAD 'auto_explain';
         SET auto_explain.log_min_duration = 0;
         SET auto_explain.log_nested_statements = on;
         SET auto_explain.log_format = json;
         SET client_min_messages = log;
         {calls}\n"
    );
    let mut psql = tokio::process::Command::new("psql")
        .args([database_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql runs (the PostgreSQL client, installed with the server)");
    psql.stdin.take().unwrap().write_all(script.as_bytes()).await.unwrap();
    let out = psql.wait_with_output().await.unwrap();
    let log = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "psql failed: {log}");
    log.split("  plan:\n")
        .skip(1)
        .map(|after| {
            let plan: Value = serde_json::Deserializer::from_str(after)
                .into_iter()
                .next()
                .and_then(Result::ok)
                .unwrap_or_else(|| panic!("a JSON plan after `plan:`: {after}"));
            (plan["Query Text"].as_str().unwrap_or_default().to_owned(), plan["Plan"].clone())
        })
        .collect()
}

/// Accepts a notification (with a key, so the transaction gives its connection back) through
/// a store whose accepts have one connection, then explains, on that connection and under
/// its settings, the generic plan of every statement it prepared. The accept must be among
/// them, and the directory's reads.
async fn prepared_plans(env: &TestEnv, tenant: Uuid) -> Vec<(String, Value)> {
    let pool = PgPoolOptions::new().max_connections(1).connect(&env.database_url).await.unwrap();
    let store = Store::from_pool(pool.clone());
    // A stored subscriber, so its push devices are read too.
    sqlx::query("INSERT INTO subscribers (tenant_id, id) VALUES ($1, 'stored') ON CONFLICT DO NOTHING")
        .bind(tenant)
        .execute(&pool)
        .await
        .unwrap();
    let request = json!({"type": "plans",
        "to": [{"email": "ada@example.com"}, {"subscriber_id": "u-1"}, {"subscriber_id": "stored"}],
        "channels": ["email", "novu", "push"], "content": {"subject": "Hi", "text": "Hello", "title": "Hi"}});
    let key = IdempotencyKey { key: Uuid::now_v7().to_string(), request_hash: vec![1] };
    let intake = Intake { idempotency: Some(key), ..intake_of(&store, tenant, request).await };
    let accept = Accept {
        tenant_id: tenant,
        actor: "test".into(),
        traceparent: None,
        items: vec![intake],
        retention: std::time::Duration::from_secs(60),
    };
    store.accept(accept).await.unwrap();

    let mut conn = store.indexed_pool().acquire().await.unwrap();
    let prepared: Vec<(String, String, i32)> = sqlx::query_as(
        "SELECT name, statement, coalesce(cardinality(parameter_types), 0) FROM pg_prepared_statements
         WHERE NOT from_sql",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for part in ["INSERT INTO notifications", "FROM unnest($2::text[]) AS w(id) JOIN subscribers", "JOIN devices d"] {
        assert!(prepared.iter().any(|(_, statement, _)| statement.contains(part)), "{part} is prepared: {prepared:#?}");
    }
    sqlx::query("SET plan_cache_mode = force_generic_plan").execute(&mut *conn).await.unwrap();
    let mut explained = Vec::new();
    for (name, statement, parameters) in prepared {
        let nulls = vec!["NULL"; parameters as usize].join(", ");
        let arguments = if parameters > 0 { format!("({nulls})") } else { String::new() };
        let (plan,): (Value,) = sqlx::query_as(&format!("EXPLAIN (FORMAT JSON) EXECUTE {name}{arguments}"))
            .persistent(false)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        explained.push((statement, plan[0]["Plan"].clone()));
    }
    sqlx::query("RESET plan_cache_mode").execute(&mut *conn).await.unwrap();
    explained
}

/// The nodes of `plan` that read a table (of `tables`, or any) other than through an index
/// condition: a sequential or bitmap scan, or an index scanned whole.
fn non_index_reads(plan: &Value, tables: Option<&[&str]>) -> Vec<String> {
    let mut faults = Vec::new();
    let node = plan["Node Type"].as_str().unwrap_or_default();
    if let Some(table) = plan["Relation Name"].as_str()
        && node != "ModifyTable"
        && tables.is_none_or(|t| t.contains(&table))
    {
        let by_index = matches!(node, "Index Scan" | "Index Only Scan") && plan.get("Index Cond").is_some();
        if !by_index {
            faults.push(format!("{node} on {table}"));
        }
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        faults.extend(non_index_reads(child, tables));
    }
    faults
}

fn normalized(query: &str) -> String {
    query.split_whitespace().collect::<Vec<_>>().join(" ")
}
