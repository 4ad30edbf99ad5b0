//! Campaign triggers inside the pipeline: each user's rule state travels in their stored
//! state (one write with the windows and the applied offsets, so a replay neither loses nor
//! repeats a trigger), the rules run after every tier decision, governance decides in Redis
//! (offline: in memory), and the records campaign engines read are built here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use arc_swap::ArcSwap;

use tierflow_events::output::OUTPUT_SCHEMA_VERSION;
use tierflow_events::{CampaignArm, CampaignTriggered, ClickEvent, EventTime, Scores, Tier};
use tierflow_features::UserState;
use tierflow_features::spec::ALLOWED_LATENESS_MS;
use tierflow_rules::{
    Attribution, Candidate, Decision, Exposure, Exposures, GovernContext, Ledger, RuleSet,
    RuleState, Verdict,
};
use tierflow_store::{GovernCandidate, GovernRequest, GovernVerdict, Governor};

/// The campaign layer of one pipeline: the rules (swappable while running) and the
/// governance that enforces them.
#[derive(Debug, Clone)]
pub struct Campaigns {
    rules: Arc<ArcSwap<RuleSet>>,
    pub governor: Governance,
}

impl Campaigns {
    pub fn new(rules: RuleSet, governor: Governance) -> Self {
        Self {
            rules: Arc::new(ArcSwap::from_pointee(rules)),
            governor,
        }
    }

    /// The rules now; a batch uses one snapshot from its first update to its governance.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    /// Reads `path` again and swaps the rules in if they changed. A file that does not read,
    /// parse or fit the model (`tiers`) is refused with the reason, keeping the rules in use.
    pub fn reload(&self, path: &Path, tiers: usize) -> Result<bool, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let rules =
            RuleSet::parse_named(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
        if usize::from(rules.tier_count) != tiers {
            return Err(format!(
                "{}: tier_count = {} but the model scores {tiers} tiers",
                path.display(),
                rules.tier_count
            ));
        }
        if *self.rules.load_full() == rules {
            return Ok(false);
        }
        tracing::info!(rules = %path.display(), campaigns = rules.campaigns.len(), "campaign rules reloaded");
        self.rules.store(Arc::new(rules));
        Ok(true)
    }

    /// Polls `path` every `interval` on a thread of its own until the watcher is dropped;
    /// a bad file is logged and counted, and the rules in use stay.
    pub fn watch(&self, path: PathBuf, tiers: usize, interval: Duration) -> RulesWatcher {
        let (stop, stopped) = mpsc::channel::<()>();
        let campaigns = self.clone();
        let polls = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&polls);
        let thread = std::thread::Builder::new()
            .name("rules-reload".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    let outcome = match campaigns.reload(&path, tiers) {
                        Ok(true) => "reloaded",
                        Ok(false) => "unchanged",
                        Err(reason) => {
                            tracing::warn!(%reason, "campaign rules not reloaded; keeping the rules in use");
                            "refused"
                        }
                    };
                    metrics::counter!(crate::telemetry::RULES_RELOADS, "outcome" => outcome)
                        .increment(1);
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            })
            .map_err(|e| tracing::warn!(error = %e, "cannot start the rules reload thread; rules will not hot-reload"))
            .ok();
        RulesWatcher {
            stop: Some(stop),
            thread,
            polls,
        }
    }
}

/// Stops the rules reload thread when dropped.
#[derive(Debug)]
pub struct RulesWatcher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    polls: Arc<AtomicU64>,
}

impl RulesWatcher {
    /// Polls completed so far.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::SeqCst)
    }
}

impl Drop for RulesWatcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where cooldowns, caps, budgets and recorded verdicts live.
#[derive(Debug, Clone)]
pub enum Governance {
    /// In Redis, shared by every process of the group: limits hold across partitions and
    /// restarts.
    Redis(Governor),
    /// In this process only (the demo on embedded defaults, with the in-memory state store):
    /// limits hold within the process and are forgotten when it stops.
    Memory(Arc<Mutex<Ledger>>),
}

/// A rule that fired for a user, with the decision it fired on.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub user_id: String,
    pub candidate: Candidate,
    /// The user's tier and scores at the update that fired it (or the last update before a
    /// timer fired).
    pub tier: Tier,
    pub scores: Scores,
    /// Rules that fired from one evaluation (one update, or the timers due before an update
    /// or at the end of a batch) share a group; governance decides group after group, in
    /// the order they fired, which is the user's order of records however the stream was
    /// batched.
    pub group: u64,
}

/// The rule state stored in `state`; a user stored before campaigns existed starts with
/// one, seeded so that existing buyers are not welcomed as first-time buyers. An unreadable
/// one also starts afresh (seeded the same way); the reason comes back for the log.
pub fn rule_state(state: &UserState) -> (RuleState, Option<String>) {
    let fresh = || RuleState {
        first_purchase_seen: state.lifetime.orders > 0,
        ..RuleState::default()
    };
    if state.rules.is_empty() {
        return (fresh(), None);
    }
    match decode_rule_state(&state.rules) {
        Ok(rules) => (rules, None),
        Err(e) => (fresh(), Some(format!("rule state does not decode: {e}"))),
    }
}

/// First byte of a versioned rule state. The first rule-state format had no version: it
/// starts with bincode's varint length of `timers` (at most `MAX_CAMPAIGNS` = 256), whose
/// first byte is never 255.
const RULE_STATE_MARKER: u8 = 0xFF;
/// Version 2 added `last_scores`; version 3 added `exposures`.
const RULE_STATE_VERSION: u8 = 3;

/// The rule state as the first format stored it (no `last_scores`, no `exposures`).
#[derive(serde::Deserialize)]
struct RuleStateV1 {
    timers: Vec<tierflow_rules::Timer>,
    thresholds_held: Vec<String>,
    first_purchase_seen: bool,
    last_visit: Option<EventTime>,
    last_cart_add: Option<EventTime>,
    last_checkout: Option<EventTime>,
}

/// Version 2: the first format and `last_scores` (bincode has no `flatten`).
#[derive(serde::Deserialize)]
struct RuleStateV2 {
    timers: Vec<tierflow_rules::Timer>,
    thresholds_held: Vec<String>,
    first_purchase_seen: bool,
    last_visit: Option<EventTime>,
    last_cart_add: Option<EventTime>,
    last_checkout: Option<EventTime>,
    last_scores: Option<Scores>,
}

impl From<RuleStateV1> for RuleStateV2 {
    fn from(v1: RuleStateV1) -> Self {
        Self {
            timers: v1.timers,
            thresholds_held: v1.thresholds_held,
            first_purchase_seen: v1.first_purchase_seen,
            last_visit: v1.last_visit,
            last_cart_add: v1.last_cart_add,
            last_checkout: v1.last_checkout,
            last_scores: None,
        }
    }
}

impl From<RuleStateV2> for RuleState {
    fn from(v2: RuleStateV2) -> Self {
        Self {
            timers: v2.timers,
            thresholds_held: v2.thresholds_held,
            first_purchase_seen: v2.first_purchase_seen,
            last_visit: v2.last_visit,
            last_cart_add: v2.last_cart_add,
            last_checkout: v2.last_checkout,
            last_scores: v2.last_scores,
            exposures: Exposures::default(),
        }
    }
}

fn decode_rule_state(bytes: &[u8]) -> Result<RuleState, String> {
    let config = bincode::config::standard();
    let decoded = match bytes {
        [RULE_STATE_MARKER, RULE_STATE_VERSION, rest @ ..] => {
            bincode::serde::decode_from_slice(rest, config).map(|(rules, _)| rules)
        }
        [RULE_STATE_MARKER, 2, rest @ ..] => {
            bincode::serde::decode_from_slice::<RuleStateV2, _>(rest, config)
                .map(|(v2, _)| v2.into())
        }
        [RULE_STATE_MARKER, version, ..] => {
            return Err(format!("unknown rule state version {version}"));
        }
        legacy => bincode::serde::decode_from_slice::<RuleStateV1, _>(legacy, config)
            .map(|(v1, _)| RuleStateV2::from(v1).into()),
    };
    decoded.map_err(|e| e.to_string())
}

/// Keeps `rules` in `state` (written with it).
pub fn keep_rule_state(state: &mut UserState, rules: &RuleState) {
    let mut bytes = vec![RULE_STATE_MARKER, RULE_STATE_VERSION];
    bincode::serde::encode_into_std_write(rules, &mut bytes, bincode::config::standard())
        .expect("rule state always encodes into memory");
    state.rules = bytes;
}

/// The order governance decides a user's candidates in: event time, then highest priority,
/// then campaign name (the rules crate's order, so Redis and memory agree).
fn decision_order(fired: &mut [&Fired]) {
    fired.sort_by(|a, b| {
        let (a, b) = (&a.candidate, &b.candidate);
        (a.fired_at, std::cmp::Reverse(a.priority), &a.campaign).cmp(&(
            b.fired_at,
            std::cmp::Reverse(b.priority),
            &b.campaign,
        ))
    });
}

/// Splits a batch's fired rules into their groups (one user each), in the order the groups
/// fired, each in decision order.
pub fn by_user(fired: &[Fired]) -> Vec<Vec<&Fired>> {
    let mut slot: HashMap<(&str, u64), usize> = HashMap::new();
    let mut users: Vec<Vec<&Fired>> = Vec::new();
    for f in fired {
        let at = *slot
            .entry((f.user_id.as_str(), f.group))
            .or_insert_with(|| {
                users.push(Vec::new());
                users.len() - 1
            });
        users[at].push(f);
    }
    for user in &mut users {
        decision_order(user);
    }
    users
}

/// The governor's request for one user's fired rules (in decision order). Rules of a
/// campaign no longer in `rules` are left out (the caller reports them as retired).
pub fn govern_request(rules: &RuleSet, fired: &[&Fired]) -> Option<GovernRequest> {
    let user_id = fired.first()?.user_id.clone();
    let candidates = fired
        .iter()
        .filter_map(|f| {
            let terms = rules.terms(&f.user_id, &f.candidate)?;
            Some(GovernCandidate {
                campaign: f.candidate.campaign.clone(),
                idempotency_key: f.candidate.idempotency_key(&f.user_id),
                fired_at: f.candidate.fired_at,
                priority: f.candidate.priority,
                cooldown_ms: terms.cooldown_ms,
                budget_per_hour: terms.budget_per_hour,
                in_control: terms.in_control,
            })
        })
        .collect();
    Some(GovernRequest {
        user_id,
        daily_cap: rules.limits.daily_cap,
        max_simultaneous: rules.limits.max_simultaneous,
        candidates,
    })
}

/// What became of one fired rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Published on `campaign_triggered`.
    Sent,
    /// In the campaign's control group: published on the control topic, never sent.
    Held,
    /// Not published; the label names why (`cooldown`, `daily_cap`, …).
    Suppressed(&'static str),
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Sent => "send",
            Self::Held => "control_holdout",
            Self::Suppressed(reason) => reason,
        }
    }
}

impl From<GovernVerdict> for Outcome {
    fn from(verdict: GovernVerdict) -> Self {
        match verdict {
            GovernVerdict::Send => Self::Sent,
            GovernVerdict::ControlHoldout => Self::Held,
            other => Self::Suppressed(other.as_str()),
        }
    }
}

impl From<Verdict> for Outcome {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Send => Self::Sent,
            Verdict::ControlHoldout => Self::Held,
            suppressed @ Verdict::Suppressed(_) => Self::Suppressed(suppressed.as_str()),
        }
    }
}

/// Decides one user's fired rules (in decision order) in memory, as the Redis governor
/// would: the offline reference and `tierflow rules test`.
pub fn govern_offline(rules: &RuleSet, ledger: &mut Ledger, fired: &[&Fired]) -> Vec<Outcome> {
    let Some(first) = fired.first() else {
        return Vec::new();
    };
    let candidates: Vec<Candidate> = fired.iter().map(|f| f.candidate.clone()).collect();
    let decisions: Vec<Decision> = tierflow_rules::govern(
        &candidates,
        GovernContext {
            rules,
            user_id: &first.user_id,
            ledger,
        },
    );
    decisions.into_iter().map(|d| d.verdict.into()).collect()
}

/// The record of a fired rule that governance let through (or held out).
pub fn triggered(fired: &Fired, model_version: &str, now: EventTime) -> CampaignTriggered {
    let c = &fired.candidate;
    CampaignTriggered {
        schema_version: OUTPUT_SCHEMA_VERSION,
        idempotency_key: c.idempotency_key(&fired.user_id),
        campaign: c.campaign.clone(),
        user_id: fired.user_id.clone(),
        rule: c.rule.clone(),
        tier: fired.tier,
        scores: fired.scores.clone(),
        model_version: model_version.to_owned(),
        causing_event_id: c.causing_event_id.clone(),
        event_time: c.fired_at,
        expires_at: c.expires_at,
        processing_time: now,
    }
}

/// The oldest purchase the pipeline still accepts from a user (older ones are dead-lettered
/// as too late): exposures whose attribution window closed before it can be forgotten.
pub fn exposure_horizon(state: &UserState) -> Option<EventTime> {
    state
        .newest()
        .map(|n| EventTime::from_unix_millis(n.unix_millis().saturating_sub(ALLOWED_LATENESS_MS)))
}

/// Forgets the exposures of `rule_state` no purchase `state` can still accept would be
/// attributed to. Run on every change of a user's state, by the pipeline and the offline
/// reference alike, so their stored rule states agree however the stream was batched.
pub fn prune_exposures(rules: &RuleSet, rule_state: &mut RuleState, state: &UserState) {
    if let Some(horizon) = exposure_horizon(state)
        && !rule_state.exposures.is_empty()
    {
        rule_state.exposures.prune(rules, horizon);
    }
}

/// One user's side of attribution for one step (an update offline, a batch in the
/// pipeline): remembers the new `exposures`, credits each of the `purchases` (applied, not
/// replayed) to the campaigns whose latest exposure before it covers it, then forgets what
/// no later purchase can reach. Attribution depends on event times only, so remembering all
/// of a batch's exposures before crediting its purchases credits what the record-by-record
/// reference credits.
pub fn attribute_user(
    rules: &RuleSet,
    rule_state: &mut RuleState,
    state: &UserState,
    exposures: impl IntoIterator<Item = Exposure>,
    purchases: &[&ClickEvent],
) -> Vec<Attribution> {
    for exposure in exposures {
        rule_state.exposures.expose(exposure);
    }
    let attributions = purchases
        .iter()
        .flat_map(|purchase| rule_state.exposures.attribute(rules, purchase))
        .collect();
    prune_exposures(rules, rule_state, state);
    attributions
}

/// The exposure a published (`Treated`) or held-out (`Control`) trigger stands for.
pub fn exposure(record: &CampaignTriggered, arm: CampaignArm) -> (String, Exposure) {
    (record.user_id.clone(), Exposure::from_trigger(record, arm))
}

/// One user's new exposures and purchases in a batch.
type Touched<'e> = (Vec<Exposure>, Vec<&'e ClickEvent>);

/// Attribution for a batch after governance: each user's new exposures (the triggers
/// governance sent or held out) go into the rule state in `states` (the batch's changed
/// states, written with it), and the batch's applied `purchases` are credited. Returns the
/// attributions in user order, each user's in purchase order.
pub fn attribute_batch<'a>(
    rules: &RuleSet,
    states: &mut [(String, UserState)],
    exposures: impl IntoIterator<Item = (String, Exposure)>,
    purchases: impl IntoIterator<Item = &'a ClickEvent>,
) -> Vec<Attribution> {
    let mut touched: Vec<(String, Touched<'a>)> = Vec::new();
    let mut slot: HashMap<String, usize> = HashMap::new();
    let mut user_slot = |user: &str, touched: &mut Vec<(String, Touched<'a>)>| -> usize {
        *slot.entry(user.to_owned()).or_insert_with(|| {
            touched.push((user.to_owned(), (Vec::new(), Vec::new())));
            touched.len() - 1
        })
    };
    for (user, exposure) in exposures {
        let i = user_slot(&user, &mut touched);
        touched[i].1.0.push(exposure);
    }
    for purchase in purchases {
        let i = user_slot(&purchase.user_id, &mut touched);
        touched[i].1.1.push(purchase);
    }
    if touched.is_empty() {
        return Vec::new();
    }
    let index: HashMap<&str, usize> = states
        .iter()
        .enumerate()
        .map(|(i, (user, _))| (user.as_str(), i))
        .collect();
    let mut found: Vec<(usize, Touched<'a>)> = Vec::new();
    for (user, touched) in touched {
        match index.get(user.as_str()) {
            Some(i) => found.push((*i, touched)),
            // Every user with a trigger or an applied purchase changed state this batch.
            None => {
                tracing::error!(user = %user, "attribution for a user whose state did not change; skipped")
            }
        }
    }
    let mut attributions = Vec::new();
    drop(index);
    for (i, (exposures, purchases)) in found {
        let state = &mut states[i].1;
        let (mut rule_state, unreadable) = rule_state(state);
        if let Some(reason) = unreadable {
            tracing::warn!(user = %states[i].0, %reason, "rule state unreadable; starting afresh");
        }
        attributions.extend(attribute_user(
            rules,
            &mut rule_state,
            state,
            exposures,
            &purchases,
        ));
        keep_rule_state(state, &rule_state);
    }
    attributions
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierflow_events::CampaignArm;

    /// A rule state stored by the first format (no version, no `last_scores`) or the second
    /// (no `exposures`) still reads, timers and all; a new one round-trips with its scores
    /// and exposures.
    #[test]
    fn rule_states_of_every_format_read_back() {
        #[derive(serde::Serialize)]
        struct V1 {
            timers: Vec<tierflow_rules::Timer>,
            thresholds_held: Vec<String>,
            first_purchase_seen: bool,
            last_visit: Option<EventTime>,
            last_cart_add: Option<EventTime>,
            last_checkout: Option<EventTime>,
        }
        let timer = tierflow_rules::Timer {
            campaign: "cart".into(),
            kind: tierflow_rules::TimerKind::Cart,
            armed_at: EventTime::from_unix_millis(1_000),
            due: EventTime::from_unix_millis(61_000),
            cause: Some("e1".into()),
        };
        let v1 = V1 {
            timers: vec![timer.clone()],
            thresholds_held: vec!["risk".into()],
            first_purchase_seen: true,
            last_visit: Some(EventTime::from_unix_millis(1_000)),
            last_cart_add: Some(EventTime::from_unix_millis(1_000)),
            last_checkout: None,
        };
        let mut state = UserState {
            rules: bincode::serde::encode_to_vec(&v1, bincode::config::standard()).unwrap(),
            ..UserState::default()
        };
        let (read, problem) = rule_state(&state);
        assert_eq!(problem, None);
        assert_eq!(read.timers, vec![timer]);
        assert_eq!(read.thresholds_held, ["risk"]);
        assert!(read.first_purchase_seen);
        assert_eq!(read.last_scores, None);

        let scores = Scores {
            tier_probabilities: vec![0.5, 0.5],
            churn_risk: 0.25,
            expected_value: 12.5,
        };
        #[derive(serde::Serialize)]
        struct V2 {
            v1: V1,
            last_scores: Option<Scores>,
        }
        let mut v2 = vec![RULE_STATE_MARKER, 2];
        let v2_state = V2 {
            v1,
            last_scores: Some(scores.clone()),
        };
        bincode::serde::encode_into_std_write(&v2_state, &mut v2, bincode::config::standard())
            .unwrap();
        let (read_v2, problem) = rule_state(&UserState {
            rules: v2,
            ..UserState::default()
        });
        assert_eq!(problem, None);
        assert_eq!(
            read_v2,
            RuleState {
                last_scores: Some(scores.clone()),
                ..read.clone()
            }
        );

        let mut new = read.clone();
        new.last_scores = Some(scores);
        new.exposures.expose(Exposure {
            campaign: "cart".into(),
            fired_at: EventTime::from_unix_millis(61_000),
            trigger_key: "ct/u/cart/61000/e1".into(),
            arm: CampaignArm::Treated,
        });
        keep_rule_state(&mut state, &new);
        assert_eq!(state.rules[0], RULE_STATE_MARKER);
        assert_eq!(rule_state(&state), (new, None));

        state.rules[1] = 9;
        let (_, problem) = rule_state(&state);
        assert!(problem.is_some_and(|p| p.contains("version 9")));
    }

    fn file(campaigns: &[&str]) -> String {
        let mut text = String::from("tier_count = 5\n");
        for (i, name) in campaigns.iter().enumerate() {
            text.push_str(&format!(
                "[[campaign]]\nname = \"{name}\"\npriority = {i}\nwhen = {{ first_purchase = true }}\n"
            ));
        }
        text
    }

    fn wait(what: &str, mut done: impl FnMut() -> bool) {
        let started = std::time::Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_changed_file_is_swapped_in_and_a_bad_one_keeps_the_rules_in_use() {
        let path = std::env::temp_dir().join(format!("tierflow-rules-{}.toml", std::process::id()));
        std::fs::write(&path, file(&["a"])).unwrap();
        let rules = RuleSet::parse(&file(&["a"])).unwrap();
        let campaigns = Campaigns::new(rules, Governance::Memory(Arc::default()));

        // Unchanged, then changed, then refused for each kind of problem.
        assert_eq!(campaigns.reload(&path, 5), Ok(false));
        std::fs::write(&path, file(&["a", "b"])).unwrap();
        assert_eq!(campaigns.reload(&path, 5), Ok(true));
        assert_eq!(campaigns.rules().campaigns.len(), 2);
        assert!(
            campaigns
                .reload(&path, 4)
                .unwrap_err()
                .contains("model scores 4 tiers")
        );
        std::fs::write(
            &path,
            "tier_count = 5\n[[campaign]]\nname = \"x\"\nwhen = { nope = 1 }\n",
        )
        .unwrap();
        let refused = campaigns.reload(&path, 5).unwrap_err();
        assert!(refused.contains(":4:"), "{refused}");
        assert_eq!(campaigns.rules().campaigns.len(), 2);

        // The watcher picks up a change by itself, and survives a bad file.
        let watcher = campaigns.watch(path.clone(), 5, Duration::from_millis(5));
        std::fs::write(&path, file(&["a", "b", "c"])).unwrap();
        wait("the watcher to swap the rules", || {
            campaigns.rules().campaigns.len() == 3
        });
        std::fs::write(&path, "not toml at all [").unwrap();
        let seen = watcher.polls();
        wait("two more polls", || watcher.polls() >= seen + 2);
        assert_eq!(campaigns.rules().campaigns.len(), 3);
        drop(watcher);
        std::fs::remove_file(&path).unwrap();
    }
}
