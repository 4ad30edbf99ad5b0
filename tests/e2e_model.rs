//! End to end, through the `tierflow` binary: train on generated and on real (UCI Online
//! Retail) events, check the artifact, and hold the model to beating the classic baselines
//! on the same held-out users; `evaluate` reproduces the training report from the artifact.

mod common;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use common::{data_file, ok, tierflow, workspace_root};

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// The margins of the model over the best baseline, by metric name.
fn margins(report: &Value) -> Vec<(String, f64, bool)> {
    report["comparison"]["margins"]
        .as_array()
        .expect("margins")
        .iter()
        .map(|m| {
            (
                m["metric"].as_str().unwrap_or_default().to_owned(),
                m["margin"].as_f64().unwrap_or(f64::NAN),
                m["model_wins"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

fn assert_model_wins(report: &Value, metrics: &[&str]) {
    let margins = margins(report);
    for metric in metrics {
        let (_, margin, wins) = margins
            .iter()
            .find(|(m, _, _)| m == metric)
            .unwrap_or_else(|| panic!("no margin for {metric} in {margins:?}"));
        assert!(
            *wins,
            "the model does not beat the best baseline on {metric} (margin {margin}): {margins:?}"
        );
    }
}

fn artifact_is_complete(dir: &Path) -> Result<Value> {
    for file in [
        "manifest.json",
        "model.json",
        "training.json",
        "normalization.json",
        "weights.bpk",
        "report.json",
        "report.md",
        "plots/gain.svg",
        "plots/lift.svg",
        "plots/calibration.svg",
        "plots/confusion.svg",
    ] {
        let path = dir.join(file);
        ensure!(
            path.is_file(),
            "{} missing from the artifact",
            path.display()
        );
        ensure!(
            std::fs::metadata(&path)?.len() > 0,
            "{} is empty",
            path.display()
        );
    }
    let manifest = read_json(&dir.join("manifest.json"))?;
    ensure!(
        manifest["feature_spec"].as_str() == Some(tierflow_features::FeatureSpec::current().id()),
        "{manifest}"
    );
    ensure!(
        manifest["model_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("m1-")),
        "{manifest}"
    );
    Ok(manifest)
}

#[test]
fn trains_on_synthetic_events_beats_the_baselines_and_evaluate_reproduces_the_report() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let events = dir.path().join("events.jsonl.gz");
    let events = events.to_str().unwrap();
    ok(tierflow(&[
        "generate",
        "--users",
        "3000",
        "--days",
        "90",
        "--seed",
        "11",
        "--duplicate",
        "0.01",
        "--late",
        "0.01",
        "--malformed",
        "0.001",
        "-o",
        events,
    ])?)?;
    let model = dir.path().join("model");
    let cutoffs = [
        "--cutoff",
        "2026-01-31T00:00:00Z",
        "--cutoff",
        "2026-02-15T00:00:00Z",
        "--cutoff",
        "2026-03-02T00:00:00Z",
    ];
    let mut args = vec!["train", "--events", events, "--horizon-days", "30", "-o"];
    args.push(model.to_str().unwrap());
    args.extend(cutoffs);
    let output = ok(tierflow(&args)?)?;
    let stdout = String::from_utf8(output.stdout)?;
    assert!(
        stdout.contains("RFM"),
        "the summary names the baselines:\n{stdout}"
    );
    assert!(stdout.contains("BG/NBD"), "{stdout}");

    let manifest = artifact_is_complete(&model)?;
    assert_eq!(manifest["horizon_days"], 30);
    assert_eq!(
        manifest["tiers"]["thresholds"].as_array().map(Vec::len),
        Some(4)
    );
    let report = read_json(&model.join("report.json"))?;
    assert_model_wins(&report, &["tier_macro_f1", "churn_auc", "spend_gini"]);

    // evaluate re-derives the same split from the artifact and gets the same numbers.
    let again = dir.path().join("eval");
    let mut args = vec!["evaluate", "--events", events, "--horizon-days", "30", "-m"];
    args.push(model.to_str().unwrap());
    args.extend(["-o", again.to_str().unwrap()]);
    args.extend(cutoffs);
    ok(tierflow(&args)?)?;
    let evaluated = read_json(&again.join("report.json"))?;
    assert_eq!(evaluated["comparison"], report["comparison"]);
    assert!(again.join("plots/gain.svg").is_file());

    // The training profile (the drift reference): every feature and score, fitted on the
    // pipeline's feature vectors of events before the last cutoff.
    let profile = &manifest["profile"];
    assert_eq!(
        profile["features"].as_array().map(Vec::len),
        Some(tierflow_features::FeatureSpec::current().len())
    );
    let scores: Vec<&str> = profile["scores"]
        .as_array()
        .expect("profile scores")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(scores, ["churn_risk", "expected_value", "tier"]);
    assert_eq!(profile["rows"], 20_000);
    // Offline drift: the same population (another seed, the training period) stays under
    // the threshold; a population of buyers crosses it.
    let drift_of = |name: &str, extra: &[&str]| -> Result<Value> {
        let file = dir.path().join(name);
        let mut args = vec![
            "generate", "--users", "1000", "--days", "60", "--seed", "12",
        ];
        args.extend_from_slice(extra);
        args.extend(["-o", file.to_str().unwrap()]);
        ok(tierflow(&args)?)?;
        let output = ok(tierflow(&[
            "monitor",
            "drift",
            "--json",
            "--model",
            model.to_str().unwrap(),
            "--events",
            file.to_str().unwrap(),
        ])?)?;
        Ok(serde_json::from_slice(&output.stdout)?)
    };
    let same = drift_of("same.jsonl", &[])?;
    assert_eq!(same["drifted"], serde_json::json!([]), "{same}");
    let shifted = drift_of(
        "buyers.jsonl",
        &[
            "--mix",
            "loyal_high_spender=1,bargain_hunter=0,browser=0,decaying=0,new_user=0",
        ],
    )?;
    let drifted: Vec<&str> = shifted["drifted"]
        .as_array()
        .expect("drifted")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        drifted.contains(&"purchase_30d") && drifted.contains(&"expected_value"),
        "{shifted}"
    );
    Ok(())
}

#[test]
fn beats_the_baselines_on_online_retail_cut_off_2011_08_31() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let events = dir.path().join("retail.jsonl");
    let source = data_file("online_retail.csv.gz");
    ok(tierflow(&[
        "import",
        "online-retail",
        source.to_str().unwrap(),
        "-o",
        events.to_str().unwrap(),
    ])?)?;
    let model = dir.path().join("retail-model");
    // The protocol: features up to 2011-08-31, labels to 2011-12-09 (100 days) at the last
    // cutoff, where 30% of the customers are held out; the monthly cutoffs before it add
    // training rows. Documented in README.md ("Model").
    let mut args = vec![
        "train",
        "--events",
        events.to_str().unwrap(),
        "--horizon-days",
        "100",
    ];
    let cutoffs: Vec<String> = (1..=9)
        .map(|m| format!("2011-{m:02}-01T00:00:00Z"))
        .collect();
    for cutoff in &cutoffs {
        args.extend(["--cutoff", cutoff.as_str()]);
    }
    args.extend(["--test-fraction", "0.3", "-o", model.to_str().unwrap()]);
    ok(tierflow(&args)?)?;
    artifact_is_complete(&model)?;
    let report = read_json(&model.join("report.json"))?;
    assert_model_wins(
        &report,
        &[
            "tier_macro_f1",
            "churn_auc",
            "churn_pr_auc",
            "spend_gini",
            "spend_spearman",
        ],
    );
    Ok(())
}

#[test]
fn train_explains_itself_and_refuses_bad_input_clearly() -> Result<()> {
    let help = ok(tierflow(&["train", "--help"])?)?;
    let help = String::from_utf8(help.stdout)?;
    for needle in [
        "--cutoff",
        "--horizon-days",
        "--tier-thresholds",
        "--hidden",
        "early stopping",
    ] {
        assert!(
            help.contains(needle),
            "train --help lacks {needle}:\n{help}"
        );
    }
    let dir = tempfile::tempdir()?;
    let events = dir.path().join("events.jsonl");
    ok(tierflow(&[
        "generate",
        "--users",
        "50",
        "--days",
        "10",
        "-o",
        events.to_str().unwrap(),
    ])?)?;
    // A cutoff before every event: nothing to learn from.
    let output = tierflow(&[
        "train",
        "--events",
        events.to_str().unwrap(),
        "--cutoff",
        "2020-01-01T00:00:00Z",
        "-o",
        dir.path().join("m").to_str().unwrap(),
    ])?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no rows"), "{stderr}");
    // An artifact that is not one.
    std::fs::create_dir_all(dir.path().join("broken"))?;
    let output = tierflow(&[
        "evaluate",
        "--events",
        events.to_str().unwrap(),
        "--cutoff",
        "2026-01-05T00:00:00Z",
        "-m",
        dir.path().join("broken").to_str().unwrap(),
        "-o",
        dir.path().join("out").to_str().unwrap(),
    ])?;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("manifest.json"), "{stderr}");
    Ok(())
}

/// The committed default model is what its recipe (`just default-model`) makes: the same
/// version, so the weights, normalisation, tiers and calibration are reproduced.
#[test]
fn the_committed_default_model_is_reproduced_by_its_recipe() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let events = dir.path().join("events.jsonl.gz");
    ok(tierflow(&[
        "generate",
        "--users",
        "5000",
        "--days",
        "90",
        "--seed",
        "42",
        "-o",
        events.to_str().unwrap(),
    ])?)?;
    let model = dir.path().join("default-model");
    ok(tierflow(&[
        "train",
        "--events",
        events.to_str().unwrap(),
        "--cutoff",
        "2026-01-31T00:00:00Z",
        "--cutoff",
        "2026-02-15T00:00:00Z",
        "--cutoff",
        "2026-03-02T00:00:00Z",
        "--horizon-days",
        "30",
        "--source",
        "synthetic(users=5000, days=90, seed=42)",
        "-o",
        model.to_str().unwrap(),
    ])?)?;
    let rebuilt = read_json(&model.join("manifest.json"))?;
    let committed =
        read_json(&workspace_root().join("crates/tierflow-model/default-model/manifest.json"))?;
    assert_eq!(rebuilt["model_version"], committed["model_version"]);
    assert_eq!(rebuilt["tiers"], committed["tiers"]);
    Ok(())
}
