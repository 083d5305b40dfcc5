//! What the SES and SNS providers share (docs/providers.md §2): their client settings (region,
//! endpoint, credentials, an optional role, timeouts) read and checked once, the SDK
//! client's configuration (the SDK's own retries off, since the worker's retry policy
//! retries and an attempt must be one request; explicit timeouts; static credentials or the
//! standard chain) and the sorting of a failed call into the buckets of docs/providers.md §1.

use std::{error::Error, fmt::Debug, marker::PhantomData, sync::Arc, time::Duration};

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
use aws_smithy_runtime_api::{
    client::result::{ConnectorError, SdkError},
    http::Response,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{Channel, FailureKind, Provider, SendFailure};
use futures_util::{FutureExt, future::BoxFuture};
use serde::{Deserialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::{
    Checked, Context, ProviderSettings, ProviderUnit, Source,
    settings::{self, Refused, Section},
};

/// What one AWS service adds to the client settings every AWS provider shares: its own
/// settings, the provider made from the SDK's configuration, and its credentials check.
pub trait Service: Debug + Send + Sync + 'static {
    const CHANNEL: Channel;
    const NAME: &'static str;
    type Options: DeserializeOwned + Debug + Send + Sync + 'static;
    type Provider: Provider + 'static;

    fn validate(options: &Self::Options, section: &Section) -> Result<(), ConfigError>;

    /// The provider, with the SDK client it builds once per process (the client holds
    /// the connection pool and the credentials cache).
    fn provider(sdk: &SdkConfig, options: &Self::Options, section: &Section) -> Result<Self::Provider, ConfigError>;

    /// A read that proves the credentials, sending nothing.
    fn check<'a>(provider: &'a Self::Provider, options: &'a Self::Options) -> BoxFuture<'a, Checked>;
}

/// The unit of an AWS service.
pub struct Unit<S>(PhantomData<S>);

impl<S> Unit<S> {
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<S> Default for Unit<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Service> ProviderUnit for Unit<S> {
    fn channel(&self) -> Channel {
        S::CHANNEL
    }

    fn name(&self) -> &'static str {
        S::NAME
    }

    fn secrets(&self) -> &'static [&'static str] {
        &["secret_access_key"]
    }

    fn settings(&self, source: Source<'_>) -> Result<Box<dyn ProviderSettings>, ConfigError> {
        Ok(Box::new(Settings::<S>::read(&source)?))
    }
}

/// An AWS unit's settings, checked.
#[derive(Debug)]
pub(crate) struct Settings<S: Service> {
    client: Client,
    options: S::Options,
}

impl<S: Service> Settings<S> {
    pub(crate) fn read(source: &Source<'_>) -> Result<Self, ConfigError> {
        let (config, client, section) = read::<S::Options>(source, S::CHANNEL, S::NAME)?;
        S::validate(&config.service, &section)?;
        Ok(Self { client, options: config.service })
    }

    /// Credentials are resolved at the first call, so a missing one shows as a
    /// configuration failure of that call.
    pub(crate) async fn provider(&self, provider_timeout: Duration) -> Result<S::Provider, ConfigError> {
        S::provider(&self.client.sdk_config(provider_timeout).await?, &self.options, &self.client.section)
    }
}

impl<S: Service> ProviderSettings for Settings<S> {
    fn build<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, anyhow::Result<Arc<dyn Provider>>> {
        async move { Ok(Arc::new(self.provider(ctx.provider_timeout).await?) as Arc<dyn Provider>) }.boxed()
    }

    fn check<'a>(&'a self, ctx: &'a Context<'a>) -> BoxFuture<'a, Checked> {
        async move {
            match self.provider(ctx.provider_timeout).await {
                Ok(provider) => S::check(&provider, &self.options).await,
                Err(e) => Checked::failed(None, "settings", e.to_string()),
            }
        }
        .boxed()
    }
}

/// An AWS provider's section (`[email.ses]`, `[sms.sns]`) or a tenant's settings: the
/// client settings every AWS provider has, and the service's own (`T`) beside them.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig<T> {
    /// The AWS region (`eu-west-1`).
    pub region: String,
    /// Another endpoint than the region's (a VPC endpoint; moto in tests). The operator's
    /// only: a tenant's client uses `integrations.base_urls.<name>`, else the region's.
    pub endpoint_url: Option<String>,
    /// Static credentials; without them the standard AWS chain is used (environment,
    /// profile, web identity, ECS or EC2 instance role).
    pub access_key_id: Option<SecretString>,
    pub secret_access_key: Option<SecretString>,
    /// A role to assume (`arn:aws:iam::123456789012:role/notify`) with the credentials
    /// above or the standard chain's. A tenant's role is assumed with its tenant id as the
    /// external id, so that a role trusts this platform for that tenant only.
    pub role_arn: Option<String>,
    /// How long to wait for a connection. Nothing was sent when it runs out.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one request may take in all. Must stay below `worker.provider_timeout`, so
    /// that the SDK, which knows whether the request went out, answers first.
    #[serde(default = "default_attempt_timeout", with = "humantime_serde")]
    pub attempt_timeout: Duration,
    #[serde(flatten)]
    pub service: T,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_attempt_timeout() -> Duration {
    Duration::from_secs(8)
}

/// What a tenant cannot set: where its client connects and how long it waits are the
/// operator's.
const REFUSED: Refused<'static> = Refused {
    config: &[("events_topic_arn", "the operator's SES event topics are `receipts.ses.topic_arns`")],
    integration: &[
        ("endpoint_url", "a tenant's client calls its region's endpoint"),
        ("connect_timeout", "the operator sets timeouts"),
        ("attempt_timeout", "the operator sets timeouts"),
    ],
};

/// Reads an AWS unit's settings from either source and checks the client's.
fn read<T: DeserializeOwned>(
    source: &Source<'_>,
    channel: domain::Channel,
    name: &str,
) -> Result<(AwsConfig<T>, Client, Section), ConfigError> {
    let (mut config, section) = settings::read::<AwsConfig<T>>(source, channel, name, &REFUSED)?;
    let mut external_id = None;
    if let Source::Integration(integration) = source {
        config.endpoint_url = integration.rules.base_urls.get(name).cloned();
        external_id = Some(integration.tenant_id);
    }
    let client = Client::of(&config, external_id, &section)?;
    Ok((config, client, section))
}

/// The client settings of an AWS provider, checked.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    section: Section,
    region: String,
    endpoint_url: Option<String>,
    credentials: Option<(SecretString, SecretString)>,
    role: Option<(String, Option<Uuid>)>,
    connect_timeout: Duration,
    attempt_timeout: Duration,
}

impl Client {
    fn of<T>(config: &AwsConfig<T>, external_id: Option<Uuid>, section: &Section) -> Result<Self, ConfigError> {
        let region_ok = !config.region.is_empty()
            && config.region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(section.invalid("region", "must be an AWS region such as `eu-west-1`"));
        }
        if let Some(url) = &config.endpoint_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(section.invalid("endpoint_url", "must be an http or https URL"));
        }
        let keys = (&config.access_key_id, "access_key_id");
        let secret = (&config.secret_access_key, "secret_access_key");
        let credentials = settings::both_or_neither(keys, secret, section)?.then(|| {
            (config.access_key_id.clone().unwrap_or_default(), config.secret_access_key.clone().unwrap_or_default())
        });
        let role = match settings::given(&config.role_arn) {
            Some(arn) if arn.starts_with("arn:") && arn.contains(":role/") => Some((arn.to_owned(), external_id)),
            Some(_) => {
                return Err(section.invalid("role_arn", "must be a role ARN, `arn:aws:iam::<account>:role/<name>`"));
            }
            None => None,
        };
        if section.is_integration() && credentials.is_none() && role.is_none() {
            // The worker's own credentials are the operator's account, not the tenant's.
            return Err(section.invalid("access_key_id", "is required, with `secret_access_key`, or `role_arn`"));
        }
        if config.connect_timeout.is_zero() || config.attempt_timeout.is_zero() {
            return Err(section.invalid("attempt_timeout", "timeouts must be above zero"));
        }
        Ok(Self {
            section: section.clone(),
            region: config.region.clone(),
            endpoint_url: config.endpoint_url.clone(),
            credentials,
            role,
            connect_timeout: config.connect_timeout,
            attempt_timeout: config.attempt_timeout,
        })
    }

    /// Checks the timeout against the worker's limit on a provider call, which the SDK's
    /// own attempt timeout must stay below so that the SDK, which knows whether the request
    /// went out, answers first. A tenant cannot set it: its client takes the operator's
    /// default, shortened below the limit where needed.
    fn attempt_timeout(&self, provider_timeout: Duration) -> Result<Duration, ConfigError> {
        if self.attempt_timeout < provider_timeout {
            Ok(self.attempt_timeout)
        } else if self.section.is_integration() {
            Ok(provider_timeout.mul_f64(0.8))
        } else {
            let message = format!("must be below worker.provider_timeout ({provider_timeout:?})");
            Err(self.section.invalid("attempt_timeout", message))
        }
    }

    /// The SDK configuration of a client: retries off, the timeouts, the endpoint, static
    /// credentials when given (else the standard chain: environment, profile, web
    /// identity, container or instance role), and the role assumed with them.
    pub(crate) async fn sdk_config(&self, provider_timeout: Duration) -> Result<SdkConfig, ConfigError> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout(provider_timeout)?)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(url) = &self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((id, secret)) = &self.credentials {
            let credentials = Credentials::new(id.expose_secret(), secret.expose_secret(), None, None, "notify-config");
            loader = loader.credentials_provider(credentials);
        }
        let config = loader.load().await;
        let Some((role, external_id)) = &self.role else { return Ok(config) };
        let mut assume = aws_config::sts::AssumeRoleProvider::builder(role).session_name("notify").configure(&config);
        if let Some(tenant) = external_id {
            assume = assume.external_id(tenant.to_string());
        }
        let provider = SharedCredentialsProvider::new(assume.build().await);
        Ok(config.into_builder().credentials_provider(provider).build())
    }
}

/// What a credentials check of an AWS call came to: the service's error code and message
/// when it refused, else how the call failed.
pub(crate) fn checked<O, E: ProvideErrorMetadata + Error + 'static>(
    result: Result<O, SdkError<E, Response>>,
    describe: impl FnOnce(O) -> String,
) -> Checked {
    match result {
        Ok(output) => Checked { ok: true, status: Some(200), code: None, detail: describe(output) },
        Err(err) => {
            let status = err.raw_response().map(|r| r.status().as_u16());
            let failure = failure(&err, |_, _| FailureKind::Config, str::to_owned);
            Checked::failed(status, &failure.code, failure.message)
        }
    }
}

/// Sorts a failed call into the buckets of docs/providers.md §1 (the table of §2).
/// `classify` sorts the service's error answers by code and status; `redact` keeps the
/// recipient out of the messages stored in the attempt log (services quote it).
pub fn failure<E: ProvideErrorMetadata + Error + 'static>(
    err: &SdkError<E, Response>,
    classify: fn(Option<&str>, u16) -> FailureKind,
    redact: impl Fn(&str) -> String,
) -> SendFailure {
    let context = || redact(&chain(err));
    match err {
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            let code = e.err().code();
            let message = redact(e.err().message().unwrap_or("no message"));
            let code_text = code.map_or_else(|| format!("http_{status}"), str::to_owned);
            SendFailure::new(classify(code, status), code_text, message)
        }
        SdkError::DispatchFailure(e) => {
            let (kind, code) =
                e.as_connector_error().map_or((FailureKind::Retryable, "dispatch_failure"), classify_dispatch);
            SendFailure::new(kind, code, context())
        }
        // The request went out and no full answer came back: the service may have sent.
        SdkError::TimeoutError(_) => SendFailure::new(FailureKind::Ambiguous, "timeout", context()),
        SdkError::ResponseError(_) => SendFailure::new(FailureKind::Ambiguous, "response_unreadable", context()),
        // The request could not be built from this job: the same on every attempt.
        SdkError::ConstructionFailure(_) => SendFailure::new(FailureKind::Permanent, "request_invalid", context()),
        _ => SendFailure::new(FailureKind::Ambiguous, "sdk_error", context()),
    }
}

/// The error and its causes, `outer: inner: innermost`: the SDK's own text is a bare
/// "dispatch failure" whose cause (refused connection, missing credentials) is below it.
fn chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A failure before any answer came. Only a connection lost once the request may have
/// gone out is ambiguous; the rest never reached the service.
fn classify_dispatch(e: &ConnectorError) -> (FailureKind, &'static str) {
    use aws_smithy_types::retry::ErrorKind;
    if e.is_timeout() {
        // The connector's only timeout is the connect timeout.
        (FailureKind::Retryable, "connect_timeout")
    } else if e.is_user() {
        (FailureKind::Permanent, "request_invalid")
    } else if e.is_io() {
        if connection_lost(e) {
            (FailureKind::Ambiguous, "connection_lost")
        } else {
            (FailureKind::Retryable, "connection_failed")
        }
    } else if e.as_other() == Some(ErrorKind::TransientError) {
        // hyper's "incomplete message": the connection closed after the request was written.
        (FailureKind::Ambiguous, "connection_lost")
    } else {
        // Unclassified failures before transmission are the credentials, the endpoint or
        // the signing: our configuration.
        (FailureKind::Config, "client_setup")
    }
}

/// The I/O error is one that can happen after the request was written.
fn connection_lost(e: &ConnectorError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    let mut source: Option<&(dyn Error + 'static)> = Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof);
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use domain::FailureKind;

    use super::classify_dispatch;

    #[test]
    fn failures_before_an_answer_are_retryable_unless_the_request_may_have_gone_out() {
        use std::io::{Error, ErrorKind::*};
        let io = |kind| ConnectorError::io(Box::new(Error::from(kind)));
        assert_eq!(classify_dispatch(&io(ConnectionRefused)), (FailureKind::Retryable, "connection_failed"));
        assert_eq!(classify_dispatch(&io(ConnectionReset)), (FailureKind::Ambiguous, "connection_lost"));
        assert_eq!(
            classify_dispatch(&ConnectorError::timeout("connect".into())),
            (FailureKind::Retryable, "connect_timeout")
        );
        let incomplete =
            ConnectorError::other("closed".into(), Some(aws_smithy_types::retry::ErrorKind::TransientError));
        assert_eq!(classify_dispatch(&incomplete).0, FailureKind::Ambiguous);
        let credentials = ConnectorError::other("no credentials".into(), None);
        assert_eq!(classify_dispatch(&credentials), (FailureKind::Config, "client_setup"));
    }
}
