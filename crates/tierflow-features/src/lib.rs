//! Rolling per-user feature windows in event time, the versioned feature spec, and the offline
//! dataset builder. Pure: no I/O, no clock; the same code computes features online
//! (from Redis state) and offline (from an event log), so both are identical.

pub mod codec;
pub mod dataset;
pub use codec::StateDecodeError;
pub mod spec;
pub mod state;
pub mod vector;

pub use codec::{decode_state, decode_with_undo, encode_state, encode_with_undo};
pub use dataset::{BuildStats, DatasetBuilder, History, Label, Row};
pub use spec::FeatureSpec;
pub use state::{Applied, Lifetime, Published, UserState};
pub use vector::{features, write_features};
