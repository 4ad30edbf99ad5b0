//! A producer with a bound on unacknowledged records: callers feel backpressure instead of
//! growing an unbounded queue, and learn about every failed delivery.

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::config::KafkaConfig;
use crate::error::StreamError;

/// One record to send. Borrowed, so a caller's buffers are not copied until librdkafka does.
#[derive(Debug, Clone, Copy)]
pub struct OutRecord<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// The headers every output record carries: its encoding and contract version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputHeaders {
    encoding: &'static str,
    schema: String,
}

impl OutputHeaders {
    pub fn new(contract: tierflow_events::Contract, encoding: tierflow_events::Encoding) -> Self {
        Self {
            encoding: encoding.as_str(),
            schema: contract.header_value(),
        }
    }

    pub fn pairs(&self) -> [(&str, &[u8]); 2] {
        [
            (tierflow_events::HEADER_ENCODING, self.encoding.as_bytes()),
            (tierflow_events::HEADER_SCHEMA, self.schema.as_bytes()),
        ]
    }
}

/// Counters of a producer's work so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProduceStats {
    /// Handed to librdkafka.
    pub sent: u64,
    /// Acknowledged by the broker.
    pub delivered: u64,
    /// Value bytes acknowledged.
    pub bytes: u64,
}

/// An idempotent producer that keeps at most `max_in_flight` records unacknowledged.
pub struct BoundedProducer {
    producer: FutureProducer,
    in_flight: VecDeque<(DeliveryFuture, usize)>,
    max_in_flight: usize,
    stats: ProduceStats,
}

impl std::fmt::Debug for BoundedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedProducer")
            .field("in_flight", &self.in_flight.len())
            .field("max_in_flight", &self.max_in_flight)
            .field("stats", &self.stats)
            .finish()
    }
}

impl BoundedProducer {
    pub fn new(config: &KafkaConfig, max_in_flight: usize) -> Result<Self, StreamError> {
        let producer: FutureProducer = config
            .producer_config()
            .create()
            .map_err(|e| StreamError::kafka("creating producer", e))?;
        Ok(Self {
            producer,
            in_flight: VecDeque::with_capacity(max_in_flight.min(65_536)),
            max_in_flight: max_in_flight.max(1),
            stats: ProduceStats::default(),
        })
    }

    /// A transactional producer (`transactional.id` = `id`, unique per process and stable
    /// across its restarts): `init_transactions` fences any older instance with the same id
    /// and aborts the transaction it left open. Blocks the calling thread (use it from
    /// `block_in_place` or a blocking task).
    pub fn transactional(
        config: &KafkaConfig,
        max_in_flight: usize,
        id: &str,
        timeout: Duration,
    ) -> Result<Self, StreamError> {
        let mut config = config.clone();
        config
            .properties
            .insert("transactional.id".into(), id.to_owned());
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        for key in ["transaction.timeout.ms", "message.timeout.ms"] {
            config
                .properties
                .entry(key.into())
                .or_insert_with(|| "60000".into());
        }
        let producer = Self::new(&config, max_in_flight)?;
        producer
            .producer
            .init_transactions(timeout)
            .map_err(|e| StreamError::kafka("initialising transactions", e))?;
        Ok(producer)
    }

    /// Starts a transaction: what is sent until commit or abort belongs to it.
    pub fn begin_transaction(&self) -> Result<(), KafkaError> {
        self.producer.begin_transaction()
    }

    /// Adds the consumer offsets to the open transaction (committed with it). Blocking.
    pub fn send_offsets_to_transaction(
        &self,
        offsets: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        self.producer
            .send_offsets_to_transaction(offsets, group, timeout)
    }

    /// Commits the open transaction (flushes first). Blocking.
    pub fn commit_transaction(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.commit_transaction(timeout)
    }

    /// Aborts the open transaction; records sent in it are never seen by `read_committed`
    /// readers. Forgets the deliveries still awaited. Blocking.
    pub fn abort_transaction(&mut self, timeout: Duration) -> Result<(), KafkaError> {
        self.in_flight.clear();
        self.producer.abort_transaction(timeout)
    }

    pub fn stats(&self) -> ProduceStats {
        self.stats
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Enqueues one record, waiting for older deliveries first when the bound is reached or
    /// librdkafka's own queue is full. Returns the first failed delivery, if any.
    pub async fn send(&mut self, record: OutRecord<'_>) -> Result<(), StreamError> {
        while self.in_flight.len() >= self.max_in_flight {
            self.settle_oldest().await?;
        }
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(*value),
                });
            }
            let mut future = FutureRecord::to(record.topic)
                .payload(record.value)
                .headers(headers);
            if let Some(key) = record.key {
                future = future.key(key);
            }
            match self.producer.send_result(future) {
                Ok(delivery) => {
                    self.in_flight.push_back((delivery, record.value.len()));
                    self.stats.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    } else {
                        self.settle_oldest().await?;
                    }
                }
                Err((e, _)) => return Err(StreamError::kafka("enqueueing a record", e)),
            }
        }
    }

    /// Sends a tombstone — `key` with no value, which deletes the key from a compacted
    /// topic — after every record already in flight, and waits for its acknowledgement.
    /// Returns the partition and offset it was written at.
    pub async fn send_tombstone(
        &mut self,
        topic: &str,
        key: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(i32, i64), StreamError> {
        self.flush().await?;
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(*value),
            });
        }
        // No `payload` at all: an empty payload would be a value, not a tombstone.
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key).headers(owned);
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| StreamError::kafka("enqueueing a tombstone", e))?;
        self.stats.sent += 1;
        match delivery.await {
            Ok(Ok(delivery)) => {
                self.stats.delivered += 1;
                Ok((delivery.partition, delivery.offset))
            }
            Ok(Err((e, _))) => Err(StreamError::kafka("delivering a tombstone", e)),
            Err(_) => Err(StreamError::kafka(
                "delivering a tombstone",
                KafkaError::Canceled,
            )),
        }
    }

    /// Waits until every record sent so far is acknowledged.
    pub async fn flush(&mut self) -> Result<ProduceStats, StreamError> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(self.stats)
    }

    /// Waits for every record still in flight and forgets their results: after a failed
    /// delivery, before the caller sends the whole batch again. Returns how many failed.
    pub async fn drain(&mut self) -> usize {
        let mut failed = 0;
        while !self.in_flight.is_empty() {
            if self.settle_oldest().await.is_err() {
                failed += 1;
            }
        }
        failed
    }

    async fn settle_oldest(&mut self) -> Result<(), StreamError> {
        let Some((delivery, bytes)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match delivery.await {
            Ok(Ok(_)) => {
                self.stats.delivered += 1;
                self.stats.bytes += bytes as u64;
                Ok(())
            }
            Ok(Err((e, _))) => Err(StreamError::kafka("delivering a record", e)),
            Err(_) => Err(StreamError::kafka(
                "delivering a record",
                KafkaError::Canceled,
            )),
        }
    }
}

impl Drop for BoundedProducer {
    fn drop(&mut self) {
        // Give queued records a last chance; callers that care call `flush` first.
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
