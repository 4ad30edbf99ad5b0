//! Just enough of the Prometheus text format to read this process's own `/metrics` back:
//! samples with labels, sums over label sets, and quantiles of histogram bucket deltas (as
//! PromQL's `histogram_quantile` over a `rate`).

use std::collections::BTreeMap;

/// One line `name{label="value",...} value` of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// A parsed exposition. Lines that do not parse (comments, blank lines) are skipped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exposition {
    samples: Vec<Sample>,
}

impl Exposition {
    pub(crate) fn parse(text: &str) -> Self {
        Self {
            samples: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// Samples named `name` whose labels include every `(key, value)` of `filter`.
    pub(crate) fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && filter.iter().all(|(k, v)| s.label(k) == Some(*v)))
    }

    /// The sum of `name` over all label sets that match `filter`; `None` when there is none.
    pub(crate) fn sum(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, filter)
            .map(|s| s.value)
            .fold(None, |acc, v| Some(acc.unwrap_or(0.0) + v))
    }

    /// The cumulative buckets of histogram `name` (matching `filter`), summed over the other
    /// labels, by upper bound (`+Inf` last).
    pub(crate) fn histogram(&self, name: &str, filter: &[(&str, &str)]) -> Buckets {
        let bucket_name = format!("{name}_bucket");
        let mut by_bound: BTreeMap<OrderedBound, f64> = BTreeMap::new();
        for s in self.matching(&bucket_name, filter) {
            let Some(le) = s.label("le") else { continue };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse::<f64>() {
                    Ok(b) => b,
                    Err(_) => continue,
                }
            };
            *by_bound.entry(OrderedBound(bound)).or_insert(0.0) += s.value;
        }
        Buckets(by_bound.into_iter().map(|(b, c)| (b.0, c)).collect())
    }
}

/// Cumulative histogram buckets `(upper bound, observations at or below it)`, ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Buckets(pub(crate) Vec<(f64, f64)>);

impl Buckets {
    /// The observations between an earlier reading and this one (counts never go down; a
    /// bucket missing earlier counts from zero).
    pub(crate) fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|(bound, count)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(b, _)| b == bound)
                        .map_or(0.0, |(_, c)| *c);
                    (*bound, (count - before).max(0.0))
                })
                .collect(),
        )
    }

    /// Observations in total (the `+Inf` bucket).
    pub(crate) fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, c)| *c)
    }

    /// The `q` quantile (0..=1), interpolated linearly inside its bucket as Prometheus does;
    /// `None` without observations. A quantile in the `+Inf` bucket is the highest finite
    /// bound.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for (bound, count) in &self.0 {
            if *count >= rank && *count > lower_count {
                if bound.is_infinite() {
                    return Some(lower_bound);
                }
                let inside = (rank - lower_count) / (count - lower_count);
                return Some(lower_bound + (bound - lower_bound) * inside);
            }
            if bound.is_finite() {
                lower_bound = *bound;
            }
            lower_count = *count;
        }
        Some(lower_bound)
    }
}

/// An `f64` bound that sorts (bounds are never NaN: unparsable ones are skipped).
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderedBound(f64);

impl Eq for OrderedBound {}

impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let rest = if line[name_end..].starts_with('{') {
        let (parsed, after) = parse_labels(&line[name_end + 1..])?;
        labels = parsed;
        after
    } else {
        &line[name_end..]
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `key="value",...}` → the labels and what follows the closing brace.
fn parse_labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start_matches([',', ' ']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_owned();
        text = text[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = text.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        labels.insert(key, value);
        text = &text[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP tierflow_events_in_total Records consumed
# TYPE tierflow_events_in_total counter
tierflow_events_in_total{topic="a"} 10
tierflow_events_in_total{topic="b"} 5

tierflow_consumer_lag{topic="a",partition="0"} 3
tierflow_consumer_lag{topic="a",partition="1"} 4
tierflow_campaign_decisions_total{campaign="vip \"gold\"",outcome="send"} 2
tierflow_stage_seconds_bucket{stage="batch",le="0.01"} 1
tierflow_stage_seconds_bucket{stage="batch",le="0.1"} 3
tierflow_stage_seconds_bucket{stage="batch",le="+Inf"} 4
tierflow_stage_seconds_bucket{stage="load",le="0.01"} 100
tierflow_stage_seconds_bucket{stage="load",le="+Inf"} 100
tierflow_stage_seconds_sum{stage="batch"} 0.5
"#;

    #[test]
    fn sums_and_label_filters() {
        let e = Exposition::parse(TEXT);
        assert_eq!(e.sum("tierflow_events_in_total", &[]), Some(15.0));
        assert_eq!(
            e.sum("tierflow_events_in_total", &[("topic", "b")]),
            Some(5.0)
        );
        assert_eq!(e.sum("tierflow_consumer_lag", &[]), Some(7.0));
        assert_eq!(e.sum("absent", &[]), None);
        assert_eq!(
            e.sum(
                "tierflow_campaign_decisions_total",
                &[("campaign", "vip \"gold\""), ("outcome", "send")]
            ),
            Some(2.0)
        );
    }

    #[test]
    fn histogram_buckets_by_label() {
        let e = Exposition::parse(TEXT);
        let b = e.histogram("tierflow_stage_seconds", &[("stage", "batch")]);
        assert_eq!(b.0, vec![(0.01, 1.0), (0.1, 3.0), (f64::INFINITY, 4.0)]);
        assert_eq!(b.count(), 4.0);
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let check = |buckets: &[(f64, f64)], q: f64, expected: Option<f64>| {
            let got = Buckets(buckets.to_vec()).quantile(q);
            match (got, expected) {
                (Some(g), Some(e)) => assert!((g - e).abs() < 1e-9, "q{q}: {g} != {e}"),
                (g, e) => assert_eq!(g, e, "q{q}"),
            }
        };
        let b = [(0.01, 0.0), (0.1, 10.0), (1.0, 20.0), (f64::INFINITY, 20.0)];
        // Median: rank 10, the top of the (0.01, 0.1] bucket.
        check(&b, 0.5, Some(0.1));
        // rank 5: half-way through (0.01, 0.1].
        check(&b, 0.25, Some(0.055));
        // rank 19.8: 98 % through (0.1, 1].
        check(&b, 0.99, Some(0.1 + 0.9 * 0.98));
        // In the +Inf bucket: the highest finite bound.
        check(&[(0.5, 1.0), (f64::INFINITY, 10.0)], 0.99, Some(0.5));
        // No observations.
        check(&[(0.5, 0.0), (f64::INFINITY, 0.0)], 0.5, None);
        check(&[], 0.5, None);
    }

    #[test]
    fn deltas_between_readings() {
        let before = Buckets(vec![(0.1, 2.0), (f64::INFINITY, 3.0)]);
        let after = Buckets(vec![(0.01, 4.0), (0.1, 6.0), (f64::INFINITY, 9.0)]);
        let delta = after.since(&before);
        assert_eq!(delta.0, vec![(0.01, 4.0), (0.1, 4.0), (f64::INFINITY, 6.0)]);
    }
}
