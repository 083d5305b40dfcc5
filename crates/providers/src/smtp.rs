//! Any SMTP server (a relay, SES's SMTP interface, a company MTA) through lettre's tokio
//! transport with rustls: one message per delivery, failures sorted by the server's reply
//! code (RFC 5321 §4.2.1) and by where the conversation broke off.

use std::{sync::Arc, time::Duration};

use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{Channel, DeliveryJob, FailureKind, Provider, SendFailure, SendOutcome, SendReceipt};
use futures_util::{FutureExt, future::BoxFuture};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Mailbox, MultiPart, SinglePart,
        header::{HeaderName, HeaderValue},
    },
    transport::smtp::{self, authentication::Credentials, response::Response},
};
use serde::Deserialize;

use crate::{
    Checked, Context, ProviderSettings, ProviderUnit, Source,
    mail::{self, EmailBody, ListUnsubscribe, redact},
    settings::{self, Refused, Section},
};

/// Any SMTP server (`email.smtp`).
pub const UNIT: SmtpUnit = SmtpUnit;

pub struct SmtpUnit;

const REFUSED: Refused<'static> = Refused {
    config: &[],
    integration: &[("connect_timeout", "the operator sets timeouts"), ("timeout", "the operator sets timeouts")],
};

impl ProviderUnit for SmtpUnit {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn name(&self) -> &'static str {
        "smtp"
    }

    fn secrets(&self) -> &'static [&'static str] {
        &["password"]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        let (config, section) = settings::read::<SmtpConfig>(&source, self.channel(), self.name(), &REFUSED)?;
        config.validate(&section)?;
        let mut resolve_public = false;
        if let Source::Integration(integration) = &source {
            // A tenant's server is somewhere on the internet, never one of ours: its name is
            // resolved at each connection and refused if any address is internal, and it is
            // reached on a mail port, encrypted (unless the operator allows private hosts,
            // for tests' plain-text stand-ins on loopback).
            settings::public_host(&config.host, integration.rules, &section, "host")?;
            if !integration.rules.allow_private_hosts {
                if !TENANT_PORTS.contains(&config.port()) {
                    return Err(section.invalid("port", "must be one of 25, 465, 587 and 2525"));
                }
                if config.tls == SmtpTls::None {
                    return Err(section.invalid("tls", "must be `starttls` or `tls`: a tenant's mail is encrypted"));
                }
                resolve_public = true;
            }
        }
        Ok(Box::new(SmtpSettings { config, section, resolve_public }))
    }
}

/// The ports a tenant's SMTP server may listen on: SMTP, SMTPS, submission and the common
/// alternative submission port.
const TENANT_PORTS: [u16; 4] = [25, 465, 587, 2525];

#[derive(Debug)]
struct SmtpSettings {
    config: SmtpConfig,
    section: Section,
    /// A tenant's server: resolved at each connection, never to an internal address.
    resolve_public: bool,
}

impl SmtpSettings {
    /// The conversation's bound must end before the worker gives up on the call, so that
    /// this provider, which knows how far it got, answers first. A tenant cannot set it:
    /// its client takes the default, shortened below the worker's limit where needed.
    fn provider(&self, provider_timeout: Duration) -> Result<SmtpProvider, ConfigError> {
        let mut config = self.config.clone();
        if config.timeout >= provider_timeout {
            if !self.section.is_integration() {
                let message = format!("must be below worker.provider_timeout ({provider_timeout:?})");
                return Err(self.section.invalid("timeout", message));
            }
            config.timeout = provider_timeout.mul_f64(0.8);
        }
        SmtpProvider::new(&config, &self.section, self.resolve_public)
    }
}

impl ProviderSettings for SmtpSettings {
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn Provider>>> {
        async move { Ok(Arc::new(self.provider(ctx.provider_timeout)?) as Arc<dyn Provider>) }.boxed()
    }

    /// Connects, says EHLO, upgrades to TLS and authenticates as a send would, then quits
    /// without a message.
    fn check<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        async move {
            let provider = match self.provider(ctx.provider_timeout) {
                Ok(provider) => provider,
                Err(e) => return Checked::failed(None, "settings", e.to_string()),
            };
            let transport = match provider.transport().await {
                Ok(transport) => transport,
                Err(failure) => return Checked::failed(None, &failure.code, failure.message),
            };
            match tokio::time::timeout(provider.timeout, transport.test_connection()).await {
                Ok(Ok(true)) => Checked {
                    ok: true,
                    status: None,
                    code: None,
                    detail: format!("{}:{} accepted the connection", self.config.host, self.config.port()),
                },
                Ok(Ok(false)) => Checked::failed(None, "smtp_noop", "the server did not answer NOOP"),
                // The reply code is in `code` (`smtp_535`): `status` is an HTTP status.
                // The server's reply, kept short: a tenant reads it.
                Ok(Err(err)) => Checked::failed(None, &classify(&err).1, shorten(&err.to_string())),
                Err(_) => Checked::failed(None, "timeout", format!("no answer within {:?}", provider.timeout)),
            }
        }
        .boxed()
    }
}

/// How the connection is encrypted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text: for a relay on the same host or network only.
    None,
    /// A plain connection upgraded with STARTTLS, which the server must offer.
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", SMTPS).
    Tls,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// `[email.smtp]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 587 with `starttls`, 465 with `tls`, 25 with `none`.
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    pub username: Option<SecretString>,
    pub password: Option<SecretString>,
    /// The sender: `noreply@example.com` or `Notify <noreply@example.com>`.
    pub from: String,
    pub reply_to: Option<String>,
    /// An https, http or mailto URL for the `List-Unsubscribe` header; `{delivery_id}` in
    /// it is replaced by the delivery's id.
    pub list_unsubscribe: Option<String>,
    /// How long to wait for the connection (and TLS). Nothing was sent when it runs out.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long the whole conversation may take. Must stay below
    /// `worker.provider_timeout`, so that this provider, which knows how far it got,
    /// answers first.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_timeout() -> Duration {
    Duration::from_secs(8)
}

impl SmtpConfig {
    /// The settings with only what has no default.
    pub fn new(host: impl Into<String>, from: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: None,
            tls: SmtpTls::default(),
            username: None,
            password: None,
            from: from.into(),
            reply_to: None,
            list_unsubscribe: None,
            connect_timeout: default_connect_timeout(),
            timeout: default_timeout(),
        }
    }

    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }

    /// Checks every setting but the timeout (see [`SmtpSettings::provider`]).
    fn validate(&self, section: &Section) -> Result<(), ConfigError> {
        if self.host.is_empty() || self.host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(section.invalid("host", "must be a host name or IP address"));
        }
        mail::mailbox(&self.from, section, "from")?;
        if let Some(reply_to) = &self.reply_to {
            mail::mailbox(reply_to, section, "reply_to")?;
        }
        if let Some(value) = &self.list_unsubscribe {
            ListUnsubscribe::parse(value, section)?;
        }
        let authenticated =
            settings::both_or_neither((&self.username, "username"), (&self.password, "password"), section)?;
        if authenticated && self.tls == SmtpTls::None {
            return Err(section.invalid("tls", "must be `starttls` or `tls` with a password: it would travel in clear"));
        }
        if self.connect_timeout.is_zero() || self.timeout.is_zero() {
            return Err(section.invalid("timeout", "timeouts must be above zero"));
        }
        Ok(())
    }
}

pub struct SmtpProvider {
    transport: Transport,
    timeout: Duration,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    list_unsubscribe: Option<ListUnsubscribe>,
}

impl SmtpProvider {
    /// Builds the transport; it connects at each send. (No connection pool: see the
    /// workspace's `lettre` dependency.) `resolve_public`: a tenant's server, see [`Transport`].
    fn new(config: &SmtpConfig, section: &Section, resolve_public: bool) -> Result<Self, ConfigError> {
        let fixed = transport(config, &config.host).map_err(|e| section.invalid("tls", e.to_string()))?;
        let transport = if resolve_public { Transport::Tenant(config.clone()) } else { Transport::Fixed(fixed) };
        let list_unsubscribe =
            config.list_unsubscribe.as_deref().map(|v| ListUnsubscribe::parse(v, section)).transpose()?;
        tracing::debug!(host = %config.host, port = config.port(), tls = ?config.tls, "SMTP provider ready");
        Ok(Self {
            transport,
            timeout: config.timeout,
            from: mail::mailbox(&config.from, section, "from")?,
            reply_to: config.reply_to.as_deref().map(|r| mail::mailbox(r, section, "reply_to")).transpose()?,
            list_unsubscribe,
        })
    }

    async fn send_email(&self, job: &DeliveryJob) -> SendOutcome {
        let (message, message_id) = match self.message(job) {
            Ok(built) => built,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        let transport = match self.transport().await {
            Ok(transport) => transport,
            Err(failure) => return SendOutcome::Failed(failure),
        };
        match tokio::time::timeout(self.timeout, transport.send(message)).await {
            Ok(Ok(response)) => SendOutcome::Sent(SendReceipt {
                provider_message_id: message_id,
                response_excerpt: Some(redact(&excerpt(&response), &job.recipient)),
            }),
            Ok(Err(err)) => SendOutcome::Failed(failure(&err, &job.recipient)),
            // Connected (the connect timeout is shorter) and then stuck somewhere in the
            // conversation, maybe after the server took the message.
            Err(_) => SendOutcome::Failed(SendFailure::new(
                FailureKind::Ambiguous,
                "timeout",
                format!("the SMTP conversation took longer than {:?}", self.timeout),
            )),
        }
    }

    /// The transport of this connection: the operator's, or one to the tenant's server at
    /// an address just resolved and checked.
    async fn transport(&self) -> Result<std::borrow::Cow<'_, AsyncSmtpTransport<Tokio1Executor>>, SendFailure> {
        let config = match &self.transport {
            Transport::Fixed(transport) => return Ok(std::borrow::Cow::Borrowed(transport)),
            Transport::Tenant(config) => config,
        };
        let addrs = crate::http::resolve_public(&config.host, config.port()).await.map_err(|e| {
            if e.downcast_ref::<crate::http::PrivateHost>().is_some() {
                SendFailure::new(FailureKind::Config, "private_host", e.to_string())
            } else {
                SendFailure::new(
                    FailureKind::Retryable,
                    "connection_failed",
                    format!("could not resolve the server: {e}"),
                )
            }
        })?;
        let addr = addrs.iter().find(|a| a.is_ipv4()).unwrap_or(&addrs[0]);
        transport(config, &addr.ip().to_string())
            .map(std::borrow::Cow::Owned)
            .map_err(|e| SendFailure::new(FailureKind::Config, "smtp_tls", e.to_string()))
    }

    /// The message and its `Message-ID`, which is our provider message id. The id is the
    /// delivery's, the same on every attempt: should an ambiguous failure be retried and
    /// both copies arrive, mailboxes that de-duplicate by `Message-ID` show one.
    fn message(&self, job: &DeliveryJob) -> Result<(Message, String), SendFailure> {
        let parts = mail::EmailParts::of(job)?;
        let to: Mailbox = job.recipient.parse().map_err(|_| {
            SendFailure::new(
                FailureKind::Permanent,
                "recipient_invalid",
                "the recipient is not an address SMTP can carry",
            )
        })?;
        let message_id = format!("<{}@{}>", job.delivery_id, self.from.email.domain());
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(parts.subject)
            .message_id(Some(message_id.clone()));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        for (name, value) in self.list_unsubscribe.iter().flat_map(|l| l.headers(job)) {
            builder = builder.raw_header(HeaderValue::new(HeaderName::new_from_ascii_str(name), value));
        }
        let message = match parts.body {
            EmailBody::Alternative { text, html } => {
                builder.multipart(MultiPart::alternative_plain_html(text.to_owned(), html.to_owned()))
            }
            EmailBody::Text(text) => builder.singlepart(SinglePart::plain(text.to_owned())),
            EmailBody::Html(html) => builder.singlepart(SinglePart::html(html.to_owned())),
        }
        .map_err(|e| SendFailure::new(FailureKind::Permanent, "message_invalid", e.to_string()))?;
        Ok((message, message_id))
    }
}

impl Provider for SmtpProvider {
    fn name(&self) -> &str {
        "smtp"
    }

    fn send<'a>(&'a self, job: &'a DeliveryJob) -> BoxFuture<'a, SendOutcome> {
        self.send_email(job).boxed()
    }
}

/// The server's answer to the message (`250 2.0.0 Ok: queued as 4BQ1X`): its queue id
/// finds the message in the server's log.
fn excerpt(response: &Response) -> String {
    let lines: Vec<&str> = response.message().collect();
    format!("{} {}", response.code(), lines.join(" "))
}

/// Where a provider connects.
enum Transport {
    /// The operator's server, or a tenant's where private hosts are allowed: built once.
    Fixed(AsyncSmtpTransport<Tokio1Executor>),
    /// A tenant's server: its name is resolved at each connection, refused if any address
    /// is internal, and the connection goes to the address checked (so a second lookup
    /// cannot answer differently); TLS still verifies the certificate against the name.
    Tenant(SmtpConfig),
}

/// A transport to `server` (the host, or an address of it), TLS verified against the host.
fn transport(config: &SmtpConfig, server: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>, smtp::Error> {
    use smtp::client::{Tls, TlsParameters};
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server)
        .port(config.port())
        .timeout(Some(config.connect_timeout));
    let mut builder = match config.tls {
        SmtpTls::None => builder,
        SmtpTls::Starttls => builder.tls(Tls::Required(TlsParameters::new(config.host.clone())?)),
        SmtpTls::Tls => builder.tls(Tls::Wrapper(TlsParameters::new(config.host.clone())?)),
    };
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder =
            builder.credentials(Credentials::new(user.expose_secret().to_owned(), password.expose_secret().to_owned()));
    }
    Ok(builder.build())
}

/// A server's reply for a tenant's check, cut short.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn failure(err: &smtp::Error, recipient: &str) -> SendFailure {
    let (kind, code) = classify(err);
    SendFailure::new(kind, code, redact(&err.to_string(), recipient))
}

/// Sorts a failed send into the buckets of docs/providers.md §1.
fn classify(err: &smtp::Error) -> (FailureKind, String) {
    if let Some(code) = err.status() {
        let code = u16::from(code);
        return (classify_reply(code), format!("smtp_{code}"));
    }
    let (kind, code) = if is_connection_error(err) {
        // Connecting or setting up TLS: nothing of the message went out. A TLS handshake
        // that the server's certificate fails (rustls' errors arrive as `InvalidData`)
        // fails every send until an operator fixes it.
        if io_error_kind(err) == Some(std::io::ErrorKind::InvalidData) {
            (FailureKind::Config, "smtp_tls")
        } else {
            (FailureKind::Retryable, "connection_failed")
        }
    } else if err.is_client() {
        classify_client_error(&err.to_string())
    } else if err.is_transport_shutdown() {
        (FailureKind::Retryable, "transport_shutdown")
    } else {
        // The connection broke or the answer made no sense once the conversation had
        // begun, possibly after the message was taken.
        (FailureKind::Ambiguous, "connection_lost")
    };
    (kind, code.to_owned())
}

/// The bucket of a negative reply: 4xx is transient, 5xx permanent, except the 5xx of
/// authentication, which are our configuration (RFC 4954: 530 authentication required,
/// 534 mechanism too weak, 535 credentials invalid, 538 encryption required).
fn classify_reply(code: u16) -> FailureKind {
    match code {
        400..=499 => FailureKind::Retryable,
        530 | 534 | 535 | 538 => FailureKind::Config,
        500..=599 => FailureKind::Permanent,
        // Not a negative reply: lettre reports only 4xx and 5xx as such.
        _ => FailureKind::Ambiguous,
    }
}

/// lettre's errors of its own: the server lacks something a message needs (SMTPUTF8 for
/// an internationalized address), or something every send needs (STARTTLS, a common
/// authentication mechanism).
fn classify_client_error(text: &str) -> (FailureKind, &'static str) {
    if text.contains("non-ascii") {
        (FailureKind::Permanent, "smtp_unsupported")
    } else {
        (FailureKind::Config, "smtp_client")
    }
}

/// lettre has no accessor for its `Connection` kind (failures while connecting or setting
/// up TLS); its text says it. The tests pin it, should lettre change it.
fn is_connection_error(err: &smtp::Error) -> bool {
    err.to_string().starts_with("Connection error")
}

fn io_error_kind(err: &smtp::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tokio::{
        io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
        net::TcpListener,
    };

    use super::*;
    use crate::mail::tests::job;

    #[test]
    fn reply_codes_fall_into_the_buckets() {
        for (code, kind) in [
            (421, FailureKind::Retryable),
            (450, FailureKind::Retryable),
            (452, FailureKind::Retryable),
            (535, FailureKind::Config),
            (530, FailureKind::Config),
            (550, FailureKind::Permanent),
            (552, FailureKind::Permanent),
            (554, FailureKind::Permanent),
        ] {
            assert_eq!(classify_reply(code), kind, "{code}");
        }
        assert_eq!(
            classify_client_error("Envelope contains non-ascii chars but server does not support SMTPUTF8").0,
            FailureKind::Permanent
        );
        assert_eq!(classify_client_error("STARTTLS is not supported on this server").0, FailureKind::Config);
    }

    fn section() -> Section {
        Section::Config("email.smtp".into())
    }

    #[test]
    fn the_settings_are_checked() {
        let ok = SmtpConfig::new("smtp.example.com", "Notify <noreply@example.com>");
        let limit = Duration::from_secs(10);
        ok.validate(&section()).unwrap();
        assert_eq!((ok.port(), SmtpConfig { tls: SmtpTls::Tls, ..ok.clone() }.port()), (587, 465));
        let cases: [(&str, SmtpConfig); 4] = [
            ("host", SmtpConfig { host: "smtp example".into(), ..ok.clone() }),
            ("from", SmtpConfig { from: "nobody".into(), ..ok.clone() }),
            ("password", SmtpConfig { username: Some("u".into()), ..ok.clone() }),
            (
                "tls",
                SmtpConfig { tls: SmtpTls::None, username: Some("u".into()), password: Some("p".into()), ..ok.clone() },
            ),
        ];
        for (key, config) in cases {
            let err = config.validate(&section()).unwrap_err().to_string();
            assert!(err.contains(&format!("email.smtp.{key}")), "{key}: {err}");
        }
        let slow = SmtpSettings {
            config: SmtpConfig { timeout: limit, ..ok.clone() },
            section: section(),
            resolve_public: false,
        };
        let err = slow.provider(limit).err().unwrap().to_string();
        assert!(err.contains("email.smtp.timeout"), "{err}");
        // A tenant's server gets a bound below the worker's.
        let tenant = SmtpSettings {
            config: SmtpConfig { timeout: limit, ..ok },
            section: Section::Integration,
            resolve_public: false,
        };
        assert!(tenant.provider(limit).unwrap().timeout < limit);
    }

    #[test]
    fn a_tenants_server_is_never_a_private_address() {
        use crate::{IntegrationRules, settings::tests::integration};
        let strict = IntegrationRules::default();
        let settings = serde_json::json!({"host": "127.0.0.1", "port": 2525, "tls": "none", "from": "a@example.com"});
        let err = UNIT.settings(Source::Integration(&integration(&settings, &strict))).unwrap_err().to_string();
        assert!(err.contains("settings.host"), "{err}");
        let lax = IntegrationRules { allow_private_hosts: true, ..Default::default() };
        assert!(UNIT.settings(Source::Integration(&integration(&settings, &lax))).is_ok());
        let timeout = serde_json::json!({"host": "smtp.example.com", "from": "a@example.com", "timeout": "1s"});
        let err = UNIT.settings(Source::Integration(&integration(&timeout, &lax))).unwrap_err().to_string();
        assert!(err.contains("settings.timeout"), "{err}");
    }

    #[test]
    fn a_tenants_server_takes_a_mail_port_and_tls() {
        use crate::{IntegrationRules, settings::tests::integration};
        let strict = IntegrationRules::default();
        let read = |settings: serde_json::Value| {
            UNIT.settings(Source::Integration(&integration(&settings, &strict))).map(|_| ()).map_err(|e| e.to_string())
        };
        let port = read(serde_json::json!({"host": "smtp.example.com", "port": 6379, "from": "a@example.com"}));
        assert!(port.unwrap_err().contains("settings.port"));
        let plain =
            read(serde_json::json!({"host": "smtp.example.com", "port": 25, "tls": "none", "from": "a@example.com"}));
        assert!(plain.unwrap_err().contains("settings.tls"));
        for port in TENANT_PORTS {
            read(serde_json::json!({"host": "smtp.example.com", "port": port, "from": "a@example.com"})).unwrap();
        }
    }

    /// A name that passes the text check but resolves to loopback is refused when it is
    /// resolved, at the check and at a send, before anything connects.
    #[tokio::test]
    async fn a_tenants_server_resolving_to_loopback_is_refused() {
        let port = scripted_server(HashMap::new()).await;
        let settings = SmtpSettings {
            config: SmtpConfig { port: Some(port), ..SmtpConfig::new("localhost", "noreply@example.com") },
            section: Section::Integration,
            resolve_public: true,
        };
        let http = crate::http::SharedClient::new(Duration::from_secs(10));
        let checked = settings.check(&Context { http: &http, provider_timeout: Duration::from_secs(10) }).await;
        assert_eq!((checked.ok, checked.code.as_deref()), (false, Some("private_host")), "{checked:?}");
        assert!(checked.detail.contains("`localhost`"), "{checked:?}");
        let provider = settings.provider(Duration::from_secs(10)).unwrap();
        let SendOutcome::Failed(f) = provider.send_email(&email_job()).await else { panic!("sent") };
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Config, "private_host"), "{f:?}");
    }

    #[tokio::test]
    async fn the_check_authenticates_without_sending() {
        let port = scripted_server(HashMap::from([("MAIL", Some("550 nothing is sent during a check"))])).await;
        let settings = SmtpSettings {
            config: SmtpConfig {
                port: Some(port),
                tls: SmtpTls::None,
                ..SmtpConfig::new("127.0.0.1", "noreply@example.com")
            },
            section: section(),
            resolve_public: false,
        };
        let http = crate::http::SharedClient::new(Duration::from_secs(10));
        let checked = settings.check(&Context { http: &http, provider_timeout: Duration::from_secs(10) }).await;
        assert!(checked.ok, "{checked:?}");
        let refused = provider_settings(scripted_server(HashMap::from([("AUTH", Some("535 5.7.8 no"))])).await);
        let checked = refused.check(&Context { http: &http, provider_timeout: Duration::from_secs(10) }).await;
        assert_eq!((checked.ok, checked.code.as_deref()), (false, Some("smtp_535")), "{checked:?}");
        assert!(!checked.detail.contains("wrong"), "no secret in {checked:?}");
    }

    /// An SMTP server on loopback that answers each command with `replies[verb]`, else
    /// with success; a `None` reply leaves the command unanswered.
    async fn scripted_server(replies: HashMap<&'static str, Option<&'static str>>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            write.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
            let mut in_data = false;
            while let Ok(Some(line)) = lines.next_line().await {
                let verb = if in_data {
                    if line != "." {
                        continue;
                    }
                    "."
                } else {
                    line.split([' ', ':']).next().unwrap_or_default()
                };
                let default = match verb {
                    "EHLO" => "250-scripted\r\n250 AUTH PLAIN LOGIN",
                    "DATA" => "354 go ahead",
                    "QUIT" => "221 bye",
                    _ => "250 2.0.0 Ok",
                };
                let Some(reply) = replies.get(verb).copied().unwrap_or(Some(default)) else {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                };
                in_data = verb == "DATA" && reply.starts_with("354");
                write.write_all(format!("{reply}\r\n").as_bytes()).await.unwrap();
            }
        });
        port
    }

    fn config(port: u16, credentials: bool) -> SmtpConfig {
        let secret = |v: &str| credentials.then(|| SecretString::from(v));
        SmtpConfig {
            port: Some(port),
            tls: SmtpTls::None,
            username: secret("user"),
            password: secret("wrong"),
            timeout: Duration::from_millis(500),
            ..SmtpConfig::new("127.0.0.1", "noreply@example.com")
        }
    }

    fn provider(port: u16, credentials: bool) -> SmtpProvider {
        SmtpProvider::new(&config(port, credentials), &section(), false).unwrap()
    }

    /// Settings with credentials over plain text: the scripted server has no TLS.
    fn provider_settings(port: u16) -> SmtpSettings {
        SmtpSettings { config: config(port, true), section: section(), resolve_public: false }
    }

    fn email_job() -> DeliveryJob {
        let content =
            domain::Content { subject: Some("S".into()), text: Some("T".into()), html: None, ..Default::default() };
        job("user@example.org", content)
    }

    async fn failure_from(replies: &[(&'static str, Option<&'static str>)], credentials: bool) -> SendFailure {
        let port = scripted_server(replies.iter().copied().collect()).await;
        match provider(port, credentials).send_email(&email_job()).await {
            SendOutcome::Failed(f) => f,
            SendOutcome::Sent(_) => panic!("sent despite {replies:?}"),
        }
    }

    #[tokio::test]
    async fn a_message_the_server_takes_is_sent_with_our_message_id() {
        let port = scripted_server(HashMap::from([(".", Some("250 2.0.0 Ok: queued as 4BQ1X"))])).await;
        let job = email_job();
        let SendOutcome::Sent(receipt) = provider(port, false).send_email(&job).await else { panic!("not sent") };
        assert_eq!(receipt.provider_message_id, format!("<{}@example.com>", job.delivery_id));
        assert_eq!(receipt.response_excerpt.as_deref(), Some("250 2.0.0 Ok: queued as 4BQ1X"));
    }

    #[tokio::test]
    async fn a_rejected_recipient_is_permanent_and_not_logged() {
        let f =
            failure_from(&[("RCPT", Some("550 5.1.1 <user@example.org>: Recipient address rejected"))], false).await;
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Permanent, "smtp_550"));
        assert!(f.message.contains("<recipient>") && !f.message.contains("user@example.org"), "{}", f.message);
    }

    #[tokio::test]
    async fn a_transient_reply_is_retryable() {
        let f = failure_from(&[("MAIL", Some("451 4.3.0 Try again later"))], false).await;
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Retryable, "smtp_451"));
    }

    #[tokio::test]
    async fn refused_credentials_are_a_configuration_error() {
        let f = failure_from(&[("AUTH", Some("535 5.7.8 Authentication credentials invalid"))], true).await;
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Config, "smtp_535"));
    }

    #[tokio::test]
    async fn no_answer_to_the_message_is_ambiguous() {
        let f = failure_from(&[(".", None)], false).await;
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Ambiguous, "timeout"));
    }

    #[tokio::test]
    async fn a_connection_closed_mid_conversation_is_ambiguous() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"220 hello\r\n").await.unwrap();
            // Answer EHLO, then hang up in the middle of the transaction.
            let mut ehlo = [0; 512];
            let _ = stream.read(&mut ehlo).await.unwrap();
            stream.write_all(b"250 scripted\r\n").await.unwrap();
        });
        let SendOutcome::Failed(f) = provider(port, false).send_email(&email_job()).await else { panic!("sent") };
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Ambiguous, "connection_lost"), "{}", f.message);
    }

    #[tokio::test]
    async fn implicit_tls_against_a_plain_server_is_a_configuration_error() {
        let port = scripted_server(HashMap::new()).await;
        let config =
            SmtpConfig { port: Some(port), tls: SmtpTls::Tls, ..SmtpConfig::new("127.0.0.1", "a@example.com") };
        let SendOutcome::Failed(f) =
            SmtpProvider::new(&config, &section(), false).unwrap().send_email(&email_job()).await
        else {
            panic!("sent")
        };
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Config, "smtp_tls"), "{}", f.message);
    }

    #[tokio::test]
    async fn nothing_listening_is_retryable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let SendOutcome::Failed(f) = provider(port, false).send_email(&email_job()).await else { panic!("sent") };
        assert_eq!((f.kind, f.code.as_str()), (FailureKind::Retryable, "connection_failed"), "{}", f.message);
    }
}
