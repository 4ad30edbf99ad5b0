//! tierflow's wire contracts: the clickstream input, the output topics, their codecs and the
//! precise errors a bad record earns. Knows nothing of Kafka, Redis or models.

pub mod click;
pub mod codec;
pub mod error;
pub mod output;
pub mod robustness;
pub mod schema;
pub mod time;

pub use click::{ClickEvent, EventType};
pub use codec::{Contract, Encoding, HEADER_ENCODING, HEADER_SCHEMA, OutputRecord, decode, encode};
pub use error::{DecodeError, DecodeErrorKind};
pub use output::{
    Bytes, CampaignArm, CampaignOutcome, CampaignTriggered, DeadLetter, ErrorClass, ReasonCode,
    Scores, Tier, TierChanged, UserScore,
};
pub use robustness::check_click_record;
pub use time::EventTime;
