//! The soak series as one SVG: stacked panels over a shared time axis (throughput, lag,
//! memory, latency). Written by hand like `tierflow-eval`'s report plots (the same
//! 1-2-5 ticks and Tableau colours): a few polylines do not need a plotting library, and SVG
//! text needs no fonts. `tierflow-eval`'s chart type is private and fixed to one panel, so
//! the approach is reused, not the code.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::soak::{Phase, Sample};

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 190.0;
const PANEL_GAP: f64 = 50.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 70.0;
const BOTTOM: f64 = 60.0;
/// Tableau 10, as in `tierflow-eval`'s plots.
const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#e15759", "#59a14f"];
const DRAIN_SHADE: &str = "#f2f2f2";

/// One line of a panel: its legend and its (minutes, value) points.
struct Line {
    name: &'static str,
    points: Vec<(f64, f64)>,
}

struct Panel {
    title: &'static str,
    lines: Vec<Line>,
}

/// Writes the plot of `samples` to `path`; `title` heads it (the run's settings).
pub(crate) fn write(path: &Path, title: &str, samples: &[Sample]) -> Result<()> {
    let svg = render(title, samples);
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}

fn render(title: &str, samples: &[Sample]) -> String {
    let line = |name, value: fn(&Sample) -> Option<f64>| Line {
        name,
        points: samples
            .iter()
            .filter_map(|s| value(s).map(|v| (s.elapsed_secs / 60.0, v)))
            .collect(),
    };
    let panels = [
        Panel {
            title: "throughput (events/s over each interval)",
            lines: vec![
                line("offered", |s| Some(s.offered_per_sec)),
                line("processed", |s| Some(s.processed_per_sec)),
            ],
        },
        Panel {
            title: "lag (events)",
            lines: vec![
                line("offered − processed", |s| Some(s.lag_events as f64)),
                line("consumer-lag gauge", |s| {
                    s.consumer_lag_gauge.map(|v| v as f64)
                }),
            ],
        },
        Panel {
            title: "memory (MB)",
            lines: vec![
                line("pipeline process RSS", |s| Some(s.rss_mb)),
                line("Redis used_memory", |s| Some(s.redis_used_memory_mb)),
                line("broker RSS", |s| s.broker_rss_mb),
            ],
        },
        Panel {
            title: "latency event → user_score (ms)",
            lines: vec![
                line("p50 of interval", |s| s.latency_p50_ms),
                line("p99 of interval", |s| s.latency_p99_ms),
            ],
        },
    ];
    let x_max = samples
        .iter()
        .map(|s| s.elapsed_secs / 60.0)
        .fold(0.0, f64::max)
        .max(1e-3);
    let drain_from = samples
        .iter()
        .find(|s| s.phase == Phase::Drain)
        .map(|s| s.elapsed_secs / 60.0);
    let height = TOP + panels.len() as f64 * (PANEL_HEIGHT + PANEL_GAP) - PANEL_GAP + BOTTOM;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif"><rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    text(&mut svg, (LEFT, 30.0), "start", 17.0, title);
    let plot_width = WIDTH - LEFT - RIGHT;
    let px = |x: f64| LEFT + x / x_max * plot_width;
    for (i, panel) in panels.iter().enumerate() {
        let top = TOP + i as f64 * (PANEL_HEIGHT + PANEL_GAP);
        let bottom = top + PANEL_HEIGHT;
        let y_max = panel
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let y_max = if y_max > 0.0 { y_max * 1.05 } else { 1.0 };
        let py = |y: f64| bottom - y / y_max * PANEL_HEIGHT;
        text(&mut svg, (LEFT, top - 8.0), "start", 14.0, panel.title);
        if let Some(from) = drain_from {
            let _ = writeln!(
                svg,
                r#"<rect x="{:.1}" y="{top:.1}" width="{:.1}" height="{PANEL_HEIGHT}" fill="{DRAIN_SHADE}"/>"#,
                px(from),
                (px(x_max) - px(from)).max(0.0)
            );
        }
        for (value, label) in ticks(0.0, y_max) {
            let y = py(value);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/>"##,
                LEFT + plot_width
            );
            text(&mut svg, (LEFT - 8.0, y + 4.0), "end", 11.0, &label);
        }
        for (value, label) in ticks(0.0, x_max) {
            let x = px(value);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#444444"/>"##,
                bottom + 5.0
            );
            text(&mut svg, (x, bottom + 18.0), "middle", 11.0, &label);
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{top:.1}" width="{plot_width:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#444444"/>"##
        );
        for (j, line) in panel.lines.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let mut points = String::new();
            for (x, y) in line.points.iter().filter(|p| p.1.is_finite()) {
                let _ = write!(points, "{:.1},{:.1} ", px(*x), py(*y));
            }
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round"/>"#,
                points.trim_end()
            );
            let legend_x = LEFT + plot_width + 16.0;
            let legend_y = top + 12.0 + 20.0 * j as f64;
            let _ = writeln!(
                svg,
                r#"<line x1="{legend_x:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{color}" stroke-width="2"/>"#,
                legend_x + 22.0
            );
            text(
                &mut svg,
                (legend_x + 28.0, legend_y + 4.0),
                "start",
                12.0,
                line.name,
            );
        }
    }
    let axis_y = height - BOTTOM + 40.0;
    let desc = if drain_from.is_some() {
        "minutes since production started (shaded: production over, draining)"
    } else {
        "minutes since production started"
    };
    text(
        &mut svg,
        (LEFT + plot_width / 2.0, axis_y),
        "middle",
        13.0,
        desc,
    );
    svg.push_str("</svg>\n");
    svg
}

fn text(svg: &mut String, (x, y): (f64, f64), anchor: &str, size: f64, content: &str) {
    let escaped = content
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let _ = writeln!(
        svg,
        r##"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" font-size="{size}" fill="#222222">{escaped}</text>"##
    );
}

/// About six round-numbered ticks (steps of 1, 2 or 5 × 10ⁿ) within `[min, max]`, as in
/// `tierflow-eval`'s plots.
fn ticks(min: f64, max: f64) -> Vec<(f64, String)> {
    let span = max - min;
    if !(span.is_finite() && span > 0.0) {
        return vec![(min, format!("{min}"))];
    }
    let rough = span / 6.0;
    let magnitude = 10_f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * magnitude);
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let first = (min / step).ceil() as i64;
    let last = (max / step + 1e-9).floor() as i64;
    (first..=last)
        .map(|i| {
            let v = i as f64 * step;
            (v, format!("{v:.decimals$}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let labels = |min, max| {
            ticks(min, max)
                .into_iter()
                .map(|(_, l)| l)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(0.0, 30.0), ["0", "5", "10", "15", "20", "25", "30"]);
        assert_eq!(labels(0.0, 1.0), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        assert_eq!(labels(0.0, 0.0), ["0"]);
    }

    #[test]
    fn renders_one_polyline_per_line_and_escapes_text() {
        let svg = render("a <b> & c", &[]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert_eq!(svg.matches("<polyline").count(), 9);
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
