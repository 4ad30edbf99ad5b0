//! The live view's aggregate: what the output topics say (group-wide: every replica's tier
//! changes, triggers and outcomes) and what this process's metrics say (throughput, batch
//! latency, lag), kept in bounded structures so a view left open for weeks stays small.
//! No I/O: records and metric texts are fed in, with the time as a value.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tierflow_events::{CampaignArm, CampaignOutcome, CampaignTriggered, EventTime, TierChanged};
use tierflow_pipeline::telemetry;

use super::prometheus::{Buckets, Exposition};

/// One point a second for ten minutes.
pub(crate) const HISTORY_POINTS: usize = 600;
/// Latest tier changes and triggers kept for display.
pub(crate) const LATEST: usize = 50;
/// Campaigns counted by name; any further ones are counted under [`OTHER_CAMPAIGNS`].
pub(crate) const MAX_CAMPAIGNS: usize = 64;
pub(crate) const OTHER_CAMPAIGNS: &str = "(other campaigns)";
/// Idempotency keys remembered to skip records published twice (outputs are at-least-once).
pub(crate) const DEDUPE_KEYS: usize = 20_000;

/// The aggregate shared by the topic reader, the metrics sampler, the web page and the
/// terminal dashboard. Every lock is held for a short, non-blocking update or copy.
#[derive(Debug, Clone)]
pub(crate) struct LiveFeed(Arc<Mutex<Live>>);

impl LiveFeed {
    /// `source` says what is shown, e.g. `tierflow demo` or `tierflow run (group g)`.
    pub(crate) fn new(source: impl Into<String>, started: EventTime) -> Self {
        Self(Arc::new(Mutex::new(Live::new(source.into(), started))))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Live> {
        // A panic while holding the lock leaves counters, not invariants, behind.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.lock().snapshot()
    }
}

/// Counters of the output records read, before deduplication.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct RecordsRead {
    pub(crate) tier_changed: u64,
    pub(crate) campaign_triggered: u64,
    pub(crate) campaign_control: u64,
    pub(crate) campaign_outcome: u64,
    /// Records whose idempotency key was seen shortly before (skipped).
    pub(crate) duplicates: u64,
    /// Records that could not be decoded (skipped).
    pub(crate) undecodable: u64,
}

/// Sent, held-out and attributed purchases of one campaign (from the topics), and what this
/// process's governance suppressed (from its metrics).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct CampaignCounts {
    pub(crate) sent: u64,
    pub(crate) held_out: u64,
    pub(crate) outcomes_treated: u64,
    pub(crate) outcomes_control: u64,
    pub(crate) revenue_treated: f64,
    pub(crate) revenue_control: f64,
    /// Fired but stopped by governance (cooldown, caps, budget, opt-out, priority) in this
    /// process; `tierflow_campaign_decisions_total` minus send and control_holdout.
    pub(crate) suppressed_here: u64,
}

/// A tier change as listed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct ChangeView {
    pub(crate) processing_time: EventTime,
    pub(crate) event_time: EventTime,
    pub(crate) user_id: String,
    pub(crate) from_tier: Option<u8>,
    pub(crate) to_tier: u8,
    pub(crate) churn_risk: f32,
    pub(crate) expected_value: f64,
    pub(crate) causing_event_id: String,
}

/// A trigger as listed: sent (`campaign_triggered`) or held out (`campaign_control`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct TriggerView {
    pub(crate) processing_time: EventTime,
    pub(crate) event_time: EventTime,
    pub(crate) user_id: String,
    pub(crate) campaign: String,
    pub(crate) rule: String,
    pub(crate) tier: u8,
    pub(crate) arm: CampaignArm,
}

/// One second of this process's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Point {
    /// Wall clock, Unix milliseconds.
    pub(crate) t_ms: i64,
    pub(crate) events_per_sec: f64,
    pub(crate) outputs_per_sec: f64,
    /// Batch latency quantiles of the batches finished in this interval; `None` when none did.
    pub(crate) batch_p50_ms: Option<f64>,
    pub(crate) batch_p99_ms: Option<f64>,
    /// Consumer lag summed over partitions; `None` before librdkafka's first statistics.
    pub(crate) lag: Option<f64>,
}

/// The previous metrics reading, to turn counters into rates.
#[derive(Debug, Clone)]
struct Reading {
    t_ms: i64,
    events_in: f64,
    records_out: f64,
    batch: Buckets,
}

/// Totals from the latest metrics reading.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Totals {
    pub(crate) events_in: f64,
    pub(crate) records_out: f64,
    pub(crate) dead_letters: f64,
    pub(crate) batches: f64,
}

/// Recently seen idempotency keys, oldest first.
#[derive(Debug, Default)]
struct Dedupe {
    order: VecDeque<String>,
    seen: HashSet<String>,
}

impl Dedupe {
    /// `true` when `key` is new (and remembers it).
    fn first_time(&mut self, key: &str) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        if self.order.len() >= DEDUPE_KEYS
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(key.to_owned());
        self.seen.insert(key.to_owned());
        true
    }
}

/// The state behind a [`LiveFeed`].
#[derive(Debug)]
pub(crate) struct Live {
    source: String,
    started: EventTime,
    /// What the view is doing, e.g. "demo finished" (shown by the page and the dashboard).
    status: String,
    reader: String,
    points: VecDeque<Point>,
    previous: Option<Reading>,
    totals: Totals,
    metrics_seen: bool,
    flow: BTreeMap<(Option<u8>, u8), u64>,
    net_users: BTreeMap<u8, i64>,
    campaigns: BTreeMap<String, CampaignCounts>,
    latest_changes: VecDeque<ChangeView>,
    latest_triggers: VecDeque<TriggerView>,
    records: RecordsRead,
    dedupe: Dedupe,
}

impl Live {
    fn new(source: String, started: EventTime) -> Self {
        Self {
            source,
            started,
            status: "running".to_owned(),
            reader: "not started".to_owned(),
            points: VecDeque::with_capacity(HISTORY_POINTS),
            previous: None,
            totals: Totals::default(),
            metrics_seen: false,
            flow: BTreeMap::new(),
            net_users: BTreeMap::new(),
            campaigns: BTreeMap::new(),
            latest_changes: VecDeque::with_capacity(LATEST),
            latest_triggers: VecDeque::with_capacity(LATEST),
            records: RecordsRead::default(),
            dedupe: Dedupe::default(),
        }
    }

    pub(crate) fn set_status(&mut self, status: impl Into<String>) {
        self.status = status.into();
    }

    /// What the topic reader is doing (or why it is not).
    pub(crate) fn set_reader(&mut self, reader: impl Into<String>) {
        self.reader = reader.into();
    }

    pub(crate) fn undecodable(&mut self) {
        self.records.undecodable += 1;
    }

    pub(crate) fn tier_changed(&mut self, change: &TierChanged) {
        self.records.tier_changed += 1;
        if !self.dedupe.first_time(&change.idempotency_key) {
            self.records.duplicates += 1;
            return;
        }
        *self
            .flow
            .entry((change.from_tier, change.to_tier))
            .or_default() += 1;
        if let Some(from) = change.from_tier {
            *self.net_users.entry(from).or_default() -= 1;
        }
        *self.net_users.entry(change.to_tier).or_default() += 1;
        push_bounded(
            &mut self.latest_changes,
            ChangeView {
                processing_time: change.processing_time,
                event_time: change.event_time,
                user_id: change.user_id.clone(),
                from_tier: change.from_tier,
                to_tier: change.to_tier,
                churn_risk: change.scores.churn_risk,
                expected_value: change.scores.expected_value,
                causing_event_id: change.causing_event_id.clone(),
            },
        );
    }

    /// A trigger from `campaign_triggered` (treated) or `campaign_control` (control).
    pub(crate) fn trigger(&mut self, trigger: &CampaignTriggered, arm: CampaignArm) {
        match arm {
            CampaignArm::Treated => self.records.campaign_triggered += 1,
            CampaignArm::Control => self.records.campaign_control += 1,
        }
        if !self.dedupe.first_time(&trigger.idempotency_key) {
            self.records.duplicates += 1;
            return;
        }
        let counts = self.campaign(&trigger.campaign);
        match arm {
            CampaignArm::Treated => counts.sent += 1,
            CampaignArm::Control => counts.held_out += 1,
        }
        push_bounded(
            &mut self.latest_triggers,
            TriggerView {
                processing_time: trigger.processing_time,
                event_time: trigger.event_time,
                user_id: trigger.user_id.clone(),
                campaign: trigger.campaign.clone(),
                rule: trigger.rule.clone(),
                tier: trigger.tier,
                arm,
            },
        );
    }

    pub(crate) fn outcome(&mut self, outcome: &CampaignOutcome) {
        self.records.campaign_outcome += 1;
        if !self.dedupe.first_time(&outcome.idempotency_key) {
            self.records.duplicates += 1;
            return;
        }
        let counts = self.campaign(&outcome.campaign);
        match outcome.arm {
            CampaignArm::Treated => {
                counts.outcomes_treated += 1;
                counts.revenue_treated += outcome.revenue;
            }
            CampaignArm::Control => {
                counts.outcomes_control += 1;
                counts.revenue_control += outcome.revenue;
            }
        }
    }

    fn campaign(&mut self, name: &str) -> &mut CampaignCounts {
        let name = if self.campaigns.contains_key(name) || self.campaigns.len() < MAX_CAMPAIGNS {
            name
        } else {
            OTHER_CAMPAIGNS
        };
        self.campaigns.entry(name.to_owned()).or_default()
    }

    /// Takes one reading of this process's metrics (`PrometheusHandle::render`) at `t_ms`
    /// (wall clock, Unix ms): a point of the time series from the second reading on.
    pub(crate) fn sample_metrics(&mut self, t_ms: i64, text: &str) {
        let e = Exposition::parse(text);
        let events_in = e.sum(telemetry::EVENTS_IN, &[]).unwrap_or(0.0);
        let records_out = e.sum(telemetry::RECORDS_OUT, &[]).unwrap_or(0.0);
        let batch = e.histogram(telemetry::STAGE_SECONDS, &[("stage", "batch")]);
        self.metrics_seen = true;
        self.totals = Totals {
            events_in,
            records_out,
            dead_letters: e.sum(telemetry::DEAD_LETTERS, &[]).unwrap_or(0.0),
            batches: batch.count(),
        };
        // Governance outcomes of this process, per campaign.
        let mut suppressed: BTreeMap<String, f64> = BTreeMap::new();
        for s in e.matching(telemetry::CAMPAIGN_DECISIONS, &[]) {
            let (Some(campaign), Some(outcome)) =
                (s.labels.get("campaign"), s.labels.get("outcome"))
            else {
                continue;
            };
            if outcome != "send" && outcome != "control_holdout" && outcome != "retired" {
                *suppressed.entry(campaign.clone()).or_default() += s.value;
            }
        }
        for counts in self.campaigns.values_mut() {
            counts.suppressed_here = 0;
        }
        for (campaign, n) in suppressed {
            self.campaign(&campaign).suppressed_here += n as u64;
        }
        let lag = e.sum(telemetry::CONSUMER_LAG, &[]);
        let reading = Reading {
            t_ms,
            events_in,
            records_out,
            batch,
        };
        if let Some(previous) = self.previous.take()
            && t_ms > previous.t_ms
        {
            let seconds = (t_ms - previous.t_ms) as f64 / 1000.0;
            let batches = reading.batch.since(&previous.batch);
            let point = Point {
                t_ms,
                events_per_sec: (events_in - previous.events_in).max(0.0) / seconds,
                outputs_per_sec: (records_out - previous.records_out).max(0.0) / seconds,
                batch_p50_ms: batches.quantile(0.5).map(|s| s * 1000.0),
                batch_p99_ms: batches.quantile(0.99).map(|s| s * 1000.0),
                lag,
            };
            if self.points.len() == HISTORY_POINTS {
                self.points.pop_front();
            }
            self.points.push_back(point);
        }
        self.previous = Some(reading);
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let tiers = self
            .flow
            .keys()
            .flat_map(|(from, to)| from.iter().copied().chain([*to]))
            .max()
            .map_or(0, |t| t as usize + 1);
        let series = Series {
            t_ms: self.points.iter().map(|p| p.t_ms).collect(),
            events_per_sec: self.points.iter().map(|p| p.events_per_sec).collect(),
            outputs_per_sec: self.points.iter().map(|p| p.outputs_per_sec).collect(),
            batch_p50_ms: self.points.iter().map(|p| p.batch_p50_ms).collect(),
            batch_p99_ms: self.points.iter().map(|p| p.batch_p99_ms).collect(),
            lag: self.points.iter().map(|p| p.lag).collect(),
        };
        Snapshot {
            source: self.source.clone(),
            started: self.started,
            status: self.status.clone(),
            reader: self.reader.clone(),
            metrics: self.metrics_seen,
            current: self.points.back().copied(),
            totals: self.totals.clone(),
            series,
            tiers,
            net_users: (0..tiers)
                .map(|t| self.net_users.get(&(t as u8)).copied().unwrap_or(0))
                .collect(),
            flow: self
                .flow
                .iter()
                .map(|((from, to), users)| Flow {
                    from: *from,
                    to: *to,
                    users: *users,
                })
                .collect(),
            campaigns: self
                .campaigns
                .iter()
                .map(|(name, counts)| CampaignRow {
                    campaign: name.clone(),
                    counts: counts.clone(),
                })
                .collect(),
            latest_tier_changes: self.latest_changes.iter().rev().cloned().collect(),
            latest_triggers: self.latest_triggers.iter().rev().cloned().collect(),
            records: self.records.clone(),
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == LATEST {
        queue.pop_front();
    }
    queue.push_back(item);
}

/// Columns of the time series (one entry per point, oldest first).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Series {
    pub(crate) t_ms: Vec<i64>,
    pub(crate) events_per_sec: Vec<f64>,
    pub(crate) outputs_per_sec: Vec<f64>,
    pub(crate) batch_p50_ms: Vec<Option<f64>>,
    pub(crate) batch_p99_ms: Vec<Option<f64>>,
    pub(crate) lag: Vec<Option<f64>>,
}

/// Users moved from one tier (`None`: no tier before) to another.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Flow {
    pub(crate) from: Option<u8>,
    pub(crate) to: u8,
    pub(crate) users: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct CampaignRow {
    pub(crate) campaign: String,
    #[serde(flatten)]
    pub(crate) counts: CampaignCounts,
}

/// What `/api/live` answers and the dashboard draws.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Snapshot {
    pub(crate) source: String,
    pub(crate) started: EventTime,
    pub(crate) status: String,
    pub(crate) reader: String,
    /// Whether this process's metrics are read (false: no recorder installed).
    pub(crate) metrics: bool,
    /// The newest point of the series.
    pub(crate) current: Option<Point>,
    pub(crate) totals: Totals,
    pub(crate) series: Series,
    /// Tiers seen so far (highest tier + 1).
    pub(crate) tiers: usize,
    /// Net users moved into each tier by the tier changes read (the tier distribution when the
    /// topic was read from its beginning).
    pub(crate) net_users: Vec<i64>,
    pub(crate) flow: Vec<Flow>,
    pub(crate) campaigns: Vec<CampaignRow>,
    /// Newest first.
    pub(crate) latest_tier_changes: Vec<ChangeView>,
    /// Newest first.
    pub(crate) latest_triggers: Vec<TriggerView>,
    pub(crate) records: RecordsRead,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tierflow_events::Scores;
    use tierflow_events::output::OUTPUT_SCHEMA_VERSION;

    pub(crate) fn change(user: &str, from: Option<u8>, to: u8, key: &str) -> TierChanged {
        TierChanged {
            schema_version: OUTPUT_SCHEMA_VERSION,
            idempotency_key: key.to_owned(),
            user_id: user.to_owned(),
            from_tier: from,
            to_tier: to,
            scores: Scores {
                tier_probabilities: vec![0.2; 5],
                churn_risk: 0.25,
                expected_value: 42.5,
            },
            model_version: "m1-test".to_owned(),
            reason_codes: vec![],
            causing_event_id: format!("e-{key}"),
            event_time: EventTime::from_unix_millis(1_000),
            processing_time: EventTime::from_unix_millis(2_000),
        }
    }

    pub(crate) fn trigger(user: &str, campaign: &str, key: &str) -> CampaignTriggered {
        CampaignTriggered {
            schema_version: OUTPUT_SCHEMA_VERSION,
            idempotency_key: key.to_owned(),
            campaign: campaign.to_owned(),
            user_id: user.to_owned(),
            rule: "rule".to_owned(),
            tier: 2,
            scores: Scores {
                tier_probabilities: vec![0.2; 5],
                churn_risk: 0.5,
                expected_value: 1.0,
            },
            model_version: "m1-test".to_owned(),
            causing_event_id: None,
            event_time: EventTime::from_unix_millis(1_000),
            expires_at: EventTime::from_unix_millis(9_000),
            processing_time: EventTime::from_unix_millis(2_000),
        }
    }

    fn outcome(campaign: &str, arm: CampaignArm, revenue: f64, key: &str) -> CampaignOutcome {
        CampaignOutcome {
            schema_version: OUTPUT_SCHEMA_VERSION,
            idempotency_key: key.to_owned(),
            user_id: "u1".to_owned(),
            campaign: campaign.to_owned(),
            arm,
            trigger_idempotency_key: "ct/x".to_owned(),
            fired_at: EventTime::from_unix_millis(1_000),
            purchase_event_id: "p1".to_owned(),
            purchased_at: EventTime::from_unix_millis(2_000),
            revenue,
            currency: None,
            delay_ms: 1_000,
        }
    }

    fn feed() -> LiveFeed {
        LiveFeed::new("test", EventTime::from_unix_millis(0))
    }

    /// A metrics text with `events` consumed and batch latency buckets (cumulative counts at
    /// 0.01 s, 0.1 s, 1 s, +Inf).
    pub(crate) fn metrics_text(events: u64, out: u64, buckets: [u64; 4], lag: u64) -> String {
        format!(
            "# TYPE tierflow_events_in_total counter\n\
             tierflow_events_in_total{{topic=\"clicks\"}} {events}\n\
             tierflow_records_out_total{{topic=\"scores\"}} {out}\n\
             tierflow_consumer_lag{{topic=\"clicks\",partition=\"0\"}} {lag}\n\
             tierflow_stage_seconds_bucket{{stage=\"batch\",le=\"0.01\"}} {}\n\
             tierflow_stage_seconds_bucket{{stage=\"batch\",le=\"0.1\"}} {}\n\
             tierflow_stage_seconds_bucket{{stage=\"batch\",le=\"1\"}} {}\n\
             tierflow_stage_seconds_bucket{{stage=\"batch\",le=\"+Inf\"}} {}\n\
             tierflow_stage_seconds_bucket{{stage=\"load\",le=\"+Inf\"}} 999\n\
             tierflow_campaign_decisions_total{{campaign=\"vip\",outcome=\"send\"}} 3\n\
             tierflow_campaign_decisions_total{{campaign=\"vip\",outcome=\"cooldown\"}} 2\n\
             tierflow_campaign_decisions_total{{campaign=\"vip\",outcome=\"daily_cap\"}} 1\n",
            buckets[0], buckets[1], buckets[2], buckets[3]
        )
    }

    #[test]
    fn tier_changes_build_the_flow_matrix_and_net_users() {
        let feed = feed();
        {
            let mut live = feed.lock();
            live.tier_changed(&change("a", None, 1, "k1"));
            live.tier_changed(&change("b", None, 1, "k2"));
            live.tier_changed(&change("a", Some(1), 3, "k3"));
            // Published twice (at-least-once): counted once.
            live.tier_changed(&change("a", Some(1), 3, "k3"));
            live.tier_changed(&change("c", Some(0), 1, "k4"));
        }
        let s = feed.snapshot();
        let flow: Vec<(Option<u8>, u8, u64)> =
            s.flow.iter().map(|f| (f.from, f.to, f.users)).collect();
        assert_eq!(flow, vec![(None, 1, 2), (Some(0), 1, 1), (Some(1), 3, 1)]);
        assert_eq!(s.tiers, 4);
        // Tier 0: one left; tier 1: two arrived new, one left, one came from 0; tier 3: one.
        assert_eq!(s.net_users, vec![-1, 2, 0, 1]);
        assert_eq!(s.records.tier_changed, 5);
        assert_eq!(s.records.duplicates, 1);
        assert_eq!(s.latest_tier_changes.len(), 4);
        assert_eq!(s.latest_tier_changes[0].user_id, "c", "newest first");
    }

    #[test]
    fn triggers_and_outcomes_count_per_campaign() {
        let feed = feed();
        {
            let mut live = feed.lock();
            live.trigger(&trigger("a", "vip", "t1"), CampaignArm::Treated);
            live.trigger(&trigger("b", "vip", "t2"), CampaignArm::Treated);
            live.trigger(&trigger("c", "vip", "t3"), CampaignArm::Control);
            live.trigger(&trigger("c", "vip", "t3"), CampaignArm::Control);
            live.trigger(&trigger("d", "cart", "t4"), CampaignArm::Treated);
            live.outcome(&outcome("vip", CampaignArm::Treated, 10.5, "o1"));
            live.outcome(&outcome("vip", CampaignArm::Control, 4.0, "o2"));
            live.outcome(&outcome("vip", CampaignArm::Treated, 1.5, "o3"));
        }
        let s = feed.snapshot();
        let vip = &s
            .campaigns
            .iter()
            .find(|c| c.campaign == "vip")
            .unwrap()
            .counts;
        assert_eq!(
            *vip,
            CampaignCounts {
                sent: 2,
                held_out: 1,
                outcomes_treated: 2,
                outcomes_control: 1,
                revenue_treated: 12.0,
                revenue_control: 4.0,
                suppressed_here: 0,
            }
        );
        let cart = &s
            .campaigns
            .iter()
            .find(|c| c.campaign == "cart")
            .unwrap()
            .counts;
        assert_eq!((cart.sent, cart.held_out), (1, 0));
        assert_eq!(s.latest_triggers.len(), 4);
        assert_eq!(s.latest_triggers[0].campaign, "cart");
        assert_eq!(s.records.campaign_control, 2);
        assert_eq!(s.records.duplicates, 1);
    }

    #[test]
    fn everything_kept_is_bounded() {
        let feed = feed();
        {
            let mut live = feed.lock();
            for i in 0..(LATEST as u64 * 3) {
                live.tier_changed(&change(&format!("u{i}"), Some(0), 1, &format!("k{i}")));
                live.trigger(
                    &trigger("u", &format!("campaign{i}"), &format!("t{i}")),
                    CampaignArm::Treated,
                );
            }
            for i in 0..(HISTORY_POINTS as u64 + 25) {
                live.sample_metrics(i as i64 * 1000, &metrics_text(i * 10, i, [0, 0, 0, 0], 0));
            }
            for i in 0..(DEDUPE_KEYS + 10) {
                live.dedupe.first_time(&format!("d{i}"));
            }
            assert_eq!(live.points.len(), HISTORY_POINTS);
            assert_eq!(live.dedupe.order.len(), DEDUPE_KEYS);
            assert_eq!(live.dedupe.seen.len(), DEDUPE_KEYS);
        }
        let s = feed.snapshot();
        assert_eq!(s.latest_tier_changes.len(), LATEST);
        assert_eq!(s.latest_triggers.len(), LATEST);
        assert_eq!(s.series.t_ms.len(), HISTORY_POINTS);
        // The oldest points were dropped: the series ends at the last reading.
        assert_eq!(
            *s.series.t_ms.last().unwrap(),
            (HISTORY_POINTS as i64 + 24) * 1000
        );
        assert_eq!(s.campaigns.len(), MAX_CAMPAIGNS + 1);
        let other = s
            .campaigns
            .iter()
            .find(|c| c.campaign == OTHER_CAMPAIGNS)
            .unwrap();
        assert_eq!(other.counts.sent, LATEST as u64 * 3 - MAX_CAMPAIGNS as u64);
    }

    #[test]
    fn metric_readings_become_rates_and_latency_quantiles() {
        let feed = feed();
        {
            let mut live = feed.lock();
            live.sample_metrics(10_000, &metrics_text(100, 10, [0, 0, 0, 0], 0));
            // 2 s later: 600 more events, 40 more outputs; 10 batches, 8 of them ≤ 10 ms,
            // 2 in (0.1, 1] s.
            live.sample_metrics(12_000, &metrics_text(700, 50, [8, 8, 10, 10], 42));
            // Nothing finished in the next second.
            live.sample_metrics(13_000, &metrics_text(700, 50, [8, 8, 10, 10], 40));
        }
        let s = feed.snapshot();
        assert_eq!(s.series.t_ms, vec![12_000, 13_000]);
        assert_eq!(s.series.events_per_sec, vec![300.0, 0.0]);
        assert_eq!(s.series.outputs_per_sec, vec![20.0, 0.0]);
        // p50: rank 5 of 10 in the first bucket [0, 10 ms] → 5 * 10/8 ms = 6.25 ms.
        let p50 = s.series.batch_p50_ms[0].unwrap();
        assert!((p50 - 6.25).abs() < 1e-9, "{p50}");
        // p99: rank 9.9 in (0.1, 1] s, 1.9 of its 2 → 100 + 900 * 0.95 ms.
        let p99 = s.series.batch_p99_ms[0].unwrap();
        assert!((p99 - 955.0).abs() < 1e-9, "{p99}");
        assert_eq!(s.series.batch_p50_ms[1], None);
        assert_eq!(s.series.lag, vec![Some(42.0), Some(40.0)]);
        assert_eq!(s.current.unwrap().lag, Some(40.0));
        assert_eq!(s.totals.events_in, 700.0);
        assert_eq!(s.totals.batches, 10.0);
        let vip = s.campaigns.iter().find(|c| c.campaign == "vip").unwrap();
        assert_eq!(vip.counts.suppressed_here, 3, "cooldown + daily_cap");
    }
}
