//! Shared fixtures for the model tests and benches: synthetic rows through the real dataset
//! builder, and tiny models trained on them in seconds, packed as artifacts.
//!
//! burn seeds one process-wide RNG (`Device::seed`), and every `ModelConfig::init` (training,
//! but also `Scorer::new`) draws from it. Two trainings are only reproducible when nothing
//! else initialises a model meanwhile, so every model the tests need is trained once, in a
//! fixed order, inside one `OnceLock` before any test gets to score.

#![allow(dead_code)] // each test or bench target uses a different part of this module

use std::sync::OnceLock;

use burn::prelude::Device;
use tierflow_data::synth::{Record, SynthConfig, generate};
use tierflow_events::EventTime;
use tierflow_features::{DatasetBuilder, FeatureSpec};
use tierflow_model::model::LossWeights;
use tierflow_model::{
    Artifact, DataSummary, Dataset, ModelConfig, Normalizer, Part, TierDefinition, TrainingConfig,
    ValueModel, part_of, train,
};

/// The clock the tests own (artifacts carry `created_at`).
pub(crate) const CREATED_AT: &str = "2026-03-01T00:00:00Z";
/// Horizon of the labels, in days.
pub(crate) const HORIZON_DAYS: u32 = 20;
/// Seed of the artifact most tests use, and of the second one (hot reload).
pub(crate) const SEED_A: u64 = 7;
pub(crate) const SEED_B: u64 = 8;

/// Rows of `users` synthetic users over `days` days, at two cutoffs (`days − 2·horizon`
/// and `days − horizon`, so every label horizon is complete).
pub(crate) fn synthetic_dataset(users: u64, days: u32) -> Dataset {
    let config = SynthConfig {
        users,
        days,
        ..SynthConfig::default()
    };
    let day = EventTime::MILLIS_PER_DAY;
    let start = config.start.unix_millis();
    let cutoffs: Vec<EventTime> = [days - 2 * HORIZON_DAYS, days - HORIZON_DAYS]
        .iter()
        .map(|d| EventTime::from_unix_millis(start + i64::from(*d) * day))
        .collect();
    let mut builder = DatasetBuilder::new(&cutoffs, i64::from(HORIZON_DAYS) * day);
    for record in generate(&config) {
        if let Record::Event(event) = record {
            builder.push(&event);
        }
    }
    let (rows, _) = builder.finish();
    Dataset::from_rows(&rows, FeatureSpec::current().len())
}

/// Train and validation rows of `data`, split by user as training does.
pub(crate) fn split(data: &Dataset, seed: u64) -> (Dataset, Dataset) {
    let mut train_rows = Vec::new();
    let mut validation_rows = Vec::new();
    for (i, user) in data.user_ids.iter().enumerate() {
        match part_of(user, seed, 0.2, 0.0) {
            Part::Train => train_rows.push(i),
            Part::Validation => validation_rows.push(i),
            Part::Test => {}
        }
    }
    (data.select(&train_rows), data.select(&validation_rows))
}

/// A small network: the default architecture costs seconds per epoch in a debug build.
pub(crate) fn tiny_training_config(seed: u64) -> TrainingConfig {
    let model = ModelConfig::new(FeatureSpec::current().len()).with_hidden(vec![16, 8]);
    TrainingConfig::new(model, LossWeights::new())
        .with_epochs(5)
        .with_batch_size(64)
        .with_learning_rate(1e-2)
        .with_seed(seed)
}

/// Trains `config` on `data` and packs the best weights as an artifact.
pub(crate) fn train_artifact(data: &Dataset, config: &TrainingConfig, device: &Device) -> Artifact {
    let (train_rows, validation_rows) = split(data, config.seed);
    let tiers = TierDefinition::fit_quantiles(&train_rows.spend, config.model.tiers);
    let normalizer = Normalizer::fit(&train_rows, FeatureSpec::current().names());
    let trained = train(
        &train_rows,
        &validation_rows,
        &normalizer,
        &tiers,
        config,
        device,
        |_| {},
    );
    pack(
        &trained.model,
        config,
        normalizer,
        tiers,
        trained.best_epoch,
    )
}

/// An artifact of `model` as it is (trained or not).
pub(crate) fn pack(
    model: &ValueModel,
    config: &TrainingConfig,
    normalizer: Normalizer,
    tiers: TierDefinition,
    best_epoch: usize,
) -> Artifact {
    let summary = DataSummary {
        source: format!("synthetic(seed={})", config.seed),
        best_epoch,
        ..DataSummary::default()
    };
    Artifact::new(
        model,
        config.clone(),
        normalizer,
        tiers,
        HORIZON_DAYS,
        CREATED_AT.to_owned(),
        summary,
    )
    .expect("a freshly trained model packs")
}

/// Everything trained once per test binary.
#[derive(Debug)]
pub(crate) struct Fixture {
    /// Every row (all users, both cutoffs), raw features.
    pub(crate) data: Dataset,
    /// Trained with `SEED_A`.
    pub(crate) a: Artifact,
    /// Trained again with `SEED_A` on the same data (reproducibility).
    pub(crate) a_again: Artifact,
    /// Trained with `SEED_B`.
    pub(crate) b: Artifact,
}

/// The shared fixture: 600 users, 60 days, three tiny trainings on `Device::flex()`.
pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let device = Device::flex();
        let data = synthetic_dataset(600, 60);
        let a = train_artifact(&data, &tiny_training_config(SEED_A), &device);
        let a_again = train_artifact(&data, &tiny_training_config(SEED_A), &device);
        let b = train_artifact(&data, &tiny_training_config(SEED_B), &device);
        Fixture {
            data,
            a,
            a_again,
            b,
        }
    })
}
