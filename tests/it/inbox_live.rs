//! The live inbox: `/v1/inbox/ws` across API replicas (events through the broker), the
//! socket's isolation, `since`, heartbeat and expiry, and the demo page in a real headless
//! Chromium driven over WebDriver.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

use crate::harness::{TOKEN_SECRET, TestApp, eventually};

/// How soon a change must reach a socket, on any replica.
const PUSH_DEADLINE: Duration = Duration::from_secs(1);

fn in_app(subscriber: &str, title: &str) -> Value {
    json!({"type": "t", "to": [{"subscriber_id": subscriber}], "channels": ["in_app"],
           "content": {"title": title, "body": "Hello"}})
}

async fn call(app: &TestApp, base: &str, bearer: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.http.request(method, format!("{base}{path}")).bearer_auth(bearer);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn put_subscriber(app: &TestApp, key: &str, id: &str) {
    let body = json!({"email": format!("{id}@example.com")});
    let (status, answer) = call(app, &app.api_url, key, "PUT", &format!("/v1/subscribers/{id}"), Some(&body)).await;
    assert!(status == 200 || status == 201, "{status} {answer}");
}

async fn token(app: &TestApp, key: &str, subscriber: &str) -> String {
    let (status, answer) =
        call(app, &app.api_url, key, "POST", &format!("/v1/subscribers/{subscriber}/token"), None).await;
    assert_eq!(status, 200, "{answer}");
    answer["token"].as_str().unwrap().to_owned()
}

/// Accepts an in-app notification through the API at `base`; returns the inbox item's id
/// (the in-app delivery's).
async fn notify(app: &TestApp, base: &str, key: &str, subscriber: &str, title: &str) -> Uuid {
    let (status, answer) = call(app, base, key, "POST", "/v1/notifications", Some(&in_app(subscriber, title))).await;
    assert_eq!(status, 202, "{answer}");
    let delivery = &answer["deliveries"][0];
    assert_eq!(delivery["channel"], "in_app", "{answer}");
    delivery["id"].as_str().unwrap().parse().unwrap()
}

type Stream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client of `/v1/inbox/ws`.
struct Socket {
    ws: Stream,
}

fn ws_url(base: &str, token: &str, since: Option<Uuid>) -> String {
    let mut url: reqwest::Url = format!("{base}/v1/inbox/ws").replacen("http", "ws", 1).parse().unwrap();
    url.query_pairs_mut().append_pair("token", token);
    if let Some(since) = since {
        url.query_pairs_mut().append_pair("since", &since.to_string());
    }
    url.to_string()
}

impl Socket {
    /// Connects; the HTTP status of a refused upgrade.
    async fn try_open(base: &str, token: &str, since: Option<Uuid>) -> Result<Self, u16> {
        match tokio_tungstenite::connect_async(ws_url(base, token, since)).await {
            Ok((ws, _)) => Ok(Self { ws }),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("websocket connect: {e}"),
        }
    }

    /// Connects and reads the first message, the unread count, which it returns.
    async fn open(base: &str, token: &str, since: Option<Uuid>) -> (Self, i64) {
        let mut socket = Self::try_open(base, token, since).await.expect("the upgrade is accepted");
        let first = socket.next().await;
        assert_eq!(first["type"], "unread_count", "{first}");
        (socket, first["unread_count"].as_i64().unwrap())
    }

    /// The next JSON message within [`PUSH_DEADLINE`] (pings are answered by the library).
    async fn next(&mut self) -> Value {
        self.next_within(PUSH_DEADLINE).await
    }

    async fn next_within(&mut self, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {within:?}"))
                .expect("the socket is open")
                .expect("a message");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The next `notification.created`: its item's title and id, and the unread count.
    async fn next_created(&mut self) -> (String, Uuid, i64) {
        let message = self.next().await;
        assert_eq!(message["type"], "notification.created", "{message}");
        let item = &message["item"];
        (
            item["title"].as_str().unwrap().to_owned(),
            item["id"].as_str().unwrap().parse().unwrap(),
            message["unread_count"].as_i64().unwrap(),
        )
    }

    /// Reads until the server ends the socket (within `within`); the close code if it sent
    /// one. Pings seen on the way are counted into `pings`.
    async fn closed(&mut self, within: Duration, pings: &mut usize) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await.expect("the server closes the socket");
            match next {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(Message::Ping(_))) => *pings += 1,
                Some(Ok(_)) => {}
            }
        }
    }
}

#[tokio::test]
async fn a_socket_hears_of_items_and_reads_made_through_another_replica() {
    let a = TestApp::api_with_broker(|_| {}).await;
    let (b_url, b) = a.second_api(|_| {}).await;
    a.wait_inbox_replicas(2).await;
    put_subscriber(&a, &a.api_key, "u-1").await;
    let token = token(&a, &a.api_key, "u-1").await;
    let (mut on_a, count) = Socket::open(&a.api_url, &token, None).await;
    assert_eq!(count, 0);
    let (mut on_b, _) = Socket::open(&b_url, &token, None).await;

    // Accepted on B: the socket on A has it within a second, as has B's own.
    let id = notify(&a, &b_url, &a.api_key, "u-1", "Hi").await;
    let accepted = Instant::now();
    assert_eq!(on_a.next_created().await, ("Hi".into(), id, 1));
    assert!(accepted.elapsed() < PUSH_DEADLINE, "{:?}", accepted.elapsed());
    assert_eq!(on_b.next_created().await, ("Hi".into(), id, 1));

    // Read on B, with the token A issued: A's socket gets the new count.
    let (status, answer) = call(&a, &b_url, &token, "POST", &format!("/v1/inbox/{id}/read"), None).await;
    assert_eq!((status, &answer), (200, &json!({"unread_count": 0})));
    let read = Instant::now();
    assert_eq!(on_a.next().await, json!({"type": "unread_count", "unread_count": 0}));
    assert!(read.elapsed() < PUSH_DEADLINE, "{:?}", read.elapsed());
    assert_eq!(on_b.next().await, json!({"type": "unread_count", "unread_count": 0}));

    // A replica that stops closes its sockets (1001) and does not wait for them.
    b.stop().await;
    assert_eq!(on_b.closed(Duration::from_secs(5), &mut 0).await, Some(1001));
    // A's socket lives on and still hears of what A accepts.
    let id = notify(&a, &a.api_url, &a.api_key, "u-1", "After").await;
    assert_eq!(on_a.next_created().await, ("After".into(), id, 1));
}

#[tokio::test]
async fn a_socket_hears_only_of_its_own_subscriber_in_its_own_tenant() {
    let app = TestApp::api_only().await;
    let other = app.env.store.create_tenant("other").await.unwrap();
    for subscriber in ["u-1", "u-2"] {
        put_subscriber(&app, &app.api_key, subscriber).await;
    }
    put_subscriber(&app, &other.api_key, "u-1").await;
    let (mut u1, _) = Socket::open(&app.api_url, &token(&app, &app.api_key, "u-1").await, None).await;
    let (mut u2, _) = Socket::open(&app.api_url, &token(&app, &app.api_key, "u-2").await, None).await;
    let (mut other_u1, _) = Socket::open(&app.api_url, &token(&app, &other.api_key, "u-1").await, None).await;

    // Events are handled in the order they were accepted, so each socket's first message
    // shows it heard nothing of what was accepted for the others before.
    let for_u2 = notify(&app, &app.api_url, &app.api_key, "u-2", "for u-2").await;
    let for_other = notify(&app, &app.api_url, &other.api_key, "u-1", "other tenant").await;
    let for_u1 = notify(&app, &app.api_url, &app.api_key, "u-1", "for u-1").await;
    let again = notify(&app, &app.api_url, &other.api_key, "u-1", "other again").await;
    assert_eq!(u1.next_created().await, ("for u-1".into(), for_u1, 1));
    assert_eq!(u2.next_created().await, ("for u-2".into(), for_u2, 1));
    assert_eq!(other_u1.next_created().await, ("other tenant".into(), for_other, 1));
    assert_eq!(other_u1.next_created().await, ("other again".into(), again, 2), "u-1 of the first tenant is another");
    // One more for u-2, then a marker for u-1: u-1's next message is the marker.
    let last = notify(&app, &app.api_url, &app.api_key, "u-2", "last").await;
    let marker = notify(&app, &app.api_url, &app.api_key, "u-1", "marker").await;
    assert_eq!(u2.next_created().await, ("last".into(), last, 2));
    assert_eq!(u1.next_created().await, ("marker".into(), marker, 2));
}

#[tokio::test]
async fn tokens_are_checked_before_the_upgrade() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let valid = token(&app, &app.api_key, "u-1").await;
    let key = notify_api::TokenKey::new(TOKEN_SECRET.as_bytes());
    let incarnation = app.env.store.subscriber_incarnation(app.tenant_id, "u-1").await.unwrap().unwrap();
    let (expired, _) = key.issue(app.tenant_id, "u-1", incarnation, Duration::ZERO);
    let (foreign, _) = notify_api::TokenKey::new(b"another secret of at least thirty-two bytes").issue(
        app.tenant_id,
        "u-1",
        incarnation,
        Duration::from_secs(60),
    );
    for bad in ["", "nonsense", &expired, &foreign, &app.api_key, &valid[..valid.len() - 1]] {
        assert_eq!(Socket::try_open(&app.api_url, bad, None).await.err(), Some(401), "token {bad:?}");
    }
    let response = app.http.get(ws_url(&app.api_url, &valid, None).replacen("ws", "http", 1)).send().await.unwrap();
    assert_ne!(response.status(), 200, "a plain GET with a valid token is no upgrade");
    let not_an_id = format!("{}&since=42", ws_url(&app.api_url, &valid, None));
    match tokio_tungstenite::connect_async(not_an_id).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 422),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert!(Socket::try_open(&app.api_url, &valid, None).await.is_ok());
}

#[tokio::test]
async fn a_token_issued_before_an_erasure_opens_no_socket_on_the_namesake() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let before = token(&app, &app.api_key, "u-1").await;
    let (status, _) = call(&app, &app.api_url, &app.api_key, "DELETE", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 204);
    put_subscriber(&app, &app.api_key, "u-1").await;
    assert_eq!(Socket::try_open(&app.api_url, &before, None).await.err(), Some(401));
    let after = token(&app, &app.api_key, "u-1").await;
    assert!(Socket::try_open(&app.api_url, &after, None).await.is_ok());
}

#[tokio::test]
async fn an_open_socket_is_closed_when_its_subscriber_is_erased() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let before = token(&app, &app.api_key, "u-1").await;
    let (mut socket, _) = Socket::open(&app.api_url, &before, None).await;
    let (status, _) = call(&app, &app.api_url, &app.api_key, "DELETE", "/v1/subscribers/u-1", None).await;
    assert_eq!(status, 204);
    // Closed, so it hears nothing of whoever is given the id next (and cannot come back).
    assert_eq!(socket.closed(Duration::from_secs(5), &mut 0).await, Some(1008));
    put_subscriber(&app, &app.api_key, "u-1").await;
    assert_eq!(Socket::try_open(&app.api_url, &before, None).await.err(), Some(401));
}

#[tokio::test]
async fn a_reconnecting_socket_gets_what_it_missed_since_an_item() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let token = token(&app, &app.api_key, "u-1").await;
    let mut ids = vec![];
    for title in ["one", "two", "three"] {
        ids.push(notify(&app, &app.api_url, &app.api_key, "u-1", title).await);
    }
    let (mut socket, count) = Socket::open(&app.api_url, &token, Some(ids[0])).await;
    assert_eq!(count, 3);
    assert_eq!(socket.next_created().await, ("two".into(), ids[1], 3));
    assert_eq!(socket.next_created().await, ("three".into(), ids[2], 3));
    // Then live, with nothing replayed twice.
    let four = notify(&app, &app.api_url, &app.api_key, "u-1", "four").await;
    assert_eq!(socket.next_created().await, ("four".into(), four, 4));

    // Since the newest: nothing to replay.
    let (mut socket, count) = Socket::open(&app.api_url, &token, Some(four)).await;
    assert_eq!(count, 4);
    let five = notify(&app, &app.api_url, &app.api_key, "u-1", "five").await;
    assert_eq!(socket.next_created().await, ("five".into(), five, 5));
}

#[tokio::test]
async fn a_silent_client_is_disconnected_and_the_token_expiry_closes_the_socket() {
    let heartbeat = Duration::from_millis(100);
    let app = TestApp::api_with(|c| c.inbox_socket.heartbeat = heartbeat).await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let token = token(&app, &app.api_key, "u-1").await;

    // A client that reads answers the pings and stays.
    let (mut reader, _) = Socket::open(&app.api_url, &token, None).await;
    let mut pings = 0;
    let started = Instant::now();
    while started.elapsed() < heartbeat * 5 {
        match tokio::time::timeout(heartbeat, reader.ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(other) => panic!("the socket of a client that answers pings ended: {other:?}"),
        }
    }
    assert!(pings >= 3, "pings every heartbeat: {pings}");
    drop(reader);

    // A client that answers nothing (a bare TCP stream after the handshake: no library
    // to send pongs) is dropped after two heartbeats without a pong.
    let frames = silent_client_until_dropped(&app.api_url, &token, Duration::from_secs(5)).await;
    assert!(frames.contains(&0x89), "it was pinged before it was dropped");

    // The token's expiry closes the socket (1008), so a client must get a new one.
    let key = notify_api::TokenKey::new(TOKEN_SECRET.as_bytes());
    // Whole seconds: it expires 1 to 2 s from now.
    let incarnation = app.env.store.subscriber_incarnation(app.tenant_id, "u-1").await.unwrap().unwrap();
    let (short, expires_at) = key.issue(app.tenant_id, "u-1", incarnation, Duration::from_secs(2));
    let (mut socket, _) = Socket::open(&app.api_url, &short, None).await;
    assert_eq!(socket.closed(Duration::from_secs(4), &mut 0).await, Some(1008));
    assert!(time::OffsetDateTime::now_utc() >= expires_at);
}

#[tokio::test]
async fn sockets_past_the_caps_are_closed_with_1008() {
    let app = TestApp::api_with(|c| {
        c.inbox_socket.max_per_subscriber = 2;
        c.inbox_socket.max_per_tenant = 3;
    })
    .await;
    let mut tokens = vec![];
    for subscriber in ["u-1", "u-2", "u-3"] {
        put_subscriber(&app, &app.api_key, subscriber).await;
        tokens.push(token(&app, &app.api_key, subscriber).await);
    }
    let (first, _) = Socket::open(&app.api_url, &tokens[0], None).await;
    let (_second, _) = Socket::open(&app.api_url, &tokens[0], None).await;
    let mut third = Socket::try_open(&app.api_url, &tokens[0], None).await.expect("upgraded, then closed");
    assert_eq!(third.closed(Duration::from_secs(2), &mut 0).await, Some(1008), "a third socket of u-1");

    let (_u2, _) = Socket::open(&app.api_url, &tokens[1], None).await;
    let mut u3 = Socket::try_open(&app.api_url, &tokens[2], None).await.expect("upgraded, then closed");
    assert_eq!(u3.closed(Duration::from_secs(2), &mut 0).await, Some(1008), "a fourth socket of the tenant");

    // A closed socket gives its place back.
    drop(first);
    eventually("u-3's socket to be taken once u-1's first is gone", || async {
        let mut socket = Socket::try_open(&app.api_url, &tokens[2], None).await.ok()?;
        let first = tokio::time::timeout(PUSH_DEADLINE, socket.ws.next()).await.ok()??.ok()?;
        matches!(first, Message::Text(_)).then_some(())
    })
    .await;
}

/// Opens the inbox socket over a bare TCP stream, never answers, and reads until the
/// server closes the connection (within `within`); returns the bytes the server sent.
async fn silent_client_until_dropped(api_url: &str, token: &str, within: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = api_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let handshake = format!(
        "GET /v1/inbox/ws?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(within, read_all).await.expect("the server drops a client that never answers");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 101"), "upgraded: {text}");
    let body = text.find("\r\n\r\n").expect("the end of the HTTP answer") + 4;
    received.split_off(body)
}

/// Headless Chromium through chromedriver (Debian's `chromium` and `chromium-driver`):
/// the demo page lists the inbox, updates it live, and marks an item read on a click.
#[tokio::test]
async fn the_demo_page_shows_the_inbox_and_updates_live() {
    let app = TestApp::api_only().await;
    put_subscriber(&app, &app.api_key, "u-1").await;
    let token = token(&app, &app.api_key, "u-1").await;
    let first = notify(&app, &app.api_url, &app.api_key, "u-1", "First").await;

    let driver = webdriver::Driver::start().await;
    let browser = driver.session().await;
    browser.goto(&app.url(&format!("/inbox-demo?token={token}"))).await;
    let state = || async { browser.page().await };
    eventually("the page lists the item with badge 1, live", || async {
        let page = state().await;
        (page.items == [first] && page.badge == "1" && page.status == "live").then_some(())
    })
    .await;

    let second = notify(&app, &app.api_url, &app.api_key, "u-1", "Second").await;
    let page = eventually("the new item and badge 2", || async {
        let page = state().await;
        (page.badge == "2").then_some(page)
    })
    .await;
    assert_eq!(page.items, [second, first], "newest first");
    assert_eq!(page.titles, ["Second", "First"]);

    // A click marks the item read: the badge goes down.
    browser.execute(&format!("document.querySelector('#items li[data-id=\"{first}\"]').click()")).await;
    eventually("badge 1 after the click", || async { (state().await.badge == "1").then_some(()) }).await;
    let (_, inbox) = call(&app, &app.api_url, &token, "GET", "/v1/inbox/count", None).await;
    assert_eq!(inbox["unread_count"], 1);
    browser.quit().await;
}

mod webdriver {
    //! Just enough W3C WebDriver over plain HTTP JSON to drive chromedriver.

    use std::{
        io::{Read, Write},
        time::Duration,
    };

    use serde_json::{Value, json};
    use uuid::Uuid;

    fn chromedriver() -> String {
        std::env::var("NOTIFY_TEST_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
    }

    fn chromium() -> String {
        std::env::var("NOTIFY_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
    }

    pub struct Driver {
        base: String,
        http: reqwest::Client,
        _process: tokio::process::Child,
        profile: tempfile::TempDir,
    }

    impl Driver {
        /// Starts chromedriver on a free port; fails the test if it or Chromium is missing.
        pub async fn start() -> Self {
            let (driver, browser) = (chromedriver(), chromium());
            for path in [&driver, &browser] {
                assert!(
                    std::path::Path::new(path).exists(),
                    "{path} is missing: install Debian's `chromium` and `chromium-driver` (`cargo xtask test` does as root)"
                );
            }
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let process = tokio::process::Command::new(&driver)
                .arg(format!("--port={port}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {driver}: {e}"));
            let base = format!("http://127.0.0.1:{port}");
            let http = reqwest::Client::new();
            crate::harness::eventually("chromedriver to start", || async {
                let status = http.get(format!("{base}/status")).send().await.ok()?.json::<Value>().await.ok()?;
                (status["value"]["ready"] == true).then_some(())
            })
            .await;
            Self { base, http, _process: process, profile: tempfile::tempdir().unwrap() }
        }

        pub async fn session(&self) -> Session {
            let capabilities = json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": chromium(), "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ]},
            }}});
            let response = self.http.post(format!("{}/session", self.base)).json(&capabilities).send().await.unwrap();
            let answer: Value = response.json().await.unwrap();
            let id = answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {answer}")).to_owned();
            Session { url: format!("{}/session/{id}", self.base), http: self.http.clone(), open: true }
        }
    }

    /// What the demo page shows.
    #[derive(Debug, Default)]
    pub struct Page {
        pub badge: String,
        pub status: String,
        pub items: Vec<Uuid>,
        pub titles: Vec<String>,
    }

    pub struct Session {
        url: String,
        http: reqwest::Client,
        open: bool,
    }

    impl Session {
        async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
            let response = self.http.request(method, format!("{}{path}", self.url)).json(&body).send().await.unwrap();
            let status = response.status();
            let answer: Value = response.json().await.unwrap();
            assert!(status.is_success(), "WebDriver {path}: {status} {answer}");
            answer["value"].clone()
        }

        pub async fn goto(&self, url: &str) {
            self.command(reqwest::Method::POST, "/url", json!({"url": url})).await;
        }

        pub async fn execute(&self, script: &str) -> Value {
            self.command(reqwest::Method::POST, "/execute/sync", json!({"script": script, "args": []})).await
        }

        pub async fn page(&self) -> Page {
            let value = self
                .execute(
                    "const items = [...document.querySelectorAll('#items li')];
                     return {badge: document.getElementById('badge').textContent,
                             status: document.getElementById('status').textContent,
                             items: items.map(li => li.dataset.id),
                             titles: items.map(li => li.querySelector('.title').textContent)};",
                )
                .await;
            let strings = |key: &str| -> Vec<String> {
                value[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
            };
            Page {
                badge: value["badge"].as_str().unwrap_or_default().to_owned(),
                status: value["status"].as_str().unwrap_or_default().to_owned(),
                items: strings("items").iter().filter_map(|s| s.parse().ok()).collect(),
                titles: strings("titles"),
            }
        }

        pub async fn quit(mut self) {
            self.command(reqwest::Method::DELETE, "", json!({})).await;
            self.open = false;
        }
    }

    impl Drop for Session {
        /// A failed test still closes the browser: a blocking DELETE over a plain socket
        /// (Drop cannot await), before chromedriver itself is killed.
        fn drop(&mut self) {
            if !self.open {
                return;
            }
            let Some(rest) = self.url.strip_prefix("http://") else { return };
            let Some((host, path)) = rest.split_once('/') else { return };
            if let Ok(mut stream) = std::net::TcpStream::connect(host) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let request = format!(
                    "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = stream.write_all(request.as_bytes());
                let _ = stream.read(&mut [0u8; 512]);
            }
        }
    }
}
