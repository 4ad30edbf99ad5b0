//! `tierflow inspect user ID`: one user's stored state made readable — windows, features,
//! the pipeline's decision memory, the latest score record — and what the configured model
//! says about them now. Reads Redis through the store; writes nothing.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tierflow_events::{Encoding, EventTime, EventType, ReasonCode, UserScore, decode};
use tierflow_features::spec::HORIZONS;
use tierflow_features::vector::window_totals;
use tierflow_features::{FeatureSpec, UserState, features};
use tierflow_pipeline::history::{self, HistoryEntry};
use tierflow_store::{RedisConfig, RedisStore, StateStore};

use crate::cli::{InspectCommand, InspectUserArgs};
use crate::config::Config;

/// Reason codes shown with the model's scores.
const REASON_CODES: usize = 5;

pub(crate) async fn run(command: InspectCommand, config: Config) -> Result<()> {
    match command {
        InspectCommand::User(args) => user(args, config).await,
    }
}

/// Everything `inspect user` prints; `--json` prints exactly this.
#[derive(Debug, Serialize)]
pub(crate) struct UserReport {
    user_id: String,
    state_key: String,
    score_key: String,
    newest_event: Option<EventTime>,
    first_seen: Option<EventTime>,
    /// The time windows, features and scores are evaluated at.
    as_of: EventTime,
    windows: Vec<Window>,
    lifetime: Lifetime,
    published: Published,
    /// Highest clickstream offset applied, per partition.
    applied_offsets: BTreeMap<i32, i64>,
    feature_spec: String,
    features: BTreeMap<String, f32>,
    latest_score: Option<UserScore>,
    model: ModelScores,
    /// Recent tier changes, triggers (sent and held out) and attributed purchases, newest
    /// first (`pipeline.user_history`; at most 32).
    history: Vec<HistoryEntry>,
}

#[derive(Debug, Serialize)]
struct Window {
    horizon: &'static str,
    counts: BTreeMap<&'static str, u64>,
    revenue: f64,
    refunds: f64,
    sessions: u64,
    /// Estimated distinct categories (a 32-bit linear-counting sketch).
    categories: f32,
}

#[derive(Debug, Serialize)]
struct Lifetime {
    orders: u32,
    purchase_days: u32,
    net_spend: f64,
    first_purchase: Option<EventTime>,
}

#[derive(Debug, Serialize)]
struct Published {
    /// `None` until the user's first score.
    tier: Option<u8>,
    since: Option<EventTime>,
    last_score_published: Option<EventTime>,
}

#[derive(Debug, Serialize)]
struct ModelScores {
    model_version: String,
    tier: u8,
    tier_probabilities: Vec<f32>,
    churn_risk: f32,
    p_return: f32,
    expected_value: f64,
    reason_codes: Vec<ReasonCode>,
}

async fn user(args: InspectUserArgs, mut config: Config) -> Result<()> {
    if let Some(url) = args.redis {
        config.redis.url = url;
    }
    if let Some(model) = args.model {
        config.model.artifact = Some(model);
    }
    let store = RedisStore::connect(config.redis.clone())
        .await
        .context("connecting to Redis")?;
    let as_of = match args.as_of.as_deref() {
        None => None,
        Some("now") => Some(EventTime::now()),
        Some(text) => Some(EventTime::parse_rfc3339(text).context("--as-of")?),
    };
    let model = super::open_model(&config)?;
    let user = args.id.as_str();
    let Some(report) = user_report(&store, &config.redis, &model, user, as_of).await? else {
        let state_key = config.redis.state_key(user);
        bail!(
            "no state for user {user:?} under {state_key}: never seen, expired, forgotten, \
             or another redis.key_prefix"
        );
    };

    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_tables(&mut out, &report)?;
    }
    out.flush()?;
    Ok(())
}

/// One user as `inspect user` shows them (and the live view's user search): `None` when the
/// store holds no state for `user` (a latest score left alone is not enough to show).
/// `as_of`: when windows, features and scores are evaluated (default: the user's newest
/// event, as the pipeline scores).
pub(crate) async fn user_report(
    store: &impl StateStore,
    redis: &RedisConfig,
    model: &tierflow_model::ModelHandle,
    user: &str,
    as_of: Option<EventTime>,
) -> Result<Option<UserReport>> {
    let state_key = redis.state_key(user);
    let score_key = redis.score_key(user);
    let state = store
        .load(&[user])
        .await?
        .pop()
        .context("one state per user")?
        .with_context(|| format!("the state under {state_key} cannot be decoded"))?;
    let Some(state) = state else {
        return Ok(None);
    };
    let latest = store.latest_scores(&[user]).await?.pop().flatten();
    let latest_score = latest
        .map(|bytes| decode::<UserScore>(&bytes, Encoding::Json))
        .transpose()
        .with_context(|| format!("the latest score under {score_key} cannot be decoded"))?;
    let (history, unreadable) = history::decode_all(&store.history(user).await?);
    if unreadable > 0 {
        tracing::warn!(
            user,
            unreadable,
            "history entries this build cannot read were skipped"
        );
    }
    let as_of = as_of.unwrap_or_else(|| state.newest().unwrap_or_else(EventTime::now));
    let mut report = report(
        user,
        state_key,
        score_key,
        &state,
        as_of,
        latest_score,
        model,
    )?;
    report.history = history;
    Ok(Some(report))
}

fn report(
    user: &str,
    state_key: String,
    score_key: String,
    state: &UserState,
    as_of: EventTime,
    latest_score: Option<UserScore>,
    model: &tierflow_model::ModelHandle,
) -> Result<UserReport> {
    let windows = HORIZONS
        .iter()
        .enumerate()
        .map(|(h, horizon)| {
            let totals = window_totals(state, h, as_of);
            Window {
                horizon: horizon.name,
                counts: EventType::ALL
                    .iter()
                    .map(|t| (t.as_str(), totals.count(*t)))
                    .collect(),
                revenue: money(totals.revenue_cents),
                refunds: money(totals.refund_cents),
                sessions: totals.sessions,
                categories: totals.distinct_categories(),
            }
        })
        .collect();
    let vector = features(state, as_of);
    let spec = FeatureSpec::current();
    let scorer = model.current();
    let scores = scorer.score(&vector)?;
    let reasons = scorer.explain(&vector, REASON_CODES)?;
    let row = scores.scores(0);
    Ok(UserReport {
        user_id: user.to_owned(),
        state_key,
        score_key,
        newest_event: state.newest(),
        first_seen: state
            .newest_ms
            .map(|_| EventTime::from_unix_millis(state.first_seen_ms)),
        as_of,
        windows,
        lifetime: Lifetime {
            orders: state.lifetime.orders,
            purchase_days: state.lifetime.purchase_days,
            net_spend: money(state.lifetime.net_spend_cents),
            first_purchase: state
                .lifetime
                .first_purchase_ms
                .map(EventTime::from_unix_millis),
        },
        published: Published {
            tier: state.published.tier,
            since: state
                .published
                .tier
                .map(|_| EventTime::from_unix_millis(state.published.tier_since_ms)),
            last_score_published: state.published.score_ms.map(EventTime::from_unix_millis),
        },
        applied_offsets: state.applied.iter().copied().collect(),
        feature_spec: spec.id().to_owned(),
        features: spec.names().iter().cloned().zip(vector).collect(),
        latest_score,
        model: ModelScores {
            model_version: scores.model_version.clone(),
            tier: scores.tier(0),
            tier_probabilities: row.tier_probabilities,
            churn_risk: row.churn_risk,
            p_return: scores.p_return[0],
            expected_value: row.expected_value,
            reason_codes: reasons.into_iter().next().unwrap_or_default(),
        },
        history: Vec::new(),
    })
}

/// The tier history, then the campaign decisions, newest first.
fn print_history(out: &mut impl Write, history: &[HistoryEntry]) -> Result<()> {
    let tiers = history.iter().filter_map(|e| match e {
        HistoryEntry::TierChanged(r) => Some(r),
        _ => None,
    });
    writeln!(out)?;
    writeln!(out, "tier history (newest first)")?;
    let mut any = false;
    for r in tiers {
        any = true;
        let from = r
            .from_tier
            .map_or_else(|| "-".to_owned(), |t| t.to_string());
        writeln!(
            out,
            "  {}  {from} → {}  event {}  model {}",
            r.event_time, r.to_tier, r.causing_event_id, r.model_version
        )?;
    }
    if !any {
        writeln!(out, "  none kept")?;
    }
    writeln!(out)?;
    writeln!(out, "campaigns (newest first)")?;
    any = false;
    for e in history {
        let line = match e {
            HistoryEntry::TierChanged(_) => continue,
            HistoryEntry::CampaignTriggered(r) => {
                format!("{}  sent      {} ({})", r.event_time, r.campaign, r.rule)
            }
            HistoryEntry::CampaignControl(r) => {
                format!("{}  held out  {} ({})", r.event_time, r.campaign, r.rule)
            }
            HistoryEntry::CampaignOutcome(r) => format!(
                "{}  purchase  {} ({:?} arm) {:.2} {}, {} after the trigger",
                r.purchased_at,
                r.campaign,
                r.arm,
                r.revenue,
                r.currency.as_deref().unwrap_or(""),
                humanize_ms(r.delay_ms)
            ),
        };
        any = true;
        writeln!(out, "  {line}")?;
    }
    if !any {
        writeln!(out, "  none kept")?;
    }
    Ok(())
}

fn humanize_ms(ms: i64) -> String {
    let minutes = ms / 60_000;
    match minutes {
        m if m < 60 => format!("{m} min"),
        m if m < 48 * 60 => format!("{:.1} h", m as f64 / 60.0),
        m => format!("{:.1} d", m as f64 / 1440.0),
    }
}

fn money(cents: i64) -> f64 {
    cents as f64 / 100.0
}

fn optional(time: Option<EventTime>) -> String {
    time.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

fn probabilities(p: &[f32]) -> String {
    p.iter()
        .map(|v| format!("{v:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_tables(out: &mut impl Write, r: &UserReport) -> Result<()> {
    writeln!(out, "user          {}", r.user_id)?;
    writeln!(out, "state         {}", r.state_key)?;
    writeln!(out, "newest event  {}", optional(r.newest_event))?;
    writeln!(out, "first seen    {}", optional(r.first_seen))?;
    writeln!(out, "as of         {}", r.as_of)?;
    let offsets: Vec<String> = r
        .applied_offsets
        .iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect();
    writeln!(out, "applied       partition:offset {}", offsets.join(" "))?;

    writeln!(out)?;
    write!(out, "{:<18}", "window")?;
    for w in &r.windows {
        write!(out, "{:>11}", w.horizon)?;
    }
    writeln!(out)?;
    for t in EventType::ALL {
        write!(out, "{:<18}", t.as_str())?;
        for w in &r.windows {
            write!(out, "{:>11}", w.counts[t.as_str()])?;
        }
        writeln!(out)?;
    }
    type Cell = fn(&Window) -> String;
    let rows: [(&str, Cell); 4] = [
        ("revenue", |w| format!("{:.2}", w.revenue)),
        ("refunds", |w| format!("{:.2}", w.refunds)),
        ("sessions", |w| w.sessions.to_string()),
        ("categories (est.)", |w| format!("{:.1}", w.categories)),
    ];
    for (name, cell) in rows {
        write!(out, "{name:<18}")?;
        for w in &r.windows {
            write!(out, "{:>11}", cell(w))?;
        }
        writeln!(out)?;
    }

    writeln!(out)?;
    writeln!(
        out,
        "lifetime      {} orders on {} days, net spend {:.2}, first purchase {}",
        r.lifetime.orders,
        r.lifetime.purchase_days,
        r.lifetime.net_spend,
        optional(r.lifetime.first_purchase)
    )?;
    match r.published.tier {
        Some(tier) => writeln!(
            out,
            "published     tier {tier} since {} (last user_score at {})",
            optional(r.published.since),
            optional(r.published.last_score_published)
        )?,
        None => writeln!(out, "published     no tier yet")?,
    }
    match &r.latest_score {
        Some(s) => writeln!(
            out,
            "latest score  tier {} p [{}] churn {:.3} expected {:.2}, model {}, event {} at {}, \
             processed {} ({})",
            s.tier,
            probabilities(&s.scores.tier_probabilities),
            s.scores.churn_risk,
            s.scores.expected_value,
            s.model_version,
            s.last_event_id,
            s.event_time,
            s.processing_time,
            r.score_key
        )?,
        None => writeln!(out, "latest score  none under {}", r.score_key)?,
    }
    let m = &r.model;
    writeln!(
        out,
        "model now     tier {} p [{}] churn {:.3} p_return {:.3} expected {:.2}, model {}",
        m.tier,
        probabilities(&m.tier_probabilities),
        m.churn_risk,
        m.p_return,
        m.expected_value,
        m.model_version
    )?;
    let reasons: Vec<String> = m
        .reason_codes
        .iter()
        .map(|c| format!("{} {:+.3}", c.feature, c.contribution))
        .collect();
    writeln!(out, "reasons       {}", reasons.join(", "))?;

    print_history(out, &r.history)?;

    writeln!(out)?;
    writeln!(
        out,
        "features ({}, spec {})",
        r.features.len(),
        r.feature_spec
    )?;
    // In spec order: the windows horizon by horizon, then the whole-history scalars.
    for name in FeatureSpec::current().names() {
        writeln!(out, "  {name:<34}{:>14.4}", r.features[name])?;
    }
    Ok(())
}
