//! The rules parser's robustness property (`tierflow_rules::robustness`) on the committed fuzz
//! seeds, on the crashes fuzzing found, and on arbitrary and mutated text: the stable
//! counterpart of `just fuzz`.

use std::path::PathBuf;

use proptest::prelude::*;
use tierflow_rules::check_rules_text;

/// The `rules_file` fuzz target's committed seeds.
fn seeds() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tierflow-fuzz/seeds/rules_file");
    let mut seeds: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("seed entry").path();
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&path).expect("seed is UTF-8"))
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn seeds_hold_the_property() {
    let seeds = seeds();
    assert!(seeds.len() >= 8, "seed corpus missing");
    for (name, text) in &seeds {
        let accepted = check_rules_text(text).is_ok();
        let expected =
            ["deploy_example.toml", "every_default.toml", "minimal.toml"].contains(&name.as_str());
        assert_eq!(accepted, expected, "{name}");
    }
}

/// A seed with a few characters overwritten, inserted or removed, from an alphabet that
/// reaches TOML's syntax and the rules' keys.
fn mutated_seed() -> impl Strategy<Value = String> {
    let seeds: Vec<Vec<char>> = seeds()
        .into_iter()
        .map(|(_, t)| t.chars().collect())
        .collect();
    let piece = prop_oneof![
        prop::sample::select(vec![
            "\n",
            "=",
            "\"",
            "[",
            "]",
            "{",
            "}",
            ",",
            ".",
            "-",
            "0",
            "9",
            "1e400",
            "nan",
            "inf",
            "d",
            "w",
            "'''",
            "\"\"\"",
            "[[campaign]]\n",
            "when = {",
            "tier_count = ",
            "é",
            "\r",
            "\t",
            "#",
        ])
        .prop_map(str::to_owned),
        any::<char>().prop_map(String::from),
    ];
    (
        prop::sample::select(seeds),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, piece), 1..6),
    )
        .prop_map(|(mut chars, edits)| {
            for (at, op, piece) in edits {
                let i = if chars.is_empty() {
                    0
                } else {
                    at.index(chars.len())
                };
                match op {
                    0 if !chars.is_empty() => {
                        chars.splice(i..=i, piece.chars());
                    }
                    1 => {
                        chars.splice(i..i, piece.chars());
                    }
                    _ if !chars.is_empty() => {
                        chars.remove(i);
                    }
                    _ => chars.extend(piece.chars()),
                }
            }
            chars.into_iter().collect()
        })
}

/// A rules file of well-formed TOML with arbitrary values under the real keys.
fn rules_shaped() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        (-3i64..300).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        (0.0f64..1.2).prop_map(|f| format!("{f:?}")),
    ];
    let duration = "[0-9]{0,21}[smhdw]?".prop_map(|s| format!("{s:?}"));
    let condition = prop_oneof![
        number.clone().prop_map(|n| format!("tier_reached = {n}")),
        number
            .clone()
            .prop_map(|n| format!("tier_dropped_by = {n}")),
        (number.clone(), prop::option::of(number.clone())).prop_map(|(a, t)| match t {
            None => format!("churn_risk_at_least = {a}"),
            Some(t) => format!("churn_risk_at_least = {a}, tier_at_least = {t}"),
        }),
        duration
            .clone()
            .prop_map(|d| format!("cart_abandoned = {d}")),
        duration
            .clone()
            .prop_map(|d| format!("browse_abandoned = {d}")),
        duration.clone().prop_map(|d| format!("inactive_for = {d}")),
        any::<bool>().prop_map(|b| format!("first_purchase = {b}")),
    ];
    let campaign = (
        "[a-z0-9_-]{0,3}|\\PC{0,4}",
        prop::option::of(number.clone()),
        prop::option::of(number.clone()),
        prop::option::of(duration.clone()),
        prop::collection::vec(condition, 0..3),
    )
        .prop_map(|(name, priority, fraction, cooldown, conditions)| {
            let mut text = format!("[[campaign]]\nname = {name:?}\n");
            if let Some(p) = priority {
                text += &format!("priority = {p}\n");
            }
            if let Some(f) = fraction {
                text += &format!("control_fraction = {f}\n");
            }
            if let Some(c) = cooldown {
                text += &format!("cooldown = {c}\n");
            }
            text + &format!("when = {{ {} }}\n", conditions.join(", "))
        });
    (
        number.clone(),
        prop::option::of(number),
        prop::option::of(duration),
        prop::collection::vec(campaign, 0..4),
    )
        .prop_map(|(tiers, cap, window, campaigns)| {
            let mut text = format!("tier_count = {tiers}\n[defaults]\n");
            if let Some(c) = cap {
                text += &format!("daily_cap = {c}\n");
            }
            if let Some(w) = window {
                text += &format!("attribution_window = {w}\n");
            }
            text + &campaigns.concat()
        })
}

proptest! {
    #[test]
    fn arbitrary_text_holds_the_property(text in "\\PC{0,256}") {
        let _ = check_rules_text(&text);
    }

    #[test]
    fn mutated_seeds_hold_the_property(text in mutated_seed()) {
        let _ = check_rules_text(&text);
    }

    #[test]
    fn rules_shaped_files_hold_the_property(text in rules_shaped()) {
        let _ = check_rules_text(&text);
    }
}
