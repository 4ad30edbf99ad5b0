//! JSON Schema (2020-12) for every contract, generated from the Rust types so the two cannot
//! drift; `schemas/` holds the committed copies and a test compares them.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::click::ClickEvent;
use crate::codec::Contract;
use crate::output::{CampaignOutcome, CampaignTriggered, DeadLetter, TierChanged, UserScore};

/// Base of every schema's `$id`.
pub const SCHEMA_ID_BASE: &str = "https://tierflow.dev/schemas";

/// The JSON Schema of one contract, exactly as committed under `schemas/`.
pub fn schema_for(contract: Contract) -> Value {
    let mut schema = match contract {
        Contract::Clickstream => generate::<ClickEvent>(),
        Contract::TierChanged => generate::<TierChanged>(),
        Contract::CampaignTriggered => generate::<CampaignTriggered>(),
        Contract::UserScore => generate::<UserScore>(),
        Contract::DeadLetter => generate::<DeadLetter>(),
        Contract::CampaignOutcome => generate::<CampaignOutcome>(),
    };
    let object = schema.as_object_mut().expect("a root schema is an object");
    object.insert(
        "$id".into(),
        json!(format!("{SCHEMA_ID_BASE}/{}", contract.file_name())),
    );
    if contract == Contract::Clickstream {
        // Serde attributes cannot say "required when event_type is purchase or refund".
        object.insert(
            "allOf".into(),
            json!([{
                "if": {
                    "properties": { "event_type": { "enum": ["purchase", "refund"] } },
                    "required": ["event_type"]
                },
                "then": {
                    "required": ["revenue"],
                    "properties": { "revenue": { "type": "number" } }
                }
            }]),
        );
    }
    schema
}

/// The committed text: pretty JSON with a trailing newline.
pub fn schema_text(contract: Contract) -> String {
    let mut text = serde_json::to_string_pretty(&schema_for(contract)).expect("schemas serialise");
    text.push('\n');
    text
}

fn generate<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    generator.into_root_schema_for::<T>().to_value()
}
