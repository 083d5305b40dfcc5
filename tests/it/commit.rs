//! A group commit whose connection drops after the database committed it is not written
//! again: its callers get a connection error (503 from the API), and retry with their keys.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use serde_json::json;
use sqlx::{Connection, PgConnection};
use store::{Accept, Store};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use uuid::Uuid;

use crate::harness::{TestEnv, eventually, intake_of};

/// A TCP proxy in front of PostgreSQL that, once, lets through a client's message carrying
/// `marker` and the server's work on it, then closes the connection instead of passing on
/// the server's answer: the statement ran (and, outside a transaction, committed) but the
/// client never hears of it, as when a connection drops during COMMIT.
struct CuttingProxy {
    url: String,
    cut: Arc<AtomicBool>,
}

impl CuttingProxy {
    async fn start(database_url: &str, marker: &'static [u8]) -> Self {
        let mut url: reqwest::Url = database_url.parse().unwrap();
        let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        url.set_port(Some(listener.local_addr().unwrap().port())).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        // Plain text, so the proxy can read the messages.
        url.query_pairs_mut().append_pair("sslmode", "disable");
        let cut = Arc::new(AtomicBool::new(false));
        let fired = Arc::clone(&cut);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(relay(client, server, marker, Arc::clone(&fired)));
            }
        });
        Self { url: url.to_string(), cut }
    }
}

async fn relay(client: TcpStream, server: TcpStream, marker: &'static [u8], fired: Arc<AtomicBool>) {
    let (mut from_client, mut to_server) = (client.into_split(), server.into_split());
    let armed = Arc::new(AtomicBool::new(false));
    let armed_here = Arc::clone(&armed);
    let fired_here = Arc::clone(&fired);
    let upward = async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match from_client.0.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !fired_here.load(Ordering::SeqCst) && buf[..n].windows(marker.len()).any(|w| w == marker) {
                armed_here.store(true, Ordering::SeqCst);
            }
            if to_server.1.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let downward = async move {
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match to_server.0.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // The server answered the marked message: it has done its work. Drop the answer.
            if armed.load(Ordering::SeqCst) && !fired.swap(true, Ordering::SeqCst) {
                return;
            }
            if from_client.1.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    // Whichever side ends first closes both connections.
    tokio::select! {
        _ = upward => {}
        _ = downward => {}
    }
}

/// A single email notification for `tenant` whose text is `text`, planned as the API does.
async fn single(store: &Store, tenant: Uuid, text: &str) -> Accept {
    let request =
        json!({"type": "commit", "to": [{"email": "ada@example.com"}], "content": {"subject": "Hi", "text": text}});
    let intake = intake_of(store, tenant, request).await;
    Accept {
        tenant_id: tenant,
        actor: "test".into(),
        traceparent: None,
        items: vec![intake],
        retention: std::time::Duration::from_secs(60),
    }
}

const MARKER: &str = "committed-but-never-answered";

#[tokio::test]
async fn a_group_whose_connection_drops_after_its_commit_is_not_written_again() {
    let env = TestEnv::new().await;
    let tenant = env.store.create_tenant("commit").await.unwrap().tenant_id;
    let proxy = CuttingProxy::start(&env.database_url, MARKER.as_bytes()).await;
    let store = Store::connect_lazy(&proxy.url, 8).unwrap();

    // Every accept slot busy: their statements wait for a lock on the notifications.
    let mut locker = PgConnection::connect(&env.database_url).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("LOCK TABLE notifications IN SHARE MODE").execute(&mut *lock).await.unwrap();
    // One at a time, each a group of its own: the next is sent once the last waits.
    let mut blockers = Vec::new();
    for i in 0..store::ACCEPT_SLOTS {
        let (store, accept) = (store.clone(), single(&env.store, tenant, &format!("first {i}")).await);
        blockers.push(tokio::spawn(async move { store.accept(accept).await }));
        eventually("the accept waiting for the lock", || async {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(env.store.pool())
            .await
            .ok()?;
            (waiting > i64::from(i)).then_some(())
        })
        .await;
    }
    // Three more queue meanwhile, to be written as one group.
    let mut grouped = Vec::new();
    for _ in 0..3 {
        let (store, accept) = (store.clone(), single(&env.store, tenant, MARKER).await);
        grouped.push(tokio::spawn(async move { store.accept(accept).await }));
    }
    tokio::task::yield_now().await;
    lock.commit().await.unwrap();

    for blocker in blockers {
        blocker.await.unwrap().expect("the first accepts are written");
    }
    for call in grouped {
        let error = call.await.unwrap().expect_err("the group's callers do not know whether it was written");
        // The API answers such an error with 503 and Retry-After.
        assert!(error.is_transient(), "{error}");
    }
    assert!(proxy.cut.load(Ordering::SeqCst), "the proxy cut the group's connection");
    let (written,): (i64,) = sqlx::query_as("SELECT count(*) FROM notifications WHERE content->>'text' = $1")
        .bind(MARKER)
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(written, 3, "each notification of the group written once");
}
