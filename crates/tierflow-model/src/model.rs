//! The network: an MLP backbone over the normalised feature vector with three heads (value
//! tier, churn risk, zero-inflated lognormal spend), and the losses that train it.

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, Relu};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu, sigmoid, softmax, softplus};

/// Shape of the network. Saved next to the weights (`model.json`).
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    /// Length of the (normalised) input vector.
    pub inputs: usize,
    /// Hidden layer widths, input side first.
    #[config(default = "vec![100, 50]")]
    pub hidden: Vec<usize>,
    /// Number of value tiers (softmax classes).
    #[config(default = 5)]
    pub tiers: usize,
    /// Dropout after each hidden layer (training only).
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// Floor of the lognormal scale: keeps the likelihood finite when a head collapses.
const MIN_SIGMA: f32 = 0.05;

impl ModelConfig {
    pub fn init(&self, device: &Device) -> ValueModel {
        let mut layers = Vec::with_capacity(self.hidden.len());
        let mut width = self.inputs;
        for &next in &self.hidden {
            layers.push(LinearConfig::new(width, next).init(device));
            width = next;
        }
        ValueModel {
            layers,
            activation: Relu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
            tier_head: LinearConfig::new(width, self.tiers).init(device),
            churn_head: LinearConfig::new(width, 1).init(device),
            spend_head: LinearConfig::new(width, 3).init(device),
        }
    }
}

/// The value model.
#[derive(Module, Debug)]
pub struct ValueModel {
    layers: Vec<Linear>,
    activation: Relu,
    dropout: Dropout,
    tier_head: Linear,
    churn_head: Linear,
    /// ZILN: logit of P(spend > 0), lognormal location, raw lognormal scale.
    spend_head: Linear,
}

/// Raw head outputs for a batch of `n` rows.
#[derive(Debug, Clone)]
pub struct HeadOutputs {
    /// `[n, tiers]`
    pub tier_logits: Tensor<2>,
    /// `[n, 1]`, logit of P(no purchase in the horizon).
    pub churn_logit: Tensor<2>,
    /// `[n, 3]`: ZILN logit, mu, raw sigma.
    pub spend: Tensor<2>,
}

/// Probabilities and expectations for a batch, still as tensors.
#[derive(Debug, Clone)]
pub struct HeadPredictions {
    /// `[n, tiers]`, rows sum to 1.
    pub tier_probabilities: Tensor<2>,
    /// `[n, 1]`
    pub churn_risk: Tensor<2>,
    /// `[n, 1]`, P(future spend > 0).
    pub p_return: Tensor<2>,
    /// `[n, 1]`, E[future spend] = p · exp(mu + sigma² / 2).
    pub expected_spend: Tensor<2>,
}

impl ValueModel {
    pub fn forward(&self, input: Tensor<2>) -> HeadOutputs {
        let mut x = input;
        for layer in &self.layers {
            x = self
                .dropout
                .forward(self.activation.forward(layer.forward(x)));
        }
        HeadOutputs {
            tier_logits: self.tier_head.forward(x.clone()),
            churn_logit: self.churn_head.forward(x.clone()),
            spend: self.spend_head.forward(x),
        }
    }

    pub fn predict(&self, input: Tensor<2>) -> HeadPredictions {
        let out = self.forward(input);
        let n = out.spend.dims()[0];
        let p_return = sigmoid(out.spend.clone().narrow(1, 0, 1));
        let mu = out.spend.clone().narrow(1, 1, 1);
        let sigma = softplus(out.spend.narrow(1, 2, 1), 1.0).clamp_min(MIN_SIGMA);
        // Cap the exponent: an untrained head must not overflow to infinity.
        let log_mean = (mu + sigma.powi_scalar(2) / 2.0).clamp_max(20.0);
        debug_assert_eq!(p_return.dims(), [n, 1]);
        HeadPredictions {
            tier_probabilities: softmax(out.tier_logits, 1),
            churn_risk: sigmoid(out.churn_logit),
            expected_spend: p_return.clone() * log_mean.exp(),
            p_return,
        }
    }

    /// Every weight and bias, in a fixed order (for the artifact's version digest).
    pub fn parameter_values(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for layer in self
            .layers
            .iter()
            .chain([&self.tier_head, &self.churn_head, &self.spend_head])
        {
            let mut push = |t: Tensor<2>| {
                out.extend(t.into_data().iter::<f32>());
            };
            push(layer.weight.val());
            if let Some(bias) = &layer.bias {
                push(bias.val().unsqueeze());
            }
        }
        out
    }

    /// The scalar a reason code explains: the expected tier index Σ k·p_k, per row `[n]`.
    /// Larger means a higher tier, so a positive attribution pushes the tier up.
    pub fn value_score(&self, input: Tensor<2>) -> Tensor<1> {
        let out = self.forward(input);
        let [n, k] = out.tier_logits.dims();
        let device = out.tier_logits.device();
        let ranks = Tensor::<1>::from_data(
            TensorData::new((0..k).map(|i| i as f32).collect::<Vec<_>>(), [k]),
            &device,
        )
        .reshape([1, k]);
        (softmax(out.tier_logits, 1) * ranks)
            .sum_dim(1)
            .reshape([n])
    }
}

/// Targets of one batch, on the training device.
#[derive(Debug, Clone)]
pub struct Targets {
    /// `[n, tiers]` one-hot of the true tier.
    pub tier_one_hot: Tensor<2>,
    /// `[n, 1]` class weight of each row's true tier.
    pub tier_weight: Tensor<2>,
    /// `[n, 1]` 1 when the user did not purchase in the horizon.
    pub churned: Tensor<2>,
    /// `[n, 1]` future spend, clamped at 0.
    pub spend: Tensor<2>,
}

/// How much each head's loss counts.
#[derive(Config, Debug, PartialEq)]
pub struct LossWeights {
    #[config(default = 1.0)]
    pub tier: f64,
    #[config(default = 1.0)]
    pub churn: f64,
    #[config(default = 1.0)]
    pub spend: f64,
}

/// The three losses of a batch (means over rows) and their weighted sum.
#[derive(Debug, Clone)]
pub struct Losses {
    pub total: Tensor<1>,
    pub tier: Tensor<1>,
    pub churn: Tensor<1>,
    pub spend: Tensor<1>,
}

pub fn losses(out: HeadOutputs, targets: &Targets, weights: &LossWeights) -> Losses {
    let tier = weighted_cross_entropy(out.tier_logits, &targets.tier_one_hot, &targets.tier_weight);
    let churn = bce_with_logits(out.churn_logit, targets.churned.clone()).mean();
    let spend = ziln_loss(out.spend, targets.spend.clone());
    let total =
        tier.clone() * weights.tier + churn.clone() * weights.churn + spend.clone() * weights.spend;
    Losses {
        total,
        tier,
        churn,
        spend,
    }
}

/// Class-weighted cross entropy, normalised by the sum of the weights (as PyTorch does).
fn weighted_cross_entropy(
    logits: Tensor<2>,
    one_hot: &Tensor<2>,
    row_weight: &Tensor<2>,
) -> Tensor<1> {
    let nll = -(log_softmax(logits, 1) * one_hot.clone()).sum_dim(1);
    (nll * row_weight.clone()).sum() / row_weight.clone().sum()
}

/// Numerically stable binary cross entropy on logits, per element:
/// max(x, 0) − x·y + ln(1 + e^(−|x|)).
fn bce_with_logits(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<2> {
    relu(logits.clone()) - logits.clone() * targets + (-logits.abs()).exp().log1p()
}

/// Zero-inflated lognormal loss (Wang, Liu & Miao 2019): BCE on P(spend > 0) plus, for
/// rows with positive spend, the lognormal negative log-likelihood of the amount. Mean
/// over all rows.
pub fn ziln_loss(spend_out: Tensor<2>, spend: Tensor<2>) -> Tensor<1> {
    let positive = spend.clone().greater_elem(0.0).float();
    let logit = spend_out.clone().narrow(1, 0, 1);
    let mu = spend_out.clone().narrow(1, 1, 1);
    let sigma = softplus(spend_out.narrow(1, 2, 1), 1.0).clamp_min(MIN_SIGMA);
    let classification = bce_with_logits(logit, positive.clone()).mean();
    // ln(y) for positives; 1 elsewhere (masked out), so no ln(0).
    let safe = spend * positive.clone() + (positive.clone().neg() + 1.0);
    let log_y = safe.log();
    let z = (log_y.clone() - mu) / sigma.clone();
    let nll =
        log_y + sigma.log() + z.powi_scalar(2) / 2.0 + 0.5 * (2.0 * std::f32::consts::PI).ln();
    classification + (nll * positive).mean()
}
