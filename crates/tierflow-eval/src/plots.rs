//! Report plots as self-contained SVG files: cumulative gain, lift by decile, churn
//! calibration and the tier confusion matrix. Written by a tiny SVG writer rather than a
//! plotting library: four chart shapes do not need one, and SVG text needs no fonts (the
//! browser renders it). The only I/O in the crate.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::metrics::CalibrationBin;

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 500.0;
/// Plot area margins; the legend sits in the right margin.
const LEFT: f64 = 80.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 70.0;
/// Tableau 10: distinguishable, and readable by most colour-blind viewers.
const COLORS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
const REFERENCE: &str = "#888888";

#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct PlotError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Cumulative gain curves (from [`crate::metrics::gain_curve`]) against the random
/// diagonal.
pub fn gain_chart(path: &Path, curves: &[(&str, Vec<(f64, f64)>)]) -> Result<(), PlotError> {
    let y = padded_range(
        curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1)),
        0.0,
        1.0,
    );
    let mut chart = LineChart::new(
        "Cumulative gain: future spend captured",
        "share of customers, ranked by predicted spend",
        "share of actual future spend",
        ((0.0, 1.0), None),
        y,
    );
    chart.reference("random", &[(0.0, 0.0), (1.0, 1.0)]);
    for (i, (name, points)) in curves.iter().enumerate() {
        chart.series(name, points, COLORS[i % COLORS.len()], false);
    }
    write(path, &chart.finish())
}

/// Lift by decile (from [`crate::metrics::lift_by_decile`]; decile 1 = highest predicted
/// spend) against the no-lift line at 1.
pub fn lift_chart(path: &Path, series: &[(&str, Vec<f64>)]) -> Result<(), PlotError> {
    let deciles = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(10)
        .max(2) as f64;
    let y = padded_range(series.iter().flat_map(|(_, v)| v.iter().copied()), 0.0, 1.0);
    let mut chart = LineChart::new(
        "Lift by decile of predicted spend",
        "decile (1 = highest predicted spend)",
        "mean actual spend / overall mean",
        (
            (1.0, deciles),
            Some((1..=deciles as usize).map(|d| d as f64).collect()),
        ),
        y,
    );
    chart.reference("no lift", &[(1.0, 1.0), (deciles, 1.0)]);
    for (i, (name, lift)) in series.iter().enumerate() {
        let points: Vec<(f64, f64)> = lift
            .iter()
            .enumerate()
            .map(|(d, v)| ((d + 1) as f64, *v))
            .collect();
        chart.series(name, &points, COLORS[i % COLORS.len()], true);
    }
    write(path, &chart.finish())
}

/// Reliability diagram of churn probabilities (from [`crate::metrics::calibration`]), one
/// line per model, against the perfectly calibrated diagonal.
pub fn calibration_chart(
    path: &Path,
    series: &[(&str, &[CalibrationBin])],
) -> Result<(), PlotError> {
    let mut chart = LineChart::new(
        "Churn calibration",
        "predicted probability of no purchase",
        "observed share with no purchase",
        ((0.0, 1.0), None),
        (0.0, 1.0),
    );
    chart.reference("perfect", &[(0.0, 0.0), (1.0, 1.0)]);
    for (i, (name, bins)) in series.iter().enumerate() {
        let points: Vec<(f64, f64)> = bins
            .iter()
            .map(|b| (b.mean_predicted, b.observed_rate))
            .collect();
        chart.series(name, &points, COLORS[i % COLORS.len()], true);
    }
    write(path, &chart.finish())
}

/// Confusion matrix `[actual][predicted]` as a heat map. A cell's colour is its share of the
/// actual tier's rows (recall on the diagonal), so small tiers show as clearly as large
/// ones; its count is written in it.
pub fn confusion_matrix(path: &Path, title: &str, matrix: &[Vec<u64>]) -> Result<(), PlotError> {
    let k = matrix.len().max(1);
    let side = (HEIGHT - TOP - BOTTOM).min(WIDTH - 2.0 * LEFT);
    let cell = side / k as f64;
    let (left, top) = ((WIDTH - side) / 2.0, TOP);
    let mut svg = Svg::new();
    svg.text(WIDTH / 2.0, 30.0, title, Anchor::Middle, 20.0);
    svg.text(
        WIDTH / 2.0,
        48.0,
        "colour: share of the actual tier's rows",
        Anchor::Middle,
        12.0,
    );
    for (a, row) in matrix.iter().enumerate() {
        let total = row.iter().sum::<u64>().max(1) as f64;
        for (p, count) in row.iter().enumerate() {
            let share = *count as f64 / total;
            let (x, y) = (left + p as f64 * cell, top + a as f64 * cell);
            // From near-white to a saturated blue.
            let light = |full: f64, pale: f64| (pale + (full - pale) * share).round() as u8;
            let fill = format!(
                "rgb({},{},{})",
                light(33.0, 240.0),
                light(102.0, 245.0),
                light(172.0, 252.0)
            );
            svg.rect(x, y, cell, cell, &fill, "#ffffff");
            let ink = if share > 0.55 { "#ffffff" } else { "#222222" };
            svg.text_colored(
                x + cell / 2.0,
                y + cell / 2.0 + 5.0,
                &count.to_string(),
                Anchor::Middle,
                15.0,
                ink,
            );
        }
    }
    for t in 0..k {
        let centre = t as f64 * cell + cell / 2.0;
        svg.text(
            left + centre,
            top + side + 20.0,
            &format!("tier {t}"),
            Anchor::Middle,
            13.0,
        );
        svg.text(
            left - 10.0,
            top + centre + 4.0,
            &format!("tier {t}"),
            Anchor::End,
            13.0,
        );
    }
    svg.text(
        WIDTH / 2.0,
        top + side + 48.0,
        "predicted tier",
        Anchor::Middle,
        15.0,
    );
    svg.vertical_text(left - 62.0, top + side / 2.0, "actual tier", 15.0);
    write(path, &svg.finish())
}

fn write(path: &Path, svg: &str) -> Result<(), PlotError> {
    std::fs::write(path, svg).map_err(|source| PlotError {
        path: path.to_owned(),
        source,
    })
}

/// `(min, max)` of the finite `values`, widened to include `[low, high]`, with 5% headroom
/// on a side the data widened.
fn padded_range(values: impl Iterator<Item = f64>, low: f64, high: f64) -> (f64, f64) {
    let (min, max) = values
        .filter(|v| v.is_finite())
        .fold((low, high), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = 0.05 * (max - min);
    (
        if min < low { min - pad } else { min },
        if max > high { max + pad } else { max },
    )
}

/// Axes, lines and a legend on a plot area mapped to `x × y`.
struct LineChart {
    svg: Svg,
    x: (f64, f64),
    y: (f64, f64),
    legend_rows: usize,
}

impl LineChart {
    /// `x_ticks`: `None` for round numbers, or the values to label.
    fn new(
        title: &str,
        x_desc: &str,
        y_desc: &str,
        (x, x_ticks): ((f64, f64), Option<Vec<f64>>),
        y: (f64, f64),
    ) -> Self {
        let mut chart = Self {
            svg: Svg::new(),
            x,
            y: if y.1 > y.0 { y } else { (y.0, y.0 + 1.0) },
            legend_rows: 0,
        };
        let (right, bottom) = (WIDTH - RIGHT, HEIGHT - BOTTOM);
        chart.svg.text(
            LEFT + (right - LEFT) / 2.0,
            32.0,
            title,
            Anchor::Middle,
            20.0,
        );
        let x_ticks = match x_ticks {
            Some(values) => values.into_iter().map(|v| (v, format!("{v}"))).collect(),
            None => ticks(chart.x.0, chart.x.1),
        };
        for (value, label) in x_ticks {
            let (px, _) = chart.pixel(value, chart.y.0);
            chart
                .svg
                .line((px, TOP), (px, bottom), "#eeeeee", 1.0, false);
            chart
                .svg
                .line((px, bottom), (px, bottom + 5.0), "#444444", 1.0, false);
            chart
                .svg
                .text(px, bottom + 19.0, &label, Anchor::Middle, 12.0);
        }
        for (value, label) in ticks(chart.y.0, chart.y.1) {
            let (_, py) = chart.pixel(chart.x.0, value);
            chart
                .svg
                .line((LEFT, py), (right, py), "#eeeeee", 1.0, false);
            chart
                .svg
                .line((LEFT - 5.0, py), (LEFT, py), "#444444", 1.0, false);
            chart
                .svg
                .text(LEFT - 8.0, py + 4.0, &label, Anchor::End, 12.0);
        }
        chart
            .svg
            .rect(LEFT, TOP, right - LEFT, bottom - TOP, "none", "#444444");
        chart.svg.text(
            LEFT + (right - LEFT) / 2.0,
            HEIGHT - 22.0,
            x_desc,
            Anchor::Middle,
            14.0,
        );
        chart
            .svg
            .vertical_text(22.0, TOP + (bottom - TOP) / 2.0, y_desc, 14.0);
        chart
    }

    fn pixel(&self, x: f64, y: f64) -> (f64, f64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        (
            LEFT + fx * (WIDTH - RIGHT - LEFT),
            HEIGHT - BOTTOM - fy * (HEIGHT - BOTTOM - TOP),
        )
    }

    /// A dashed grey line (random ranking, perfect calibration, no lift).
    fn reference(&mut self, name: &str, points: &[(f64, f64)]) {
        self.polyline(points, REFERENCE, 1.5, true);
        self.legend(name, REFERENCE, true);
    }

    fn series(&mut self, name: &str, points: &[(f64, f64)], color: &str, markers: bool) {
        self.polyline(points, color, 2.0, false);
        if markers {
            for (x, y) in points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
            {
                let (px, py) = self.pixel(*x, *y);
                self.svg.circle(px, py, 3.0, color);
            }
        }
        self.legend(name, color, false);
    }

    fn polyline(&mut self, points: &[(f64, f64)], color: &str, width: f64, dashed: bool) {
        let pixels: Vec<(f64, f64)> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| self.pixel(*x, *y))
            .collect();
        self.svg.polyline(&pixels, color, width, dashed);
    }

    fn legend(&mut self, name: &str, color: &str, dashed: bool) {
        let x = WIDTH - RIGHT + 16.0;
        let y = TOP + 10.0 + 22.0 * self.legend_rows as f64;
        self.svg.line((x, y), (x + 24.0, y), color, 2.0, dashed);
        self.svg.text(x + 32.0, y + 4.0, name, Anchor::Start, 13.0);
        self.legend_rows += 1;
    }

    fn finish(self) -> String {
        self.svg.finish()
    }
}

/// About six round-numbered ticks (steps of 1, 2 or 5 × 10ⁿ) within `[min, max]`.
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

#[derive(Clone, Copy)]
enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Middle => "middle",
            Self::End => "end",
        }
    }
}

/// Appends SVG elements to a string; `finish` closes the document.
struct Svg {
    out: String,
}

impl Svg {
    fn new() -> Self {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
        );
        out.push_str(r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
        out.push('\n');
        Self { out }
    }

    fn text(&mut self, x: f64, y: f64, text: &str, anchor: Anchor, size: f64) {
        self.text_colored(x, y, text, anchor, size, "#222222");
    }

    fn text_colored(&mut self, x: f64, y: f64, text: &str, anchor: Anchor, size: f64, color: &str) {
        let _ = writeln!(
            self.out,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{}" font-size="{size}" fill="{color}">{}</text>"#,
            anchor.as_str(),
            escape(text)
        );
    }

    fn vertical_text(&mut self, x: f64, y: f64, text: &str, size: f64) {
        let _ = writeln!(
            self.out,
            r##"<text transform="translate({x:.1} {y:.1}) rotate(-90)" text-anchor="middle" font-size="{size}" fill="#222222">{}</text>"##,
            escape(text)
        );
    }

    fn line(
        &mut self,
        (x1, y1): (f64, f64),
        (x2, y2): (f64, f64),
        color: &str,
        width: f64,
        dashed: bool,
    ) {
        let _ = writeln!(
            self.out,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" stroke="{color}" stroke-width="{width}"{}/>"#,
            dash(dashed)
        );
    }

    fn polyline(&mut self, points: &[(f64, f64)], color: &str, width: f64, dashed: bool) {
        let mut coordinates = String::new();
        for (x, y) in points {
            let _ = write!(coordinates, "{x:.1},{y:.1} ");
        }
        let _ = writeln!(
            self.out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}" stroke-linejoin="round"{}/>"#,
            coordinates.trim_end(),
            dash(dashed)
        );
    }

    fn rect(&mut self, x: f64, y: f64, width: f64, height: f64, fill: &str, stroke: &str) {
        let _ = writeln!(
            self.out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{height:.1}" fill="{fill}" stroke="{stroke}"/>"#
        );
    }

    fn circle(&mut self, x: f64, y: f64, r: f64, fill: &str) {
        let _ = writeln!(
            self.out,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill="{fill}"/>"#
        );
    }

    fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

fn dash(dashed: bool) -> &'static str {
    if dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{calibration, gain_curve, lift_by_decile};

    fn read(path: &Path) -> String {
        let svg = std::fs::read_to_string(path).expect("written");
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        // Every element this writer opens is self-closing or closed on its line.
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        svg
    }

    #[test]
    fn writes_every_chart_as_svg_with_titles_axes_and_legends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let actual: Vec<f64> = (0..100).map(|i| f64::from(i % 7) * 3.0).collect();
        let good: Vec<f64> = actual.iter().map(|a| a + 1.0).collect();
        let flat = vec![1.0; actual.len()];

        let gain = dir.path().join("gain.svg");
        let curves = [
            ("model", gain_curve(&actual, &good, 20)),
            ("RFM & co", gain_curve(&actual, &flat, 20)),
        ];
        gain_chart(&gain, &curves).expect("gain chart");
        let svg = read(&gain);
        for text in [
            "Cumulative gain",
            "share of customers",
            ">model<",
            "RFM &amp; co",
            ">random<",
            ">0.4<",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }

        let lift = dir.path().join("lift.svg");
        lift_chart(&lift, &[("model", lift_by_decile(&actual, &good))]).expect("lift chart");
        let svg = read(&lift);
        for text in [
            "Lift by decile",
            ">no lift<",
            "decile (1 = highest",
            "<circle",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }

        let churned: Vec<bool> = (0..100).map(|i| i % 3 == 0).collect();
        let probs: Vec<f64> = (0..100).map(|i| f64::from(i) / 100.0).collect();
        let bins = calibration(&probs, &churned, 10);
        let cal = dir.path().join("calibration.svg");
        calibration_chart(&cal, &[("model", &bins), ("BG/NBD", &bins[..3])])
            .expect("calibration chart");
        let svg = read(&cal);
        for text in [
            "Churn calibration",
            ">perfect<",
            ">BG/NBD<",
            "predicted probability",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }

        let confusion = dir.path().join("confusion.svg");
        let matrix = vec![vec![50, 3, 0], vec![7, 20, 4], vec![0, 2, 9]];
        confusion_matrix(&confusion, "Value tiers <m1>", &matrix).expect("confusion matrix");
        let svg = read(&confusion);
        for text in [
            "Value tiers &lt;m1&gt;",
            "predicted tier",
            "actual tier",
            ">tier 2<",
            ">50<",
            ">20<",
        ] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn empty_and_degenerate_inputs_still_draw() {
        let dir = tempfile::tempdir().expect("tempdir");
        gain_chart(&dir.path().join("g.svg"), &[]).expect("gain");
        lift_chart(&dir.path().join("l.svg"), &[("flat", vec![0.0; 10])]).expect("lift");
        calibration_chart(&dir.path().join("c.svg"), &[]).expect("calibration");
        confusion_matrix(&dir.path().join("m.svg"), "empty", &[]).expect("confusion");
        for name in ["g.svg", "l.svg", "c.svg", "m.svg"] {
            read(&dir.path().join(name));
        }
    }

    #[test]
    fn an_unwritable_path_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("gain.svg");
        let err = gain_chart(&path, &[]).expect_err("no such directory");
        assert!(err.to_string().contains("gain.svg"), "{err}");
    }

    #[test]
    fn ticks_are_round_numbers() {
        let labels = |min, max| {
            ticks(min, max)
                .into_iter()
                .map(|(_, l)| l)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(0.0, 1.0), ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        assert_eq!(labels(1.0, 10.0), ["2", "4", "6", "8", "10"]);
        assert_eq!(labels(0.0, 3.7), ["0", "1", "2", "3"]);
        assert_eq!(
            labels(-0.05, 1.05),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
    }
}
