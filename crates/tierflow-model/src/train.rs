//! The training loop: mini-batch Adam with weight decay on the three-head loss, tier class
//! weights, dropout, early stopping on validation loss, seeded and reproducible.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::{Dataset, Normalizer, TierDefinition};
use crate::model::{LossWeights, ModelConfig, Targets, ValueModel, losses};

/// Everything that decides how a model is trained. Saved in the artifact (`training.json`),
/// so `tierflow train --config training.json` on the same data reproduces it.
#[derive(Config, Debug, PartialEq)]
pub struct TrainingConfig {
    pub model: ModelConfig,
    pub loss_weights: LossWeights,
    /// Upper bound on passes over the training rows; early stopping usually ends sooner.
    #[config(default = 60)]
    pub epochs: usize,
    #[config(default = 256)]
    pub batch_size: usize,
    #[config(default = 2e-3)]
    pub learning_rate: f64,
    /// L2 penalty added to the gradients by Adam.
    #[config(default = 1e-4)]
    pub weight_decay: f32,
    /// Stop after this many epochs without a lower validation loss; keep the best weights.
    #[config(default = 6)]
    pub patience: usize,
    /// Seeds weight initialisation, dropout, shuffling and the user split.
    #[config(default = 42)]
    pub seed: u64,
    /// Share of users held out for early stopping.
    #[config(default = 0.15)]
    pub validation_fraction: f64,
    /// Share of users held out for the report (never seen by training or early stopping).
    #[config(default = 0.15)]
    pub test_fraction: f64,
    /// Weight tiers by inverse frequency ("balanced") in the tier loss.
    #[config(default = true)]
    pub class_weights: bool,
}

/// What one epoch did.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub validation_tier_loss: f64,
    pub validation_churn_loss: f64,
    pub validation_spend_loss: f64,
    /// The validation loss is the lowest so far (these weights are kept).
    pub best: bool,
}

/// A trained model and how training went.
#[derive(Debug)]
pub struct Trained {
    pub model: ValueModel,
    pub epochs: Vec<EpochReport>,
    pub best_epoch: usize,
    pub class_weights: Vec<f32>,
}

/// Rows prepared for the network: normalised features plus targets, on the host.
struct Prepared {
    features: Vec<f32>,
    width: usize,
    tiers: Vec<u8>,
    churned: Vec<f32>,
    spend: Vec<f32>,
}

impl Prepared {
    fn new(data: &Dataset, normalizer: &Normalizer, tiers: &TierDefinition) -> Self {
        Self {
            features: normalizer.apply(&data.features),
            width: data.width,
            tiers: data.spend.iter().map(|s| tiers.tier_of(*s)).collect(),
            churned: data
                .churned
                .iter()
                .map(|c| f32::from(u8::from(*c)))
                .collect(),
            spend: data.spend.iter().map(|s| s.max(0.0) as f32).collect(),
        }
    }

    fn len(&self) -> usize {
        self.tiers.len()
    }

    fn batch(
        &self,
        rows: &[usize],
        class_weights: &[f32],
        device: &Device,
    ) -> (Tensor<2>, Targets) {
        let n = rows.len();
        let k = class_weights.len();
        let mut x = Vec::with_capacity(n * self.width);
        let mut one_hot = vec![0f32; n * k];
        let mut weight = Vec::with_capacity(n);
        let mut churned = Vec::with_capacity(n);
        let mut spend = Vec::with_capacity(n);
        for (r, &i) in rows.iter().enumerate() {
            x.extend_from_slice(&self.features[i * self.width..(i + 1) * self.width]);
            let tier = usize::from(self.tiers[i]);
            one_hot[r * k + tier] = 1.0;
            weight.push(class_weights[tier]);
            churned.push(self.churned[i]);
            spend.push(self.spend[i]);
        }
        let t = |v: Vec<f32>, cols: usize| {
            Tensor::<2>::from_data(TensorData::new(v, [n, cols]), device)
        };
        (
            t(x, self.width),
            Targets {
                tier_one_hot: t(one_hot, k),
                tier_weight: t(weight, 1),
                churned: t(churned, 1),
                spend: t(spend, 1),
            },
        )
    }
}

/// "Balanced" class weights: n / (k · count), 1 for an empty class; capped at 20 so a
/// nearly empty tier cannot dominate the loss.
pub fn balanced_class_weights(tiers: &[u8], k: usize) -> Vec<f32> {
    let mut counts = vec![0usize; k];
    for t in tiers {
        counts[usize::from(*t)] += 1;
    }
    let n = tiers.len() as f32;
    counts
        .into_iter()
        .map(|c| {
            if c == 0 {
                1.0
            } else {
                (n / (k as f32 * c as f32)).min(20.0)
            }
        })
        .collect()
}

/// Trains on `train`, early-stops on `validation`. `on_epoch` hears every epoch (progress
/// bars, logs). Deterministic for a given config, data and backend.
pub fn train(
    train: &Dataset,
    validation: &Dataset,
    normalizer: &Normalizer,
    tiers: &TierDefinition,
    config: &TrainingConfig,
    device: &Device,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Trained {
    assert_eq!(
        config.model.tiers,
        tiers.tiers(),
        "model tiers vs tier definition"
    );
    let train_rows = Prepared::new(train, normalizer, tiers);
    let validation_rows = Prepared::new(validation, normalizer, tiers);
    let class_weights = if config.class_weights {
        balanced_class_weights(&train_rows.tiers, tiers.tiers())
    } else {
        vec![1.0; tiers.tiers()]
    };

    device.seed(config.seed);
    let autodiff = device.clone().autodiff();
    let mut model = config.model.init(&autodiff);
    let mut optimizer = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay)))
        .init();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..train_rows.len()).collect();
    let batch_size = config.batch_size.max(1);

    let mut best: Option<(f64, ValueModel)> = None;
    let mut best_epoch = 0;
    let mut reports = Vec::new();
    for epoch in 1..=config.epochs.max(1) {
        order.shuffle(&mut rng);
        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        for rows in order.chunks(batch_size) {
            let (x, targets) = train_rows.batch(rows, &class_weights, &autodiff);
            let loss = losses(model.forward(x), &targets, &config.loss_weights).total;
            loss_sum += f64::from(loss.clone().into_scalar::<f32>()) * rows.len() as f64;
            seen += rows.len();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(config.learning_rate, model, grads);
        }

        let inference = model.valid();
        let validation_loss = evaluate_loss(
            &inference,
            &validation_rows,
            &class_weights,
            &config.loss_weights,
            device,
        );
        let improved = best
            .as_ref()
            .is_none_or(|(loss, _)| validation_loss.total < *loss);
        if improved {
            best = Some((validation_loss.total, inference));
            best_epoch = epoch;
        }
        let report = EpochReport {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            validation_loss: validation_loss.total,
            validation_tier_loss: validation_loss.tier,
            validation_churn_loss: validation_loss.churn,
            validation_spend_loss: validation_loss.spend,
            best: improved,
        };
        on_epoch(&report);
        reports.push(report);
        if epoch - best_epoch >= config.patience.max(1) {
            break;
        }
    }
    let (_, model) = best.expect("at least one epoch ran");
    Trained {
        model,
        epochs: reports,
        best_epoch,
        class_weights,
    }
}

#[derive(Debug, Default)]
struct LossTotals {
    total: f64,
    tier: f64,
    churn: f64,
    spend: f64,
}

/// Mean losses over a whole dataset, in chunks, without gradients.
fn evaluate_loss(
    model: &ValueModel,
    rows: &Prepared,
    class_weights: &[f32],
    weights: &LossWeights,
    device: &Device,
) -> LossTotals {
    const CHUNK: usize = 4096;
    let mut totals = LossTotals::default();
    let n = rows.len();
    if n == 0 {
        return totals;
    }
    let all: Vec<usize> = (0..n).collect();
    for chunk in all.chunks(CHUNK) {
        let (x, targets) = rows.batch(chunk, class_weights, device);
        let l = losses(model.forward(x), &targets, weights);
        let share = chunk.len() as f64 / n as f64;
        let scalar = |t: Tensor<1>| f64::from(t.into_scalar::<f32>()) * share;
        totals.total += scalar(l.total);
        totals.tier += scalar(l.tier);
        totals.churn += scalar(l.churn);
        totals.spend += scalar(l.spend);
    }
    totals
}
