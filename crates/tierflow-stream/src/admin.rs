//! Topic creation: idempotent, because every binary and test may call it at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;
use crate::error::{Refusal, StreamError};

/// How long one topic-creation call may take in all (broker lookup, login, request and the
/// broker's own work) before it fails instead of waiting for ever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the broker may take to create the topics.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A topic tierflow needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    /// `cleanup.policy=compact`, for the latest-score-per-user topic.
    pub compacted: bool,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication: 1,
            compacted: false,
        }
    }

    pub fn compacted(mut self) -> Self {
        self.compacted = true;
        self
    }
}

/// A context that notices a refused login or permission. librdkafka reports a refusal only
/// as a client error event, and an admin client never serves those (it polls only its own
/// answers), so a consumer with the same settings watches beside it.
#[derive(Default)]
struct RefusalWatch {
    refused: Refusal,
}

impl ClientContext for RefusalWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        if self.refused.note(&error, reason) {
            tracing::error!(%error, reason, "the broker refused the topic administration client");
        } else {
            tracing::debug!(%error, reason, "librdkafka error (topic administration)");
        }
    }
}

impl ConsumerContext for RefusalWatch {}

/// Connects with `config`'s settings and serves the client's events every 100 ms until the
/// broker refuses it (the reason) or `done` is set (`None`).
fn watch_for_refusal(
    config: &KafkaConfig,
    done: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<Option<String>>, StreamError> {
    let probe: BaseConsumer<RefusalWatch> = config
        .client_config()
        .create_with_context(RefusalWatch::default())
        .map_err(|e| StreamError::kafka("creating the login watch", e))?;
    Ok(tokio::task::spawn_blocking(move || {
        while !done.load(Ordering::Relaxed) {
            // Events only: this consumer has no assignment, so it never returns records.
            let _ = probe.poll(Duration::from_millis(100));
            if let Some(reason) = probe.context().refused.get() {
                return Some(reason);
            }
        }
        None
    }))
}

/// Creates the topics that do not exist yet; existing topics are left as they are.
///
/// Fails with [`StreamError::Refused`] as soon as the broker refuses the login or a permission,
/// and with a timeout error after [`REQUEST_TIMEOUT`] when the broker cannot be reached.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[TopicSpec]) -> Result<(), StreamError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(|e| StreamError::kafka("creating admin client", e))?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(t.replication),
            );
            if t.compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(REQUEST_TIMEOUT))
        .operation_timeout(Some(OPERATION_TIMEOUT));
    let done = Arc::new(AtomicBool::new(false));
    let watch = watch_for_refusal(config, Arc::clone(&done))?;
    let results = tokio::select! {
        results = admin.create_topics(&new_topics, &options) => {
            done.store(true, Ordering::Relaxed);
            results.map_err(|e| StreamError::kafka("creating topics", e))?
        }
        Ok(Some(reason)) = watch => return Err(StreamError::Refused(reason)),
    };
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(StreamError::Topic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
