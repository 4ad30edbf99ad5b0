//! `tierflow rules check|test`: the campaign rules file, checked and tried offline.
//!
//! `check` parses the file as `run` does (every diagnostic with its line and column) and
//! compares its tier_count with the model's. `test` replays an event log through
//! `tierflow_pipeline::offline::replay_with` — the reference the pipeline is tested against,
//! with governance in memory — and shows every trigger with its governance outcome.
//!
//! A refused rules file (or a tier_count mismatch) exits with code 2 after printing why;
//! other failures (unreadable files, a broken model) are ordinary errors (exit code 1).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flate2::read::MultiGzDecoder;
use serde_json::json;
use tierflow_events::{ClickEvent, ErrorClass};
use tierflow_pipeline::Outcome;
use tierflow_pipeline::offline::{self, PredictedTrigger, SourceRecord};
use tierflow_rules::{RuleSet, format_duration};

use crate::cli::{RulesCheckArgs, RulesCommand, RulesTestArgs};
use crate::config::Config;

/// Exit code of a refused rules file.
const REFUSED: i32 = 2;

/// Undecodable lines listed one by one (the rest are only counted).
const MAX_LISTED_LINES: usize = 1_000;

pub(crate) async fn run(command: RulesCommand, config: Config) -> Result<()> {
    tokio::task::spawn_blocking(move || match command {
        RulesCommand::Check(args) => check(args, config),
        RulesCommand::Test(args) => test(args, config),
    })
    .await
    .context("the rules command panicked")?
}

/// Why a rules file cannot be used: printed on stderr, then exit code 2.
fn refuse(lines: &str) -> ! {
    let _ = std::io::stdout().flush();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{lines}");
    let _ = err.flush();
    std::process::exit(REFUSED)
}

/// The rules file: the flag's, else `campaigns.rules`.
pub(super) fn rules_path(flag: Option<PathBuf>, config: &Config) -> Result<PathBuf> {
    match flag.or_else(|| config.campaigns.rules.clone()) {
        Some(path) => Ok(path),
        None => bail!(
            "no rules file: give one, or set campaigns.rules in the configuration \
             (TIERFLOW_CAMPAIGNS__RULES)"
        ),
    }
}

/// Reads and parses a rules file; a refused file prints every diagnostic and exits 2.
pub(super) fn load_rules(path: &Path) -> Result<RuleSet> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the rules file {}", path.display()))?;
    match RuleSet::parse_named(&path.display().to_string(), &text) {
        Ok(rules) => Ok(rules),
        Err(e) => {
            let n = e.diagnostics.len();
            refuse(&format!(
                "{e}\n{}: refused ({n} problem{})",
                path.display(),
                if n == 1 { "" } else { "s" }
            ))
        }
    }
}

/// Exits 2 when the rules were written for another number of tiers than the model scores.
fn require_tiers(path: &Path, rules: &RuleSet, model_tiers: usize) {
    if usize::from(rules.tier_count) != model_tiers {
        refuse(&format!(
            "{}: tier_count = {} but the model scores {model_tiers} tiers; set tier_count = \
             {model_tiers} (and check the tier numbers in the conditions), or pass --no-model",
            path.display(),
            rules.tier_count
        ));
    }
}

fn check(args: RulesCheckArgs, mut config: Config) -> Result<()> {
    if let Some(model) = args.model {
        config.model.artifact = Some(model);
    }
    let path = rules_path(args.file, &config)?;
    let rules = load_rules(&path)?;
    let model_tiers = if args.no_model {
        None
    } else {
        let tiers = super::open_model(&config)?.current().tiers();
        require_tiers(&path, &rules, tiers);
        Some(tiers)
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: ok, {} campaign{}",
        path.display(),
        rules.campaigns.len(),
        if rules.campaigns.len() == 1 { "" } else { "s" }
    )?;
    match model_tiers {
        Some(tiers) => writeln!(
            out,
            "tier_count = {} (the model scores {tiers} tiers)",
            rules.tier_count
        )?,
        None => writeln!(
            out,
            "tier_count = {} (not compared with a model)",
            rules.tier_count
        )?,
    }
    writeln!(
        out,
        "defaults: daily_cap = {} per user per UTC day, max_simultaneous = {}",
        rules.limits.daily_cap, rules.limits.max_simultaneous
    )?;
    if rules.campaigns.is_empty() {
        return Ok(());
    }
    let rows: Vec<[String; 8]> = rules
        .campaigns
        .iter()
        .map(|c| {
            [
                c.name.clone(),
                c.priority.to_string(),
                c.trigger.to_string(),
                format_duration(c.cooldown_ms),
                format!("{}", c.control_fraction),
                c.budget_per_hour
                    .map_or_else(|| "unlimited".to_owned(), |b| b.to_string()),
                format_duration(c.trigger_ttl_ms),
                format_duration(c.attribution_window_ms),
            ]
        })
        .collect();
    let header = [
        "campaign",
        "priority",
        "condition",
        "cooldown",
        "control",
        "budget/h",
        "ttl",
        "attribution",
    ]
    .map(String::from);
    write_table(&mut out, &header, &rows)?;
    Ok(())
}

/// Left-aligned columns separated by two spaces.
fn write_table<const N: usize>(
    out: &mut impl Write,
    header: &[String; N],
    rows: &[[String; N]],
) -> Result<()> {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

/// The lines of an event log as source records (partition 0, offset = line index), and the
/// lines that are not valid events.
struct EventLog {
    records: Vec<SourceRecord>,
    /// `(line number, reason)` of the first [`MAX_LISTED_LINES`] undecodable lines.
    undecodable: Vec<(usize, String)>,
    undecodable_total: usize,
}

fn read_events(path: &Path) -> Result<EventLog> {
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        if path.extension().is_some_and(|e| e == "gz") {
            Box::new(MultiGzDecoder::new(file))
        } else {
            Box::new(file)
        }
    };
    let mut log = EventLog {
        records: Vec::new(),
        undecodable: Vec::new(),
        undecodable_total: 0,
    };
    for (index, line) in BufReader::with_capacity(1 << 20, reader)
        .split(b'\n')
        .enumerate()
    {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(e) = ClickEvent::from_json(&line) {
            log.undecodable_total += 1;
            if log.undecodable.len() < MAX_LISTED_LINES {
                log.undecodable.push((index + 1, e.to_string()));
            }
            continue;
        }
        log.records.push(SourceRecord {
            timestamp: None,
            partition: 0,
            offset: index as i64,
            payload: line,
        });
    }
    Ok(log)
}

/// What became of the triggers of one campaign.
#[derive(Debug, Default)]
struct Tally {
    fired: u64,
    sent: u64,
    held_out: u64,
    suppressed: BTreeMap<&'static str, u64>,
}

impl Tally {
    fn add(&mut self, outcome: Outcome) {
        self.fired += 1;
        match outcome {
            Outcome::Sent => self.sent += 1,
            Outcome::Held => self.held_out += 1,
            Outcome::Suppressed(reason) => *self.suppressed.entry(reason).or_default() += 1,
        }
    }

    fn suppressed_total(&self) -> u64 {
        self.suppressed.values().sum()
    }
}

fn test(args: RulesTestArgs, mut config: Config) -> Result<()> {
    if let Some(model) = args.model {
        config.model.artifact = Some(model);
    }
    let path = rules_path(args.rules, &config)?;
    let rules = load_rules(&path)?;
    let scorer = super::open_model(&config)?.current();
    require_tiers(&path, &rules, scorer.tiers());
    let log = read_events(&args.events)?;
    let expected = offline::replay_with(&scorer, &config.pipeline, Some(&rules), &log.records)
        .context("scoring the events")?;

    let mut triggers: Vec<&PredictedTrigger> = expected
        .triggers
        .values()
        .filter(|t| args.user.as_deref().is_none_or(|u| t.user_id == u))
        .collect();
    triggers.sort_by(|a, b| {
        (a.fired_at, &a.user_id, &a.campaign).cmp(&(b.fired_at, &b.user_id, &b.campaign))
    });
    // Every campaign of the file, in file order, even those that never fired.
    let mut tallies: Vec<(String, Tally)> = rules
        .campaigns
        .iter()
        .map(|c| (c.name.clone(), Tally::default()))
        .collect();
    for t in &triggers {
        match tallies.iter_mut().find(|(name, _)| *name == t.campaign) {
            Some((_, tally)) => tally.add(t.outcome),
            None => {
                let mut tally = Tally::default();
                tally.add(t.outcome);
                tallies.push((t.campaign.clone(), tally));
            }
        }
    }
    let too_late: Vec<usize> = expected
        .dead_letters
        .iter()
        .filter(|(_, class)| **class == ErrorClass::TooLate)
        .map(|((_, offset), _)| *offset as usize + 1)
        .collect();

    let mut out = std::io::stdout().lock();
    if args.json {
        for t in &triggers {
            let line = json!({
                "type": "trigger",
                "fired_at": t.fired_at.to_rfc3339(),
                "user_id": t.user_id,
                "campaign": t.campaign,
                "rule": t.rule,
                "causing_event_id": t.causing_event_id,
                "tier": t.tier,
                "outcome": t.outcome.label(),
            });
            writeln!(out, "{line}")?;
        }
        let campaigns: serde_json::Map<String, serde_json::Value> = tallies
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    json!({
                        "fired": t.fired,
                        "sent": t.sent,
                        "held_out": t.held_out,
                        "suppressed": t.suppressed_total(),
                        "suppressed_by_reason": t.suppressed,
                    }),
                )
            })
            .collect();
        let summary = json!({
            "type": "summary",
            "rules": path.display().to_string(),
            "events": log.records.len(),
            "scored": expected.scored,
            "user": args.user,
            "triggers": triggers.len(),
            "undecodable_lines": log.undecodable_total,
            "undecodable": log
                .undecodable
                .iter()
                .map(|(line, reason)| json!({ "line": line, "reason": reason }))
                .collect::<Vec<_>>(),
            "too_late_lines": too_late,
            "campaigns": campaigns,
        });
        writeln!(out, "{summary}")?;
    } else {
        let rows: Vec<[String; 7]> = triggers
            .iter()
            .map(|t| {
                [
                    t.fired_at.to_rfc3339(),
                    t.user_id.clone(),
                    t.campaign.clone(),
                    t.rule.clone(),
                    t.causing_event_id
                        .clone()
                        .unwrap_or_else(|| "(inactivity)".to_owned()),
                    t.tier.to_string(),
                    t.outcome.label().to_owned(),
                ]
            })
            .collect();
        let header = [
            "fired_at", "user", "campaign", "rule", "cause", "tier", "outcome",
        ]
        .map(String::from);
        if rows.is_empty() {
            writeln!(out, "no triggers")?;
        } else {
            write_table(&mut out, &header, &rows)?;
        }
        writeln!(out)?;
        let rows: Vec<[String; 5]> = tallies
            .iter()
            .map(|(name, t)| {
                let reasons: Vec<String> = t
                    .suppressed
                    .iter()
                    .map(|(r, n)| format!("{r}={n}"))
                    .collect();
                [
                    name.clone(),
                    t.fired.to_string(),
                    t.sent.to_string(),
                    t.held_out.to_string(),
                    if reasons.is_empty() {
                        "0".to_owned()
                    } else {
                        format!("{} ({})", t.suppressed_total(), reasons.join(", "))
                    },
                ]
            })
            .collect();
        let header = ["campaign", "fired", "sent", "held_out", "suppressed"].map(String::from);
        write_table(&mut out, &header, &rows)?;
        writeln!(
            out,
            "\n{} events from {}, {} scored, {} trigger{}{}",
            log.records.len(),
            args.events.display(),
            expected.scored,
            triggers.len(),
            if triggers.len() == 1 { "" } else { "s" },
            args.user
                .as_deref()
                .map_or_else(String::new, |u| format!(" for user {u}"))
        )?;
        if !too_late.is_empty() {
            writeln!(
                out,
                "{} events too late for their windows (lines {})",
                too_late.len(),
                abbreviate(&too_late)
            )?;
        }
    }
    out.flush()?;
    drop(out);
    if log.undecodable_total > 0 {
        let mut err = std::io::stderr().lock();
        writeln!(
            err,
            "{} line{} of {} skipped, not valid events:",
            log.undecodable_total,
            if log.undecodable_total == 1 { "" } else { "s" },
            args.events.display()
        )?;
        for (line, reason) in &log.undecodable {
            writeln!(err, "  line {line}: {reason}")?;
        }
        if log.undecodable_total > log.undecodable.len() {
            writeln!(
                err,
                "  … and {} more",
                log.undecodable_total - log.undecodable.len()
            )?;
        }
    }
    Ok(())
}

/// The first line numbers, then a count of the rest.
fn abbreviate(lines: &[usize]) -> String {
    const SHOWN: usize = 20;
    let shown: Vec<String> = lines.iter().take(SHOWN).map(usize::to_string).collect();
    if lines.len() > SHOWN {
        format!("{}, … {} more", shown.join(", "), lines.len() - SHOWN)
    } else {
        shown.join(", ")
    }
}
