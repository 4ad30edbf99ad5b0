//! Where generated and imported records go: JSON lines (file, gzip file or stdout) or a
//! Kafka topic at a target rate. Producers run on a blocking thread and hand batches over a
//! bounded channel, so a slow sink slows them down instead of filling memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use indicatif::ProgressBar;
use tierflow_events::{Contract, Encoding};
use tierflow_stream::{
    BoundedProducer, KafkaConfig, OutRecord, OutputHeaders, ProduceStats, TopicSpec,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::OutputArgs;
use crate::config::Config;

/// Records per hand-over between the producing thread and the sink.
const BATCH: usize = 1024;
/// Batches buffered between them: the backpressure bound.
const CHANNEL_BATCHES: usize = 8;

/// An opened destination.
pub(crate) struct Sink {
    kind: SinkKind,
    records: u64,
    bytes: u64,
}

enum SinkKind {
    Lines {
        writer: Box<dyn Write + Send>,
        name: String,
    },
    Kafka {
        producer: BoundedProducer,
        topic: String,
        headers: OutputHeaders,
        pacer: Pacer,
    },
}

/// What a sink did, for the final report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SinkSummary {
    pub(crate) destination: String,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) delivered: Option<ProduceStats>,
}

impl Sink {
    pub(crate) async fn open(args: &OutputArgs, config: &Config) -> Result<Self> {
        let kind = match &args.topic {
            Some(topic) => {
                let topic = if topic.is_empty() {
                    config.topics.clickstream.clone()
                } else {
                    topic.clone()
                };
                tierflow_stream::ensure_topics(
                    &config.kafka,
                    &[TopicSpec::new(&topic, config.topics.partitions)],
                )
                .await
                .with_context(|| format!("creating topic {topic} on {}", config.kafka.brokers))?;
                return Self::kafka(&config.kafka, topic, args.rate, args.max_in_flight);
            }
            None => {
                let path = args.output.as_deref().unwrap_or(Path::new("-"));
                SinkKind::Lines {
                    writer: open_lines(path)?,
                    name: path.display().to_string(),
                }
            }
        };
        Ok(Self {
            kind,
            records: 0,
            bytes: 0,
        })
    }

    /// A clickstream producer to an existing topic at `rate` records/s (0 = unpaced).
    pub(crate) fn kafka(
        kafka: &KafkaConfig,
        topic: String,
        rate: f64,
        max_in_flight: usize,
    ) -> Result<Self> {
        Ok(Self {
            kind: SinkKind::Kafka {
                producer: BoundedProducer::new(kafka, max_in_flight)?,
                topic,
                headers: OutputHeaders::new(Contract::Clickstream, Encoding::Json),
                pacer: Pacer::new(rate),
            },
            records: 0,
            bytes: 0,
        })
    }

    pub(crate) async fn write(&mut self, key: &str, value: &[u8]) -> Result<()> {
        match &mut self.kind {
            SinkKind::Lines { writer, name } => {
                writer
                    .write_all(value)
                    .and_then(|()| writer.write_all(b"\n"))
                    .with_context(|| format!("writing {name}"))?;
            }
            SinkKind::Kafka {
                producer,
                topic,
                headers,
                pacer,
            } => {
                pacer.pace().await;
                producer
                    .send(OutRecord {
                        topic,
                        key: Some(key.as_bytes()),
                        value,
                        headers: &headers.pairs(),
                    })
                    .await
                    .with_context(|| format!("producing to {topic}"))?;
            }
        }
        self.records += 1;
        self.bytes += value.len() as u64;
        Ok(())
    }

    /// Flushes everything: for Kafka, waits until the broker acknowledged every record.
    pub(crate) async fn finish(self) -> Result<SinkSummary> {
        let (destination, delivered) = match self.kind {
            SinkKind::Lines { mut writer, name } => {
                writer.flush().with_context(|| format!("flushing {name}"))?;
                drop(writer);
                (name, None)
            }
            SinkKind::Kafka {
                mut producer,
                topic,
                ..
            } => {
                let stats = producer
                    .flush()
                    .await
                    .with_context(|| format!("waiting for {topic} acknowledgements"))?;
                (format!("kafka topic {topic}"), Some(stats))
            }
        };
        Ok(SinkSummary {
            destination,
            records: self.records,
            bytes: self.bytes,
            delivered,
        })
    }
}

fn open_lines(path: &Path) -> Result<Box<dyn Write + Send>> {
    if path == Path::new("-") {
        return Ok(Box::new(BufWriter::new(std::io::stdout())));
    }
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let writer = BufWriter::with_capacity(1 << 20, file);
    if path.extension().is_some_and(|e| e == "gz") {
        // GzEncoder writes its trailer on drop; finish() flushes before dropping.
        Ok(Box::new(GzEncoder::new(
            writer,
            flate2::Compression::fast(),
        )))
    } else {
        Ok(Box::new(writer))
    }
}

/// Spaces sends so that the average rate stays at the target.
struct Pacer {
    per_record: Option<Duration>,
    start: Instant,
    sent: u32,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        Self {
            per_record: (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate)),
            start: Instant::now(),
            sent: 0,
        }
    }

    async fn pace(&mut self) {
        let Some(per_record) = self.per_record else {
            return;
        };
        self.sent = self.sent.saturating_add(1);
        // Checking every 64 records keeps timer overhead off the per-record path.
        if self.sent.is_multiple_of(64) {
            tokio::time::sleep_until(self.start + per_record * self.sent).await;
        }
    }
}

/// The producing side of [`pump`]: hands keyed records over in batches.
pub(crate) struct Emitter {
    tx: mpsc::Sender<Vec<(String, Vec<u8>)>>,
    batch: Vec<(String, Vec<u8>)>,
}

impl Emitter {
    /// Queues one record. Returns false when the sink has gone (error or shutdown): stop.
    pub(crate) fn emit(&mut self, key: String, value: Vec<u8>) -> bool {
        self.batch.push((key, value));
        if self.batch.len() >= BATCH {
            return self.flush();
        }
        true
    }

    fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.tx.blocking_send(batch).is_ok()
    }
}

/// How a pump ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PumpEnd {
    /// The producer ran out of records.
    Finished,
    /// Ctrl-C / SIGTERM: the producer was stopped; everything handed over was written.
    Interrupted,
}

/// Runs `produce` on a blocking thread and writes what it emits to `sink`.
pub(crate) async fn pump<R: Send + 'static>(
    sink: &mut Sink,
    progress: &ProgressBar,
    produce: impl FnOnce(&mut Emitter) -> R + Send + 'static,
) -> Result<(R, PumpEnd)> {
    let (tx, mut rx) = mpsc::channel(CHANNEL_BATCHES);
    let producer = tokio::task::spawn_blocking(move || {
        let mut emitter = Emitter {
            tx,
            batch: Vec::with_capacity(BATCH),
        };
        let result = produce(&mut emitter);
        emitter.flush();
        result
    });
    let mut end = PumpEnd::Finished;
    let shutdown = crate::commands::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                for (key, value) in &batch {
                    sink.write(key, value).await?;
                }
                progress.inc(batch.len() as u64);
            }
            () = &mut shutdown => {
                tracing::warn!("interrupted: stopping the producer and flushing what was handed over");
                end = PumpEnd::Interrupted;
                // Refuse further batches (the producer stops at its next hand-over), then
                // write the ones already handed over.
                rx.close();
                while let Some(batch) = rx.recv().await {
                    for (key, value) in &batch {
                        sink.write(key, value).await?;
                    }
                    progress.inc(batch.len() as u64);
                }
                break;
            }
        }
    }
    drop(rx);
    let result = producer.await.context("the producing thread panicked")?;
    Ok((result, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Virtual time: the pacer must hold 6,400 records at 1,000/s to about 6.4 s, and an
    /// unpaced sink must not wait at all.
    #[tokio::test(start_paused = true)]
    async fn pacer_holds_the_target_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1_000.0);
        for _ in 0..6_400 {
            pacer.pace().await;
        }
        let elapsed = start.elapsed();
        assert!(
            (Duration::from_millis(6_390)..=Duration::from_millis(6_410)).contains(&elapsed),
            "{elapsed:?}"
        );

        let start = Instant::now();
        let mut unpaced = Pacer::new(0.0);
        for _ in 0..6_400 {
            unpaced.pace().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
