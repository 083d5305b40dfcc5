//! A TCP proxy in front of PostgreSQL that counts the platform's round trips: the
//! frontend messages after which a client waits for the server, a simple `Query` ('Q')
//! and the extended protocol's `Sync` ('S', which ends every prepared or unprepared
//! statement sqlx sends, and is all of sqlx's ping, sent when a pool hands out a
//! connection that has been idle and when one is given back). It forwards bytes unchanged
//! and refuses TLS (answering `N` to an `SSLRequest` itself) so it can read the messages.
//! It costs a hop per round trip, so the bench uses it in a phase of its own.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use anyhow::Context;
use reqwest::Url;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// `SSLRequest` and `GSSENCRequest`: the codes of startup packets that ask for encryption.
const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub queries: u64,
    pub syncs: u64,
    pub connections: u64,
}

impl Counts {
    pub fn round_trips(&self) -> u64 {
        self.queries + self.syncs
    }
}

#[derive(Default)]
struct Counters {
    queries: AtomicU64,
    syncs: AtomicU64,
    connections: AtomicU64,
}

pub struct PgProxy {
    /// The database URL through the proxy.
    pub url: String,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl PgProxy {
    /// Listens on a free loopback port and forwards to the server of `database_url`.
    pub async fn start(database_url: &str) -> anyhow::Result<Self> {
        let mut url = Url::parse(database_url).context("the database URL")?;
        let upstream =
            format!("{}:{}", url.host_str().context("no host in the database URL")?, url.port().unwrap_or(5432));
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the PostgreSQL proxy")?;
        let port = listener.local_addr()?.port();
        url.set_host(Some("127.0.0.1")).context("the proxy's URL")?;
        url.set_port(Some(port)).map_err(|()| anyhow::anyhow!("the proxy's URL"))?;
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn({
            let counters = counters.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    let (counters, upstream) = (counters.clone(), upstream.clone());
                    tokio::spawn(async move {
                        // A connection ends with an error when either side closes it.
                        let _ = relay(client, &upstream, &counters).await;
                    });
                }
            }
        });
        Ok(Self { url: url.to_string(), counters, task })
    }

    pub fn counts(&self) -> Counts {
        Counts {
            queries: self.counters.queries.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
            connections: self.counters.connections.load(Ordering::Relaxed),
        }
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut client: TcpStream, upstream: &str, counters: &Counters) -> std::io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    // The startup packet has no type byte: its length, then a code or a protocol version.
    let startup = loop {
        let mut head = [0u8; 8];
        client.read_exact(&mut head).await?;
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if length == 8 && ENCRYPTION_REQUESTS.contains(&code) {
            client.write_all(b"N").await?;
            continue;
        }
        let mut packet = head.to_vec();
        packet.resize(length.max(8), 0);
        client.read_exact(&mut packet[8..]).await?;
        break packet;
    };
    server.write_all(&startup).await?;

    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let answers = tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    let mut messages = Messages::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = client_read.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        messages.feed(&buf[..n], |kind| match kind {
            b'Q' => _ = counters.queries.fetch_add(1, Ordering::Relaxed),
            b'S' => _ = counters.syncs.fetch_add(1, Ordering::Relaxed),
            _ => {}
        });
        server_write.write_all(&buf[..n]).await?;
    }
    server_write.shutdown().await?;
    answers.abort();
    Ok(())
}

/// Splits the frontend's byte stream, after the startup packet, into its messages (a type
/// byte, then a length that counts itself), wherever the reads cut it.
#[derive(Default)]
struct Messages {
    /// The type byte and length read so far of the next message's header.
    head: Vec<u8>,
    /// Bytes of the current message's body still to skip.
    body_left: usize,
}

impl Messages {
    fn feed(&mut self, mut bytes: &[u8], mut on_message: impl FnMut(u8)) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len());
                self.body_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (5 - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head.len() == 5 {
                let length = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]]) as usize;
                on_message(self.head[0]);
                self.body_left = length.saturating_sub(4);
                self.head.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::{self, Endpoints};

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn finds_the_messages_wherever_the_reads_cut() {
        let stream: Vec<u8> = [
            message(b'P', b"\0SELECT $1\0\0\0"),
            message(b'B', &[0; 12]),
            message(b'E', &[0; 5]),
            message(b'S', b""),
            message(b'Q', b"SELECT 1\0"),
            message(b'S', b""),
        ]
        .concat();
        for cut in 1..stream.len() {
            let mut messages = Messages::default();
            let mut kinds = Vec::new();
            for chunk in stream.chunks(cut) {
                messages.feed(chunk, |k| kinds.push(k));
            }
            assert_eq!(kinds, b"PBESQS", "reads of {cut} bytes");
        }
    }

    /// What sqlx 0.8 sends, through the proxy to the test server: a statement prepared on
    /// its first use is two round trips (`Parse`/`Describe`/`Sync`, then
    /// `Bind`/`Execute`/`Sync`), one after; an unprepared one always two; a pooled
    /// statement two more (the ping when handed out, the ping when given back).
    #[tokio::test]
    async fn counts_the_round_trips_sqlx_makes() {
        use sqlx::{Connection, Executor, postgres::PgPoolOptions};
        let proxy = PgProxy::start(&Endpoints::from_test_env().database_url).await.unwrap();
        let mut db = services::connect_postgres(&proxy.url).await.unwrap();
        let mut last = proxy.counts();
        let mut delta = |proxy: &PgProxy| {
            let now = proxy.counts();
            let delta = (now.queries - last.queries, now.syncs - last.syncs);
            last = now;
            delta
        };
        sqlx::query("SELECT $1::int").bind(1).execute(&mut db).await.unwrap();
        assert_eq!(delta(&proxy), (0, 2), "prepared, first use");
        sqlx::query("SELECT $1::int").bind(2).execute(&mut db).await.unwrap();
        assert_eq!(delta(&proxy), (0, 1), "prepared, cached");
        for i in 0..2 {
            sqlx::query("SELECT $1::bigint").bind(i).persistent(false).execute(&mut db).await.unwrap();
            assert_eq!(delta(&proxy), (0, 2), "unprepared");
        }
        db.execute("SELECT 1; SELECT 2").await.unwrap();
        assert_eq!(delta(&proxy), (1, 0), "simple query");
        db.ping().await.unwrap();
        assert_eq!(delta(&proxy), (0, 1), "ping");

        let pool = PgPoolOptions::new().max_connections(1).connect(&proxy.url).await.unwrap();
        // The release's ping runs after the statement returns: the connection is idle in the
        // pool again once it has answered.
        let released = async |pool: &sqlx::PgPool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while pool.num_idle() < 1 {
                assert!(std::time::Instant::now() < deadline, "the connection never came back to the pool");
                tokio::task::yield_now().await;
            }
        };
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        released(&pool).await;
        delta(&proxy);
        sqlx::query("SELECT 1").execute(&pool).await.unwrap();
        released(&pool).await;
        assert_eq!(delta(&proxy), (0, 3), "pooled, cached");
        assert_eq!(proxy.counts().connections, 2);
    }
}
