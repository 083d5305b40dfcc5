//! What the SES and SNS providers share (docs/providers.md §2): the SDK client's configuration
//! (the SDK's own retries off, since the worker's retry policy retries and an attempt must
//! be one request; explicit timeouts; static credentials or the standard chain) and the
//! sorting of a failed call into the buckets of docs/providers.md §1.

use std::{error::Error, time::Duration};

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::{
    client::result::{ConnectorError, SdkError},
    http::Response,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use bootstrap::{ConfigError, ExposeSecret, SecretString};
use domain::{FailureKind, SendFailure};

/// The client settings every AWS provider section has (`[email.ses]`, `[sms.sns]`).
pub struct ClientSettings<'a> {
    /// The section, for naming a bad setting: `email.ses`.
    pub section: &'a str,
    pub region: &'a str,
    pub endpoint_url: Option<&'a str>,
    pub access_key_id: Option<&'a SecretString>,
    pub secret_access_key: Option<&'a SecretString>,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
}

impl ClientSettings<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { key: format!("{}.{key}", self.section), message: message.into() }
    }

    /// Checks the client settings; `provider_timeout` is the worker's limit on a provider
    /// call, which the SDK's own attempt timeout must stay below so that the SDK, which
    /// knows whether the request went out, answers first.
    pub fn validate(&self, provider_timeout: Duration) -> Result<(), ConfigError> {
        let region_ok = !self.region.is_empty()
            && self.region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(self.invalid("region", "must be an AWS region such as `eu-west-1`"));
        }
        if let Some(url) = self.endpoint_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(self.invalid("endpoint_url", "must be an http or https URL"));
        }
        let given = |s: Option<&SecretString>| s.is_some_and(|s| !s.expose_secret().is_empty());
        match (given(self.access_key_id), given(self.secret_access_key)) {
            (true, false) => return Err(self.invalid("secret_access_key", "is required with `access_key_id`")),
            (false, true) => return Err(self.invalid("access_key_id", "is required with `secret_access_key`")),
            _ => {}
        }
        if self.connect_timeout.is_zero() || self.attempt_timeout.is_zero() {
            return Err(self.invalid("attempt_timeout", "timeouts must be above zero"));
        }
        if self.attempt_timeout >= provider_timeout {
            return Err(self
                .invalid("attempt_timeout", format!("must be below worker.provider_timeout ({provider_timeout:?})")));
        }
        Ok(())
    }

    /// The SDK configuration of a client: retries off, the timeouts, the endpoint, and
    /// static credentials when given (else the standard chain: environment, profile, web
    /// identity, container or instance role).
    pub async fn sdk_config(&self) -> SdkConfig {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(self.region.to_owned()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(url) = self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let (Some(id), Some(secret)) = (self.access_key_id, self.secret_access_key) {
            let credentials = Credentials::new(id.expose_secret(), secret.expose_secret(), None, None, "notify-config");
            loader = loader.credentials_provider(credentials);
        }
        loader.load().await
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
