//! The embedded default: librdkafka's in-process mock cluster, so the demo runs with nothing
//! installed. Tests use a real broker from the testkit; this is for demos and unit tests.

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::admin::TopicSpec;
use crate::config::KafkaConfig;
use crate::error::StreamError;

/// An in-process Kafka-protocol cluster on loopback ports. Dropped = gone, with its data.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap_servers", &self.cluster.bootstrap_servers())
            .finish()
    }
}

impl EmbeddedBroker {
    pub fn start(brokers: i32) -> Result<Self, StreamError> {
        let cluster = MockCluster::new(brokers)
            .map_err(|e| StreamError::kafka("starting mock cluster", e))?;
        Ok(Self { cluster })
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Client settings pointing at this cluster.
    pub fn kafka_config(&self) -> KafkaConfig {
        KafkaConfig::new(self.bootstrap_servers())
    }

    /// Makes the cluster answer the next requests of `api` with `errors`, in order (fault
    /// injection for tests).
    pub fn inject_request_errors(
        &self,
        api: rdkafka::types::RDKafkaApiKey,
        errors: &[rdkafka::types::RDKafkaRespErr],
    ) {
        self.cluster.request_errors(api, errors);
    }

    /// Takes broker `id` (1-based) down: its connections close and it refuses new ones until
    /// `broker_up` (fault injection for tests).
    pub fn broker_down(&self, id: i32) -> Result<(), StreamError> {
        self.cluster
            .broker_down(id)
            .map_err(|e| StreamError::kafka("taking a mock broker down", e))
    }

    /// Brings broker `id` back after `broker_down`.
    pub fn broker_up(&self, id: i32) -> Result<(), StreamError> {
        self.cluster
            .broker_up(id)
            .map_err(|e| StreamError::kafka("bringing a mock broker up", e))
    }

    /// Delays every answer of broker `id` by `delay` (zero: no delay).
    pub fn set_round_trip_time(&self, id: i32, delay: Duration) -> Result<(), StreamError> {
        self.cluster
            .broker_round_trip_time(id, delay)
            .map_err(|e| StreamError::kafka("setting a mock broker's round-trip time", e))
    }

    /// The mock cluster does not serve the CreateTopics admin call; it has its own.
    pub fn create_topics(&self, topics: &[TopicSpec]) -> Result<(), StreamError> {
        for topic in topics {
            self.cluster
                .create_topic(&topic.name, topic.partitions, topic.replication)
                .map_err(|e| StreamError::kafka("creating mock topic", e))?;
        }
        Ok(())
    }
}
