//! The scorer's contract, end to end on tiny trained models: an artifact survives the disk
//! bit for bit and is refused when it does not fit this build; scores are probabilities and
//! finite amounts for any input; reason codes are ordered and agree with the model; hot
//! reload swaps whole models and never a half-written one.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use burn::prelude::{Device, Tensor, TensorData};
use proptest::prelude::*;
use tierflow_features::FeatureSpec;
use tierflow_model::artifact::{ARTIFACT_FORMAT, MANIFEST_FILE, NORMALIZATION_FILE, WEIGHTS_FILE};
use tierflow_model::{
    Artifact, ArtifactError, ModelHandle, Reload, ScoreBatch, ScoreError, Scorer,
};

use common::{Fixture, fixture};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn device() -> Device {
    Device::flex()
}

/// A scorer of artifact A, built once.
fn scorer() -> &'static Scorer {
    static SCORER: OnceLock<Scorer> = OnceLock::new();
    SCORER.get_or_init(|| Scorer::new(&fixture().a, &device()).expect("artifact A loads"))
}

fn width() -> usize {
    FeatureSpec::current().len()
}

/// The first `n` rows of the fixture data (raw features, row-major).
fn rows(fixture: &Fixture, n: usize) -> &[f32] {
    let n = n.min(fixture.data.len());
    &fixture.data.features[..n * fixture.data.width]
}

/// Asserts what every score must be, whatever the input: tier probabilities in [0, 1] that
/// sum to 1, churn and return probabilities in [0, 1], a finite non-negative expected value.
fn assert_valid(batch: &ScoreBatch, rows: usize) {
    assert_eq!(batch.len(), rows);
    assert_eq!(batch.tier_probabilities.len(), rows * batch.tiers);
    assert_eq!(batch.p_return.len(), rows);
    assert_eq!(batch.expected_value.len(), rows);
    for row in 0..rows {
        let p = batch.probabilities(row);
        assert!(
            p.iter().all(|v| (0.0..=1.0).contains(v)),
            "row {row}: {p:?}"
        );
        let sum: f32 = p.iter().sum();
        assert!(
            (sum - 1.0).abs() <= 1e-5,
            "row {row}: probabilities sum to {sum}"
        );
        let churn = batch.churn_risk[row];
        assert!((0.0..=1.0).contains(&churn), "row {row}: churn {churn}");
        let p_return = batch.p_return[row];
        assert!(
            (0.0..=1.0).contains(&p_return),
            "row {row}: p_return {p_return}"
        );
        let value = batch.expected_value[row];
        assert!(
            value.is_finite() && value >= 0.0,
            "row {row}: expected value {value}"
        );
        assert!(usize::from(batch.tier(row)) < batch.tiers);
    }
}

fn close(a: f32, b: f32, tolerance: f32) -> bool {
    (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1.0)
}

// ---------------------------------------------------------------------------------------
// Artifact round trip and reproducibility

#[test]
fn a_saved_and_loaded_artifact_scores_bit_identically() -> TestResult {
    let fixture = fixture();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model");
    fixture.a.save(&path, &[])?;
    let loaded = Artifact::load(&path)?;

    assert_eq!(loaded.manifest, fixture.a.manifest);
    assert_eq!(loaded.model_config, fixture.a.model_config);
    assert_eq!(loaded.training_config, fixture.a.training_config);
    assert_eq!(loaded.normalizer, fixture.a.normalizer);
    assert_eq!(loaded.weights, fixture.a.weights);
    assert_eq!(loaded.version(), fixture.a.version());

    let in_memory = Scorer::new(&fixture.a, &device())?;
    let from_disk = Scorer::new(&loaded, &device())?;
    assert_eq!(from_disk.version(), in_memory.version());
    let features = rows(fixture, 200);
    let (expected, actual) = (in_memory.score(features)?, from_disk.score(features)?);
    assert_eq!(actual.len(), 200);
    // Bit for bit, not within a tolerance.
    let bits = |b: &ScoreBatch| -> Vec<u32> {
        b.tier_probabilities
            .iter()
            .chain(&b.churn_risk)
            .chain(&b.p_return)
            .chain(&b.expected_value)
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&actual), bits(&expected));
    assert_eq!(actual, expected);

    // Saving again over the same directory replaces it and changes nothing.
    loaded.save(&path, &[("plots/x.svg".to_owned(), b"<svg/>".to_vec())])?;
    assert_eq!(Artifact::load(&path)?.version(), fixture.a.version());
    assert!(path.join("plots/x.svg").is_file());
    Ok(())
}

#[test]
fn model_version_is_reproducible_and_depends_on_the_seed() {
    let fixture = fixture();
    let version = fixture.a.version();
    assert!(
        version.starts_with("m1-") && version.len() == 15,
        "version format: {version}"
    );
    assert!(
        version[3..].chars().all(|c| c.is_ascii_hexdigit()),
        "{version}"
    );
    assert_eq!(
        fixture.a_again.version(),
        version,
        "same data and seed, same version"
    );
    // The burnpack bytes carry random parameter ids, so compare the values themselves.
    let values = |artifact: &Artifact| {
        let model = artifact.model(&device()).expect("weights load");
        model
            .parameter_values()
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    };
    assert!(
        values(&fixture.a_again) == values(&fixture.a),
        "same weights"
    );
    assert_ne!(
        fixture.b.version(),
        version,
        "another seed, another version"
    );
    assert_eq!(fixture.a.manifest.feature_spec, FeatureSpec::current().id());
}

// ---------------------------------------------------------------------------------------
// Refusals

/// Saves artifact A, lets `edit` damage the directory, and returns what loading says.
/// The directory is removed when the returned guard drops.
fn load_after(
    edit: impl FnOnce(&Path) -> std::io::Result<()>,
) -> (tempfile::TempDir, PathBuf, ArtifactError) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model");
    fixture().a.save(&path, &[]).expect("artifact saves");
    edit(&path).expect("edit the artifact");
    match Artifact::load(&path) {
        Ok(_) => panic!("a damaged artifact in {} loaded", path.display()),
        Err(e) => (dir, path, e),
    }
}

fn edit_manifest(
    dir: &Path,
    change: impl FnOnce(&mut tierflow_model::Manifest),
) -> std::io::Result<()> {
    let mut manifest = Artifact::read_manifest(dir).map_err(std::io::Error::other)?;
    change(&mut manifest);
    std::fs::write(
        dir.join(MANIFEST_FILE),
        serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?,
    )
}

fn assert_says(error: &ArtifactError, words: &[&str]) {
    let text = error.to_string();
    for word in words {
        assert!(text.contains(word), "{text:?} should mention {word:?}");
    }
}

#[test]
fn an_artifact_for_another_feature_spec_is_refused() {
    let (_dir, _, error) =
        load_after(|dir| edit_manifest(dir, |m| m.feature_spec = "fs1-0000feedbeef".into()));
    assert!(
        matches!(&error, ArtifactError::SpecMismatch { artifact, current }
            if artifact == "fs1-0000feedbeef" && current == FeatureSpec::current().id()),
        "{error:?}"
    );
    assert_says(
        &error,
        &["fs1-0000feedbeef", FeatureSpec::current().id(), "retrain"],
    );
}

#[test]
fn truncated_or_modified_weights_fail_the_checksum() {
    let truncate = |dir: &Path| {
        let path = dir.join(WEIGHTS_FILE);
        let bytes = std::fs::read(&path)?;
        std::fs::write(&path, &bytes[..bytes.len() / 2])
    };
    let flip_one_byte = |dir: &Path| {
        let path = dir.join(WEIGHTS_FILE);
        let mut bytes = std::fs::read(&path)?;
        let at = bytes.len() - 5;
        bytes[at] ^= 0x01;
        std::fs::write(&path, bytes)
    };
    for edit in [
        &truncate as &dyn Fn(&Path) -> std::io::Result<()>,
        &flip_one_byte,
    ] {
        let (_dir, _, error) = load_after(edit);
        assert!(
            matches!(&error, ArtifactError::Checksum { expected, actual } if expected != actual
                && *expected == fixture().a.manifest.weights_checksum),
            "{error:?}"
        );
        assert_says(
            &error,
            &[
                "weights.bpk",
                "manifest.json",
                "incomplete or being replaced",
            ],
        );
    }
}

#[test]
fn a_newer_format_is_refused() {
    let found = ARTIFACT_FORMAT + 1;
    let (_dir, _, error) = load_after(|dir| edit_manifest(dir, |m| m.format = found));
    assert!(
        matches!(error, ArtifactError::Format { found: f } if f == found),
        "{error:?}"
    );
    assert_says(
        &error,
        &[
            &format!("format {found}"),
            &format!("format {ARTIFACT_FORMAT}"),
        ],
    );
}

#[test]
fn a_missing_file_is_an_io_error_naming_the_path() {
    let (_dir, dir, error) = load_after(|dir| std::fs::remove_file(dir.join(NORMALIZATION_FILE)));
    let missing = dir.join(NORMALIZATION_FILE);
    assert!(
        matches!(&error, ArtifactError::Io { path, source }
            if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
        "{error:?}"
    );
    assert_says(&error, &[&missing.display().to_string()]);

    let (_dir, _, error) = load_after(|dir| std::fs::write(dir.join(MANIFEST_FILE), b"{ not json"));
    assert!(
        matches!(&error, ArtifactError::Invalid { file, .. } if file == MANIFEST_FILE),
        "{error:?}"
    );
    assert_says(&error, &["manifest.json", "not valid"]);
}

// ---------------------------------------------------------------------------------------
// Scoring invariants

#[test]
fn scores_of_real_rows_are_probabilities_and_amounts() -> TestResult {
    let fixture = fixture();
    let features = rows(fixture, 500);
    let batch = scorer().score(features)?;
    assert_valid(&batch, features.len() / width());
    assert_eq!(batch.tiers, fixture.a.manifest.tiers.tiers());
    // The model is not constant: trained rows do not all get the same scores.
    let first = batch.probabilities(0);
    assert!((1..batch.len()).any(|r| batch.probabilities(r) != first));
    Ok(())
}

/// Rows no real user produces, and a scorer must survive anyway.
fn hostile_rows() -> Vec<(&'static str, Vec<f32>)> {
    let w = width();
    let every = |v: f32| vec![v; w];
    let alternating = |a: f32, b: f32| (0..w).map(|j| if j % 2 == 0 { a } else { b }).collect();
    vec![
        ("NaN", every(f32::NAN)),
        ("+inf", every(f32::INFINITY)),
        ("-inf", every(f32::NEG_INFINITY)),
        ("1e30", every(1e30)),
        ("-1e30", every(-1e30)),
        ("f32::MAX", every(f32::MAX)),
        ("-5", every(-5.0)),
        ("zero", every(0.0)),
        ("1e30 / -1e30", alternating(1e30, -1e30)),
        ("NaN / 1e30", alternating(f32::NAN, 1e30)),
        ("-inf / 3", alternating(f32::NEG_INFINITY, 3.0)),
    ]
}

#[test]
fn hostile_rows_still_get_valid_scores_and_finite_reasons() -> TestResult {
    let scorer = scorer();
    let all: Vec<f32> = hostile_rows()
        .into_iter()
        .flat_map(|(_, row)| row)
        .collect();
    assert_valid(&scorer.score(&all)?, hostile_rows().len());
    for (name, row) in hostile_rows() {
        let batch = scorer.score(&row)?;
        assert_eq!(batch.len(), 1, "{name}");
        assert_valid(&batch, 1);
        let reasons = scorer.explain(&row, 3)?;
        assert_eq!(reasons.len(), 1, "{name}");
        assert!(
            reasons[0].iter().all(|r| r.contribution.is_finite()),
            "{name}: {reasons:?}"
        );
        let scores = batch.scores(0);
        assert!(
            scores.expected_value.is_finite() && scores.expected_value >= 0.0,
            "{name}"
        );
    }
    Ok(())
}

#[test]
fn the_untrained_default_network_also_scores_hostile_rows_validly() -> TestResult {
    // Larger, unregularised weights than the tiny trained model: more room to overflow.
    // (Through the fixture first: it must finish training before anything else draws from
    // burn's process-wide RNG.)
    let fixture = fixture();
    let device = device();
    let config = tierflow_model::TrainingConfig::new(
        tierflow_model::ModelConfig::new(width()),
        tierflow_model::model::LossWeights::new(),
    );
    let model = config.model.init(&device);
    let artifact = common::pack(
        &model,
        &config,
        fixture.a.normalizer.clone(),
        fixture.a.manifest.tiers.clone(),
        0,
    );
    let scorer = Scorer::new(&artifact, &device)?;
    let mut all: Vec<f32> = hostile_rows()
        .into_iter()
        .flat_map(|(_, row)| row)
        .collect();
    all.extend_from_slice(rows(fixture, 16));
    let n = all.len() / width();
    assert_valid(&scorer.score(&all)?, n);
    let reasons = scorer.explain(&all, 3)?;
    assert!(reasons.iter().flatten().all(|r| r.contribution.is_finite()));
    Ok(())
}

fn hostile_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -1e4f32..1e4f32,
        2 => 0f32..50.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(1e30f32),
        1 => Just(-1e30f32),
        1 => proptest::num::f32::ANY,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_rows_get_valid_scores(
        features in (1usize..6).prop_flat_map(|rows| proptest::collection::vec(hostile_value(), rows * width()))
    ) {
        let batch = scorer().score(&features).expect("whole rows");
        assert_valid(&batch, features.len() / width());
    }
}

#[test]
fn a_batch_scores_like_one_row_at_a_time() -> TestResult {
    let scorer = scorer();
    let mut features = rows(fixture(), 40).to_vec();
    for (_, row) in hostile_rows() {
        features.extend(row);
    }
    let n = features.len() / width();
    let batch = scorer.score(&features)?;
    for (row, single) in features.chunks_exact(width()).enumerate() {
        let one = scorer.score(single)?;
        for (a, b) in batch.probabilities(row).iter().zip(one.probabilities(0)) {
            assert!(close(*a, *b, 1e-5), "row {row}: {a} vs {b}");
        }
        for (column, batched, alone) in [
            ("churn", &batch.churn_risk, &one.churn_risk),
            ("p_return", &batch.p_return, &one.p_return),
            ("expected_value", &batch.expected_value, &one.expected_value),
        ] {
            assert!(
                close(batched[row], alone[0], 1e-5),
                "row {row} of {n}, {column}: {} batched vs {} alone",
                batched[row],
                alone[0]
            );
        }
    }
    Ok(())
}

#[test]
fn a_ragged_batch_is_a_shape_error_and_an_empty_one_is_empty() -> TestResult {
    let scorer = scorer();
    let w = width();
    for len in [1, w - 1, w + 1, 3 * w - 2] {
        let features = vec![1.0; len];
        assert!(
            matches!(scorer.score(&features), Err(ScoreError::Shape { width, len: l }) if width == w && l == len),
            "score, {len} values"
        );
        assert!(
            matches!(scorer.explain(&features, 3), Err(ScoreError::Shape { .. })),
            "explain, {len} values"
        );
        let text = scorer
            .score(&features)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            text.contains(&w.to_string()) && text.contains(&len.to_string()),
            "{text}"
        );
    }
    let empty = scorer.score(&[])?;
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    assert_eq!(empty.tiers, scorer.tiers());
    assert!(scorer.explain(&[], 3)?.is_empty());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reason codes

#[test]
fn reason_codes_are_at_most_top_spec_names_by_decreasing_magnitude() -> TestResult {
    let spec = FeatureSpec::current();
    let features = rows(fixture(), 64);
    let n = features.len() / width();
    let explained = scorer().explain(features, 3)?;
    assert_eq!(explained.len(), n);
    let mut with_reasons = 0;
    for (row, codes) in explained.iter().enumerate() {
        assert!(codes.len() <= 3, "row {row}: {codes:?}");
        with_reasons += usize::from(!codes.is_empty());
        for code in codes {
            assert!(spec.index_of(&code.feature).is_some(), "{}", code.feature);
            assert!(code.contribution.is_finite() && code.contribution != 0.0);
        }
        assert!(
            codes
                .windows(2)
                .all(|w| w[0].contribution.abs() >= w[1].contribution.abs()),
            "row {row}: {codes:?}"
        );
        let mut names: Vec<&str> = codes.iter().map(|c| c.feature.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), codes.len(), "row {row}: a feature twice");
    }
    assert!(
        with_reasons > n / 2,
        "only {with_reasons} of {n} rows have reasons"
    );

    // Deterministic: the explainer runs without dropout.
    assert_eq!(scorer().explain(features, 3)?, explained);
    // Batching does not change a row's reasons; `top` bounds the count.
    let single = scorer().explain(&features[..width()], 3)?;
    assert_eq!(single[0].len(), explained[0].len());
    for (a, b) in single[0].iter().zip(&explained[0]) {
        assert_eq!(a.feature, b.feature);
        assert!(
            close(a.contribution, b.contribution, 1e-4),
            "{a:?} vs {b:?}"
        );
    }
    let more = scorer().explain(&features[..width()], 10)?;
    assert!(more[0].len() <= 10 && more[0].len() >= explained[0].len());
    assert!(scorer().explain(features, 0)?.iter().all(Vec::is_empty));
    Ok(())
}

#[test]
fn the_average_training_user_has_no_reasons() -> TestResult {
    // Raw values whose signed log1p is the training mean: every normalised value is ~0, so
    // every gradient × input contribution is ~0.
    let normalizer = &fixture().a.normalizer;
    let mean_row: Vec<f32> = normalizer
        .mean
        .iter()
        .map(|m| m.signum() * m.abs().exp_m1())
        .collect();
    assert!(normalizer.apply(&mean_row).iter().all(|z| z.abs() < 1e-4));
    let explained = scorer().explain(&mean_row, 3)?;
    assert_eq!(explained.len(), 1);
    assert!(
        explained[0].iter().all(|r| r.contribution.abs() < 1e-4),
        "{:?}",
        explained[0]
    );
    assert_valid(&scorer().score(&mean_row)?, 1);
    Ok(())
}

#[test]
fn the_top_reason_agrees_with_a_finite_difference() -> TestResult {
    let fixture = fixture();
    let spec = FeatureSpec::current();
    let w = width();
    let device = device();
    let model = fixture.a.model(&device)?;
    let value_score = |z: &[f32]| -> f32 {
        let x = Tensor::<2>::from_data(TensorData::new(z.to_vec(), [1, w]), &device);
        model
            .value_score(x)
            .into_data()
            .try_into_vec::<f32>()
            .map_or(f32::NAN, |v| v[0])
    };
    let mut checked = 0;
    for row in fixture.data.features.chunks_exact(w).take(40) {
        let codes = scorer().explain(row, 1)?;
        let Some(top) = codes[0].first() else {
            continue;
        };
        let j = spec.index_of(&top.feature).expect("a spec feature");
        let z = fixture.a.normalizer.apply(row);
        if z[j].abs() < 1e-3 {
            continue;
        }
        // contribution = ∂score/∂z_j · z_j
        let gradient = top.contribution / z[j];
        let h = 1e-2;
        let (mut up, mut down) = (z.clone(), z.clone());
        up[j] += h;
        down[j] -= h;
        let difference = (value_score(&up) - value_score(&down)) / (2.0 * h);
        assert_eq!(
            difference.signum(),
            gradient.signum(),
            "{}: finite difference {difference}, gradient {gradient}",
            top.feature
        );
        assert!(
            (difference - gradient).abs() <= 0.2 * gradient.abs() + 1e-3,
            "{}: finite difference {difference}, gradient {gradient}",
            top.feature
        );
        checked += 1;
        if checked == 5 {
            break;
        }
    }
    assert!(checked > 0, "no row had a reason to check");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Hot reload

#[test]
fn reload_swaps_a_new_version_once_and_keeps_the_model_on_a_bad_artifact() -> TestResult {
    let fixture = fixture();
    let (a, b) = (fixture.a.version(), fixture.b.version());
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model");
    fixture.a.save(&path, &[])?;
    let handle = ModelHandle::open(&path, &device())?;
    assert_eq!(handle.version(), a);
    assert_eq!(handle.reload_if_changed()?, Reload::Unchanged);

    fixture.b.save(&path, &[])?;
    assert_eq!(
        handle.reload_if_changed()?,
        Reload::Swapped {
            from: a.to_owned(),
            to: b.to_owned()
        }
    );
    assert_eq!(handle.current().version(), b);
    assert_eq!(handle.reload_if_changed()?, Reload::Unchanged);

    // A new manifest whose weights do not match it: refused, B stays.
    fixture.a.save(&path, &[])?;
    let weights = path.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights)?;
    std::fs::write(&weights, &bytes[..bytes.len() - 1])?;
    let error = handle.reload_if_changed().expect_err("corrupt weights");
    assert!(matches!(error, ArtifactError::Checksum { .. }), "{error:?}");
    assert_eq!(handle.version(), b);
    assert_valid(&handle.current().score(rows(fixture, 8))?, 8);

    // The directory gone: an error, B stays.
    std::fs::remove_dir_all(&path)?;
    assert!(matches!(
        handle.reload_if_changed(),
        Err(ArtifactError::Io { .. })
    ));
    assert_eq!(handle.version(), b);

    // Repaired: the next poll picks it up.
    fixture.a.save(&path, &[])?;
    assert_eq!(
        handle.reload_if_changed()?,
        Reload::Swapped {
            from: b.to_owned(),
            to: a.to_owned()
        }
    );

    // A fixed model never changes.
    let fixed = ModelHandle::fixed(&fixture.b, &device())?;
    assert_eq!(fixed.reload_if_changed()?, Reload::Unchanged);
    assert_eq!(fixed.version(), b);
    Ok(())
}

fn wait_until(what: &str, deadline: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_watcher_swaps_under_load_and_stops_when_dropped() -> TestResult {
    let fixture = fixture();
    let (version_a, version_b) = (
        fixture.a.version().to_owned(),
        fixture.b.version().to_owned(),
    );
    let features = rows(fixture, 32).to_vec();
    let expected_a = Scorer::new(&fixture.a, &device())?.score(&features)?;
    let expected_b = Scorer::new(&fixture.b, &device())?.score(&features)?;
    assert_ne!(
        expected_a, expected_b,
        "the two models must be told apart by their scores"
    );

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model");
    fixture.a.save(&path, &[])?;
    let handle = Arc::new(ModelHandle::open(&path, &device())?);
    let watcher = handle.watch(Duration::from_millis(50));

    // Scores continuously; every batch must be exactly what one of the two models gives.
    let stop = Arc::new(AtomicBool::new(false));
    let scored = Arc::new([
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ]);
    let worker = {
        let (handle, stop, scored) = (Arc::clone(&handle), Arc::clone(&stop), Arc::clone(&scored));
        let (version_a, version_b) = (version_a.clone(), version_b.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let scorer = handle.current();
                let batch = scorer.score(&features).expect("whole rows");
                let (slot, expected) = if scorer.version() == version_a {
                    (0, &expected_a)
                } else if scorer.version() == version_b {
                    (1, &expected_b)
                } else {
                    panic!("unknown version {}", scorer.version());
                };
                assert_eq!(&batch, expected, "a batch scored by {}", scorer.version());
                scored[slot].fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    wait_until("batches on A", Duration::from_secs(10), || {
        scored[0].load(Ordering::Relaxed) >= 3
    });
    fixture.b.save(&path, &[])?;
    wait_until("the watcher to swap in B", Duration::from_secs(20), || {
        handle.version() == version_b
    });
    let after_swap = scored[1].load(Ordering::Relaxed);
    wait_until("batches on B", Duration::from_secs(10), || {
        scored[1].load(Ordering::Relaxed) >= after_swap + 3
    });
    stop.store(true, Ordering::Relaxed);
    worker.join().map_err(|_| "the scoring thread panicked")?;

    // Dropping the watcher joins its thread, which lets go of the handle.
    drop(watcher);
    assert_eq!(
        Arc::strong_count(&handle),
        1,
        "the reload thread still holds the handle"
    );
    // Joined and released: nothing is left that could reload (no sleep needed to show it).
    assert_eq!(handle.version(), version_b);
    Ok(())
}
