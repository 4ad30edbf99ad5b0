//! `tierflow rules check|test` as an operator runs them: the binary, files in a tempdir, no
//! broker and no Redis. `check` accepts the deployed example and lists its campaigns, points
//! at every problem of a broken file with the positions `RulesError` gives, and refuses a
//! tier_count the model does not score; `test` predicts the exact triggers of a hand-written
//! clickstream and a consistent summary on a generated one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binary with `args`, run from the workspace root with no configuration of the caller.
fn tierflow(args: &[&str]) -> Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tierflow"));
    command
        .args(args)
        .current_dir(workspace_root())
        .env_remove("TIERFLOW_CONFIG")
        .env("RUST_LOG", "warn");
    // Configuration from the environment would change what is tested.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TIERFLOW_") {
            command.env_remove(key);
        }
    }
    command.output().context("running tierflow")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn succeeded(args: &[&str]) -> Result<String> {
    let output = tierflow(args)?;
    ensure!(
        output.status.success(),
        "tierflow {args:?} failed with {}:\n{}",
        output.status,
        stderr(&output)
    );
    Ok(stdout(&output))
}

/// 1-based line and column (in characters) of the `nth` (0-based) occurrence of `needle`.
fn position(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} occurs fewer than {} times", nth + 1))
        .0;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("tempdir paths are UTF-8")
}

#[test]
fn check_accepts_the_deployed_rules_and_lists_every_campaign() -> Result<()> {
    let text = std::fs::read_to_string(workspace_root().join("deploy/rules.toml"))?;
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name = \""))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(names.len(), 7, "campaigns in deploy/rules.toml: {names:?}");

    let out = succeeded(&["rules", "check", "deploy/rules.toml"])?;
    assert!(
        out.contains("deploy/rules.toml: ok, 7 campaigns"),
        "summary line missing:\n{out}"
    );
    assert!(
        out.contains("tier_count = 5 (the model scores 5 tiers)"),
        "{out}"
    );
    // One line per campaign, starting with its name, carrying its condition.
    for name in &names {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for campaign {name}:\n{out}"));
        assert!(line.contains(" = "), "no condition on {line:?}");
    }
    let cart = out
        .lines()
        .find(|l| l.starts_with("cart_reminder "))
        .expect("cart_reminder line");
    let cells: Vec<&str> = cart.split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(
        cells.iter().map(|c| c.trim()).collect::<Vec<_>>(),
        [
            "cart_reminder",
            "5",
            "cart_abandoned = \"30m\"",
            "1d",
            "0.1",
            "unlimited",
            "6h",
            "1d"
        ],
        "{cart:?}"
    );
    Ok(())
}

#[test]
fn check_defaults_to_the_configured_rules_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = workspace_root().join("deploy/rules.toml").canonicalize()?;
    let config = write(
        dir.path(),
        "tierflow.toml",
        &format!("[campaigns]\nrules = {:?}\n", path_str(&rules)),
    )?;
    let out = succeeded(&["--config", path_str(&config), "rules", "check"])?;
    assert!(
        out.starts_with(&format!("{}: ok, 7 campaigns", rules.display())),
        "{out}"
    );
    // Without a file and without campaigns.rules: an error that says what to do.
    let output = tierflow(&["rules", "check"])?;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("campaigns.rules"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[test]
fn check_points_at_every_problem_of_a_broken_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let semantic = r#"tier_count = 5

[[campaign]]
name = "reminder"
cooldown = "3w"
when = { cart_abandoned = "30m" }

[[campaign]]
name = "reminder"
when = { first_purchase = true }
"#;
    let path = write(dir.path(), "semantic.toml", semantic)?;
    let origin = path_str(&path);
    let output = tierflow(&["rules", "check", origin])?;
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(2), "{all}");
    let (line, col) = position(semantic, "\"3w\"", 0);
    assert_eq!((line, col), (5, 12));
    assert!(
        all.contains(&format!(
            "{origin}:{line}:{col}: unknown duration unit \"w\" in cooldown (use s, m, h, d)"
        )),
        "{all}"
    );
    let (first_line, first_col) = position(semantic, "\"reminder\"", 0);
    let (line, col) = position(semantic, "\"reminder\"", 1);
    assert!(
        all.contains(&format!(
            "{origin}:{line}:{col}: duplicate campaign name \"reminder\" (first defined at line \
             {first_line}, column {first_col})"
        )),
        "{all}"
    );
    assert!(all.contains("refused (2 problems)"), "{all}");

    // An unknown key is a syntax-level error: the parse stops there, so it is the one
    // problem reported, even with the others still in the file.
    let with_unknown = semantic.replace(
        "tier_count = 5\n",
        "tier_count = 5\n\n[defaults]\ndaily_cap = 2\ncolour = \"red\"\n",
    );
    let path = write(dir.path(), "unknown.toml", &with_unknown)?;
    let origin = path_str(&path);
    let output = tierflow(&["rules", "check", origin])?;
    let all = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(2), "{all}");
    let (line, col) = position(&with_unknown, "colour", 0);
    assert_eq!((line, col), (5, 1));
    assert!(
        all.contains(&format!("{origin}:{line}:{col}: unknown field `colour`")),
        "{all}"
    );
    assert!(all.contains("refused (1 problem)"), "{all}");
    Ok(())
}

#[test]
fn check_refuses_a_tier_count_the_model_does_not_score() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = write(
        dir.path(),
        "three.toml",
        "tier_count = 3\n\n[[campaign]]\nname = \"top\"\nwhen = { tier_reached = 2 }\n",
    )?;
    let output = tierflow(&["rules", "check", path_str(&path)])?;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("tier_count = 3 but the model scores 5 tiers"),
        "{}",
        stderr(&output)
    );
    // The same refusal before `rules test` replays anything.
    let events = write(dir.path(), "none.jsonl", "")?;
    let output = tierflow(&[
        "rules",
        "test",
        "--events",
        path_str(&events),
        "--rules",
        path_str(&path),
    ])?;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("tier_count = 3 but the model scores 5 tiers"));
    // --no-model: only the file is checked.
    let out = succeeded(&["rules", "check", "--no-model", path_str(&path)])?;
    assert!(
        out.contains("tier_count = 3 (not compared with a model)"),
        "{out}"
    );
    Ok(())
}

const CART_RULES: &str = r#"tier_count = 5
[defaults]
cooldown = "1d"
daily_cap = 10

[[campaign]]
name = "cart_reminder"
when = { cart_abandoned = "30m" }

[[campaign]]
name = "first_purchase_thanks"
cooldown = "0s"
when = { first_purchase = true }
"#;

/// User ua abandons a cart (a1 at 10:00, seen due at 11:00), abandons another (a3 at 11:05,
/// seen due at 12:00) inside the 1d cooldown; user ub checks out and buys within 10 minutes,
/// then buys again the next day. Line 5 is not an event.
const EVENTS: &str = r#"{"schema_version":1,"event_id":"a1","user_id":"ua","event_type":"add_to_cart","ts":"2026-03-02T10:00:00.000Z","session_id":"sa1","product_id":"p1","category":"books","price":10.0,"quantity":1,"currency":"EUR"}
{"schema_version":1,"event_id":"b1","user_id":"ub","event_type":"add_to_cart","ts":"2026-03-02T10:01:00.000Z","session_id":"sb1","product_id":"p2","category":"books","price":20.0,"quantity":1,"currency":"EUR"}
{"schema_version":1,"event_id":"b2","user_id":"ub","event_type":"checkout_start","ts":"2026-03-02T10:05:00.000Z","session_id":"sb1","quantity":1}
{"schema_version":1,"event_id":"b3","user_id":"ub","event_type":"purchase","ts":"2026-03-02T10:09:00.000Z","session_id":"sb1","quantity":1,"currency":"EUR","order_id":"ob1","revenue":20.0}
not json at all
{"schema_version":1,"event_id":"a2","user_id":"ua","event_type":"page_view","ts":"2026-03-02T11:00:00.000Z","session_id":"sa2"}
{"schema_version":1,"event_id":"a3","user_id":"ua","event_type":"add_to_cart","ts":"2026-03-02T11:05:00.000Z","session_id":"sa2","product_id":"p1","category":"books","price":10.0,"quantity":1,"currency":"EUR"}
{"schema_version":1,"event_id":"a4","user_id":"ua","event_type":"page_view","ts":"2026-03-02T12:00:00.000Z","session_id":"sa3"}
{"schema_version":1,"event_id":"b4","user_id":"ub","event_type":"purchase","ts":"2026-03-03T09:00:00.000Z","session_id":"sb2","quantity":1,"currency":"EUR","order_id":"ob2","revenue":15.0}
"#;

/// The JSON lines of `rules test --json`: the triggers, then the summary (exactly one, last).
fn json_lines(out: &str) -> Result<(Vec<Value>, Value)> {
    let mut values: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("not JSON lines:\n{out}"))?;
    let summary = values.pop().context("no output")?;
    ensure!(summary["type"] == "summary", "last line: {summary}");
    ensure!(
        values.iter().all(|v| v["type"] == "trigger"),
        "non-trigger before the summary:\n{out}"
    );
    Ok((values, summary))
}

/// `(fired_at, user, campaign, cause, outcome)` of each trigger line.
fn fields(triggers: &[Value]) -> Vec<[String; 5]> {
    triggers
        .iter()
        .map(|t| {
            [
                "fired_at",
                "user_id",
                "campaign",
                "causing_event_id",
                "outcome",
            ]
            .map(|k| t[k].as_str().unwrap_or("<none>").to_owned())
        })
        .collect()
}

#[test]
fn test_predicts_exactly_the_triggers_of_a_hand_written_stream() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = write(dir.path(), "cart.toml", CART_RULES)?;
    let events = write(dir.path(), "events.jsonl", EVENTS)?;
    let args = [
        "rules",
        "test",
        "--events",
        path_str(&events),
        "--rules",
        path_str(&rules),
        "--json",
    ];
    let output = tierflow(&args)?;
    assert!(output.status.success(), "{}", stderr(&output));
    let (triggers, summary) = json_lines(&stdout(&output))?;
    let expected = [
        [
            "2026-03-02T10:09:00.000Z",
            "ub",
            "first_purchase_thanks",
            "b3",
            "send",
        ],
        [
            "2026-03-02T10:30:00.000Z",
            "ua",
            "cart_reminder",
            "a1",
            "send",
        ],
        [
            "2026-03-02T11:35:00.000Z",
            "ua",
            "cart_reminder",
            "a3",
            "cooldown",
        ],
    ]
    .map(|row| row.map(String::from));
    // In fired_at order; no cart trigger for ub (checkout within 30 min), one first purchase.
    assert_eq!(fields(&triggers), expected);
    assert_eq!(triggers[1]["rule"], "cart_abandoned = \"30m\"");
    assert!(triggers.iter().all(|t| t["tier"].is_u64()), "{triggers:?}");

    assert_eq!(summary["events"], 8);
    assert_eq!(summary["triggers"], 3);
    assert_eq!(summary["undecodable_lines"], 1);
    assert_eq!(summary["undecodable"][0]["line"], 5);
    let cart = &summary["campaigns"]["cart_reminder"];
    assert_eq!(
        (
            &cart["fired"],
            &cart["sent"],
            &cart["held_out"],
            &cart["suppressed"]
        ),
        (
            &Value::from(2),
            &Value::from(1),
            &Value::from(0),
            &Value::from(1)
        )
    );
    assert_eq!(cart["suppressed_by_reason"]["cooldown"], 1);
    assert_eq!(summary["campaigns"]["first_purchase_thanks"]["sent"], 1);
    assert!(
        stderr(&output).contains("line 5:"),
        "undecodable line not reported: {}",
        stderr(&output)
    );

    // --user: only that user's triggers.
    let mut by_user = args.to_vec();
    by_user.extend(["--user", "ua"]);
    let (triggers, summary) = json_lines(&succeeded(&by_user)?)?;
    assert_eq!(fields(&triggers), expected[1..]);
    assert_eq!(summary["triggers"], 2);
    assert_eq!(summary["campaigns"]["first_purchase_thanks"]["fired"], 0);

    // The table form says the same.
    let out = succeeded(&args[..args.len() - 1])?;
    let line = out
        .lines()
        .find(|l| l.starts_with("2026-03-02T11:35:00.000Z"))
        .with_context(|| format!("no 11:35 trigger line:\n{out}"))?;
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[1..3], ["ua", "cart_reminder"], "{line}");
    assert!(cells[cells.len() - 3..].first() == Some(&"a3"), "{line}");
    assert_eq!(cells.last(), Some(&"cooldown"), "{line}");
    assert!(out.contains("cart_reminder          2      1     0         1 (cooldown=1)"));
    Ok(())
}

#[test]
fn test_on_a_generated_stream_reports_triggers_whose_counts_add_up() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let plain = dir.path().join("events.jsonl");
    let gz = dir.path().join("events.jsonl.gz");
    for path in [&plain, &gz] {
        succeeded(&[
            "generate",
            "--users",
            "30",
            "--days",
            "14",
            "--seed",
            "11",
            "-o",
            path_str(path),
        ])?;
    }
    let run = |events: &Path| {
        succeeded(&[
            "rules",
            "test",
            "--events",
            path_str(events),
            "--rules",
            "deploy/rules.toml",
            "--json",
        ])
    };
    let out = run(&plain)?;
    assert_eq!(out, run(&gz)?, "gzip input reads the same events");
    let (triggers, summary) = json_lines(&out)?;
    assert!(!triggers.is_empty(), "no trigger on a generated stream");
    assert_eq!(summary["triggers"], triggers.len());
    assert_eq!(summary["undecodable_lines"], 0);
    assert_eq!(
        summary["events"],
        std::fs::read_to_string(&plain)?.lines().count()
    );
    let fired_at: Vec<&str> = triggers
        .iter()
        .map(|t| t["fired_at"].as_str().unwrap())
        .collect();
    assert!(fired_at.is_sorted(), "not in fired_at order");

    // Recount from the trigger lines and compare with the summary.
    let mut counted: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for t in &triggers {
        *counted
            .entry(t["campaign"].as_str().unwrap().to_owned())
            .or_default()
            .entry(t["outcome"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let campaigns = summary["campaigns"].as_object().context("campaigns")?;
    assert_eq!(
        campaigns.len(),
        7,
        "every campaign of the file: {campaigns:?}"
    );
    let mut total = 0;
    for (name, c) in campaigns {
        let n = |k: &str| c[k].as_u64().unwrap();
        let by_reason: u64 = c["suppressed_by_reason"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(n("suppressed"), by_reason, "{name}: {c}");
        assert_eq!(
            n("fired"),
            n("sent") + n("held_out") + n("suppressed"),
            "{name}: {c}"
        );
        let lines = counted.remove(name).unwrap_or_default();
        assert_eq!(lines.values().sum::<u64>(), n("fired"), "{name}");
        assert_eq!(lines.get("send").copied().unwrap_or(0), n("sent"), "{name}");
        assert_eq!(
            lines.get("control_holdout").copied().unwrap_or(0),
            n("held_out"),
            "{name}"
        );
        total += n("fired");
    }
    assert!(
        counted.is_empty(),
        "triggers of unknown campaigns: {counted:?}"
    );
    assert_eq!(total, triggers.len() as u64);
    Ok(())
}
