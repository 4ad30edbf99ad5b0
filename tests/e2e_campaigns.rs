//! `tierflow campaigns report` as an operator runs it, on a planted experiment whose truth is
//! known: campaign `promo` converts 40 % of treated users and 20 % of control users within its
//! 2-day attribution window, with revenue drawn from the same distribution in both arms. The
//! stream also holds what must not count — purchases before a trigger, at its instant and just
//! after its window, refunds, page views, duplicated triggers (a replay) and duplicated
//! purchases — and a treated-only campaign without enough data.
//!
//! From a real tansu broker (testkit; control records in bincode, as a pipeline may write
//! them) the report must give exactly the counts and revenues the generator planted, an
//! interval around the true uplift that excludes zero, and publish one `campaign_outcome`
//! per attribution whose keys stay the same on a second run. From JSON-lines files it must
//! give the same campaigns.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use tierflow_events::{
    CampaignOutcome, CampaignTriggered, ClickEvent, Contract, Encoding, EventTime, EventType,
    Scores, encode,
};
use tierflow_stream::{BoundedProducer, KafkaConfig, OutRecord, OutputHeaders, TopicSpec};
use tierflow_testkit::{broker, unique_name};

/// 2026-03-01T00:00:00Z.
const T0: i64 = 1_772_323_200_000;
const MINUTE: i64 = EventTime::MILLIS_PER_MINUTE;
const HOUR: i64 = EventTime::MILLIS_PER_HOUR;
const DAY: i64 = EventTime::MILLIS_PER_DAY;
/// `promo`'s attribution window.
const WINDOW: i64 = 2 * DAY;

const USERS_PER_ARM: usize = 300;
const TREATED_RATE: f64 = 0.4;
const CONTROL_RATE: f64 = 0.2;
/// A converter buys a second time (inside the window) with this probability.
const REPEAT_RATE: f64 = 0.1;
/// Order totals are uniform in [MIN, MAX] cents: mean 60.00.
const MIN_CENTS: i64 = 2_000;
const MAX_CENTS: i64 = 10_000;

/// The planted conversion uplift.
const TRUE_CONVERSION_UPLIFT: f64 = TREATED_RATE - CONTROL_RATE;
/// The planted uplift in expected revenue per user, in currency units:
/// (p_t − p_c) × (1 + repeat rate) × mean order.
fn true_revenue_uplift() -> f64 {
    let mean_order = (MIN_CENTS + MAX_CENTS) as f64 / 2.0 / 100.0;
    TRUE_CONVERSION_UPLIFT * (1.0 + REPEAT_RATE) * mean_order
}

const RULES: &str = r#"
tier_count = 5

[defaults]
attribution_window = "7d"

[[campaign]]
name = "promo"
control_fraction = 0.5
attribution_window = "2d"
when = { tier_reached = 3 }

[[campaign]]
name = "vip"
when = { tier_reached = 4 }

[[campaign]]
name = "quiet"
control_fraction = 0.2
when = { inactive_for = "14d" }
"#;

/// What the generator planted, per campaign and arm.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Truth {
    users: u64,
    converters: u64,
    purchases: u64,
    revenue_cents: i64,
}

/// The generated records and their truth.
struct Planted {
    triggered: Vec<CampaignTriggered>,
    control: Vec<CampaignTriggered>,
    events: Vec<ClickEvent>,
    /// `(campaign, arm)` → truth.
    truth: BTreeMap<(&'static str, &'static str), Truth>,
    /// Idempotency keys of the outcomes the report must publish.
    outcome_keys: BTreeSet<String>,
}

fn at(ms: i64) -> EventTime {
    EventTime::from_unix_millis(ms)
}

fn trigger(user: &str, campaign: &str, fired_ms: i64, cause: &str) -> CampaignTriggered {
    CampaignTriggered {
        schema_version: 1,
        idempotency_key: format!("ct/{user}/{campaign}/{fired_ms}/{cause}"),
        campaign: campaign.to_owned(),
        user_id: user.to_owned(),
        rule: "tier_reached = 3".to_owned(),
        tier: 3,
        scores: Scores {
            tier_probabilities: vec![0.1, 0.1, 0.2, 0.5, 0.1],
            churn_risk: 0.3,
            expected_value: 120.0,
        },
        model_version: "m-test".to_owned(),
        causing_event_id: Some(cause.to_owned()),
        event_time: at(fired_ms),
        expires_at: at(fired_ms + DAY),
        processing_time: at(fired_ms + 5),
    }
}

fn event(user: &str, id: String, event_type: EventType, ms: i64, cents: Option<i64>) -> ClickEvent {
    ClickEvent {
        schema_version: 1,
        event_id: id,
        user_id: user.to_owned(),
        event_type,
        ts: at(ms),
        session_id: format!("s-{user}"),
        product_id: None,
        category: None,
        price: None,
        quantity: None,
        currency: cents.map(|_| "EUR".to_owned()),
        order_id: None,
        revenue: cents.map(|c| c as f64 / 100.0),
        channel: None,
        device: None,
    }
}

/// One user's purchases under one trigger.
struct Buyer<'a> {
    user: &'a str,
    trigger_key: &'a str,
    fired: i64,
    bought: u32,
}

impl Buyer<'_> {
    /// A purchase `delay` after the trigger with a random total; `counted`: the attribution
    /// rule must credit it to the trigger. Returns its cents.
    fn purchase(
        &mut self,
        p: &mut Planted,
        rng: &mut ChaCha8Rng,
        delay: i64,
        counted: bool,
    ) -> i64 {
        self.bought += 1;
        let cents = rng.random_range(MIN_CENTS..=MAX_CENTS);
        let id = format!("{}-p{}", self.user, self.bought);
        if counted {
            p.outcome_keys
                .insert(format!("co/{}/{id}", self.trigger_key));
        }
        p.events.push(event(
            self.user,
            id,
            EventType::Purchase,
            self.fired + delay,
            Some(cents),
        ));
        cents
    }
}

fn planted(seed: u64) -> Planted {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut p = Planted {
        triggered: Vec::new(),
        control: Vec::new(),
        events: Vec::new(),
        truth: BTreeMap::new(),
        outcome_keys: BTreeSet::new(),
    };
    for (arm, rate) in [("treated", TREATED_RATE), ("control", CONTROL_RATE)] {
        let mut truth = Truth::default();
        for i in 0..USERS_PER_ARM {
            let user = format!("{arm}-{i:03}");
            let fired = T0 + (i as i64) * 7 * MINUTE;
            let record = trigger(&user, "promo", fired, &format!("{user}-cause"));
            let key = record.idempotency_key.clone();
            if arm == "treated" {
                // Every 25th trigger is published twice (a replay of the pipeline).
                if i % 25 == 0 {
                    p.triggered.push(record.clone());
                }
                p.triggered.push(record);
            } else {
                p.control.push(record);
            }
            truth.users += 1;
            let mut buyer = Buyer {
                user: &user,
                trigger_key: &key,
                fired,
                bought: 0,
            };
            if rng.random_bool(rate) {
                truth.converters += 1;
                let delay = rng.random_range(1..=WINDOW);
                truth.revenue_cents += buyer.purchase(&mut p, &mut rng, delay, true);
                truth.purchases += 1;
                if i % 10 == 3 {
                    // A duplicate of the purchase record (same event_id).
                    let again = p.events.last().expect("just pushed").clone();
                    p.events.push(again);
                }
                if rng.random_bool(REPEAT_RATE) {
                    let delay = rng.random_range(1..=WINDOW);
                    truth.revenue_cents += buyer.purchase(&mut p, &mut rng, delay, true);
                    truth.purchases += 1;
                }
            }
            // What must not count: before the trigger, at its instant, just after the window.
            match i % 4 {
                0 => buyer.purchase(&mut p, &mut rng, -HOUR, false),
                1 => buyer.purchase(&mut p, &mut rng, 0, false),
                2 => buyer.purchase(&mut p, &mut rng, WINDOW + 1, false),
                _ => 0,
            };
            let view = event(
                &user,
                format!("{user}-v"),
                EventType::PageView,
                fired + MINUTE,
                None,
            );
            p.events.push(view);
            if i % 5 == 0 {
                let refund = event(
                    &user,
                    format!("{user}-r"),
                    EventType::Refund,
                    fired + HOUR,
                    Some(1_000),
                );
                p.events.push(refund);
            }
        }
        p.truth.insert(("promo", arm), truth);
    }
    // `vip`: treated only, five users, two of whom buy.
    let mut vip = Truth::default();
    for i in 0..5i64 {
        let user = format!("treated-{i:03}");
        let fired = T0 + 10 * DAY + i * HOUR;
        let record = trigger(&user, "vip", fired, &format!("{user}-vip"));
        vip.users += 1;
        if i < 2 {
            let id = format!("{user}-vip-p");
            p.outcome_keys
                .insert(format!("co/{}/{id}", record.idempotency_key));
            p.events.push(event(
                &user,
                id,
                EventType::Purchase,
                fired + DAY,
                Some(5_000),
            ));
            vip.converters += 1;
            vip.purchases += 1;
            vip.revenue_cents += 5_000;
        }
        p.triggered.push(record);
    }
    p.truth.insert(("vip", "treated"), vip);
    p
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary with `args`, with no configuration from the caller's environment.
fn tierflow(args: &[&str]) -> Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tierflow"));
    command
        .args(args)
        .current_dir(workspace_root())
        .env("RUST_LOG", "warn");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TIERFLOW_") {
            command.env_remove(key);
        }
    }
    command.output().context("running tierflow")
}

fn succeeded(args: &[&str]) -> Result<String> {
    let output = tierflow(args)?;
    ensure!(
        output.status.success(),
        "tierflow {args:?} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("tempdir paths are UTF-8")
}

fn write_lines<T: serde::Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in records {
        serde_json::to_writer(&mut file, r)?;
        writeln!(file)?;
    }
    file.flush()?;
    Ok(())
}

/// The report's campaign object of `name`.
fn campaign<'a>(report: &'a Value, name: &str) -> Result<&'a Value> {
    report["campaigns"]
        .as_array()
        .context("no campaigns array")?
        .iter()
        .find(|c| c["campaign"] == name)
        .with_context(|| format!("no campaign {name} in {report:#}"))
}

/// The report's arm equals the planted truth, field by field.
fn check_arm(report: &Value, name: &str, arm: &str, truth: &Truth) -> Result<()> {
    let a = &campaign(report, name)?[arm];
    let got = Truth {
        users: a["users"].as_u64().context("users")?,
        converters: a["converters"].as_u64().context("converters")?,
        purchases: a["purchases"].as_u64().context("purchases")?,
        revenue_cents: a["revenue_cents"].as_i64().context("revenue_cents")?,
    };
    ensure!(
        got == *truth,
        "{name}/{arm}: report {got:?}, planted {truth:?}"
    );
    let rate = a["conversion_rate"].as_f64().context("rate")?;
    ensure!((rate - truth.converters as f64 / truth.users as f64).abs() < 1e-12);
    let per_user = a["revenue_per_user"].as_f64().context("revenue_per_user")?;
    ensure!((per_user - truth.revenue_cents as f64 / 100.0 / truth.users as f64).abs() < 1e-9);
    Ok(())
}

/// Everything the planted data determines exactly, plus the intervals around the truth.
fn check_report(report: &Value, planted: &Planted) -> Result<()> {
    for ((name, arm), truth) in &planted.truth {
        check_arm(report, name, arm, truth)?;
    }
    let attributions: u64 = planted.truth.values().map(|t| t.purchases).sum();
    ensure!(report["attributions"] == attributions, "{report:#}");
    ensure!(report["inputs"]["triggered"] == planted.triggered.len() as u64);
    ensure!(report["inputs"]["control"] == planted.control.len() as u64);

    let promo = campaign(report, "promo")?;
    ensure!(promo["attribution_window"] == "2d" && promo["in_rules"] == true);
    ensure!(promo["not_enough_data"].is_null(), "{promo:#}");
    ensure!(promo["users_in_both_arms"] == 0);
    ensure!(promo["currencies"] == serde_json::json!(["EUR"]));
    let conversion = &promo["uplift"]["conversion"];
    let (low, high) = (
        conversion["ci95"]["low"].as_f64().context("low")?,
        conversion["ci95"]["high"].as_f64().context("high")?,
    );
    ensure!(
        low <= TRUE_CONVERSION_UPLIFT && TRUE_CONVERSION_UPLIFT <= high && low > 0.0,
        "conversion uplift interval [{low}, {high}] should hold {TRUE_CONVERSION_UPLIFT} and exclude 0"
    );
    let t = &planted.truth[&("promo", "treated")];
    let c = &planted.truth[&("promo", "control")];
    let observed = t.converters as f64 / t.users as f64 - c.converters as f64 / c.users as f64;
    ensure!((conversion["absolute"].as_f64().context("absolute")? - observed).abs() < 1e-12);
    let revenue = &promo["uplift"]["revenue_per_user"];
    let (low, high) = (
        revenue["ci95"]["low"].as_f64().context("low")?,
        revenue["ci95"]["high"].as_f64().context("high")?,
    );
    let truth = true_revenue_uplift();
    ensure!(
        low <= truth && truth <= high && low > 0.0,
        "revenue uplift interval [{low}, {high}] should hold {truth} and exclude 0"
    );

    let vip = campaign(report, "vip")?;
    ensure!(vip["attribution_window"] == "7d");
    ensure!(
        vip["not_enough_data"] == "no control users (control_fraction = 0?)",
        "{vip:#}"
    );
    ensure!(vip["uplift"]["conversion"]["ci95"].is_null());
    let quiet = campaign(report, "quiet")?;
    ensure!(quiet["not_enough_data"] == "no triggers" && quiet["treated"]["users"] == 0);
    Ok(())
}

#[test]
fn report_from_files_matches_the_planted_truth() -> Result<()> {
    let planted = planted(7);
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES)?;
    let (triggered, control, events) = (
        dir.path().join("triggered.jsonl"),
        dir.path().join("control.jsonl"),
        dir.path().join("events.jsonl"),
    );
    write_lines(&triggered, &planted.triggered)?;
    write_lines(&control, &planted.control)?;
    // Events in reverse order with an undecodable line: order must not matter.
    let mut reversed = planted.events.clone();
    reversed.reverse();
    write_lines(&events, &reversed)?;
    let mut file = std::fs::OpenOptions::new().append(true).open(&events)?;
    writeln!(file, "{{\"not\": \"an event\"}}")?;
    drop(file);

    let files = [
        "--rules",
        path_str(&rules),
        "--triggered",
        path_str(&triggered),
        "--control",
        path_str(&control),
        "--events",
        path_str(&events),
    ];
    let mut args = vec!["campaigns", "report", "--format", "json"];
    args.extend(files);
    let report: Value = serde_json::from_str(&succeeded(&args)?)?;
    check_report(&report, &planted)?;
    ensure!(
        report["inputs"]["skipped"]["clickstream"] == 1,
        "{:#}",
        report["inputs"]
    );
    ensure!(report["inputs"]["events"] == planted.events.len() as u64);
    ensure!(report["source"]["files"]["triggered"] == path_str(&triggered));

    // The table says the same for people.
    let mut args = vec!["campaigns", "report"];
    args.extend(files);
    let table = succeeded(&args)?;
    let t = &planted.truth[&("promo", "treated")];
    let treated_line = table
        .lines()
        .find(|l| l.trim_start().starts_with("treated") && l.contains(&t.users.to_string()))
        .with_context(|| format!("no treated row:\n{table}"))?;
    let cells: Vec<&str> = treated_line.split_whitespace().collect();
    ensure!(
        cells[..3] == ["treated", &t.users.to_string(), &t.converters.to_string()],
        "{treated_line}"
    );
    ensure!(table.contains("promo  (attribution window 2d)"), "{table}");
    ensure!(
        table.contains("not enough data: no control users (control_fraction = 0?)"),
        "{table}"
    );
    ensure!(
        table.contains("quiet  (attribution window 7d)\n  not enough data: no triggers"),
        "{table}"
    );

    // And as gauges, labelled by campaign and arm only.
    let mut args = vec!["campaigns", "report", "--format", "prometheus"];
    args.extend(files);
    let metrics = succeeded(&args)?;
    for line in [
        format!(
            "tierflow_campaign_report_users{{campaign=\"promo\",arm=\"treated\"}} {}",
            t.users
        ),
        format!(
            "tierflow_campaign_report_converters{{campaign=\"promo\",arm=\"control\"}} {}",
            planted.truth[&("promo", "control")].converters
        ),
        "tierflow_campaign_report_enough_data{campaign=\"promo\"} 1".to_owned(),
        "tierflow_campaign_report_enough_data{campaign=\"vip\"} 0".to_owned(),
    ] {
        ensure!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
    ensure!(
        metrics.contains("tierflow_campaign_report_conversion_uplift_low{campaign=\"promo\"} ")
    );
    ensure!(
        !metrics.contains("conversion_uplift_low{campaign=\"vip\"}"),
        "{metrics}"
    );

    // Files and flags that do not fit are refused with a reason.
    let output = tierflow(&["campaigns", "report", "--triggered", path_str(&triggered)])?;
    ensure!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains("--control") && stderr.contains("--events"),
        "{stderr}"
    );
    std::fs::write(
        &rules,
        "tier_count = 5\n[defaults]\nattribution_window = \"2w\"\n",
    )?;
    let mut args = vec!["campaigns", "report"];
    args.extend(files);
    let output = tierflow(&args)?;
    ensure!(output.status.code() == Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        stderr.contains(":3:22: unknown duration unit \"w\" in attribution_window"),
        "{stderr}"
    );
    Ok(())
}

/// Produces `records` (key, value, headers) to `topic`.
async fn produce(
    kafka: &KafkaConfig,
    topic: &str,
    records: &[(String, Vec<u8>)],
    headers: &[(&str, &[u8])],
) -> Result<()> {
    let mut producer = BoundedProducer::new(kafka, 10_000)?;
    for (key, value) in records {
        producer
            .send(OutRecord {
                topic,
                key: Some(key.as_bytes()),
                value,
                headers,
            })
            .await?;
    }
    let stats = producer.flush().await?;
    ensure!(stats.delivered == records.len() as u64, "{stats:?}");
    Ok(())
}

/// `tail TOPIC` through the binary: the campaign_outcome records on it.
fn outcomes(config: &Path, topic: &str) -> Result<Vec<CampaignOutcome>> {
    let lines = succeeded(&["--config", path_str(config), "tail", topic])?;
    lines
        .lines()
        .map(|line| {
            let printed: Value = serde_json::from_str(line)?;
            ensure!(printed["type"] == "campaign_outcome", "{line}");
            Ok(serde_json::from_value(printed["value"].clone())?)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_from_kafka_matches_the_planted_truth_and_publishes_outcomes() -> Result<()> {
    let planted = planted(11);
    let mut kafka = KafkaConfig::new(broker().bootstrap_servers());
    kafka.properties.insert("linger.ms".into(), "5".into());
    let prefix = unique_name("campaigns");
    let (triggered, control, clickstream, outcome) = (
        format!("{prefix}.campaign_triggered"),
        format!("{prefix}.campaign_control"),
        format!("{prefix}.clickstream"),
        format!("{prefix}.campaign_outcome"),
    );
    let specs: Vec<TopicSpec> = [&triggered, &control, &clickstream]
        .into_iter()
        .map(|t| TopicSpec::new(t, 3))
        .collect();
    tierflow_stream::ensure_topics(&kafka, &specs).await?;
    let json = OutputHeaders::new(Contract::CampaignTriggered, Encoding::Json);
    let bincode = OutputHeaders::new(Contract::CampaignTriggered, Encoding::Bincode);
    let keyed = |records: &[CampaignTriggered], encoding| -> Vec<(String, Vec<u8>)> {
        records
            .iter()
            .map(|r| (r.user_id.clone(), encode(r, encoding)))
            .collect()
    };
    produce(
        &kafka,
        &triggered,
        &keyed(&planted.triggered, Encoding::Json),
        &json.pairs(),
    )
    .await?;
    produce(
        &kafka,
        &control,
        &keyed(&planted.control, Encoding::Bincode),
        &bincode.pairs(),
    )
    .await?;
    let events: Vec<(String, Vec<u8>)> = planted
        .events
        .iter()
        .map(|e| Ok((e.user_id.clone(), serde_json::to_vec(e)?)))
        .collect::<Result<_>>()?;
    produce(&kafka, &clickstream, &events, &[]).await?;

    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES)?;
    let config = dir.path().join("tierflow.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\n\n[topics]\nclickstream = \"{clickstream}\"\n\
             campaign_triggered = \"{triggered}\"\ncampaign_control = \"{control}\"\n\
             partitions = 3\n\n[campaigns]\nrules = \"{}\"\n",
            kafka.brokers,
            path_str(&rules)
        ),
    )?;
    let args = [
        "--config",
        path_str(&config),
        "campaigns",
        "report",
        "--format",
        "json",
        "--publish",
        "--outcome-topic",
        &outcome,
    ];
    let report: Value = serde_json::from_str(&succeeded(&args)?)?;
    check_report(&report, &planted)?;
    ensure!(report["inputs"]["events"] == planted.events.len() as u64);
    ensure!(report["source"]["kafka"]["control"] == control.as_str());
    let attributions = planted.outcome_keys.len() as u64;
    ensure!(
        report["published"] == serde_json::json!({ "topic": outcome, "records": attributions }),
        "{}",
        report["published"]
    );

    // One outcome per attribution, with the keys the attribution rule implies.
    let first = outcomes(&config, &outcome)?;
    let keys: BTreeSet<String> = first.iter().map(|o| o.idempotency_key.clone()).collect();
    ensure!(
        first.len() == keys.len(),
        "duplicate outcome keys on the first run"
    );
    ensure!(
        keys == planted.outcome_keys,
        "outcome keys differ from the planted attributions"
    );
    for o in &first {
        ensure!(
            o.delay_ms > 0
                && o.delay_ms
                    <= if o.campaign == "promo" {
                        WINDOW
                    } else {
                        7 * DAY
                    }
        );
        ensure!(
            o.idempotency_key
                == format!("co/{}/{}", o.trigger_idempotency_key, o.purchase_event_id)
        );
        ensure!(
            o.arm.as_str()
                == if o.user_id.starts_with("treated") {
                    "treated"
                } else {
                    "control"
                }
        );
    }
    let revenue: i64 = first
        .iter()
        .filter(|o| o.campaign == "promo" && o.arm.as_str() == "treated")
        .map(|o| (o.revenue * 100.0).round() as i64)
        .sum();
    ensure!(revenue == planted.truth[&("promo", "treated")].revenue_cents);

    // A second run republishes the same records: readers that dedupe see no change.
    let again: Value = serde_json::from_str(&succeeded(&args)?)?;
    ensure!(again["campaigns"] == report["campaigns"]);
    let both = outcomes(&config, &outcome)?;
    ensure!(
        both.len() == 2 * first.len(),
        "{} records after two runs",
        both.len()
    );
    let by_key: BTreeMap<&str, Vec<&CampaignOutcome>> =
        both.iter().fold(BTreeMap::new(), |mut m, o| {
            m.entry(o.idempotency_key.as_str()).or_default().push(o);
            m
        });
    ensure!(by_key.len() == keys.len());
    ensure!(by_key.values().all(|v| v.len() == 2 && v[0] == v[1]));

    // The files hold the same records: the same campaigns.
    let lines = |name: &str, records: &[CampaignTriggered]| -> Result<PathBuf> {
        let path = dir.path().join(name);
        write_lines(&path, records)?;
        Ok(path)
    };
    let (t, c) = (
        lines("triggered.jsonl", &planted.triggered)?,
        lines("control.jsonl", &planted.control)?,
    );
    let e = dir.path().join("events.jsonl");
    write_lines(&e, &planted.events)?;
    let offline: Value = serde_json::from_str(&succeeded(&[
        "--config",
        path_str(&config),
        "campaigns",
        "report",
        "--format",
        "json",
        "--triggered",
        path_str(&t),
        "--control",
        path_str(&c),
        "--events",
        path_str(&e),
    ])?)?;
    ensure!(offline["campaigns"] == report["campaigns"]);
    Ok(())
}
