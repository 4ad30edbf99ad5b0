//! The customer-value model. A burn MLP with three heads (value tier, churn risk, ZILN
//! expected spend), its training loop, the artifact directory it lives in, and a batched
//! scorer with hot reload and reason codes. Knows nothing of Kafka or Redis; the binary picks
//! the burn device (backend).

pub mod calibration;
pub mod data;
pub mod model;
pub mod profile;
pub mod train;
pub mod workflow;

pub use data::{Dataset, Normalizer, Part, TierDefinition, TierScheme, part_of};
pub use model::{ModelConfig, ValueModel};
pub use train::{EpochReport, Trained, TrainingConfig, train};
pub mod artifact;
pub mod reload;
pub mod scorer;

pub use artifact::{Artifact, ArtifactError, DataSummary, Manifest};
pub use reload::{ModelHandle, Reload, Watcher};
pub use scorer::{ScoreBatch, ScoreError, Scorer};
