//! What the HTTP providers share: one client per worker process, the provider's answer
//! with its status and `Retry-After`, transport errors sorted into the failure buckets
//! of docs/providers.md §1, and failure messages without the recipient's address.

use std::{
    error::Error as _,
    net::{IpAddr, SocketAddr},
    sync::{Arc, OnceLock},
    time::Duration,
};

use domain::{FailureKind, SendFailure};
use ipnet::IpNet;
use reqwest::{
    RequestBuilder, StatusCode,
    dns::{Name, Resolve, Resolving},
    header::HeaderMap,
};

pub use reqwest::Client;

/// A healthy provider accepts a connection in well under a second; one that takes
/// longer is unreachable, and the attempt should move on to the next provider.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Failure messages are kept this short in the attempts log.
const MAX_MESSAGE_CHARS: usize = 300;

/// A client for provider calls: bounded connect and request times, and no redirects (a
/// provider API does not redirect; following one would send the message, or turn the
/// POST into a GET, somewhere we did not configure).
pub fn client(request_timeout: Duration) -> reqwest::Result<Client> {
    builder(request_timeout).build()
}

fn builder(request_timeout: Duration) -> reqwest::ClientBuilder {
    Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(request_timeout))
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("notify/", env!("CARGO_PKG_VERSION")))
}

/// A client for tenants' integrations: as [`client`], but names resolve through
/// [`PublicResolver`], so a tenant's host that resolves to one of our networks is refused
/// before anything connects (a tenant could otherwise probe internal services with a
/// credentials check). Literal IP hosts never reach a resolver: they are refused as text
/// when the settings are read (`public_host`).
pub fn tenant_client(request_timeout: Duration, allow_private_hosts: bool) -> reqwest::Result<Client> {
    let mut builder = builder(request_timeout);
    if !allow_private_hosts {
        builder = builder.dns_resolver(PublicResolver::default());
    }
    builder.build()
}

/// Resolves names with the system resolver and refuses a name with any internal address
/// ([`crate::settings::is_private`]) outside the `allowed` subnets, with [`PrivateHost`]:
/// the address checked is the one dialled, so an answer of DNS that changes between a
/// check and the connect cannot slip through.
#[derive(Clone, Debug, Default)]
pub struct PublicResolver {
    allowed: Arc<[IpNet]>,
}

impl PublicResolver {
    /// Also lets names resolve into `allowed` (the operator's subnets for tests and private
    /// deployments).
    pub fn allowing(allowed: Vec<IpNet>) -> Self {
        Self { allowed: allowed.into() }
    }
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (host, allowed) = (name.as_str().to_owned(), self.allowed.clone());
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs = public_only_except(&host, addrs, &allowed)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether a tenant's request may reach `ip`: a public address, or one in an `allowed`
/// subnet (an IPv4-mapped IPv6 address counts as its IPv4 address).
pub fn reachable(ip: IpAddr, allowed: &[IpNet]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    !crate::settings::is_private(ip) || allowed.iter().any(|net| net.contains(&ip))
}

/// `host`'s addresses (a literal IP is its own), none of them private. Any private one
/// refuses the whole name: a name that mixes public and private addresses is not a
/// provider's.
pub async fn resolve_public(
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port)).await?.collect(),
    };
    public_only(host, addrs)
}

/// The filter of [`resolve_public`], on addresses already resolved.
pub fn public_only(
    host: &str,
    addrs: Vec<SocketAddr>,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    public_only_except(host, addrs, &[])
}

fn public_only_except(
    host: &str,
    addrs: Vec<SocketAddr>,
    allowed: &[IpNet],
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    if addrs.is_empty() || addrs.iter().any(|a| !reachable(a.ip(), allowed)) {
        return Err(Box::new(PrivateHost(host.to_owned())));
    }
    Ok(addrs)
}

/// A tenant's host that resolves to a private, loopback or otherwise internal address.
#[derive(Debug)]
pub struct PrivateHost(pub String);

impl std::fmt::Display for PrivateHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the host `{}` resolves to a private or internal address, which a tenant's requests may not reach",
            self.0
        )
    }
}

impl std::error::Error for PrivateHost {}

/// The one client of a worker process, shared by its providers so they share its
/// connection pool; built when the first provider asks for it, so a worker with only the
/// sandbox builds none.
///
/// Tenants' integrations get their own ([`SharedClient::for_tenants`]): the `Context` an
/// integration is built or checked with carries it as its `http`.
pub struct SharedClient {
    request_timeout: Duration,
    /// `Some(allow_private_hosts)`: a [`tenant_client`].
    tenants: Option<bool>,
    client: OnceLock<Client>,
}

impl SharedClient {
    /// The client of the operator's providers.
    pub fn new(request_timeout: Duration) -> Self {
        Self { request_timeout, tenants: None, client: OnceLock::new() }
    }

    /// The client of tenants' integrations: [`tenant_client`] under the operator's rules.
    pub fn for_tenants(request_timeout: Duration, rules: &crate::IntegrationRules) -> Self {
        Self { request_timeout, tenants: Some(rules.allow_private_hosts), client: OnceLock::new() }
    }

    /// `Some(allow_private_hosts)` when this is the tenants' client ([`SharedClient::for_tenants`]),
    /// whose names resolve through [`PublicResolver`] unless private hosts are allowed.
    pub fn tenants(&self) -> Option<bool> {
        self.tenants
    }

    pub fn get(&self) -> reqwest::Result<Client> {
        if let Some(client) = self.client.get() {
            return Ok(client.clone());
        }
        let built = match self.tenants {
            None => client(self.request_timeout)?,
            Some(allow_private_hosts) => tenant_client(self.request_timeout, allow_private_hosts)?,
        };
        Ok(self.client.get_or_init(|| built).clone())
    }

    /// A client of its own for a provider that speaks HTTP/2 only (APNs): over `https` its
    /// TLS offers `h2` alone, over `http` it opens with the HTTP/2 preface (h2c, a stand-in).
    /// Same timeouts as this one; it resolves through [`PublicResolver`] when this is the
    /// tenants' client or `guard` says the settings are a tenant's (`Some(allow_private_hosts)`),
    /// unless private hosts are allowed. `extra_roots`: CAs trusted beside the system's (tests).
    pub fn http2_only(&self, guard: Option<bool>, extra_roots: &[reqwest::Certificate]) -> reqwest::Result<Client> {
        let mut builder = builder(self.request_timeout)
            .http2_prior_knowledge()
            // Apple asks for long-lived connections (it treats rapid reconnects as a
            // denial of service): an idle connection stays in the pool (reqwest drops one
            // idle for 90 s by default), and pings every 60 s, idle or not, find a dead one
            // before a send does.
            .pool_idle_timeout(None)
            .http2_keep_alive_interval(Duration::from_secs(60))
            .http2_keep_alive_timeout(Duration::from_secs(10))
            .http2_keep_alive_while_idle(true);
        let allow_private_hosts = match (self.tenants, guard) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(true) && b.unwrap_or(true)),
        };
        if allow_private_hosts == Some(false) {
            builder = builder.dns_resolver(PublicResolver::default());
        }
        if !extra_roots.is_empty() {
            builder = builder.tls_certs_merge(extra_roots.iter().cloned());
        }
        builder.build()
    }
}

/// A provider's answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, or `None` when it is not JSON (a proxy's HTML error page).
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Sends the request and reads the answer. A failure to reach the provider, or an
/// answer that breaks off, comes back as the failure it is ([`transport_failure`]).
pub async fn send(request: RequestBuilder) -> Result<Answer, SendFailure> {
    let response = request.send().await.map_err(|e| transport_failure(&e))?;
    let status = response.status();
    let retry_after = retry_after(response.headers());
    match response.bytes().await {
        Ok(body) => Ok(Answer { status, retry_after, body: body.to_vec() }),
        // The provider did the work but its answer, and the message id in it, was lost.
        Err(e) if status.is_success() => Err(transport_failure(&e)),
        // An error status says enough without its body.
        Err(_) => Ok(Answer { status, retry_after, body: Vec::new() }),
    }
}

/// `Retry-After` in seconds. The HTTP-date form is not used by our providers' APIs and
/// is ignored: the retry policy's own delay applies.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Sorts an error of the HTTP stack. Nothing was sent when the connection could not be
/// made (refused, DNS, TLS, connect timeout): retryable. Once the request may have gone
/// out (a timeout waiting for the answer, a connection lost mid-answer), the provider may
/// have accepted the message: ambiguous.
pub fn transport_failure(error: &reqwest::Error) -> SendFailure {
    let causes = causes(error);
    if let Some(private) = private_host(error) {
        SendFailure::new(FailureKind::Config, "private_host", private.to_string())
    } else if error.is_builder() {
        SendFailure::new(FailureKind::Config, "invalid_request", format!("the request could not be built: {causes}"))
    } else if error.is_connect() {
        SendFailure::new(FailureKind::Retryable, "connect", format!("could not connect to the provider: {causes}"))
    } else if error.is_timeout() {
        SendFailure::new(FailureKind::Ambiguous, "timeout", format!("no answer from the provider in time: {causes}"))
    } else {
        SendFailure::new(
            FailureKind::Ambiguous,
            "transport",
            format!("the connection failed after the request was sent: {causes}"),
        )
    }
}

pub(crate) fn private_host(error: &reqwest::Error) -> Option<&PrivateHost> {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(private) = cause.downcast_ref::<PrivateHost>() {
            return Some(private);
        }
        source = cause.source();
    }
    None
}

/// The error's causes, innermost last. reqwest's own message names the URL, which says
/// nothing the log does not; the causes say what went wrong.
pub(crate) fn causes(error: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() { "unknown cause".to_owned() } else { parts.join(": ") }
}

/// A provider's error, for the attempts log: its message without the recipient's address
/// (providers quote the number they refuse), cut short.
pub fn failure(
    kind: FailureKind,
    code: impl Into<String>,
    message: &str,
    recipient: &str,
    retry_after: Option<Duration>,
) -> SendFailure {
    SendFailure { retry_after, ..SendFailure::new(kind, code, shorten(&without_address(message, recipient))) }
}

/// `text` with every occurrence of `address` (also without its leading `+`, as WhatsApp
/// APIs write numbers) replaced by `<recipient>`. Addresses shorter than 4 characters are
/// left alone: replacing them would shred the message and hide nothing.
pub fn without_address(text: &str, address: &str) -> String {
    let mut text = text.to_owned();
    let bare = address.strip_prefix('+').unwrap_or(address);
    for form in [address, bare] {
        if form.chars().count() >= 4 {
            text = text.replace(form, "<recipient>");
        }
    }
    text
}

fn shorten(text: &str) -> String {
    shorten_to(text, MAX_MESSAGE_CHARS)
}

fn shorten_to(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A credentials check over HTTP: a read-only request built on the process's client. A 2xx
/// is accepted, with `describe` saying what the body names (an account, a phone number);
/// anything else is refused, with the provider's code and message as it gave them.
pub async fn check(
    shared: &SharedClient,
    request: impl FnOnce(&Client) -> RequestBuilder,
    describe: impl FnOnce(&serde_json::Value) -> String,
) -> crate::Checked {
    let client = match shared.get() {
        Ok(client) => client,
        Err(e) => return crate::Checked::failed(None, "client", format!("no HTTP client: {e}")),
    };
    match send(request(&client)).await {
        Err(failure) => crate::Checked::failed(None, &failure.code, failure.message),
        Ok(answer) => {
            let body = answer.json().unwrap_or_default();
            if answer.status.is_success() {
                return crate::Checked {
                    ok: true,
                    status: Some(answer.status.as_u16()),
                    code: None,
                    detail: describe(&body),
                };
            }
            let (code, detail) = match provider_error(&body) {
                Some((code, message)) => (code, shorten_to(message, MAX_CHECK_CHARS)),
                // Not the provider's error shape: the answer may be some other host's, whose
                // body is not the tenant's to read.
                None => (None, format!("the provider answered {}", answer.status)),
            };
            crate::Checked {
                ok: false,
                status: Some(answer.status.as_u16()),
                code: Some(code.unwrap_or_else(|| status_code(answer.status))),
                detail,
            }
        }
    }
}

/// A check's detail is kept this short: enough for the provider's own error message.
const MAX_CHECK_CHARS: usize = 160;

/// The code and message of a provider's JSON error: `{"code", "message"}` (Twilio),
/// `{"error": {"code", "message"}}` (Meta), `{"statusCode", "message", "error"}` (Novu).
/// An answer without both a code and a message is not one, and says nothing more.
fn provider_error(body: &serde_json::Value) -> Option<(Option<String>, &str)> {
    let error = &body["error"];
    let code = [&body["code"], &error["code"], error]
        .into_iter()
        .find_map(|c| c.as_str().map(str::to_owned).or_else(|| c.as_i64().map(|n| n.to_string())));
    let message = [&body["message"], &error["message"]].into_iter().find_map(|m| m.as_str())?;
    // Novu names no code of its own: its `statusCode` repeats the status.
    (code.is_some() || body["statusCode"].is_u64()).then_some((code, message))
}

/// The kind of an answer that carried no error code we know, from its status alone.
pub fn kind_from_status(status: StatusCode) -> FailureKind {
    match status.as_u16() {
        429 => FailureKind::Retryable,
        500.. => FailureKind::Ambiguous,
        401 | 403 => FailureKind::Config,
        // A redirect or an unexpected informational answer: the base URL is wrong.
        ..=399 => FailureKind::Config,
        _ => FailureKind::Permanent,
    }
}

/// The code recorded for an answer without a provider code: `http_503`.
pub fn status_code(status: StatusCode) -> String {
    format!("http_{}", status.as_u16())
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 2 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn the_address_is_kept_out_of_messages() {
        let message = "The 'To' number +15005550001 is not a valid phone number.";
        assert_eq!(
            without_address(message, "+15005550001"),
            "The 'To' number <recipient> is not a valid phone number."
        );
        assert_eq!(without_address("recipient 15005550001 unknown", "+15005550001"), "recipient <recipient> unknown");
        assert_eq!(without_address("a 1 b", "1"), "a 1 b");
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_MESSAGE_CHARS + 10);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(short.ends_with('…'));
        assert_eq!(shorten("short"), "short");
    }

    #[test]
    fn statuses_without_a_code_are_sorted() {
        let kind = |s: u16| kind_from_status(StatusCode::from_u16(s).unwrap());
        assert_eq!(kind(429), FailureKind::Retryable);
        assert_eq!(kind(500), FailureKind::Ambiguous);
        assert_eq!(kind(503), FailureKind::Ambiguous);
        assert_eq!(kind(401), FailureKind::Config);
        assert_eq!(kind(403), FailureKind::Config);
        assert_eq!(kind(301), FailureKind::Config);
        assert_eq!(kind(400), FailureKind::Permanent);
        assert_eq!(kind(404), FailureKind::Permanent);
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = client(Duration::from_secs(2)).unwrap();
        let failure = send(client.get(format!("http://127.0.0.1:{port}/"))).await.unwrap_err();
        assert_eq!((failure.kind, failure.code.as_str()), (FailureKind::Retryable, "connect"), "{failure:?}");
    }

    #[test]
    fn internal_addresses_are_refused_unless_their_subnet_is_allowed() {
        for internal in ["127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fd00:ec2::254"] {
            let ip: IpAddr = internal.parse().unwrap();
            assert!(!reachable(ip, &[]), "{internal}");
        }
        assert!(reachable("93.184.216.34".parse().unwrap(), &[]));
        let loopback: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(reachable("127.0.0.1".parse().unwrap(), &loopback));
        assert!(reachable("::ffff:127.0.0.1".parse().unwrap(), &loopback));
        assert!(!reachable("169.254.169.254".parse().unwrap(), &loopback));
    }

    #[test]
    fn resolved_addresses_that_are_internal_refuse_the_name() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        for internal in [
            "10.0.0.5:0",
            "127.0.0.1:0",
            "169.254.169.254:0",
            "100.64.0.1:0",
            "192.168.1.1:0",
            "172.16.0.1:0",
            "0.0.0.0:0",
            "224.0.0.1:0",
            "192.0.2.1:0",
            "[::1]:0",
            "[fd00::1]:0",
            "[fe80::1]:0",
            "[::ffff:10.0.0.5]:0",
            "[2001:db8::1]:0",
            "[ff02::1]:0",
        ] {
            let err = public_only("10.0.0.5.nip.io", vec![addr(internal)]).unwrap_err();
            assert!(err.to_string().contains("`10.0.0.5.nip.io`"), "{internal}: {err}");
        }
        // One internal address among public ones refuses the name; none at all too.
        assert!(public_only("mixed.example", vec![addr("93.184.216.34:0"), addr("10.0.0.5:0")]).is_err());
        assert!(public_only("empty.example", vec![]).is_err());
        let public = vec![addr("93.184.216.34:0"), addr("[2606:2800:220:1::1]:0")];
        assert_eq!(public_only("example.com", public.clone()).unwrap(), public);
    }

    #[tokio::test]
    async fn a_tenant_client_refuses_a_name_resolving_to_loopback() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://localhost:{}/", listener.local_addr().unwrap().port());
        let strict = SharedClient::for_tenants(Duration::from_secs(2), &crate::IntegrationRules::default());
        let failure = send(strict.get().unwrap().get(&url)).await.unwrap_err();
        assert_eq!((failure.kind, failure.code.as_str()), (FailureKind::Config, "private_host"), "{failure:?}");
        assert!(failure.message.contains("`localhost`"), "{failure:?}");
        // The operator's rules may allow it (tests): the request reaches the listener.
        let lax = crate::IntegrationRules { allow_private_hosts: true, ..Default::default() };
        let client = SharedClient::for_tenants(Duration::from_secs(2), &lax).get().unwrap();
        let request = tokio::spawn(async move { send(client.get(&url)).await });
        let _accepted = listener.accept().await.unwrap();
        drop(request);
    }

    #[test]
    fn only_a_providers_error_shape_is_echoed() {
        let twilio = serde_json::json!({"code": 20003, "message": "Authenticate"});
        assert_eq!(provider_error(&twilio), Some((Some("20003".into()), "Authenticate")));
        let meta = serde_json::json!({"error": {"code": 190, "message": "Invalid OAuth access token"}});
        assert_eq!(provider_error(&meta), Some((Some("190".into()), "Invalid OAuth access token")));
        let novu = serde_json::json!({"statusCode": 401, "message": "API Key not found"});
        assert_eq!(provider_error(&novu), Some((None, "API Key not found")));
        for other in [
            serde_json::json!({"message": "internal service says hello"}),
            serde_json::json!({"title": "Not Found", "detail": "admin panel"}),
            serde_json::Value::Null,
        ] {
            assert_eq!(provider_error(&other), None, "{other}");
        }
    }
}
