//! Kafka client settings shared by every producer, consumer and admin client.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// How to reach the Kafka cluster. Any librdkafka property can be passed through
/// `properties` (security, SASL, TLS, tuning); the named fields cover the common ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, e.g. `localhost:9092`.
    pub brokers: String,
    /// `client.id` reported to the brokers.
    pub client_id: String,
    /// Extra librdkafka properties, applied last (they win).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".to_owned(),
            client_id: "tierflow".to_owned(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            ..Self::default()
        }
    }

    /// A librdkafka configuration with the common settings and the pass-through properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id)
            // Brokers on loopback in tests and on the embedded default resolve fast; a short
            // reconnect backoff makes restarts visible sooner.
            .set("reconnect.backoff.max.ms", "2000");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// Settings for a producer that never duplicates or reorders on retry.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "300000");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// Settings for a consumer-group member that commits explicitly, never automatically.
    pub fn consumer_config(&self, group_id: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            // Eager: every rebalance revokes everything, each member drains and commits
            // before letting go, then the new assignment starts from those commits. With
            // cooperative-sticky, tansu 0.6.0 handed a partition to a new member before
            // its old owner revoked it (two owners for ~0.5 s: replays and racing state
            // writes); set it through `properties` on a broker known to get it right.
            .set("partition.assignment.strategy", "range,roundrobin");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}
