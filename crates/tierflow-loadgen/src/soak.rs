//! A live run as a time series (issue 8's soak): every `--sample-secs` the offered and
//! processed rates of the interval, the backlog, the memory of every process involved and the
//! interval's latency, written as CSV and summarised as "did memory and lag stay flat".
//!
//! Whose memory is whose: the pipeline runs **in this process**, so this process's RSS
//! (`/proc/self/status` `VmRSS`) is the pipeline's plus the load generator's producer and
//! latency reader (their librdkafka queues are bounded). Redis is measured by `INFO memory`
//! and the broker, when its pid is known, by its own `VmRSS`, each in its own column: a broker
//! keeping every record in memory grows by design and must not be read as tierflow's growth.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::measure::RedisMemory;

/// Which part of the run a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    /// The producer offers load; the summary is computed over these samples.
    Produce,
    /// Production ended; the pipeline works off what is left.
    Drain,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Produce => "produce",
            Self::Drain => "drain",
        }
    }
}

/// What the load generator can see of the pipeline at one instant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Events handed to the producer so far.
    pub(crate) offered: u64,
    /// Events whose batch the pipeline completed (outputs acknowledged, state stored, offsets
    /// committed): `Health::records`.
    pub(crate) processed: u64,
}

/// What lives outside the load generator's counters, read at the sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct External {
    pub(crate) redis: RedisMemory,
    /// Sum over partitions of the pipeline's `tierflow_consumer_lag` gauge (librdkafka
    /// statistics: high watermark − committed offset, refreshed every 5 s).
    pub(crate) consumer_lag_gauge: Option<u64>,
}

/// One row of the series.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    pub(crate) phase: Phase,
    /// Seconds since production started.
    pub(crate) elapsed_secs: f64,
    pub(crate) offered_total: u64,
    pub(crate) processed_total: u64,
    /// Rates over the interval since the previous sample.
    pub(crate) offered_per_sec: f64,
    pub(crate) processed_per_sec: f64,
    /// Offered − processed: events handed to the producer the pipeline has not completed (this
    /// includes the few milliseconds of records still in the producer's queue).
    pub(crate) lag_events: u64,
    pub(crate) consumer_lag_gauge: Option<u64>,
    /// This process (pipeline + producer + latency reader), MB of `VmRSS`.
    pub(crate) rss_mb: f64,
    pub(crate) broker_rss_mb: Option<f64>,
    pub(crate) redis_used_memory_mb: f64,
    pub(crate) redis_rss_mb: f64,
    pub(crate) redis_keys: u64,
    /// Event time → `user_score` seen, over the records the reader saw in the interval.
    pub(crate) latency_samples: u64,
    pub(crate) latency_p50_ms: Option<f64>,
    pub(crate) latency_p99_ms: Option<f64>,
    pub(crate) load_average: f64,
}

/// Takes a sample every `every`, keeps the series and appends each row to the CSV as it is
/// taken (a run that dies half-way still leaves its series).
#[derive(Debug)]
pub(crate) struct Sampler {
    csv: (PathBuf, std::fs::File),
    every: Duration,
    started: Instant,
    next: Instant,
    last: (Instant, Progress),
    broker_pid: Option<u32>,
    samples: Vec<Sample>,
}

impl Sampler {
    /// Starts the clock (call when production starts) and writes the CSV header.
    pub(crate) fn start(every: Duration, broker_pid: Option<u32>, csv: &Path) -> Result<Self> {
        let mut file =
            std::fs::File::create(csv).with_context(|| format!("creating {}", csv.display()))?;
        file.write_all(CSV_HEADER.as_bytes())
            .with_context(|| format!("writing {}", csv.display()))?;
        let now = Instant::now();
        Ok(Self {
            csv: (csv.to_owned(), file),
            every,
            started: now,
            next: now + every,
            last: (
                now,
                Progress {
                    offered: 0,
                    processed: 0,
                },
            ),
            broker_pid,
            samples: Vec::new(),
        })
    }

    pub(crate) fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// Records one row; `latency` holds the latencies (µs) the reader saw in the interval.
    pub(crate) fn record(
        &mut self,
        phase: Phase,
        progress: Progress,
        external: External,
        latency: &Histogram<u64>,
    ) -> Result<()> {
        let now = Instant::now();
        let secs = now.duration_since(self.last.0).as_secs_f64().max(1e-3);
        let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / secs;
        let quantile =
            |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q) as f64 / 1_000.0);
        let sample = Sample {
            phase,
            elapsed_secs: now.duration_since(self.started).as_secs_f64(),
            offered_total: progress.offered,
            processed_total: progress.processed,
            offered_per_sec: rate(progress.offered, self.last.1.offered),
            processed_per_sec: rate(progress.processed, self.last.1.processed),
            lag_events: progress.offered.saturating_sub(progress.processed),
            consumer_lag_gauge: external.consumer_lag_gauge,
            rss_mb: rss_bytes("/proc/self/status").map_or(0.0, mb),
            broker_rss_mb: self
                .broker_pid
                .and_then(|pid| rss_bytes(&format!("/proc/{pid}/status")))
                .map(mb),
            redis_used_memory_mb: mb(external.redis.used_memory),
            redis_rss_mb: mb(external.redis.used_memory_rss),
            redis_keys: external.redis.keys,
            latency_samples: latency.len(),
            latency_p50_ms: quantile(0.50),
            latency_p99_ms: quantile(0.99),
            load_average: crate::measure::load_average(),
        };
        let (path, file) = &mut self.csv;
        file.write_all(csv_row(&sample).as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        self.samples.push(sample);
        self.last = (now, progress);
        // The next sample is due one interval after this one, not after the missed one: a
        // slow sample must not cause a burst of short intervals.
        self.next = now + self.every;
        Ok(())
    }

    pub(crate) fn samples(&self) -> &[Sample] {
        &self.samples
    }
}

const CSV_HEADER: &str = "phase,elapsed_secs,offered_total,processed_total,offered_per_sec,\
processed_per_sec,lag_events,consumer_lag_gauge,rss_mb,broker_rss_mb,redis_used_memory_mb,\
redis_rss_mb,redis_keys,latency_samples,latency_p50_ms,latency_p99_ms,load_average\n";

/// One CSV row (`CSV_HEADER`'s columns), empty cells where a value is unknown.
fn csv_row(s: &Sample) -> String {
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
    format!(
        "{},{:.1},{},{},{:.0},{:.0},{},{},{:.1},{},{:.1},{:.1},{},{},{},{},{:.2}\n",
        s.phase.as_str(),
        s.elapsed_secs,
        s.offered_total,
        s.processed_total,
        s.offered_per_sec,
        s.processed_per_sec,
        s.lag_events,
        s.consumer_lag_gauge
            .map_or(String::new(), |v| v.to_string()),
        s.rss_mb,
        cell(s.broker_rss_mb),
        s.redis_used_memory_mb,
        s.redis_rss_mb,
        s.redis_keys,
        s.latency_samples,
        cell(s.latency_p50_ms),
        cell(s.latency_p99_ms),
        s.load_average,
    )
}

/// Did memory and lag stay flat? Computed over the production samples; the second half of
/// production is the steady state (the first half holds the warm-up: the group join, Redis
/// filling with new users, allocator pools growing).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SoakSummary {
    pub(crate) series: String,
    pub(crate) plot: String,
    pub(crate) sample_secs: u64,
    pub(crate) samples: usize,
    /// Where the steady state starts (half of the production time).
    pub(crate) steady_from_secs: f64,
    /// This process's RSS (pipeline included): first sample, first steady-state sample, last
    /// production sample, and the largest.
    pub(crate) rss_first_mb: f64,
    pub(crate) rss_steady_start_mb: f64,
    pub(crate) rss_end_mb: f64,
    pub(crate) rss_max_mb: f64,
    /// Least-squares slope of RSS over the steady-state samples.
    pub(crate) rss_slope_mb_per_min: f64,
    pub(crate) redis_used_memory_steady_start_mb: f64,
    pub(crate) redis_used_memory_end_mb: f64,
    pub(crate) redis_used_memory_slope_mb_per_min: f64,
    /// The broker's RSS slope over the steady state (only with its pid).
    pub(crate) broker_rss_slope_mb_per_min: Option<f64>,
    pub(crate) lag_max_events: u64,
    /// Lag at the last production sample.
    pub(crate) lag_final_events: u64,
    pub(crate) lag_slope_events_per_min: f64,
    /// The verdict's bound: `LAG_BOUND_BATCHES` × `batch_max_events`.
    pub(crate) lag_bound_events: u64,
    /// Verdict: the final lag is within the bound (the pipeline keeps up; a backlog that grew
    /// for the whole run ends far above it).
    pub(crate) lag_bounded: bool,
    pub(crate) processed_per_sec_steady: f64,
    /// The worst interval p99 in the steady state.
    pub(crate) latency_p99_max_ms: Option<f64>,
}

/// A run keeps up if its final backlog is under this many full batches. The pipeline holds
/// about two batches in flight (one loading, one being made durable) and each waits up to a
/// batch window to fill: a run that keeps up sits below ~3 batches; one that falls behind
/// grows past any fixed bound.
pub(crate) const LAG_BOUND_BATCHES: u64 = 4;

pub(crate) fn summarise(
    samples: &[Sample],
    sample_secs: u64,
    batch_max_events: usize,
    (series, plot): (&Path, &Path),
) -> Option<SoakSummary> {
    let produce: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.phase == Phase::Produce)
        .collect();
    let (first, last) = (produce.first()?, produce.last()?);
    let steady_from_secs = last.elapsed_secs / 2.0;
    let steady: Vec<&Sample> = produce
        .iter()
        .copied()
        .filter(|s| s.elapsed_secs >= steady_from_secs)
        .collect();
    let steady_start = steady.first()?;
    let per_min = |value: fn(&Sample) -> Option<f64>| {
        let points: Vec<(f64, f64)> = steady
            .iter()
            .filter_map(|s| value(s).map(|v| (s.elapsed_secs / 60.0, v)))
            .collect();
        least_squares_slope(&points)
    };
    let lag_bound_events = LAG_BOUND_BATCHES * batch_max_events as u64;
    let steady_secs = last.elapsed_secs - steady_start.elapsed_secs;
    Some(SoakSummary {
        series: series.display().to_string(),
        plot: plot.display().to_string(),
        sample_secs,
        samples: samples.len(),
        steady_from_secs,
        rss_first_mb: first.rss_mb,
        rss_steady_start_mb: steady_start.rss_mb,
        rss_end_mb: last.rss_mb,
        rss_max_mb: produce.iter().map(|s| s.rss_mb).fold(0.0, f64::max),
        rss_slope_mb_per_min: per_min(|s| Some(s.rss_mb)).unwrap_or(0.0),
        redis_used_memory_steady_start_mb: steady_start.redis_used_memory_mb,
        redis_used_memory_end_mb: last.redis_used_memory_mb,
        redis_used_memory_slope_mb_per_min: per_min(|s| Some(s.redis_used_memory_mb))
            .unwrap_or(0.0),
        broker_rss_slope_mb_per_min: per_min(|s| s.broker_rss_mb),
        lag_max_events: produce.iter().map(|s| s.lag_events).max().unwrap_or(0),
        lag_final_events: last.lag_events,
        lag_slope_events_per_min: per_min(|s| Some(s.lag_events as f64)).unwrap_or(0.0),
        lag_bound_events,
        lag_bounded: last.lag_events <= lag_bound_events,
        processed_per_sec_steady: if steady_secs > 0.0 {
            (last.processed_total - steady_start.processed_total) as f64 / steady_secs
        } else {
            0.0
        },
        latency_p99_max_ms: steady
            .iter()
            .filter_map(|s| s.latency_p99_ms)
            .reduce(f64::max),
    })
}

/// The slope of the least-squares line through `points`; `None` with fewer than two distinct
/// x values.
pub(crate) fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// `VmRSS` of a `/proc/…/status` file, in bytes.
fn rss_bytes(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1_024)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Sum of the pipeline's `tierflow_consumer_lag` gauge over the partitions of `topic`, from
/// its Prometheus text; `None` before librdkafka's first statistics.
pub(crate) fn consumer_lag_gauge(text: &str, metric: &str, topic: &str) -> Option<u64> {
    let wanted = format!("topic=\"{topic}\"");
    let values: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&wanted))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_slopes() {
        let check = |points: &[(f64, f64)], expected: Option<f64>| {
            let got = least_squares_slope(points);
            match (got, expected) {
                (Some(g), Some(e)) => assert!((g - e).abs() < 1e-9, "{points:?}: {g} != {e}"),
                _ => assert_eq!(got, expected, "{points:?}"),
            }
        };
        check(&[], None);
        check(&[(1.0, 5.0)], None);
        check(&[(1.0, 5.0), (1.0, 7.0)], None);
        check(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)], Some(2.0));
        check(&[(0.0, 10.0), (1.0, 10.0), (2.0, 10.0)], Some(0.0));
        // Noise around a flat line: slope of the fit, not of the endpoints.
        check(
            &[(0.0, 1.0), (1.0, 0.0), (2.0, 1.0), (3.0, 0.0)],
            Some(-0.2),
        );
    }

    #[test]
    fn reads_own_rss() {
        assert!(rss_bytes("/proc/self/status").is_some_and(|b| b > 0));
        assert_eq!(rss_bytes("/proc/self/no-such-file"), None);
    }

    #[test]
    fn sums_the_consumer_lag_gauge_of_one_topic() {
        let text = "\
# TYPE tierflow_consumer_lag gauge
tierflow_consumer_lag{topic=\"a.clickstream\",partition=\"0\"} 10
tierflow_consumer_lag{topic=\"a.clickstream\",partition=\"1\"} 5
tierflow_consumer_lag{topic=\"a.user_score\",partition=\"0\"} 99
";
        assert_eq!(
            consumer_lag_gauge(text, "tierflow_consumer_lag", "a.clickstream"),
            Some(15)
        );
        assert_eq!(
            consumer_lag_gauge(text, "tierflow_consumer_lag", "b.clickstream"),
            None
        );
    }

    fn sample(phase: Phase, minute: f64, rss_mb: f64, lag_events: u64) -> Sample {
        Sample {
            phase,
            elapsed_secs: minute * 60.0,
            offered_total: (minute * 60_000.0) as u64,
            processed_total: (minute * 60_000.0) as u64 - lag_events,
            offered_per_sec: 1_000.0,
            processed_per_sec: 1_000.0,
            lag_events,
            consumer_lag_gauge: None,
            rss_mb,
            broker_rss_mb: None,
            redis_used_memory_mb: 100.0,
            redis_rss_mb: 110.0,
            redis_keys: 0,
            latency_samples: 0,
            latency_p50_ms: None,
            latency_p99_ms: None,
            load_average: 0.0,
        }
    }

    #[test]
    fn csv_rows_match_the_header() {
        let row = csv_row(&sample(Phase::Drain, 0.5, 12.34, 7));
        assert_eq!(
            row,
            "drain,30.0,30000,29993,1000,1000,7,,12.3,,100.0,110.0,0,0,,,0.00\n"
        );
        assert_eq!(row.split(',').count(), CSV_HEADER.split(',').count());
    }

    #[test]
    fn summary_uses_the_second_half_of_production() {
        // Warm-up growth in the first half, flat afterwards; the drain sample is ignored.
        let samples = [
            sample(Phase::Produce, 1.0, 100.0, 500),
            sample(Phase::Produce, 2.0, 300.0, 900),
            sample(Phase::Produce, 3.0, 400.0, 800),
            sample(Phase::Produce, 4.0, 400.0, 700),
            sample(Phase::Drain, 5.0, 900.0, 0),
        ];
        let s = summarise(&samples, 60, 100, (Path::new("s.csv"), Path::new("s.svg")))
            .expect("a summary");
        assert_eq!(s.steady_from_secs, 120.0);
        assert_eq!(s.rss_first_mb, 100.0);
        assert_eq!(s.rss_steady_start_mb, 300.0);
        assert_eq!(s.rss_end_mb, 400.0);
        assert_eq!(s.rss_max_mb, 400.0);
        assert_eq!(s.lag_max_events, 900);
        assert_eq!(s.lag_final_events, 700);
        assert_eq!(s.lag_bound_events, 400);
        assert!(!s.lag_bounded);
        assert!(s.rss_slope_mb_per_min > 0.0);
        assert!(s.lag_slope_events_per_min < 0.0);
        assert_eq!(s.broker_rss_slope_mb_per_min, None);
    }
}
