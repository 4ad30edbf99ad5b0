//! The artifact directory: everything needed to score with a trained model and to know where
//! it came from. Written file by file atomically with the manifest last, read with checksums,
//! and refused when it was built for another feature spec.
//!
//! ```text
//! manifest.json        version, feature spec id, tiers, horizon, checksums, data summary
//! model.json           ModelConfig (network shape)
//! training.json        TrainingConfig (everything that decided training)
//! normalization.json   per-feature mean and standard deviation after signed log1p
//! weights.bpk          burn weights (burnpack)
//! report.json/.md      evaluation against the baselines (written by the training run)
//! plots/*.svg          gain, lift, calibration, confusion matrix
//! ```

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};
use tierflow_features::FeatureSpec;

use crate::calibration::SpendCalibration;
use crate::data::{Normalizer, TierDefinition};
use crate::model::{ModelConfig, ValueModel};
use crate::train::TrainingConfig;

/// Version of the directory layout.
pub const ARTIFACT_FORMAT: u32 = 1;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const MODEL_FILE: &str = "model.json";
pub const TRAINING_FILE: &str = "training.json";
pub const NORMALIZATION_FILE: &str = "normalization.json";
pub const WEIGHTS_FILE: &str = "weights.bpk";

/// Where the training data came from and how it was split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// What the rows were built from, e.g. a file name or `synthetic(users=…, seed=…)`.
    pub source: String,
    pub cutoffs: Vec<String>,
    pub rows: usize,
    pub users: usize,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub test_rows: usize,
    /// Share of training rows with no purchase in the horizon.
    pub train_churn_rate: f64,
    /// Share of training rows per tier.
    pub train_tier_shares: Vec<f64>,
    pub class_weights: Vec<f32>,
    pub epochs_run: usize,
    pub best_epoch: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Carried on every score: `m1-` and 12 hex digits of a digest of the shape,
    /// normalisation and weights. Retraining with the same data and seed gives the same one.
    pub model_version: String,
    /// `FeatureSpec::id()` the model was trained on; a scorer refuses any other.
    pub feature_spec: String,
    pub tiers: TierDefinition,
    /// Horizon of the churn and spend labels, in days.
    pub horizon_days: u32,
    /// When training finished (RFC 3339, UTC).
    pub created_at: String,
    /// FNV-1a of weights.bpk, hex: a half-written artifact is refused, not half-loaded.
    pub weights_checksum: String,
    /// FNV-1a of model.json, training.json and normalization.json: a reader that meets a
    /// mix of two artifacts (one being saved over the other) refuses it and retries.
    pub files_checksum: String,
    pub data: DataSummary,
    /// Maps the ZILN mean to calibrated expected spend (fitted on validation users).
    #[serde(default)]
    pub spend_calibration: Option<SpendCalibration>,
    /// The training population's distribution of every feature and score, the reference of
    /// the pipeline's drift metrics (`profile.rs`). Absent in artifacts from before it existed
    /// (the pipeline then exports no drift for that model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<tierflow_eval::drift::Profile>,
}

/// A loaded (or freshly trained) artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub manifest: Manifest,
    pub model_config: ModelConfig,
    pub training_config: TrainingConfig,
    pub normalizer: Normalizer,
    /// burnpack bytes.
    pub weights: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("reading the model artifact {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file} in the model artifact is not valid: {reason}")]
    Invalid { file: String, reason: String },
    #[error(
        "the model artifact has format {found}; this build reads format {ARTIFACT_FORMAT}: upgrade tierflow or retrain the model with this build"
    )]
    Format { found: u32 },
    #[error(
        "weights.bpk does not match manifest.json (checksum {actual}, manifest says {expected}): the artifact is incomplete or being replaced; wait for the writer to finish or save it again"
    )]
    Checksum { expected: String, actual: String },
    #[error(
        "model.json, training.json or normalization.json do not match manifest.json: the artifact is being replaced or was edited; wait for the writer to finish or save it again"
    )]
    Inconsistent,
    #[error(
        "the model was trained on feature spec {artifact}, but this build computes {current}: retrain the model (tierflow train) or run the build it came from"
    )]
    SpecMismatch { artifact: String, current: String },
}

impl Artifact {
    /// Packs a trained model. `created_at` is passed in (the caller owns the clock).
    pub fn new(
        model: &ValueModel,
        training_config: TrainingConfig,
        normalizer: Normalizer,
        tiers: TierDefinition,
        horizon_days: u32,
        created_at: String,
        data: DataSummary,
    ) -> Result<Self, ArtifactError> {
        let model_config = training_config.model.clone();
        let weights = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| invalid(WEIGHTS_FILE, e))?
            .to_vec();
        let mut digest = Fnv::default();
        digest.write(model_config.to_string().as_bytes());
        digest.write(&serde_json::to_vec(&normalizer).map_err(|e| invalid(NORMALIZATION_FILE, e))?);
        digest.write(&serde_json::to_vec(&tiers).map_err(|e| invalid(MANIFEST_FILE, e))?);
        for value in model.parameter_values() {
            digest.write(&value.to_le_bytes());
        }
        let files_checksum = config_files_checksum(&model_config, &training_config, &normalizer)?;
        let manifest = Manifest {
            files_checksum,
            format: ARTIFACT_FORMAT,
            model_version: format!("m1-{:012x}", digest.0 >> 16),
            feature_spec: FeatureSpec::current().id().to_owned(),
            tiers,
            horizon_days,
            created_at,
            weights_checksum: format!("{:016x}", fnv(&weights)),
            data,
            spend_calibration: None,
            profile: None,
        };
        Ok(Self {
            manifest,
            model_config,
            training_config,
            normalizer,
            weights,
        })
    }

    /// Attaches a spend calibration; the version changes with it.
    pub fn with_spend_calibration(mut self, calibration: Option<SpendCalibration>) -> Self {
        let mut digest = Fnv::default();
        digest.write(self.manifest.model_version.as_bytes());
        digest.write(&serde_json::to_vec(&calibration).unwrap_or_default());
        self.manifest.model_version = format!("m1-{:012x}", digest.0 >> 16);
        self.manifest.spend_calibration = calibration;
        self
    }

    /// Attaches the drift reference. It describes the model's population and does not change
    /// the model version (the scores do not change).
    pub fn with_profile(mut self, profile: Option<tierflow_eval::drift::Profile>) -> Self {
        self.manifest.profile = profile;
        self
    }

    pub fn version(&self) -> &str {
        &self.manifest.model_version
    }

    /// Reads an artifact directory and checks it against this build's feature spec.
    pub fn load(dir: &Path) -> Result<Self, ArtifactError> {
        Self::from_files(|name| {
            let path = dir.join(name);
            std::fs::read(&path).map_err(|source| ArtifactError::Io { path, source })
        })
    }

    /// The default model compiled into the binary: trained on the synthetic generator
    /// (`just default-model` reproduces it), so the demo and `run` work with no files.
    pub fn embedded_default() -> Result<Self, ArtifactError> {
        Self::from_files(|name| {
            let bytes: &[u8] = match name {
                MANIFEST_FILE => include_bytes!("../default-model/manifest.json"),
                MODEL_FILE => include_bytes!("../default-model/model.json"),
                TRAINING_FILE => include_bytes!("../default-model/training.json"),
                NORMALIZATION_FILE => include_bytes!("../default-model/normalization.json"),
                WEIGHTS_FILE => include_bytes!("../default-model/weights.bpk"),
                other => {
                    return Err(ArtifactError::Io {
                        path: PathBuf::from(other),
                        source: std::io::ErrorKind::NotFound.into(),
                    });
                }
            };
            Ok(bytes.to_vec())
        })
    }

    /// Reads only the manifest (cheap: what a hot-reload poll looks at).
    pub fn read_manifest(dir: &Path) -> Result<Manifest, ArtifactError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|source| ArtifactError::Io { path, source })?;
        serde_json::from_slice(&bytes).map_err(|e| invalid(MANIFEST_FILE, e))
    }

    /// Builds an artifact from its files, however they are stored (a directory, or bytes
    /// compiled into the binary).
    pub fn from_files(
        mut read: impl FnMut(&str) -> Result<Vec<u8>, ArtifactError>,
    ) -> Result<Self, ArtifactError> {
        let manifest: Manifest =
            serde_json::from_slice(&read(MANIFEST_FILE)?).map_err(|e| invalid(MANIFEST_FILE, e))?;
        if manifest.format != ARTIFACT_FORMAT {
            return Err(ArtifactError::Format {
                found: manifest.format,
            });
        }
        let current = FeatureSpec::current();
        if manifest.feature_spec != current.id() {
            return Err(ArtifactError::SpecMismatch {
                artifact: manifest.feature_spec,
                current: current.id().to_owned(),
            });
        }
        let text =
            |bytes: Vec<u8>, file: &str| String::from_utf8(bytes).map_err(|e| invalid(file, e));
        let model_config =
            ModelConfig::load_binary(text(read(MODEL_FILE)?, MODEL_FILE)?.as_bytes())
                .map_err(|e| invalid(MODEL_FILE, e))?;
        let training_config =
            TrainingConfig::load_binary(text(read(TRAINING_FILE)?, TRAINING_FILE)?.as_bytes())
                .map_err(|e| invalid(TRAINING_FILE, e))?;
        let normalizer: Normalizer = serde_json::from_slice(&read(NORMALIZATION_FILE)?)
            .map_err(|e| invalid(NORMALIZATION_FILE, e))?;
        let weights = read(WEIGHTS_FILE)?;
        let actual = format!("{:016x}", fnv(&weights));
        if actual != manifest.weights_checksum {
            return Err(ArtifactError::Checksum {
                expected: manifest.weights_checksum,
                actual,
            });
        }
        if config_files_checksum(&model_config, &training_config, &normalizer)?
            != manifest.files_checksum
        {
            return Err(ArtifactError::Inconsistent);
        }
        if normalizer.feature_names != current.names() {
            return Err(invalid(
                NORMALIZATION_FILE,
                "feature_names differ from the feature spec's names and order",
            ));
        }
        if normalizer.std.len() != normalizer.mean.len()
            || normalizer.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
            || normalizer.mean.iter().any(|m| !m.is_finite())
        {
            return Err(invalid(
                NORMALIZATION_FILE,
                "mean and std must have one finite value per feature, std > 0",
            ));
        }
        if normalizer.width() != model_config.inputs || normalizer.width() != current.len() {
            return Err(invalid(
                NORMALIZATION_FILE,
                format!(
                    "{} features, model takes {}, the spec has {}",
                    normalizer.width(),
                    model_config.inputs,
                    current.len()
                ),
            ));
        }
        if model_config.tiers != manifest.tiers.tiers() {
            return Err(invalid(
                MODEL_FILE,
                format!(
                    "{} tiers, the manifest defines {}",
                    model_config.tiers,
                    manifest.tiers.tiers()
                ),
            ));
        }
        Ok(Self {
            manifest,
            model_config,
            training_config,
            normalizer,
            weights,
        })
    }

    /// The network with these weights, on `device`.
    pub fn model(&self, device: &Device) -> Result<ValueModel, ArtifactError> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(self.weights.clone()))
            .map_err(|e| invalid(WEIGHTS_FILE, e))?;
        self.model_config
            .init(device)
            .try_load_record(record)
            .map_err(|e| invalid(WEIGHTS_FILE, e))
    }

    /// Writes the artifact into `dir` (created if missing), replacing an artifact there file
    /// by file, each file atomically (temporary file, then rename), the manifest last. A
    /// reader polling the manifest sees the old artifact, the new one, or (mid-save) a mix
    /// that fails the manifest's checksums and is retried; never a silently mixed model.
    /// Extra files (report, plots) come from `extra`, as (relative path, bytes).
    pub fn save(&self, dir: &Path, extra: &[(String, Vec<u8>)]) -> Result<(), ArtifactError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ArtifactError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut files: Vec<(String, Vec<u8>)> = vec![
            (WEIGHTS_FILE.into(), self.weights.clone()),
            (
                MODEL_FILE.into(),
                self.model_config.to_string().into_bytes(),
            ),
            (
                TRAINING_FILE.into(),
                self.training_config.to_string().into_bytes(),
            ),
            (
                NORMALIZATION_FILE.into(),
                serde_json::to_vec_pretty(&self.normalizer)
                    .map_err(|e| invalid(NORMALIZATION_FILE, e))?,
            ),
        ];
        files.extend(extra.iter().cloned());
        files.push((
            MANIFEST_FILE.into(),
            serde_json::to_vec_pretty(&self.manifest).map_err(|e| invalid(MANIFEST_FILE, e))?,
        ));
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        for (file, bytes) in &files {
            let path = dir.join(file);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            let unique = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let temporary = path.with_file_name(format!(
                ".{}.{}-{unique}.tmp",
                path.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                std::process::id()
            ));
            std::fs::write(&temporary, bytes).map_err(io(&temporary))?;
            std::fs::rename(&temporary, &path).map_err(io(&path))?;
        }
        Ok(())
    }
}

/// Checksum over the three configuration files, exactly as `save` writes them.
fn config_files_checksum(
    model: &ModelConfig,
    training: &TrainingConfig,
    normalizer: &Normalizer,
) -> Result<String, ArtifactError> {
    let mut digest = Fnv::default();
    digest.write(model.to_string().as_bytes());
    digest.write(training.to_string().as_bytes());
    digest
        .write(&serde_json::to_vec_pretty(normalizer).map_err(|e| invalid(NORMALIZATION_FILE, e))?);
    Ok(format!("{:016x}", digest.0))
}

fn invalid(file: &str, reason: impl std::fmt::Display) -> ArtifactError {
    ArtifactError::Invalid {
        file: file.to_owned(),
        reason: reason.to_string(),
    }
}

/// 64-bit FNV-1a, streaming.
#[derive(Debug)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(bytes);
    h.0
}
