//! How records travel: JSON by default, bincode on request, announced in Kafka headers.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::click::ClickEvent;
use crate::error::{DecodeError, DecodeErrorKind};
use crate::output::{
    CampaignOutcome, CampaignTriggered, DeadLetter, OUTPUT_SCHEMA_VERSION, Scores, TierChanged,
    UserScore,
};

/// Kafka header naming the value's encoding (`json` or `bincode`).
pub const HEADER_ENCODING: &str = "tierflow-encoding";
/// Kafka header naming the value's contract and version, e.g. `tier_changed/v1`.
pub const HEADER_SCHEMA: &str = "tierflow-schema";

/// Value encoding of an output record.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Json,
    Bincode,
}

impl Encoding {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Bincode => "bincode",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "bincode" => Ok(Self::Bincode),
            other => Err(format!(
                "unknown encoding {other:?} (expected json or bincode)"
            )),
        }
    }
}

/// Every topic contract tierflow defines, one JSON Schema file each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Contract {
    Clickstream,
    TierChanged,
    CampaignTriggered,
    UserScore,
    DeadLetter,
    CampaignOutcome,
}

impl Contract {
    pub const ALL: [Contract; 6] = [
        Self::Clickstream,
        Self::TierChanged,
        Self::CampaignTriggered,
        Self::UserScore,
        Self::DeadLetter,
        Self::CampaignOutcome,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Clickstream => "clickstream",
            Self::TierChanged => "tier_changed",
            Self::CampaignTriggered => "campaign_triggered",
            Self::UserScore => "user_score",
            Self::DeadLetter => "dead_letter",
            Self::CampaignOutcome => "campaign_outcome",
        }
    }

    pub const fn version(self) -> u32 {
        match self {
            Self::Clickstream => crate::click::CLICK_SCHEMA_VERSION,
            _ => OUTPUT_SCHEMA_VERSION,
        }
    }

    /// File name under `schemas/`, e.g. `tier_changed.v1.schema.json`.
    pub fn file_name(self) -> String {
        format!("{}.v{}.schema.json", self.name(), self.version())
    }

    /// Value of the [`HEADER_SCHEMA`] header, e.g. `tier_changed/v1`.
    pub fn header_value(self) -> String {
        format!("{}/v{}", self.name(), self.version())
    }
}

impl FromStr for Contract {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown contract {s:?}"))
    }
}

/// A record tierflow writes to an output topic.
pub trait OutputRecord: Serialize + DeserializeOwned {
    const CONTRACT: Contract;

    /// Checks what serde's types alone do not: version and value ranges.
    fn check(&self) -> Result<(), DecodeError>;
}

fn check_version(version: u32) -> Result<(), DecodeError> {
    if version == OUTPUT_SCHEMA_VERSION {
        Ok(())
    } else {
        Err(DecodeError::new(
            DecodeErrorKind::UnsupportedVersion,
            Some("schema_version"),
            format!(
                "`schema_version` {version} is not supported; this build reads version {OUTPUT_SCHEMA_VERSION}"
            ),
        ))
    }
}

impl Scores {
    fn check(&self) -> Result<(), DecodeError> {
        if !(0.0..=1.0).contains(&self.churn_risk) {
            return Err(DecodeError::invalid(
                "scores.churn_risk",
                format!("must be within [0, 1], got {}", self.churn_risk),
            ));
        }
        if self.expected_value.is_nan() || self.expected_value < 0.0 {
            return Err(DecodeError::invalid(
                "scores.expected_value",
                format!("must be ≥ 0, got {}", self.expected_value),
            ));
        }
        Ok(())
    }
}

impl OutputRecord for TierChanged {
    const CONTRACT: Contract = Contract::TierChanged;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(self.schema_version)?;
        self.scores.check()
    }
}

impl OutputRecord for CampaignTriggered {
    const CONTRACT: Contract = Contract::CampaignTriggered;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(self.schema_version)?;
        self.scores.check()
    }
}

impl OutputRecord for UserScore {
    const CONTRACT: Contract = Contract::UserScore;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(self.schema_version)?;
        self.scores.check()
    }
}

impl OutputRecord for CampaignOutcome {
    const CONTRACT: Contract = Contract::CampaignOutcome;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(self.schema_version)?;
        if !self.revenue.is_finite() || self.revenue < 0.0 {
            return Err(DecodeError::invalid(
                "revenue",
                format!("must be ≥ 0, got {}", self.revenue),
            ));
        }
        let delay = self
            .purchased_at
            .unix_millis()
            .checked_sub(self.fired_at.unix_millis());
        if self.delay_ms < 1 {
            return Err(DecodeError::invalid(
                "delay_ms",
                format!("must be ≥ 1, got {}", self.delay_ms),
            ));
        }
        if delay != Some(self.delay_ms) {
            return Err(DecodeError::invalid(
                "delay_ms",
                format!(
                    "must equal purchased_at − fired_at ({} ms), got {}",
                    delay.map_or_else(|| "overflow".to_owned(), |d| d.to_string()),
                    self.delay_ms
                ),
            ));
        }
        if let Some(currency) = &self.currency
            && !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()))
        {
            return Err(DecodeError::invalid(
                "currency",
                format!("must be an ISO 4217 code of three capital letters, got {currency:?}"),
            ));
        }
        Ok(())
    }
}

impl OutputRecord for DeadLetter {
    const CONTRACT: Contract = Contract::DeadLetter;
    fn check(&self) -> Result<(), DecodeError> {
        check_version(self.schema_version)
    }
}

/// Encodes an output record. JSON and bincode (2.x, standard config) are supported.
pub fn encode<T: OutputRecord>(value: &T, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => serde_json::to_vec(value).expect("output records always serialise"),
        Encoding::Bincode => bincode::serde::encode_to_vec(value, bincode::config::standard())
            .expect("output records always serialise"),
    }
}

/// Largest allocation a bincode decode may make: a corrupt length prefix must not ask the
/// allocator for gigabytes.
pub const MAX_BINCODE_BYTES: usize = 1024 * 1024;

fn bincode_limited() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_BINCODE_BYTES>()
}

/// Decodes and checks an output record.
pub fn decode<T: OutputRecord>(bytes: &[u8], encoding: Encoding) -> Result<T, DecodeError> {
    let value: T = match encoding {
        Encoding::Json => {
            let mut de = serde_json::Deserializer::from_slice(bytes);
            let value =
                serde_path_to_error::deserialize(&mut de).map_err(DecodeError::from_json)?;
            de.end().map_err(|e| {
                DecodeError::new(
                    DecodeErrorKind::Malformed,
                    None,
                    format!("not JSON: {e} (trailing data after the object)"),
                )
            })?;
            value
        }
        Encoding::Bincode => {
            let (value, read) = bincode::serde::decode_from_slice(bytes, bincode_limited())
                .map_err(|e| {
                    DecodeError::new(DecodeErrorKind::BadBinary, None, format!("bincode: {e}"))
                })?;
            if read != bytes.len() {
                return Err(DecodeError::new(
                    DecodeErrorKind::BadBinary,
                    None,
                    format!("bincode: {} trailing bytes", bytes.len() - read),
                ));
            }
            value
        }
    };
    value.check()?;
    Ok(value)
}

/// Decodes a clickstream record (always JSON).
pub fn decode_click(bytes: &[u8]) -> Result<ClickEvent, DecodeError> {
    ClickEvent::from_json(bytes)
}
