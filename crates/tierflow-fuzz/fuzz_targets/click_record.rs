//! Fuzzes the clickstream decoder `tierflow run` calls on every Kafka record; the property
//! (no panic, a dead-letter reason for every refusal, valid round-tripping events) lives in
//! `tierflow_events::robustness`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = tierflow_events::check_click_record(bytes);
});
