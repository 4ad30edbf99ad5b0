//! Command-line interface: every command, flag and its help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::telemetry::LogFormat;

/// tierflow turns an e-commerce clickstream into real-time customer-value decisions:
/// value tiers, churn risk and expected spend per user, published to Kafka for ad bidders,
/// churn-intervention workers and campaign engines.
///
/// Configuration: defaults < --config FILE (TOML) < TIERFLOW_SECTION__KEY environment
/// variables (e.g. TIERFLOW_KAFKA__BROKERS=kafka:9092) < command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "tierflow",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    /// TOML configuration file ([kafka], [topics]; see README).
    #[arg(long, short = 'c', global = true, env = "TIERFLOW_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Kafka bootstrap servers; overrides kafka.brokers from the configuration.
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    pub(crate) brokers: Option<String>,

    /// burn CPU backend for the model; overrides model.backend from the configuration.
    #[arg(long, global = true, value_enum)]
    pub(crate) backend: Option<crate::config::Backend>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,

    /// More logging (-v debug, -vv trace). RUST_LOG, when set, wins.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the demo on embedded defaults: an in-process Kafka broker, synthetic users, and
    /// a consumer group reading them back, with dead letters for malformed records. --listen
    /// serves the live view's web page, --dashboard draws it in the terminal.
    Demo(DemoArgs),
    /// Generate a seeded synthetic clickstream (users with latent segments, real funnels,
    /// daily and weekly rhythm) to JSON lines or a Kafka topic.
    Generate(GenerateArgs),
    /// Import a real data set as clickstream events, to JSON lines or a Kafka topic.
    Import(ImportArgs),
    /// Build point-in-time training data from an event log: feature vectors at each cutoff
    /// from events at or before it, labelled with the following horizon's spend and orders.
    Features(FeaturesArgs),
    /// Train the value model on an event log: point-in-time rows at each cutoff, split by
    /// user, early stopping on validation loss; writes an artifact directory with weights,
    /// configs, normalisation, tier thresholds and a report against the classic baselines.
    Train(TrainArgs),
    /// Evaluate a model artifact on an event log against RFM, last-period spend and
    /// BG/NBD + Gamma-Gamma, on the same held-out users; writes report.json, report.md and
    /// plots.
    Evaluate(EvaluateArgs),
    /// Run the streaming pipeline: a member of the consumer group on the clickstream topic
    /// that keeps every user's windows in Redis, scores each update with the model, and
    /// publishes tier changes (with hysteresis), latest scores and dead letters. Offsets are
    /// committed only after outputs are acknowledged and state is stored; start more
    /// processes with the same group to scale out. Serves the live view (a web page at /),
    /// /metrics, /healthz and /readyz on http.listen; --dashboard draws it in the terminal.
    /// SIGTERM or Ctrl-C finishes and commits the batch in flight, then exits 0.
    Run(RunArgs),
    /// Show what tierflow knows about one user: the windows per horizon, the feature vector,
    /// the published tier, the latest score record and the scores the current model gives.
    /// Reads Redis only; changes nothing.
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Print the records of a topic, decoded (JSON or bincode, as the record's headers say),
    /// one JSON line each, filtered by user and type. Reads outside any consumer group and
    /// commits nothing; stops at the end offsets found at start unless --follow.
    Tail(TailArgs),
    /// Forget a user: delete their state and latest score in Redis, then publish a tombstone
    /// (the user id with no value) to the compacted user_score topic and wait for the
    /// broker's acknowledgement. Safe to repeat.
    ForgetUser(ForgetUserArgs),
    /// Rebuild state and outputs from the clickstream into a separate namespace — Redis keys
    /// under `{redis.key_prefix}.NAME`, output topics suffixed `.NAME` (created if missing),
    /// consumer group `{pipeline.group_id}.replay.NAME` — by running the pipeline from
    /// --from. For backfills and model backtests: the live state and topics are not touched.
    /// Ctrl-C or SIGTERM finishes and commits the batch in flight, then exits 0.
    Replay(ReplayArgs),
    /// Check campaign rules files and predict what they would fire, offline: no broker, no
    /// Redis.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Measure campaigns: purchases attributed to sent and held-out triggers, and the uplift of
    /// treated over control.
    #[command(subcommand)]
    Campaigns(CampaignsCommand),
    /// Watch the model in production. The pipeline compares every scored row with the
    /// model's training profile and exports the drift on /metrics (tierflow_drift_*); these
    /// commands fit that profile and measure an event log's drift offline.
    #[command(subcommand)]
    Monitor(MonitorCommand),
    /// Create the configured topics that do not exist yet (user_score compacted).
    Topics,
    /// Write (or check) the JSON Schemas of every topic contract.
    Schemas(SchemasArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// Redis URL (redis://, rediss://; a comma-separated seed list with redis.cluster = true);
    /// overrides redis.url.
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// Consumer group; overrides pipeline.group_id.
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// Model artifact directory (hot-reloaded when it changes); overrides model.artifact.
    /// Default: the model compiled into the binary.
    #[arg(long, value_name = "DIR")]
    pub(crate) model: Option<PathBuf>,
    /// Listen address of the live view (the web page at /, /api/live, /api/user/ID),
    /// /metrics, /healthz and /readyz; overrides http.listen.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) http_listen: Option<String>,
    /// Create missing topics before starting (as `tierflow topics`).
    #[arg(long)]
    pub(crate) create_topics: bool,
    #[command(flatten)]
    pub(crate) dashboard: DashboardArgs,
}

/// The terminal dashboard of `run` and `demo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DashboardArgs {
    /// Draw a live dashboard in the terminal: events/s, consumer lag, batch latency p50/p99,
    /// users per tier, triggers per campaign, the latest tier changes and triggers (counted
    /// from the output topics, so group-wide). q, Esc or Ctrl-C stops the command
    /// gracefully. Needs stdout to be a terminal. While it draws, logs go to
    /// --dashboard-log instead of stderr.
    #[arg(long)]
    pub(crate) dashboard: bool,
    /// Where logs go while the dashboard draws (appended).
    #[arg(long, value_name = "FILE", default_value = "tierflow-dashboard.log")]
    pub(crate) dashboard_log: PathBuf,
}

/// What `tierflow inspect` looks at.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum InspectCommand {
    /// One user: windows (counts by event type, revenue, refunds, sessions, categories) per
    /// horizon, every feature by name, the published tier and since when, the latest score
    /// record, and the scores and reason codes the configured model gives now. Exit code 1
    /// when tierflow holds no state for the user.
    User(InspectUserArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct InspectUserArgs {
    /// The user id (the clickstream's `user_id`).
    pub(crate) id: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
    /// Evaluate windows, features and scores at this time (RFC 3339, or `now` for the wall
    /// clock). Default: the user's newest event, as the pipeline scores.
    #[arg(long, value_name = "TIME")]
    pub(crate) as_of: Option<String>,
    /// Redis URL; overrides redis.url.
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// Model artifact directory; overrides model.artifact. Default: the model compiled into
    /// the binary.
    #[arg(long, value_name = "DIR")]
    pub(crate) model: Option<PathBuf>,
}

/// What `tierflow rules` does.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum RulesCommand {
    /// Check a rules file: every problem with its line and column, or a summary.
    ///
    /// Parses and checks a rules file (default: the configured campaigns.rules) as `run` does
    /// and prints a summary: tier_count, the per-user limits and one line per campaign (name,
    /// priority, condition, cooldown, control fraction, hourly budget, trigger ttl, attribution
    /// window). A refused
    /// file prints every problem as `FILE:LINE:COLUMN: message` (a syntax error or unknown key
    /// stops the parse at the first one; the other checks report all of theirs); a tier_count
    /// that differs from the model's tier count is refused too, unless --no-model. Exit code
    /// 0: valid; 2: refused.
    Check(RulesCheckArgs),
    /// Predict which triggers an event file would fire, when, why and with which outcome.
    ///
    /// Replays the events (JSON lines as `tierflow generate` writes them, in file order, as one
    /// partition) through the same windows, model, tier policy, rules and governance as
    /// `tierflow run` (governance in memory, from empty counters, no opt-out list), then prints
    /// one line per trigger in event-time order — fired_at, user, campaign, rule, causing
    /// event, tier and the governance outcome (send, control_holdout, cooldown, daily_cap,
    /// budget, lower_priority) — and a table per campaign: fired, sent, held out and suppressed
    /// by reason. As in the pipeline today, a cart, browse or inactivity timer fires when the
    /// user's next event shows it due: a user's last abandoned cart in the file does not fire.
    /// Lines that are not valid events are skipped and reported (stderr, and in the JSON
    /// summary) with their line numbers. Exit code 2: the rules file is refused (as by
    /// `rules check`).
    Test(RulesTestArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct RulesCheckArgs {
    /// The rules file (TOML, see deploy/rules.toml). Default: campaigns.rules from the
    /// configuration.
    pub(crate) file: Option<PathBuf>,
    /// Skip the comparison of tier_count with the model's tier count (and do not load a
    /// model).
    #[arg(long)]
    pub(crate) no_model: bool,
    /// Model artifact directory to compare tier_count with; overrides model.artifact.
    /// Default: the model compiled into the binary.
    #[arg(long, value_name = "DIR", conflicts_with = "no_model")]
    pub(crate) model: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct RulesTestArgs {
    /// Event log: JSON lines from `generate` or `import` (.gz is decompressed; `-` is stdin).
    /// Replayed in file order, as partition 0 with the line order as offsets.
    #[arg(long, short = 'e', value_name = "FILE")]
    pub(crate) events: PathBuf,
    /// The rules file. Default: campaigns.rules from the configuration.
    #[arg(long, value_name = "FILE")]
    pub(crate) rules: Option<PathBuf>,
    /// Only print the triggers of this user (and count only theirs in the summary).
    /// Governance still sees every user, so budgets spent by others count.
    #[arg(long, value_name = "ID")]
    pub(crate) user: Option<String>,
    /// One JSON object per trigger ("type": "trigger"), then one summary object
    /// ("type": "summary"), instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
    /// Model artifact directory to score with; overrides model.artifact. Default: the model
    /// compiled into the binary.
    #[arg(long, value_name = "DIR")]
    pub(crate) model: Option<PathBuf>,
}

/// What `tierflow campaigns` does.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum CampaignsCommand {
    /// Conversion and revenue per campaign, treated against control, with the uplift and its
    /// 95 % confidence interval.
    ///
    /// Reads the sent triggers (campaign_triggered), the held-out control triggers
    /// (campaign_control) and the clickstream's purchases — from Kafka, every partition from
    /// its beginning up to the end found at start (outside any consumer group; nothing is
    /// committed), or from JSON-lines files with --triggered, --control and --events — and
    /// attributes each purchase, per campaign, to the campaign's latest trigger of the user
    /// before it, if the purchase is within the campaign's attribution_window (rules file;
    /// default 7d) after it. A purchase at the instant of the trigger is not attributed; a
    /// purchase counts at most once per campaign.
    ///
    /// Per campaign and arm (treated = sent, control = held out): users with a trigger,
    /// converters (users with an attributed purchase), conversion rate, attributed purchases,
    /// revenue and revenue per user; then the absolute uplift in conversion (Newcombe's 95 %
    /// interval) and in revenue per user (Welch's 95 % interval). A campaign with an empty arm
    /// or fewer than 30 users in an arm, or with no conversions at all, is marked "not enough
    /// data". Duplicate records count once (triggers by idempotency key, purchases by user and
    /// event_id); the result does not depend on the order of the records.
    ///
    /// `tierflow run` publishes these attributions itself, on the campaign_outcome topic, as
    /// purchases arrive. --publish writes the report's attributions there too (a backfill,
    /// e.g. after changing an attribution window): one campaign_outcome record per
    /// attribution, with the idempotency key the pipeline uses, `co/{trigger key}/{purchase
    /// event_id}`, so readers that dedupe see each attribution once. Exit code 2: the rules file is refused (as by `rules check`).
    Report(CampaignsReportArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct CampaignsReportArgs {
    /// The rules file whose attribution windows apply. Default: campaigns.rules from the
    /// configuration. Campaigns found in the triggers but not in the file use its [defaults]
    /// attribution_window.
    #[arg(long, value_name = "FILE")]
    pub(crate) rules: Option<PathBuf>,
    /// Sent triggers as JSON lines (campaign_triggered records; .gz is decompressed) instead
    /// of the campaign_triggered topic. Needs --control and --events.
    #[arg(long, value_name = "FILE", requires_all = ["control", "events"])]
    pub(crate) triggered: Option<PathBuf>,
    /// Held-out triggers as JSON lines (campaign_control records) instead of the topic.
    #[arg(long, value_name = "FILE", requires_all = ["triggered", "events"])]
    pub(crate) control: Option<PathBuf>,
    /// Clickstream events as JSON lines (from `generate` or `import`) instead of the
    /// clickstream topic; only purchases are used.
    #[arg(long, short = 'e', value_name = "FILE", requires_all = ["triggered", "control"])]
    pub(crate) events: Option<PathBuf>,
    /// Output: tables for people, one JSON object, or Prometheus text exposition (gauges per
    /// campaign and arm, for a textfile collector or a push gateway).
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub(crate) format: ReportFormat,
    /// Publish one campaign_outcome record per attributed purchase to --outcome-topic
    /// (created when missing) and wait for the broker's acknowledgements.
    #[arg(long)]
    pub(crate) publish: bool,
    /// Topic for --publish. Default: topics.campaign_outcome from the configuration.
    #[arg(long, value_name = "TOPIC")]
    pub(crate) outcome_topic: Option<String>,
}

/// What `tierflow monitor` does.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum MonitorCommand {
    /// Fit a model's training profile and save it in its artifact (manifest.json; the model
    /// version does not change). `tierflow train` does this by itself; use this for an
    /// artifact trained before profiles existed, or to refit on other data.
    ///
    /// The profile is the distribution of every feature and every score over the feature
    /// vectors the pipeline computes: one per event of --events up to --cutoff (a sample of
    /// --sample-rows, chosen by event-id hash), scored by the model; deciles per column.
    Profile(MonitorProfileArgs),
    /// How far an event log has drifted from a model's training profile: the population
    /// stability index (PSI) and Kolmogorov–Smirnov distance of every feature and score, worst
    /// first, as the pipeline's tierflow_drift_psi gauges would show them for that traffic.
    /// PSI below 0.1: no real change; 0.1–0.25: worth a look; above 0.25: retrain.
    Drift(MonitorDriftArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct MonitorProfileArgs {
    /// Model artifact directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) model: PathBuf,
    /// The event log the model was trained on (JSON lines; .gz is decompressed).
    #[arg(long, short = 'e', value_name = "FILE")]
    pub(crate) events: PathBuf,
    /// Only events up to this time (RFC 3339), e.g. the training run's last cutoff. Default:
    /// every event.
    #[arg(long, value_name = "TIME")]
    pub(crate) cutoff: Option<String>,
    /// Where to write the artifact with its profile. Default: --model, in place.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub(crate) output: Option<PathBuf>,
    /// Feature vectors to fit on.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) sample_rows: usize,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct MonitorDriftArgs {
    /// Model artifact directory (must hold a profile). Default: the model compiled into the
    /// binary.
    #[arg(long, value_name = "DIR")]
    pub(crate) model: Option<PathBuf>,
    /// The traffic to compare (JSON lines; .gz is decompressed; `-` is stdin).
    #[arg(long, short = 'e', value_name = "FILE")]
    pub(crate) events: PathBuf,
    /// Feature vectors to compare (a sample by event-id hash when the log has more).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) sample_rows: usize,
    /// PSI above which a column counts as drifted.
    #[arg(long, default_value_t = 0.25)]
    pub(crate) threshold: f64,
    /// Columns to list (worst first); every drifted one is listed anyway.
    #[arg(long, default_value_t = 15)]
    pub(crate) top: usize,
    /// One JSON object instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// How `campaigns report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ReportFormat {
    /// One block per campaign.
    Table,
    /// One JSON object: inputs, then every campaign with both arms and the uplift.
    Json,
    /// Prometheus text format: `tierflow_campaign_report_*` gauges labelled by campaign (and
    /// arm); no user ids.
    Prometheus,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct TailArgs {
    /// A topic name, or a role resolved through [topics]: clickstream, tier_changed,
    /// user_score, dead_letter, campaign_triggered.
    pub(crate) topic: String,
    /// Where to start in every partition: `beginning`, `end`, an OFFSET, or a TIME (RFC 3339;
    /// the first record produced at or after it, by Kafka record timestamp).
    #[arg(long, value_name = "POSITION", default_value = "beginning")]
    pub(crate) from: crate::topic_reader::StartAt,
    /// Only records of this user (their user_id; for dead letters and tombstones, the key).
    #[arg(long, value_name = "ID")]
    pub(crate) user: Option<String>,
    /// Only records of these types (comma-separated or repeated): tier_changed, user_score,
    /// dead_letter, campaign_triggered, campaign_outcome, tombstone, undecodable, or a
    /// clickstream event type such as purchase.
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',')]
    pub(crate) types: Vec<String>,
    /// Stop after printing this many records.
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u64>,
    /// Keep reading new records after the end (until Ctrl-C).
    #[arg(long)]
    pub(crate) follow: bool,
    /// One short human-readable line per record instead of JSON.
    #[arg(long)]
    pub(crate) pretty: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ForgetUserArgs {
    /// The user id (the clickstream's `user_id`, the key on every topic).
    pub(crate) id: String,
    /// Redis URL; overrides redis.url.
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ReplayArgs {
    /// Where to start in every clickstream partition: `beginning`, an OFFSET, or a TIME
    /// (RFC 3339; the first record produced at or after it, by Kafka record timestamp).
    #[arg(long, value_name = "POSITION")]
    pub(crate) from: crate::topic_reader::StartAt,
    /// Name of the namespace to rebuild into (letters, digits, `-`, `_`).
    #[arg(long, value_name = "NAME")]
    pub(crate) namespace: String,
    /// Stop at the end offsets found at start, with a summary. Without it the replay keeps
    /// following the clickstream after catching up, until Ctrl-C.
    #[arg(long)]
    pub(crate) until_caught_up: bool,
    /// Redis URL; overrides redis.url.
    #[arg(long, value_name = "URL")]
    pub(crate) redis: Option<String>,
    /// Model artifact directory to score with; overrides model.artifact (a backtest of another
    /// model). Default: the model compiled into the binary.
    #[arg(long, value_name = "DIR")]
    pub(crate) model: Option<PathBuf>,
}

/// Where events go: JSON lines (a file or stdout) or a Kafka topic.
#[derive(Debug, Clone, Args)]
pub(crate) struct OutputArgs {
    /// Write JSON lines to FILE; `-` is stdout; a name ending in .gz is gzip-compressed.
    /// Default when --topic is not given: stdout.
    #[arg(long, short = 'o', value_name = "FILE", conflicts_with = "topic")]
    pub(crate) output: Option<PathBuf>,

    /// Produce to a Kafka topic instead, keyed by user_id. Without a value: the configured
    /// clickstream topic. The topic is created if it does not exist.
    #[arg(long, value_name = "TOPIC", num_args = 0..=1, default_missing_value = "")]
    pub(crate) topic: Option<String>,

    /// Target rate in records per second when producing (0 = as fast as possible).
    #[arg(long, value_name = "PER_SECOND", default_value_t = 0.0)]
    pub(crate) rate: f64,

    /// Unacknowledged records allowed in flight when producing (backpressure bound).
    #[arg(long, default_value_t = 100_000)]
    pub(crate) max_in_flight: usize,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct GenerateArgs {
    /// Number of users.
    #[arg(long, short = 'u', default_value_t = 1_000)]
    pub(crate) users: u64,
    /// Days of activity to simulate.
    #[arg(long, short = 'd', default_value_t = 90)]
    pub(crate) days: u32,
    /// Random seed: the same seed and settings give byte-identical output.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Simulation start (event time), RFC 3339.
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    pub(crate) start: String,
    /// Fraction of events emitted seconds to minutes after later ones.
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub(crate) out_of_order: f64,
    /// Fraction of events emitted hours to days late (offline apps syncing).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub(crate) late: f64,
    /// Fraction of events sent twice (same event_id).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub(crate) duplicate: f64,
    /// Fraction of records replaced by malformed bytes (for dead-letter paths).
    #[arg(long, default_value_t = 0.0, value_parser = fraction)]
    pub(crate) malformed: f64,
    /// Stop after this many records.
    #[arg(long)]
    pub(crate) limit: Option<u64>,
    /// Segment weights, relative, e.g. loyal_high_spender=0.5,browser=0.1; segments not named
    /// keep their default weight (loyal_high_spender 0.10, bargain_hunter 0.25, browser 0.35,
    /// decaying 0.15, new_user 0.15). For drift experiments: traffic from another population
    /// than the model was trained on.
    #[arg(long, value_delimiter = ',', value_name = "SEGMENT=WEIGHT,...", value_parser = segment_weight)]
    pub(crate) mix: Vec<(tierflow_data::synth::Segment, f64)>,
    /// Also write each user's latent segment (ground truth) as CSV to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) truth: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ImportFormat {
    /// UCI Online Retail CSV (InvoiceNo,StockCode,...): purchases and refunds per invoice.
    OnlineRetail,
    /// Taobao UserBehavior CSV (user,item,category,behavior,ts): views, carts, wishlists, buys.
    Taobao,
    /// Any CSV, mapped by a TOML column mapping (--mapping).
    Csv,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ImportArgs {
    /// Data set format.
    #[arg(value_enum)]
    pub(crate) format: ImportFormat,
    /// Input file (.gz is decompressed).
    pub(crate) input: PathBuf,
    /// Column mapping for --format csv (TOML; see crates/tierflow-data/tests/fixtures/orders_mapping.toml).
    #[arg(long, value_name = "FILE", required_if_eq("format", "csv"))]
    pub(crate) mapping: Option<PathBuf>,
    /// Taobao has no prices: revenue of a purchase = this unit price.
    #[arg(long, default_value_t = 1.0)]
    pub(crate) unit_price: f64,
    /// Also write the import report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct FeaturesArgs {
    /// Event log: JSON lines from `generate` or `import` (.gz is decompressed; `-` is stdin).
    #[arg(long, short = 'e', value_name = "FILE")]
    pub(crate) events: PathBuf,
    /// Cutoff time (RFC 3339); repeat for several. Each user known at a cutoff gives one row.
    #[arg(long = "cutoff", value_name = "TIME", required = true)]
    pub(crate) cutoffs: Vec<String>,
    /// Label horizon after each cutoff, in days.
    #[arg(long, default_value_t = 30)]
    pub(crate) horizon_days: u32,
    /// Business tier thresholds on future spend, ascending (e.g. 1,100,500 → tiers 0-3); adds
    /// a future_tier column.
    #[arg(long, value_delimiter = ',', value_name = "SPEND,...")]
    pub(crate) tier_thresholds: Vec<f64>,
    /// Output CSV: user_id, cutoff, every feature of the spec, future_spend, future_orders,
    /// purchased. A FILE.meta.json beside it records the feature spec id and the counts.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub(crate) output: PathBuf,
}

/// Which labelled rows to build from an event log.
#[derive(Debug, Clone, Args)]
pub(crate) struct DataArgs {
    /// Event log: JSON lines from `generate` or `import` (.gz is decompressed; `-` is stdin).
    #[arg(long, short = 'e', value_name = "FILE")]
    pub(crate) events: PathBuf,
    /// Cutoff time (RFC 3339); repeat for several. Every user known at a cutoff gives a row
    /// with features from events up to it and labels from the horizon after it. The LAST
    /// cutoff is the evaluation cutoff: held-out users are scored there.
    #[arg(long = "cutoff", value_name = "TIME", required = true)]
    pub(crate) cutoffs: Vec<String>,
    /// Label horizon after each cutoff, in days (churn = no purchase in it; spend = its net
    /// spend).
    #[arg(long, default_value_t = 30)]
    pub(crate) horizon_days: u32,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Artifact directory to write (replaced atomically if it exists).
    #[arg(long, short = 'o', value_name = "DIR")]
    pub(crate) output: PathBuf,
    /// Start from this training configuration (training.json of an artifact); flags below
    /// override it.
    #[arg(long, value_name = "FILE")]
    pub(crate) training_config: Option<PathBuf>,
    /// Number of value tiers: tier 0 = no spend in the horizon, the others equal-count bins of
    /// the positive spend of training users. Ignored with --tier-thresholds.
    #[arg(long)]
    pub(crate) tiers: Option<usize>,
    /// Business tier thresholds on future spend instead of quantiles, ascending
    /// (e.g. 0.01,50,200,1000 → 5 tiers).
    #[arg(long, value_delimiter = ',', value_name = "SPEND,...")]
    pub(crate) tier_thresholds: Vec<f64>,
    /// Hidden layer widths (default 100,50).
    #[arg(long, value_delimiter = ',', value_name = "WIDTH,...")]
    pub(crate) hidden: Vec<usize>,
    /// Dropout after each hidden layer.
    #[arg(long)]
    pub(crate) dropout: Option<f64>,
    /// Maximum epochs (early stopping usually ends sooner).
    #[arg(long)]
    pub(crate) epochs: Option<usize>,
    /// Stop after this many epochs without a better validation loss.
    #[arg(long)]
    pub(crate) patience: Option<usize>,
    #[arg(long)]
    pub(crate) batch_size: Option<usize>,
    #[arg(long)]
    pub(crate) learning_rate: Option<f64>,
    #[arg(long)]
    pub(crate) weight_decay: Option<f32>,
    /// Seed of initialisation, dropout, shuffling and the user split.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Share of users held out for early stopping.
    #[arg(long, value_parser = fraction)]
    pub(crate) validation_fraction: Option<f64>,
    /// Share of users held out for the report (scored at the last cutoff only).
    #[arg(long, value_parser = fraction)]
    pub(crate) test_fraction: Option<f64>,
    /// Turn off inverse-frequency tier weights.
    #[arg(long)]
    pub(crate) no_class_weights: bool,
    /// Describe the data source in the artifact (default: the events file name).
    #[arg(long)]
    pub(crate) source: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct EvaluateArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Model artifact directory (from `tierflow train`).
    #[arg(long, short = 'm', value_name = "DIR")]
    pub(crate) model: PathBuf,
    /// Directory for report.json, report.md and plots/.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub(crate) output: PathBuf,
    /// Score every user at the evaluation cutoff, not only the users the artifact's split
    /// held out (for data the model never saw; baselines are then fitted on the rows of the
    /// earlier cutoffs).
    #[arg(long)]
    pub(crate) all_users: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct SchemasArgs {
    /// Directory of the schema files.
    #[arg(long, default_value = "schemas")]
    pub(crate) dir: PathBuf,
    /// Compare instead of write; fail when a file differs from the Rust types.
    #[arg(long)]
    pub(crate) check: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// Synthetic users.
    #[arg(long, short = 'u', default_value_t = 500)]
    pub(crate) users: u64,
    /// Days of activity.
    #[arg(long, short = 'd', default_value_t = 30)]
    pub(crate) days: u32,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
    /// Clickstream partitions.
    #[arg(long, default_value_t = 3)]
    pub(crate) partitions: i32,
    /// Consumers in the group (each gets some partitions).
    #[arg(long, default_value_t = 2)]
    pub(crate) consumers: usize,
    /// Producer rate in events per second (0 = as fast as possible).
    #[arg(long, default_value_t = 20_000.0)]
    pub(crate) rate: f64,
    /// Fraction of malformed records mixed in (they go to the dead-letter topic).
    #[arg(long, default_value_t = 0.005, value_parser = fraction)]
    pub(crate) malformed: f64,
    /// Serve the live view while the demo runs: the web page at http://HOST:PORT/ (throughput,
    /// latency, tier flow, triggers per campaign, user search), /api/live, /api/user/ID and
    /// /metrics. Port 0 picks a free port; the URL is printed.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
    /// After the summary, keep serving the live view until Ctrl-C or SIGTERM.
    #[arg(long, requires = "listen")]
    pub(crate) hold: bool,
    #[command(flatten)]
    pub(crate) dashboard: DashboardArgs,
}

fn segment_weight(text: &str) -> Result<(tierflow_data::synth::Segment, f64), String> {
    let (segment, weight) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not SEGMENT=WEIGHT"))?;
    let segment = segment.trim().parse()?;
    let weight: f64 = weight
        .trim()
        .parse()
        .map_err(|e| format!("{weight:?}: {e}"))?;
    if !(weight.is_finite() && weight >= 0.0) {
        return Err(format!(
            "the weight of {segment} must be a number ≥ 0, got {weight}"
        ));
    }
    Ok((segment, weight))
}

fn fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not a fraction between 0 and 1"))
    }
}
