use std::time::Duration;

/// What a provider call came to.
#[derive(Clone, Debug)]
pub enum SendOutcome {
    Sent(SendReceipt),
    Failed(SendFailure),
}

#[derive(Clone, Debug)]
pub struct SendReceipt {
    pub provider_message_id: String,
    /// A short excerpt of the provider's answer, for the attempts log.
    pub response_excerpt: Option<String>,
}

/// The four buckets of docs/providers.md §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Not processed by the provider (429, throttling, connection refused): retry.
    Retryable,
    /// The provider may have accepted it (timeout after send, 5xx): retry, a duplicate is possible.
    Ambiguous,
    /// Wrong for this message (invalid number, rejected content): fail at once.
    Permanent,
    /// Our configuration or account (bad credentials, suspended account): every later send
    /// fails too. Retried with backoff, so the delivery waits for an operator's fix.
    Config,
}

impl FailureKind {
    pub fn is_retryable(self) -> bool {
        !matches!(self, FailureKind::Permanent)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Retryable => "retryable",
            FailureKind::Ambiguous => "ambiguous",
            FailureKind::Permanent => "permanent",
            FailureKind::Config => "config",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SendFailure {
    pub kind: FailureKind,
    /// The provider's error code, or ours (`timeout`).
    pub code: String,
    pub message: String,
    /// The provider's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The address itself is dead (bucket D of docs/providers.md §1: a push token the
    /// provider reports unregistered, a subscription gone): the delivery fails and the
    /// stored address is removed in the transaction that records it (`kind` is
    /// `Permanent`).
    pub address_gone: bool,
}

impl SendFailure {
    pub fn new(kind: FailureKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind, code: code.into(), message: message.into(), retry_after: None, address_gone: false }
    }

    /// A permanent failure because the address is dead: see [`SendFailure::address_gone`].
    pub fn gone(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { address_gone: true, ..Self::new(FailureKind::Permanent, code, message) }
    }
}
