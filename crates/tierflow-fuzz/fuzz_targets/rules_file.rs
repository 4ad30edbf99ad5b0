//! Fuzzes the rules-file parser `tierflow run` and the hot reload call; the property (no
//! panic, positioned diagnostics, accepted rules within limits and round-tripping) lives in
//! `tierflow_rules::robustness`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // The pipeline reads the file as UTF-8 text before parsing; other bytes never reach it.
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = tierflow_rules::check_rules_text(text);
    }
});
