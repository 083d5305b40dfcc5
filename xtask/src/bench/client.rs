//! The load generator's HTTP/1.1 client: one keep-alive connection, one `POST` at a time,
//! answers with a `Content-Length` body (what axum sends). It writes each request in one
//! call and parses only the status line and the two headers it needs, so a request costs
//! the generator some tens of microseconds of CPU. The general client it replaces
//! (reqwest, on the bench's multi-threaded runtime, sharing it with the Novu stand-in)
//! took, with the stand-in, 1.5 to 2.3 ms per notification: a fifth of what the platform
//! did, on the same two cores.

use std::{
    io::{self, Write},
    net::SocketAddr,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How long one request may take before its connection is given up.
const TIMEOUT: Duration = Duration::from_secs(60);

pub struct Conn {
    addr: SocketAddr,
    /// `None` until the first request, and after an error or `Connection: close`.
    stream: Option<TcpStream>,
    request: Vec<u8>,
    answer: Vec<u8>,
}

impl Conn {
    /// A connection to `addr`, opened by [`Conn::open`] or the first request.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, stream: None, request: Vec::with_capacity(1024), answer: Vec::with_capacity(16 * 1024) }
    }

    pub async fn open(&mut self) -> io::Result<()> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        Ok(())
    }

    /// `POST path` with `Authorization: authorization` and a JSON `body`: the answer's
    /// status and body. After an error the next request opens a new connection.
    pub async fn post(&mut self, path: &str, authorization: &str, body: &[u8]) -> io::Result<(u16, &[u8])> {
        match tokio::time::timeout(TIMEOUT, self.exchange(path, authorization, body)).await {
            Ok(Ok((status, head, close))) => {
                if close {
                    self.stream = None;
                }
                Ok((status, &self.answer[head..]))
            }
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {}s", TIMEOUT.as_secs())))
            }
        }
    }

    /// Returns the status, where the body starts in `answer`, and whether the server
    /// closes the connection.
    async fn exchange(&mut self, path: &str, authorization: &str, body: &[u8]) -> io::Result<(u16, usize, bool)> {
        self.open().await?;
        let stream = self.stream.as_mut().expect("opened");
        self.request.clear();
        write!(
            self.request,
            "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: {authorization}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.addr,
            body.len()
        )?;
        self.request.extend_from_slice(body);
        stream.write_all(&self.request).await?;

        self.answer.clear();
        let head = loop {
            if let Some(end) = self.answer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            read_more(stream, &mut self.answer).await?;
        };
        let Head { status, length, close } = parse_head(&self.answer[..head])?;
        while self.answer.len() < head + length {
            read_more(stream, &mut self.answer).await?;
        }
        if self.answer.len() > head + length {
            return Err(invalid("more bytes than the answer's Content-Length"));
        }
        Ok((status, head, close))
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(16 * 1024);
    if stream.read_buf(buf).await? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
struct Head {
    status: u16,
    length: usize,
    close: bool,
}

/// The status line and headers, through the blank line.
fn parse_head(head: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("an answer head that is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3)?.parse().ok())
        .ok_or_else(|| invalid(&format!("status line `{status_line}`")))?;
    let (mut length, mut close) = (None, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| invalid("Content-Length"))?);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("a chunked answer (the generator reads Content-Length bodies only)"));
        }
    }
    Ok(Head { status, length: length.ok_or_else(|| invalid("an answer without Content-Length"))?, close })
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected HTTP answer: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_and_length() {
        let head = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\nContent-Length: 42\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), Head { status: 202, length: 42, close: false });
        let head = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), Head { status: 400, length: 0, close: true });
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn posts_to_an_axum_server_and_keeps_the_connection() {
        use axum::{Json, Router, http::StatusCode, routing::post};
        let app = Router::new().route(
            "/echo",
            post(|Json(body): Json<serde_json::Value>| async move { (StatusCode::ACCEPTED, Json(body)) }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut conn = Conn::new(addr);
        for i in 0..3 {
            let body = format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(40_000));
            let (status, answer) = conn.post("/echo", "Bearer k", body.as_bytes()).await.unwrap();
            assert_eq!(status, 202);
            assert_eq!(answer, body.as_bytes());
        }
        let (status, _) = conn.post("/nowhere", "Bearer k", b"{}").await.unwrap();
        assert_eq!(status, 404);
    }
}
