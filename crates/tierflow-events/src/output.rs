//! The output contracts: what ad bidders, churn-intervention workers and campaign engines read.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::error::DecodeErrorKind;
use crate::time::EventTime;

/// Schema version of every output contract in this build.
pub const OUTPUT_SCHEMA_VERSION: u32 = 1;

/// Value tier, `0` = lowest. The model artifact names the tiers and fixes how many there are.
pub type Tier = u8;

/// One feature's contribution to a score, largest first in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonCode {
    /// Feature name from the feature spec, e.g. `revenue_30d`.
    pub feature: String,
    /// Signed contribution to the score that moved (positive pushes the tier up).
    pub contribution: f32,
}

/// The scores one model gives one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scores {
    /// Probability of each tier, indexed by tier; sums to 1.
    pub tier_probabilities: Vec<f32>,
    /// Probability of no purchase within the churn horizon.
    #[schemars(range(min = 0, max = 1))]
    pub churn_risk: f32,
    /// Expected spend over the value horizon, in the model's currency.
    #[schemars(range(min = 0))]
    pub expected_value: f64,
}

/// A user moved to another value tier (after hysteresis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Tier changed",
    description = "A user moved between value tiers. Kafka key: user_id. Readers dedupe on idempotency_key."
)]
pub struct TierChanged {
    #[schemars(schema_with = "schema_version_1")]
    pub schema_version: u32,
    /// Deterministic: a replay of the same input produces the same key.
    pub idempotency_key: String,
    pub user_id: String,
    /// `null` when the user had no tier before.
    pub from_tier: Option<Tier>,
    pub to_tier: Tier,
    pub scores: Scores,
    pub model_version: String,
    /// Top contributing features, largest first.
    pub reason_codes: Vec<ReasonCode>,
    /// `event_id` of the event whose update caused the change.
    pub causing_event_id: String,
    /// Event time of the causing event.
    pub event_time: EventTime,
    /// When tierflow decided (wall clock).
    pub processing_time: EventTime,
}

/// A campaign rule fired for a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Campaign triggered",
    description = "A campaign rule fired for a user. Kafka key: user_id. Readers dedupe on idempotency_key."
)]
pub struct CampaignTriggered {
    #[schemars(schema_with = "schema_version_1")]
    pub schema_version: u32,
    pub idempotency_key: String,
    pub campaign: String,
    pub user_id: String,
    /// The rule that fired, as named in the rules file.
    pub rule: String,
    pub tier: Tier,
    pub scores: Scores,
    pub model_version: String,
    /// `event_id` of the causing event; `null` for timer-driven rules (inactivity).
    pub causing_event_id: Option<String>,
    /// Event time at which the rule fired.
    pub event_time: EventTime,
    /// After this instant the trigger is stale and must not be acted on.
    pub expires_at: EventTime,
    pub processing_time: EventTime,
}

/// Which arm of a campaign's experiment a trigger belongs to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CampaignArm {
    /// Sent: the record is on `campaign_triggered`.
    Treated,
    /// Held out in the campaign's control group (`would_have_triggered`): the record is on
    /// `campaign_control` and was never sent.
    Control,
}

impl CampaignArm {
    pub const ALL: [CampaignArm; 2] = [Self::Treated, Self::Control];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Treated => "treated",
            Self::Control => "control",
        }
    }
}

impl std::fmt::Display for CampaignArm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A purchase attributed to a campaign trigger: the feedback that measures a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Campaign outcome",
    description = "A purchase attributed to a campaign trigger, sent (treated) or held out (control), made within the campaign's attribution window after it. Kafka key: user_id. Readers dedupe on idempotency_key."
)]
pub struct CampaignOutcome {
    #[schemars(schema_with = "schema_version_1")]
    pub schema_version: u32,
    /// `co/{trigger_idempotency_key}/{purchase_event_id}`: the same on every re-run.
    pub idempotency_key: String,
    pub user_id: String,
    pub campaign: String,
    pub arm: CampaignArm,
    /// `idempotency_key` of the `campaign_triggered` (treated) or `campaign_control` record.
    pub trigger_idempotency_key: String,
    /// Event time at which the trigger fired (its `event_time`).
    pub fired_at: EventTime,
    /// `event_id` of the attributed purchase.
    pub purchase_event_id: String,
    /// Event time of the purchase: after `fired_at`, at most the attribution window later.
    pub purchased_at: EventTime,
    /// The purchase's `revenue` (order total), in `currency`.
    #[schemars(range(min = 0))]
    pub revenue: f64,
    /// The purchase's currency (ISO 4217), when the event named one.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: Option<String>,
    /// `purchased_at − fired_at` in milliseconds; always at least 1.
    #[schemars(range(min = 1))]
    pub delay_ms: i64,
}

impl CampaignOutcome {
    /// The idempotency key of the outcome of `purchase_event_id` under a trigger.
    pub fn key_for(trigger_idempotency_key: &str, purchase_event_id: &str) -> String {
        format!("co/{trigger_idempotency_key}/{purchase_event_id}")
    }
}

/// Latest scores of one user; the topic is compacted on `user_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "User score",
    description = "Latest scores of one user. Kafka key: user_id, on a compacted topic; a null value (tombstone) means the user was forgotten."
)]
pub struct UserScore {
    #[schemars(schema_with = "schema_version_1")]
    pub schema_version: u32,
    pub user_id: String,
    pub tier: Tier,
    pub scores: Scores,
    pub model_version: String,
    /// `event_id` of the newest event included.
    pub last_event_id: String,
    /// Event time of the newest event included.
    pub event_time: EventTime,
    pub processing_time: EventTime,
}

/// Why a record went to the dead-letter topic, as a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The record could not be decoded or broke the input contract; see `decode_error`.
    Decode,
    /// The event is older than every window accepts.
    TooLate,
    /// A valid record that processing refused (poison); see `reason`.
    Processing,
}

/// A record tierflow could not use, with everything needed to fix and replay it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "Dead letter",
    description = "An input record tierflow could not use, with its source position and the precise reason."
)]
pub struct DeadLetter {
    #[schemars(schema_with = "schema_version_1")]
    pub schema_version: u32,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    /// Original Kafka key, if any.
    pub source_key: Option<Bytes>,
    /// Original record value, byte for byte.
    pub original: Bytes,
    pub error_class: ErrorClass,
    /// For `decode`: the decoder's class of failure.
    pub decode_error: Option<DecodeErrorKind>,
    /// The field to blame, when there is one.
    pub field: Option<String>,
    /// A precise, human-readable reason, e.g. "`revenue` missing for purchase".
    pub reason: String,
    pub failed_at: EventTime,
}

/// Raw bytes: base64 text in JSON, a byte string in bincode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Self(v.to_vec())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&BASE64.encode(&self.0))
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = Cow::<'de, str>::deserialize(deserializer)?;
            BASE64
                .decode(text.as_bytes())
                .map(Bytes)
                .map_err(|e| de::Error::custom(format!("not base64: {e}")))
        } else {
            // serde_bytes-style: bincode hands over a byte buffer.
            struct Visit;
            impl<'de> de::Visitor<'de> for Visit {
                type Value = Bytes;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("bytes")
                }
                fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                    Ok(Bytes(v.to_vec()))
                }
                fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                    Ok(Bytes(v))
                }
            }
            deserializer.deserialize_byte_buf(Visit)
        }
    }
}

impl JsonSchema for Bytes {
    fn schema_name() -> Cow<'static, str> {
        "Bytes".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "contentEncoding": "base64",
            "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
            "description": "Raw bytes, base64 (RFC 4648, with padding)."
        })
    }
}

fn schema_version_1(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "integer", "const": 1 })
}
