//! Kafka failures, each classified so that every stage knows whether to retry, skip or stop.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What a stage should do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Transient (broker down, timeout, queue full): back off and try again.
    Retriable,
    /// This record can never succeed (too large, bad topic): dead-letter it and move on.
    Poison,
    /// Configuration or authorisation is wrong: stop cleanly, commit nothing more.
    Fatal,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("kafka {context}: {source}")]
    Kafka {
        context: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("invalid kafka configuration: {0}")]
    Config(String),
    #[error(
        "the broker refused this client: {0}; check the credentials (sasl.username, sasl.password or its secrets file) and the ACLs"
    )]
    Refused(String),
}

impl StreamError {
    pub(crate) fn kafka(context: &'static str, source: KafkaError) -> Self {
        Self::Kafka { context, source }
    }

    pub fn class(&self) -> FailureClass {
        match self {
            Self::Kafka { source, .. } => classify(source),
            Self::Topic { .. } | Self::Config(_) | Self::Refused(_) => FailureClass::Fatal,
        }
    }
}

/// What a failed transactional call asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnFailure {
    /// Call it again.
    Retriable,
    /// Abort the transaction, then redo its work.
    Abort,
    /// The producer is unusable (fenced by a newer instance, or misconfigured): stop.
    Fatal,
}

/// Classifies the error of a transactional call (`KafkaError::Transaction`).
pub fn transaction_failure(error: &KafkaError) -> TxnFailure {
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => TxnFailure::Fatal,
        KafkaError::Transaction(e) if e.txn_requires_abort() => TxnFailure::Abort,
        KafkaError::Transaction(e) if e.is_retriable() => TxnFailure::Retriable,
        other => match classify(other) {
            FailureClass::Fatal => TxnFailure::Fatal,
            _ => TxnFailure::Abort,
        },
    }
}

/// The first refusal (failed login, missing permission) a client's context saw, kept so the
/// caller can stop on it instead of retrying what no retry fixes.
#[derive(Debug, Default)]
pub struct Refusal(std::sync::Mutex<Option<String>>);

impl Refusal {
    /// Records `error` (with librdkafka's `reason`, if any) when it is a refusal and none was
    /// recorded before; returns whether it is a refusal.
    pub fn note(&self, error: &KafkaError, reason: &str) -> bool {
        if !refuses(error) {
            return false;
        }
        let mut first = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if first.is_none() {
            *first = Some(if reason.is_empty() {
                error.to_string()
            } else {
                format!("{error} ({reason})")
            });
        }
        true
    }

    /// The refusal recorded, if any.
    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A failed login or a missing permission: what no retry fixes.
pub fn refuses(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::Authentication
                | C::SaslAuthenticationFailed
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::ClusterAuthorizationFailed
        )
    )
}

/// Classifies an rdkafka error. Unknown codes are treated as retriable: a stage that retries
/// with backoff and reports is safer than one that drops data.
pub fn classify(error: &KafkaError) -> FailureClass {
    use RDKafkaErrorCode as C;
    let code = match error.rdkafka_error_code() {
        Some(code) => code,
        None => {
            return match error {
                KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => FailureClass::Fatal,
                _ => FailureClass::Retriable,
            };
        }
    };
    match code {
        C::MessageSizeTooLarge | C::InvalidMessage | C::InvalidRecord | C::InvalidMessageSize => {
            FailureClass::Poison
        }
        C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::SaslAuthenticationFailed
        | C::Authentication
        | C::InvalidConfig
        | C::UnknownTopic
        | C::Fatal => FailureClass::Fatal,
        _ => FailureClass::Retriable,
    }
}
