//! tierflow's one Kafka wrapper: client configuration, topic administration, a bounded
//! producer, consumer-group helpers and the embedded in-process broker. Nothing else in
//! tierflow talks to rdkafka directly.

pub mod admin;
pub mod config;
pub mod consume;
pub mod dead_letter;
pub mod embedded;
pub mod error;
pub mod produce;

pub use admin::{TopicSpec, ensure_topics};
pub use config::KafkaConfig;
pub use embedded::EmbeddedBroker;
pub use error::{FailureClass, Refusal, StreamError, TxnFailure, refuses, transaction_failure};
pub use produce::{BoundedProducer, OutRecord, OutputHeaders, ProduceStats};
