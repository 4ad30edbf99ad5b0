//! What every mode shares: the broker (given, or librdkafka's mock cluster), the machine's
//! description and load, Redis memory, latency summaries, the pipeline's stage histograms read
//! from its Prometheus text, and the progress bar.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tierflow_stream::{EmbeddedBroker, KafkaConfig, TopicSpec, ensure_topics};

/// The broker of a run; keeps the embedded one alive.
#[derive(Debug)]
pub(crate) struct Broker {
    pub(crate) kafka: KafkaConfig,
    embedded: Option<EmbeddedBroker>,
}

impl Broker {
    /// `embedded` starts librdkafka's mock cluster in process; anything else is a bootstrap list.
    pub(crate) fn connect(brokers: &str, properties: &[String]) -> Result<Self> {
        let (mut kafka, embedded) = if brokers == "embedded" {
            let embedded = EmbeddedBroker::start(1)?;
            (embedded.kafka_config(), Some(embedded))
        } else {
            (KafkaConfig::new(brokers), None)
        };
        kafka.client_id = "tierflow-loadgen".into();
        // A fresh group on a loopback broker: short timeouts make the join quick (BROKER-FACTS).
        kafka
            .properties
            .insert("session.timeout.ms".into(), "6000".into());
        kafka
            .properties
            .insert("heartbeat.interval.ms".into(), "500".into());
        for property in properties {
            let (key, value) = property
                .split_once('=')
                .with_context(|| format!("--kafka-property {property:?} is not KEY=VALUE"))?;
            kafka.properties.insert(key.into(), value.into());
        }
        Ok(Self { kafka, embedded })
    }

    pub(crate) fn kind(&self) -> &'static str {
        if self.embedded.is_some() {
            "librdkafka mock cluster (in process)"
        } else {
            "external"
        }
    }

    pub(crate) async fn create_topics(&self, specs: &[TopicSpec]) -> Result<()> {
        match &self.embedded {
            Some(embedded) => embedded.create_topics(specs)?,
            None => ensure_topics(&self.kafka, specs).await?,
        }
        Ok(())
    }
}

/// A name no earlier run used (topics, groups, key prefixes).
pub(crate) fn run_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench{:x}", nanos % 0xffff_ffff_ffff)
}

/// The machine as the report describes it, with its load average when the run ended.
pub(crate) fn machine() -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    serde_json::json!({
        "cpus": cpus,
        "cpu_model": model,
        "loadavg_at_end": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

/// The 1-minute load average now.
pub(crate) fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// A latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Latency {
    pub(crate) samples: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) mean_ms: f64,
}

impl Latency {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1_000.0;
        Self {
            samples: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            p999_ms: ms(histogram.value_at_quantile(0.999)),
            max_ms: ms(histogram.max()),
            mean_ms: histogram.mean() / 1_000.0,
        }
    }
}

/// One labelled Prometheus histogram: observations and their total.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Summed {
    pub(crate) count: f64,
    pub(crate) sum_secs: f64,
    pub(crate) mean_ms: f64,
}

/// `_sum` and `_count` of `metric` per value of `label`, from Prometheus text.
pub(crate) fn histogram_sums(text: &str, metric: &str, label: &str) -> BTreeMap<String, Summed> {
    let mut out: BTreeMap<String, Summed> = BTreeMap::new();
    for line in text.lines() {
        let (which, rest) = if let Some(rest) = line.strip_prefix(&format!("{metric}_sum")) {
            ("sum", rest)
        } else if let Some(rest) = line.strip_prefix(&format!("{metric}_count")) {
            ("count", rest)
        } else {
            continue;
        };
        let key = rest
            .split(&format!("{label}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("")
            .to_owned();
        let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let entry = out.entry(key).or_default();
        match which {
            "sum" => entry.sum_secs = value,
            _ => entry.count = value,
        }
    }
    for entry in out.values_mut() {
        if entry.count > 0.0 {
            entry.mean_ms = entry.sum_secs / entry.count * 1_000.0;
        }
    }
    out
}

/// `used_memory`, `used_memory_rss` and the number of keys of a Redis server.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RedisMemory {
    pub(crate) used_memory: u64,
    /// What the redis-server process holds (allocator fragmentation included).
    pub(crate) used_memory_rss: u64,
    pub(crate) keys: u64,
}

pub(crate) async fn redis_memory(
    connection: &mut redis::aio::MultiplexedConnection,
) -> Result<RedisMemory> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(connection)
        .await
        .context("INFO memory")?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name} in INFO"))
    };
    let used_memory = field("used_memory")?;
    let used_memory_rss = field("used_memory_rss")?;
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(connection)
        .await
        .context("DBSIZE")?;
    Ok(RedisMemory {
        used_memory,
        used_memory_rss,
        keys,
    })
}

/// Connects a plain multiplexed connection (for INFO, DBSIZE and the raw command mix).
pub(crate) async fn redis_connection(url: &str) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("redis url {url}"))?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// A spinner with a message, on stderr; hidden with `--quiet`.
pub(crate) fn progress(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("valid progress template"),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labelled_histogram_sums() {
        let text = "\
# TYPE tierflow_stage_seconds histogram
tierflow_stage_seconds_bucket{stage=\"load\",le=\"0.1\"} 3
tierflow_stage_seconds_sum{stage=\"load\"} 0.5
tierflow_stage_seconds_count{stage=\"load\"} 4
tierflow_stage_seconds_sum{stage=\"store\"} 1
tierflow_stage_seconds_count{stage=\"store\"} 2
tierflow_scoring_seconds_sum 0.25
tierflow_scoring_seconds_count 5
";
        let stages = histogram_sums(text, "tierflow_stage_seconds", "stage");
        assert_eq!(stages.len(), 2);
        assert_eq!(stages["load"].count, 4.0);
        assert_eq!(stages["load"].mean_ms, 125.0);
        assert_eq!(stages["store"].sum_secs, 1.0);
        let scoring = histogram_sums(text, "tierflow_scoring_seconds", "none");
        assert_eq!(scoring[""].count, 5.0);
    }
}
