//! Admission control (ARCHITECTURE.md, "the admission limits"): one client cannot take a
//! replica from the others. Made-up API keys cost no database read (or only a few at
//! once), requests in flight and their time are bounded, a connection must send its
//! headers in time, and a subscriber polling the inbox is slowed down.
//!
//! The database is made slow on purpose by locking `api_keys` (`ACCESS EXCLUSIVE`): any
//! request that looks a key up in the database waits until the lock goes, so one that is
//! answered meanwhile did not.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{NOTIFIED, TestApp, email, eventually, within};

/// A client that gives up after a few seconds: a request blocked on the lock fails it.
fn impatient() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

async fn wait_listening(app: &TestApp) {
    eventually("the API's cache listening", || async {
        let ready: Value = app.http.get(app.url("/readyz")).send().await.ok()?.json().await.ok()?;
        (ready["cache"] == "listening").then_some(())
    })
    .await;
}

/// Holds `api_keys` locked until the transaction is dropped or rolled back.
async fn lock_api_keys(app: &TestApp) -> Transaction<'static, Postgres> {
    let mut lock = app.env.store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    lock
}

async fn get_types(http: &reqwest::Client, app: &TestApp, key: &str) -> reqwest::Response {
    http.get(app.url("/v1/types")).bearer_auth(key).send().await.expect("answered in time")
}

/// The status, `Retry-After` and problem `code` of an answer.
async fn refusal(response: reqwest::Response) -> (u16, Option<String>, Value) {
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{body}");
    }
    (status, retry_after, body["code"].clone())
}

#[tokio::test]
async fn unknown_keys_are_refused_without_a_database_read() {
    let app = TestApp::api_only().await;
    wait_listening(&app).await;
    let http = impatient();
    assert_eq!(get_types(&http, &app, &app.api_key).await.status(), 200);
    let wrong = domain::api_key::generate();
    assert_eq!(get_types(&http, &app, &wrong).await.status(), 401, "looked up once");

    let lock = lock_api_keys(&app).await;
    let malformed = ["nk_short", "sk_live_0123456789", "nk_zz", &format!("{}x", app.api_key)];
    let refusals = futures_util::future::join_all((0..50).map(|i| {
        let (http, key) = (http.clone(), malformed[i % malformed.len()].to_owned());
        let url = app.url("/v1/types");
        async move { http.get(url).bearer_auth(key).send().await.expect("refused at once").status().as_u16() }
    }))
    .await;
    assert!(refusals.iter().all(|s| *s == 401), "{refusals:?}");
    for _ in 0..5 {
        let response = get_types(&http, &app, &wrong).await;
        assert_eq!(response.status(), 401, "a key found unknown is remembered");
    }
    assert_eq!(get_types(&http, &app, &app.api_key).await.status(), 200, "the tenant's key is cached");
    lock.rollback().await.unwrap();
}

#[tokio::test]
async fn a_key_created_elsewhere_works_at_once_though_it_was_found_unknown() {
    // Remembered for an hour: only the new key's notification can make it work.
    let app = TestApp::api_with(|c| c.cache.unknown_key_ttl = Duration::from_secs(3600)).await;
    wait_listening(&app).await;
    let key = domain::api_key::generate();
    assert_eq!(get_types(&app.http, &app, &key).await.status(), 401);
    // As the CLI or SQL by hand would: another process, not this replica.
    sqlx::query("INSERT INTO api_keys (id, tenant_id, key_hash, display_prefix) VALUES ($1, $2, $3, $4)")
        .bind(uuid::Uuid::now_v7())
        .bind(app.tenant_id)
        .bind(domain::api_key::hash(&key))
        .bind(domain::api_key::display_prefix(&key))
        .execute(app.env.store.pool())
        .await
        .unwrap();
    within(NOTIFIED, "the new key to work", || async {
        (get_types(&app.http, &app, &key).await.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_flood_of_new_keys_takes_only_its_lookups_and_other_tenants_are_served() {
    let app = TestApp::api_with(|c| c.admission.key_lookups = 2).await;
    wait_listening(&app).await;
    let http = impatient();
    assert_eq!(get_types(&http, &app, &app.api_key).await.status(), 200);
    let id = app.accept(&email("a@example.com")).await;

    let lock = lock_api_keys(&app).await;
    // Well formed, each new: only the database can tell. Two wait on the lock, holding a
    // connection each; the rest wait their turn (a second) and are refused.
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let (http, url, key) = (reqwest::Client::new(), app.url("/v1/types"), domain::api_key::generate());
            tokio::spawn(async move { refusal(http.get(url).bearer_auth(key).send().await.unwrap()).await })
        })
        .collect();
    let mut answered = vec![];
    let mut waiting = vec![];
    for request in flood {
        match tokio::time::timeout(Duration::from_secs(2), request).await {
            Ok(answer) => answered.push(answer.unwrap()),
            Err(_) => waiting.push(()),
        }
    }
    assert!(waiting.len() <= 2, "{} requests wait for the database", waiting.len());
    for answer in &answered {
        assert_eq!(*answer, (503, Some("1".into()), json!("overloaded")));
    }
    // The tenant's key is cached: it reads and accepts as if nothing happened.
    assert_eq!(get_types(&http, &app, &app.api_key).await.status(), 200);
    let response = http.get(app.url(&format!("/v1/notifications/{id}"))).bearer_auth(&app.api_key).send().await;
    assert_eq!(response.expect("answered in time").status(), 200);
    let response = http.post(app.url("/v1/notifications")).bearer_auth(&app.api_key).json(&email("b@example.com"));
    assert_eq!(response.send().await.expect("answered in time").status(), 202);
    lock.rollback().await.unwrap();
}

#[tokio::test]
async fn a_slow_request_times_out_with_a_problem() {
    let app = TestApp::api_with(|c| c.admission.request_timeout = Duration::from_millis(300)).await;
    wait_listening(&app).await;
    let lock = lock_api_keys(&app).await;
    let started = std::time::Instant::now();
    let answer = refusal(get_types(&impatient(), &app, &domain::api_key::generate()).await).await;
    assert_eq!(answer, (503, Some("1".into()), json!("timeout")));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    lock.rollback().await.unwrap();
}

#[tokio::test]
async fn past_the_concurrency_limit_requests_are_refused_with_retry_after_and_probes_answer() {
    let app = TestApp::api_with(|c| c.admission.max_concurrent_requests = 2).await;
    wait_listening(&app).await;
    let http = impatient();
    let lock = lock_api_keys(&app).await;
    // Two requests held by the database take both places.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (http, url, key) = (reqwest::Client::new(), app.url("/v1/types"), domain::api_key::generate());
            tokio::spawn(async move { http.get(url).bearer_auth(key).send().await.unwrap().status().as_u16() })
        })
        .collect();
    let answer = eventually("a request past the limit refused", || async {
        let answer = refusal(get_types(&http, &app, &app.api_key).await).await;
        (answer.0 == 503).then_some(answer)
    })
    .await;
    assert_eq!(answer, (503, Some("1".into()), json!("overloaded")));
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(http.get(app.url(probe)).send().await.expect("answered").status(), 200, "{probe}");
    }
    lock.rollback().await.unwrap();
    for request in held {
        assert_eq!(request.await.unwrap(), 401);
    }
    assert_eq!(get_types(&http, &app, &app.api_key).await.status(), 200, "the places are given back");
}

#[tokio::test]
async fn a_connection_that_does_not_send_its_headers_in_time_is_closed() {
    let app = TestApp::api_with(|c| c.admission.header_read_timeout = Duration::from_millis(200)).await;
    let address = app.api_url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: notify\r\n").await.unwrap();
    let mut rest = vec![];
    let closed = tokio::time::timeout(Duration::from_secs(3), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the connection is still open after 3 s");
    // A client that sends its request at once is served.
    assert_eq!(app.http.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_subscriber_polling_the_inbox_is_slowed_down_alone() {
    let app = TestApp::api_with(|c| c.admission.inbox_rate = notify_api::Rate { per_second: 1, burst: 3 }).await;
    let mut tokens = vec![];
    for subscriber in ["u-1", "u-2"] {
        let (status, _) =
            app.call("PUT", &format!("/v1/subscribers/{subscriber}"), Some(&json!({"email": "a@example.com"}))).await;
        assert!(status == 200 || status == 201);
        let (status, token) = app.call("POST", &format!("/v1/subscribers/{subscriber}/token"), None).await;
        assert_eq!(status, 200, "{token}");
        tokens.push(token["token"].as_str().unwrap().to_owned());
    }
    let inbox = |token: &str| app.http.get(app.url("/v1/inbox")).bearer_auth(token).send();
    for _ in 0..3 {
        assert_eq!(inbox(&tokens[0]).await.unwrap().status(), 200);
    }
    let answer = refusal(inbox(&tokens[0]).await.unwrap()).await;
    assert_eq!(answer, (429, Some("1".into()), json!("rate_limited")));
    let count = app.http.get(app.url("/v1/inbox/count")).bearer_auth(&tokens[0]).send().await.unwrap();
    assert_eq!(count.status(), 429, "every inbox endpoint takes from the same bucket");
    assert_eq!(inbox(&tokens[1]).await.unwrap().status(), 200, "another subscriber has its own");
}

#[tokio::test]
async fn a_subscriber_over_its_rate_is_refused_before_any_database_read() {
    let app = TestApp::api_with(|c| c.admission.inbox_rate = notify_api::Rate { per_second: 1, burst: 2 }).await;
    let (status, _) = app.call("PUT", "/v1/subscribers/u-1", Some(&json!({"email": "a@example.com"}))).await;
    assert!(status == 200 || status == 201);
    let (status, token) = app.call("POST", "/v1/subscribers/u-1/token", None).await;
    assert_eq!(status, 200, "{token}");
    let token = token["token"].as_str().unwrap().to_owned();
    let http = impatient();
    for _ in 0..2 {
        assert_eq!(http.get(app.url("/v1/inbox/count")).bearer_auth(&token).send().await.unwrap().status(), 200);
    }
    // The token's subscriber is checked in `subscribers` (its incarnation): while the table
    // is locked, a request that reads it waits; one refused for its rate does not.
    let mut lock = app.env.store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE subscribers IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let requests = [
        http.get(app.url("/v1/inbox")).bearer_auth(&token),
        http.get(app.url("/v1/inbox/count")).bearer_auth(&token),
        http.post(app.url("/v1/inbox/read-all")).bearer_auth(&token),
        http.post(app.url(&format!("/v1/inbox/{}/read", uuid::Uuid::now_v7()))).bearer_auth(&token),
        // The socket's connect, refused before its upgrade is even looked at.
        http.get(app.url(&format!("/v1/inbox/ws?token={token}"))),
    ];
    for request in requests {
        let response = request.send().await.expect("refused at once, not held by the lock");
        let (status, retry_after, code) = refusal(response).await;
        assert_eq!((status, code), (429, json!("rate_limited")));
        assert!(retry_after.is_some());
    }
    lock.rollback().await.unwrap();
}

#[tokio::test]
async fn a_flood_of_new_keys_cannot_take_the_concurrency_limit() {
    // 2 lookups and 8 waiting for one: a flood holds at most 10 of the 24 places.
    let app = TestApp::api_with(|c| {
        c.admission.max_concurrent_requests = 24;
        c.admission.key_lookups = 2;
    })
    .await;
    wait_listening(&app).await;
    let http = impatient();
    assert_eq!(get_types(&http, &app, &app.api_key).await.status(), 200);
    let id = app.accept(&email("a@example.com")).await;

    let lock = lock_api_keys(&app).await;
    let held_at_most = 10;
    let mut flood: futures_util::stream::FuturesUnordered<_> = (0..72)
        .map(|_| {
            let (http, url, key) = (reqwest::Client::new(), app.url("/v1/types"), domain::api_key::generate());
            tokio::spawn(async move {
                let response = http.get(url).bearer_auth(key).send().await.unwrap();
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                let body: Value = response.json().await.unwrap();
                (status, retry_after, body["code"].clone(), body["detail"].as_str().unwrap_or_default().to_owned())
            })
        })
        .collect();
    // All but those waiting for a lookup are refused at once; none for want of a place: the
    // flood never held them all.
    let mut refused = vec![];
    while flood.len() > held_at_most {
        refused.push(flood.next().await.unwrap().unwrap());
    }
    for (status, retry_after, code, detail) in &refused {
        assert_eq!((*status, retry_after.as_deref(), code), (503, Some("1"), &json!("overloaded")), "{detail}");
        assert!(!detail.contains("serving as many requests"), "refused for want of a place: {detail}");
    }
    // Meanwhile the tenant's key (cached) is served, reads and accepts alike.
    assert_eq!(get_types(&http, &app, &app.api_key).await.status(), 200);
    let response = http.get(app.url(&format!("/v1/notifications/{id}"))).bearer_auth(&app.api_key).send().await;
    assert_eq!(response.expect("answered in time").status(), 200);
    let response = http.post(app.url("/v1/notifications")).bearer_auth(&app.api_key).json(&email("b@example.com"));
    assert_eq!(response.send().await.expect("answered in time").status(), 202);
    lock.rollback().await.unwrap();
}

#[tokio::test]
async fn requests_that_waited_for_a_keys_lookup_the_cache_did_not_keep_look_it_up_themselves() {
    // No cache, as on a replica whose cache does not serve yet: the lookup that ran for
    // a burst of requests with one key leaves nothing for the others to read.
    let app = TestApp::api_with(|c| c.cache.capacity = 0).await;
    let burst: Vec<_> = (0..12)
        .map(|_| {
            let (http, url, key) = (reqwest::Client::new(), app.url("/v1/types"), app.api_key.clone());
            tokio::spawn(async move { http.get(url).bearer_auth(key).send().await.unwrap().status().as_u16() })
        })
        .collect();
    for request in burst {
        assert_eq!(request.await.unwrap(), 200);
    }
}
