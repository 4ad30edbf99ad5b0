//! The committed default model: it loads in this build (its feature spec is the current one —
//! change a feature and this fails until the default is retrained with `just default-model`),
//! it scores sensibly, and the directory on disk is the one compiled into the binary.

use burn::prelude::Device;
use tierflow_data::synth::{Record, Segment, SynthConfig, generate, segment_of};
use tierflow_events::EventTime;
use tierflow_features::{DatasetBuilder, FeatureSpec};
use tierflow_model::{Artifact, ModelHandle};

#[test]
fn the_embedded_default_loads_scores_and_matches_the_committed_directory() {
    let embedded = Artifact::embedded_default().expect("the default model fits this build");
    assert_eq!(embedded.manifest.feature_spec, FeatureSpec::current().id());
    let on_disk =
        Artifact::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("default-model"))
            .expect("default-model/ loads");
    assert_eq!(on_disk.version(), embedded.version());
    let profile = embedded
        .manifest
        .profile
        .as_ref()
        .expect("the default model carries its training profile (tierflow monitor profile)");
    assert_eq!(profile.width(), FeatureSpec::current().len());
    assert!(profile.rows >= 10_000, "{} rows", profile.rows);
    assert!(
        embedded.manifest.data.source.starts_with("synthetic("),
        "{:?}",
        embedded.manifest.data
    );

    let handle = ModelHandle::fixed(&embedded, &Device::flex()).unwrap();
    let scorer = handle.current();
    assert_eq!(scorer.version(), embedded.version());
    // Users of the generator (another seed than the default's training data), scored at day
    // 60: the latent segments must come out in the right order.
    let config = SynthConfig {
        users: 400,
        days: 60,
        seed: 4242,
        ..SynthConfig::default()
    };
    let cutoff =
        EventTime::from_unix_millis(config.start.unix_millis() + 60 * EventTime::MILLIS_PER_DAY);
    let mut builder = DatasetBuilder::new(&[cutoff], 30 * EventTime::MILLIS_PER_DAY);
    for record in generate(&config) {
        if let Record::Event(event) = record {
            builder.push(&event);
        }
    }
    let (rows, _) = builder.finish();
    let features: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.features.iter().copied())
        .collect();
    let batch = scorer.score(&features).unwrap();
    let mean_of = |segment: Segment, column: &[f32]| {
        let values: Vec<f32> = rows
            .iter()
            .zip(column)
            .filter(|(r, _)| {
                let index: u64 = r.user_id.trim_start_matches('u').parse().unwrap();
                segment_of(&config, index) == segment
            })
            .map(|(_, v)| *v)
            .collect();
        assert!(!values.is_empty(), "no {segment:?} users");
        values.iter().sum::<f32>() / values.len() as f32
    };
    let loyal_value = mean_of(Segment::LoyalHighSpender, &batch.expected_value);
    let browser_value = mean_of(Segment::Browser, &batch.expected_value);
    assert!(
        loyal_value > 3.0 * browser_value,
        "{loyal_value} vs {browser_value}"
    );
    let loyal_churn = mean_of(Segment::LoyalHighSpender, &batch.churn_risk);
    let browser_churn = mean_of(Segment::Browser, &batch.churn_risk);
    assert!(
        loyal_churn < browser_churn,
        "{loyal_churn} vs {browser_churn}"
    );
}
