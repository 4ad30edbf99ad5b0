//! Scoring: a loaded artifact on a burn device that turns a batch of raw feature vectors into
//! tier probabilities, churn risk and expected spend in one forward pass, plus reason codes
//! (gradient × input) for the rows that need them.

use burn::module::Module;
use burn::prelude::*;
use tierflow_events::{ReasonCode, Scores};

use crate::artifact::{Artifact, ArtifactError, Manifest};
use crate::data::Normalizer;
use crate::model::ValueModel;

/// A model ready to score. Cheap to share (`Arc<Scorer>`); scoring takes `&self`.
#[derive(Debug)]
pub struct Scorer {
    manifest: Manifest,
    normalizer: Normalizer,
    model: ValueModel,
    /// The same weights on the autodiff device, frozen: for input gradients only.
    explainer: ValueModel,
    device: Device,
    feature_names: Vec<String>,
}

/// Scores of a batch, column by column (no per-row allocation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreBatch {
    /// The model that produced every row of this batch.
    pub model_version: String,
    pub tiers: usize,
    /// Row-major `[rows, tiers]`.
    pub tier_probabilities: Vec<f32>,
    pub churn_risk: Vec<f32>,
    /// P(future spend > 0), the ZILN classifier.
    pub p_return: Vec<f32>,
    pub expected_value: Vec<f32>,
}

impl ScoreBatch {
    pub fn len(&self) -> usize {
        self.churn_risk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.churn_risk.is_empty()
    }

    pub fn probabilities(&self, row: usize) -> &[f32] {
        &self.tier_probabilities[row * self.tiers..(row + 1) * self.tiers]
    }

    /// The most probable tier (lowest on a tie).
    pub fn tier(&self, row: usize) -> u8 {
        let p = self.probabilities(row);
        let mut best = 0;
        for (i, v) in p.iter().enumerate() {
            if *v > p[best] {
                best = i;
            }
        }
        best as u8
    }

    /// One row in the shape of the output topics.
    pub fn scores(&self, row: usize) -> Scores {
        Scores {
            tier_probabilities: self.probabilities(row).to_vec(),
            churn_risk: self.churn_risk[row].clamp(0.0, 1.0),
            expected_value: f64::from(self.expected_value[row].max(0.0)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("a batch of feature vectors must be a multiple of {width} values long, got {len}")]
    Shape { width: usize, len: usize },
}

impl Scorer {
    /// Loads `artifact` onto `device`. Refuses an artifact built for another feature spec
    /// (checked when the artifact was read).
    pub fn new(artifact: &Artifact, device: &Device) -> Result<Self, ArtifactError> {
        let model = artifact.model(device)?;
        let explainer = artifact.model(&device.clone().autodiff())?.freeze();
        Ok(Self {
            manifest: artifact.manifest.clone(),
            normalizer: artifact.normalizer.clone(),
            model,
            explainer,
            device: device.clone(),
            feature_names: artifact.normalizer.feature_names.clone(),
        })
    }

    /// The version every score carries.
    pub fn version(&self) -> &str {
        &self.manifest.model_version
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Features per row.
    pub fn width(&self) -> usize {
        self.normalizer.width()
    }

    pub fn tiers(&self) -> usize {
        self.manifest.tiers.tiers()
    }

    fn input(&self, features: &[f32], device: &Device) -> Result<(Tensor<2>, usize), ScoreError> {
        let width = self.width();
        if !features.len().is_multiple_of(width) {
            return Err(ScoreError::Shape {
                width,
                len: features.len(),
            });
        }
        let rows = features.len() / width;
        let normalised = self.normalizer.apply(features);
        Ok((
            Tensor::from_data(TensorData::new(normalised, [rows, width]), device),
            rows,
        ))
    }

    /// Scores row-major raw feature vectors (`rows × width` values) in one forward pass.
    pub fn score(&self, features: &[f32]) -> Result<ScoreBatch, ScoreError> {
        let (x, rows) = self.input(features, &self.device)?;
        if rows == 0 {
            return Ok(ScoreBatch {
                model_version: self.version().to_owned(),
                tiers: self.tiers(),
                ..ScoreBatch::default()
            });
        }
        let p = self.model.predict(x);
        let column = |t: Tensor<2>| -> Vec<f32> {
            t.into_data()
                .try_into_vec::<f32>()
                .unwrap_or_else(|e| unreachable!("model outputs are f32: {e:?}"))
        };
        Ok(ScoreBatch {
            model_version: self.version().to_owned(),
            tiers: self.tiers(),
            tier_probabilities: column(p.tier_probabilities),
            churn_risk: column(p.churn_risk),
            p_return: column(p.p_return),
            expected_value: match &self.manifest.spend_calibration {
                Some(calibration) => column(p.expected_spend)
                    .into_iter()
                    .map(|v| calibration.apply(v))
                    .collect(),
                None => column(p.expected_spend),
            },
        })
    }

    /// Reason codes for each row: the `top` features with the largest |gradient × input| of
    /// the expected tier index, where input is the normalised value (0 = the average training
    /// user). Positive contributions push the tier up. One forward and one backward pass for
    /// the whole batch.
    pub fn explain(
        &self,
        features: &[f32],
        top: usize,
    ) -> Result<Vec<Vec<ReasonCode>>, ScoreError> {
        let autodiff = self.device.clone().autodiff();
        let (x, rows) = self.input(features, &autodiff)?;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let x = x.require_grad();
        let score = self.explainer.value_score(x.clone()).sum();
        let grads = score.backward();
        let gradient = x
            .grad(&grads)
            .map(|g| g.into_data().try_into_vec::<f32>().unwrap_or_default())
            .unwrap_or_default();
        let input = x.into_data().try_into_vec::<f32>().unwrap_or_default();
        let width = self.width();
        let mut out = Vec::with_capacity(rows);
        let mut order: Vec<usize> = (0..width).collect();
        for row in 0..rows {
            let at = row * width;
            let contribution = |j: usize| {
                gradient.get(at + j).copied().unwrap_or(0.0)
                    * input.get(at + j).copied().unwrap_or(0.0)
            };
            order.sort_by(|a, b| {
                contribution(*b)
                    .abs()
                    .total_cmp(&contribution(*a).abs())
                    .then(a.cmp(b))
            });
            out.push(
                order
                    .iter()
                    .take(top)
                    .filter(|j| contribution(**j) != 0.0)
                    .map(|j| ReasonCode {
                        feature: self.feature_names[*j].clone(),
                        contribution: contribution(*j),
                    })
                    .collect(),
            );
        }
        Ok(out)
    }
}
