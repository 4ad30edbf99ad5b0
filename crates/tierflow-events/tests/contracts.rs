//! The committed JSON Schemas, the Rust types and the example corpus agree: schemars output
//! equals `schemas/*.json`, and a JSON Schema validator and the Rust decoder give the same
//! verdict on every example (and on mutated events, by property test).
//!
//! Run with `TIERFLOW_BLESS=1` to rewrite `schemas/*.schema.json` after changing a type.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{Value, json};
use tierflow_events::schema::{schema_for, schema_text};
use tierflow_events::{
    CampaignOutcome, CampaignTriggered, ClickEvent, Contract, DeadLetter, Encoding, TierChanged,
    UserScore, decode,
};

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn validator(contract: Contract) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema_for(contract))
        .expect("committed schemas compile")
}

/// The Rust decoder's verdict for one contract: `Err(reason)` or `Ok`.
fn rust_verdict(contract: Contract, bytes: &[u8]) -> Result<(), String> {
    let result = match contract {
        Contract::Clickstream => ClickEvent::from_json(bytes).map(|_| ()),
        Contract::TierChanged => decode::<TierChanged>(bytes, Encoding::Json).map(|_| ()),
        Contract::CampaignTriggered => {
            decode::<CampaignTriggered>(bytes, Encoding::Json).map(|_| ())
        }
        Contract::UserScore => decode::<UserScore>(bytes, Encoding::Json).map(|_| ()),
        Contract::DeadLetter => decode::<DeadLetter>(bytes, Encoding::Json).map(|_| ()),
        Contract::CampaignOutcome => decode::<CampaignOutcome>(bytes, Encoding::Json).map(|_| ()),
    };
    result.map_err(|e| e.reason)
}

#[test]
fn committed_schemas_equal_the_rust_types() {
    let bless = std::env::var_os("TIERFLOW_BLESS").is_some();
    for contract in Contract::ALL {
        let path = schemas_dir().join(contract.file_name());
        let expected = schema_text(contract);
        if bless {
            fs::write(&path, &expected).unwrap();
            continue;
        }
        let committed = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run with TIERFLOW_BLESS=1", path.display()));
        assert_eq!(
            committed,
            expected,
            "{} is stale: the Rust type changed; run `TIERFLOW_BLESS=1 cargo test -p tierflow-events --test contracts` and review the diff",
            path.display()
        );
    }
}

#[test]
fn schemas_declare_draft_2020_12_and_ids() {
    for contract in Contract::ALL {
        let schema = schema_for(contract);
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert!(
            schema["$id"]
                .as_str()
                .unwrap()
                .ends_with(&contract.file_name())
        );
    }
}

fn corpus(contract: Contract, verdict: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = schemas_dir()
        .join("examples")
        .join(contract.name())
        .join(verdict);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn valid_examples_pass_both_validator_and_decoder() {
    for contract in Contract::ALL {
        let validator = validator(contract);
        let examples = corpus(contract, "valid");
        assert!(!examples.is_empty(), "{contract:?} has no valid examples");
        for (path, bytes) in examples {
            let doc: Value = serde_json::from_slice(&bytes).unwrap();
            let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "{}: schema says {errors:?}",
                path.display()
            );
            if let Err(reason) = rust_verdict(contract, &bytes) {
                panic!("{}: decoder says {reason}", path.display());
            }
        }
    }
}

#[test]
fn invalid_examples_fail_both_with_the_expected_reason() {
    let mut checked = 0;
    for contract in Contract::ALL {
        let validator = validator(contract);
        for (path, bytes) in corpus(contract, "invalid") {
            let expected = fs::read_to_string(path.with_extension("reason"))
                .unwrap_or_else(|e| panic!("{}: needs a .reason file: {e}", path.display()));
            let got = rust_verdict(contract, &bytes);
            assert_eq!(
                got,
                Err(expected.trim_end().to_owned()),
                "{}",
                path.display()
            );
            // Documents that are JSON at all must fail the schema too.
            if let Ok(doc) = serde_json::from_slice::<Value>(&bytes) {
                assert!(
                    !validator.is_valid(&doc),
                    "{}: the decoder refuses it but the schema accepts it",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "the bad-document corpus shrank to {checked}");
}

#[test]
fn bincode_and_json_round_trip_every_valid_output() {
    fn round_trip<T: tierflow_events::OutputRecord + PartialEq + std::fmt::Debug>(
        contract: Contract,
    ) {
        for (path, bytes) in corpus(contract, "valid") {
            let value: T = decode(&bytes, Encoding::Json).unwrap();
            for encoding in [Encoding::Json, Encoding::Bincode] {
                let encoded = tierflow_events::encode(&value, encoding);
                let back: T = decode(&encoded, encoding)
                    .unwrap_or_else(|e| panic!("{} via {encoding}: {e}", path.display()));
                assert_eq!(back, value, "{} via {encoding}", path.display());
            }
        }
    }
    round_trip::<TierChanged>(Contract::TierChanged);
    round_trip::<CampaignTriggered>(Contract::CampaignTriggered);
    round_trip::<UserScore>(Contract::UserScore);
    round_trip::<DeadLetter>(Contract::DeadLetter);
    round_trip::<CampaignOutcome>(Contract::CampaignOutcome);
}

/// A valid purchase to mutate.
fn base_event() -> Value {
    json!({
        "schema_version": 1,
        "event_id": "e-1",
        "user_id": "u-1",
        "event_type": "purchase",
        "ts": "2026-11-28T12:00:00.250Z",
        "session_id": "s-1",
        "product_id": "p-9",
        "category": "shoes",
        "price": 49.5,
        "quantity": 2,
        "currency": "EUR",
        "order_id": "o-1",
        "revenue": 99.0,
        "channel": "web",
        "device": "mobile"
    })
}

const FIELDS: [&str; 15] = [
    "schema_version",
    "event_id",
    "user_id",
    "event_type",
    "ts",
    "session_id",
    "product_id",
    "category",
    "price",
    "quantity",
    "currency",
    "order_id",
    "revenue",
    "channel",
    "device",
];

/// Values that probe every check: types, ranges, formats, lengths, enums, nulls.
fn interesting_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        Just(json!("")),
        Just(json!("x")),
        Just(json!("EUR")),
        Just(json!("eur")),
        Just(json!("EURO")),
        Just(json!("x".repeat(64))),
        Just(json!("x".repeat(65))),
        Just(json!("é".repeat(128))),
        Just(json!("é".repeat(129))),
        Just(json!("purchase")),
        Just(json!("refund")),
        Just(json!("page_view")),
        Just(json!("Purchase")),
        Just(json!("2026-11-28T12:00:00Z")),
        Just(json!("2026-11-28T12:00:00+05:30")),
        Just(json!("2026-11-28T12:00:00.123456789Z")),
        Just(json!("2026-11-28T12:00:00")),
        Just(json!("2026-11-28")),
        Just(json!("2026-13-28T12:00:00Z")),
        Just(json!("yesterday")),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(2)),
        Just(json!(-1)),
        Just(json!(0.5)),
        Just(json!(-0.01)),
        Just(json!(10000)),
        Just(json!(10001)),
        Just(json!(1e300)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        (-5i64..20_000).prop_map(|i| json!(i)),
        "[a-zA-Z0-9_-]{0,8}".prop_map(|s| json!(s)),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Remove(usize),
    Set(usize, Value),
    AddUnknown(String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0..FIELDS.len()).prop_map(Mutation::Remove),
        (0..FIELDS.len(), interesting_value()).prop_map(|(i, v)| Mutation::Set(i, v)),
        "[a-z_]{1,10}".prop_map(Mutation::AddUnknown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ClickEvent::from_json(&bytes);
        for encoding in [Encoding::Json, Encoding::Bincode] {
            let _ = decode::<TierChanged>(&bytes, encoding);
            let _ = decode::<DeadLetter>(&bytes, encoding);
        }
    }

    #[test]
    fn decoder_and_schema_agree_on_mutated_events(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let mut doc = base_event();
        let object = doc.as_object_mut().unwrap();
        for m in &mutations {
            match m {
                Mutation::Remove(i) => { object.remove(FIELDS[*i]); }
                Mutation::Set(i, v) => { object.insert(FIELDS[*i].to_owned(), v.clone()); }
                Mutation::AddUnknown(name) => {
                    if !FIELDS.contains(&name.as_str()) {
                        object.insert(name.clone(), json!(1));
                    }
                }
            }
        }
        let bytes = serde_json::to_vec(&doc).unwrap();
        let rust = rust_verdict(Contract::Clickstream, &bytes);
        let schema_ok = validator(Contract::Clickstream).is_valid(&doc);
        prop_assert_eq!(rust.is_ok(), schema_ok, "doc {} decoder {:?}", doc, rust);
        if let Err(reason) = rust {
            prop_assert!(!reason.is_empty());
        }
    }

    #[test]
    fn valid_events_survive_a_json_round_trip(price in 0.0f64..1e6, quantity in 1u32..=10_000, millis in 0i64..4_102_444_800_000) {
        let mut doc = base_event();
        doc["price"] = json!(price);
        doc["quantity"] = json!(quantity);
        doc["ts"] = json!(tierflow_events::EventTime::from_unix_millis(millis).to_rfc3339());
        let event = ClickEvent::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap();
        prop_assert_eq!(event.ts.unix_millis(), millis);
        prop_assert_eq!(ClickEvent::from_json(&event.to_json()).unwrap(), event);
    }
}
