//! What one scoring call costs: `Scorer::score` rows per second for batch sizes 1 to 4096 on
//! both CPU backends (`flex`, `ndarray`), and `explain` for a batch of 256. The network is
//! the DEFAULT architecture (`ModelConfig` defaults), untrained: a forward pass costs the
//! same whatever the weights are, and building it takes no training time. The normaliser is
//! fitted on synthetic rows and the inputs are real synthetic feature vectors. No rayon in
//! the build: every number is one core.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Duration;

use burn::prelude::{Device, Tensor, TensorData};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tierflow_features::FeatureSpec;
use tierflow_model::model::LossWeights;
use tierflow_model::{ModelConfig, Normalizer, Scorer, TierDefinition, TrainingConfig, profile};

const BATCH_SIZES: [usize; 5] = [1, 64, 256, 1024, 4096];
const EXPLAIN_BATCH: usize = 256;

/// A scorer of the default, untrained network on `device`, and `rows` raw feature vectors.
fn setup(device: &Device, rows: usize) -> (Scorer, Vec<f32>) {
    let spec = FeatureSpec::current();
    let data = common::synthetic_dataset(1_000, 60);
    let normalizer = Normalizer::fit(&data, spec.names());
    let tiers = TierDefinition::fit_quantiles(&data.spend, 5);
    let config = TrainingConfig::new(ModelConfig::new(spec.len()), LossWeights::new());
    device.seed(77);
    let model = config.model.init(device);
    let artifact = common::pack(&model, &config, normalizer, tiers, 0);
    let scorer = Scorer::new(&artifact, device).expect("the artifact loads");
    let features: Vec<f32> = data
        .features
        .chunks_exact(data.width)
        .cycle()
        .take(rows)
        .flatten()
        .copied()
        .collect();
    (scorer, features)
}

// burn 0.22 deprecates ndarray in favour of flex; it is still the stack's named backend,
// so both are measured while it exists.
#[allow(deprecated)]
fn backends() -> [(&'static str, Device); 2] {
    [("flex", Device::flex()), ("ndarray", Device::ndarray())]
}

fn score(c: &mut Criterion) {
    let largest = BATCH_SIZES[BATCH_SIZES.len() - 1];
    for (name, device) in backends() {
        let (scorer, features) = setup(&device, largest);
        let width = scorer.width();
        let mut group = c.benchmark_group(format!("score/{name}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for rows in BATCH_SIZES {
            let batch = &features[..rows * width];
            group.throughput(Throughput::Elements(rows as u64));
            group.bench_with_input(BenchmarkId::from_parameter(rows), batch, |b, batch| {
                b.iter(|| scorer.score(black_box(batch)).expect("whole rows"));
            });
        }
        group.finish();

        let mut group = c.benchmark_group(format!("explain/{name}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        let batch = &features[..EXPLAIN_BATCH * width];
        group.throughput(Throughput::Elements(EXPLAIN_BATCH as u64));
        group.bench_with_input(
            BenchmarkId::new("top3", EXPLAIN_BATCH),
            batch,
            |b, batch| {
                b.iter(|| scorer.explain(black_box(batch), 3).expect("whole rows"));
            },
        );
        group.finish();
    }
}

/// Where the time of a large batch goes: host-side normalisation (signed log1p and
/// standardisation) against the network's forward pass on already normalised rows.
fn breakdown(c: &mut Criterion) {
    let rows = BATCH_SIZES[BATCH_SIZES.len() - 1];
    let spec = FeatureSpec::current();
    let data = common::synthetic_dataset(1_000, 60);
    let normalizer = Normalizer::fit(&data, spec.names());
    let features: Vec<f32> = data
        .features
        .chunks_exact(data.width)
        .cycle()
        .take(rows)
        .flatten()
        .copied()
        .collect();
    let device = Device::flex();
    device.seed(77);
    let model = ModelConfig::new(spec.len()).init(&device);
    let normalised = normalizer.apply(&features);

    let mut group = c.benchmark_group("breakdown/flex");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(rows as u64));
    let mut out = vec![0.0; features.len()];
    group.bench_function(BenchmarkId::new("normalise", rows), |b| {
        b.iter(|| normalizer.apply_into(black_box(&features), &mut out));
    });
    group.bench_function(BenchmarkId::new("predict", rows), |b| {
        b.iter(|| {
            let x = Tensor::<2>::from_data(
                TensorData::new(normalised.clone(), [rows, spec.len()]),
                &device,
            );
            let p = model.predict(black_box(x));
            (
                p.tier_probabilities.into_data(),
                p.churn_risk.into_data(),
                p.p_return.into_data(),
                p.expected_spend.into_data(),
            )
        });
    });
    group.bench_function(BenchmarkId::new("forward", rows), |b| {
        b.iter(|| {
            let x = Tensor::<2>::from_data(
                TensorData::new(normalised.clone(), [rows, spec.len()]),
                &device,
            );
            let out = model.forward(black_box(x));
            (
                out.tier_logits.into_data(),
                out.churn_logit.into_data(),
                out.spend.into_data(),
            )
        });
    });
    group.finish();
}

/// What the pipeline's drift monitor adds per batch: counting a batch's feature rows and
/// scores in a training profile's bins (`Tally`, as `tierflow_pipeline::monitor` does), beside
/// scoring the same batch (`score/flex/4096`).
fn drift(c: &mut Criterion) {
    let rows = BATCH_SIZES[BATCH_SIZES.len() - 1];
    let device = Device::flex();
    let (scorer, features) = setup(&device, rows);
    let spec = FeatureSpec::current();
    let profile = profile::fit(&scorer, spec.names(), &features).expect("whole rows");
    let batch = scorer.score(&features).expect("whole rows");
    let slots = profile::ScoreSlots::of(&profile);
    let mut tally = profile::Tally::new(&profile);
    let mut group = c.benchmark_group("drift/flex");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(rows as u64));
    group.bench_function(BenchmarkId::new("tally", rows), |b| {
        b.iter(|| {
            for (r, row) in features.chunks_exact(spec.len()).enumerate() {
                profile::count_row(&mut tally, &profile, slots, black_box(row), &batch, r);
            }
        });
    });
    group.bench_function(BenchmarkId::new("compare", rows), |b| {
        b.iter(|| black_box(&tally).compare(&profile));
    });
    group.finish();
}

criterion_group!(benches, score, breakdown, drift);
criterion_main!(benches);
