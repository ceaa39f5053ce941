//! `--plot FILE.svg`: the loss and accuracy curves per epoch, drawn as a hand-written SVG (two
//! panels side by side, labelled axes, a legend in each, a title) that any browser shows.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use nn::EpochMetrics;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
const PANEL_W: f64 = 380.0;
const PANEL_H: f64 = 280.0;
const TOP: f64 = 70.0;
const LEFTS: [f64; 2] = [80.0, 560.0];

const TRAIN_COLOR: &str = "#1f77b4";
const TEST_COLOR: &str = "#ff7f0e";
const VAL_COLOR: &str = "#2ca02c";

/// One curve: a name, a colour and a value per epoch (non-finite values are left out).
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// Draws the curves of `records` and writes them to `path` atomically.
pub fn write_plot(path: &Path, records: &[EpochMetrics], title: &str) -> io::Result<()> {
    nn::write_atomic(path, render_svg(records, title).as_bytes())
}

/// The SVG document for `records`.
pub fn render_svg(records: &[EpochMetrics], title: &str) -> String {
    let (losses, accuracies) = curves(records);
    let last_epoch = records.iter().map(|r| r.epoch).max().unwrap_or(1).max(1) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="30" text-anchor="middle" font-size="18">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    let loss_max = max_of(&losses).unwrap_or(1.0).max(1e-6);
    let loss = Frame {
        left: LEFTS[0],
        y_range: (0.0, loss_max * 1.05),
        last_epoch,
    };
    panel(
        &mut svg,
        &loss,
        ("Loss (cross-entropy)", "loss"),
        &losses,
        false,
    );
    let acc_min = min_of(&accuracies).unwrap_or(0.0);
    // Show the interesting top of the accuracy range, with a little room below the lowest point.
    let acc_low = ((acc_min - 1.0) / 5.0).floor().clamp(0.0, 19.0) * 5.0;
    let accuracy = Frame {
        left: LEFTS[1],
        y_range: (acc_low, 100.0),
        last_epoch,
    };
    panel(
        &mut svg,
        &accuracy,
        ("Accuracy", "accuracy (%)"),
        &accuracies,
        true,
    );
    svg.push_str("</svg>\n");
    svg
}

/// The loss curves and the accuracy curves (in percent) of `records`; a curve without points
/// (no validation set) is left out.
fn curves(records: &[EpochMetrics]) -> (Vec<Series<'static>>, Vec<Series<'static>>) {
    let series = |name, color, dashed, f: &dyn Fn(&EpochMetrics) -> Option<f64>| Series {
        name,
        color,
        dashed,
        points: records
            .iter()
            .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.epoch as f64, v)))
            .collect(),
    };
    let mut losses = vec![
        series("train", TRAIN_COLOR, false, &|r| Some(r.train_loss)),
        series("test", TEST_COLOR, false, &|r| Some(r.test_loss)),
        series("validation", VAL_COLOR, true, &|r| r.val_loss),
    ];
    let mut accuracies = vec![
        series("train", TRAIN_COLOR, false, &|r| {
            Some(100.0 * r.train_accuracy)
        }),
        series("test", TEST_COLOR, false, &|r| {
            Some(100.0 * r.test_accuracy)
        }),
        series("validation", VAL_COLOR, true, &|r| {
            r.val_accuracy.map(|a| 100.0 * a)
        }),
    ];
    losses.retain(|s| !s.points.is_empty());
    accuracies.retain(|s| !s.points.is_empty());
    (losses, accuracies)
}

fn max_of(series: &[Series]) -> Option<f64> {
    series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .reduce(f64::max)
}

fn min_of(series: &[Series]) -> Option<f64> {
    series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .reduce(f64::min)
}

/// Where a panel sits and what its axes span: its left edge, the values at its bottom and top,
/// and the last epoch (epoch 1 sits on the left edge).
struct Frame {
    left: f64,
    y_range: (f64, f64),
    last_epoch: f64,
}

impl Frame {
    fn bottom(&self) -> f64 {
        TOP + PANEL_H
    }

    /// The x coordinate of `epoch` (a one-epoch run gets a unit-wide axis).
    fn px(&self, epoch: f64) -> f64 {
        let x_span = (self.last_epoch - 1.0).max(1.0);
        self.left + (epoch - 1.0) / x_span * PANEL_W
    }

    /// The y coordinate of `v`.
    fn py(&self, v: f64) -> f64 {
        let (y0, y1) = self.y_range;
        self.bottom() - (v - y0) / (y1 - y0) * PANEL_H
    }

    /// The y coordinate of a curve's point `v`, clamped into the panel.
    fn point_y(&self, v: f64) -> f64 {
        let (y0, y1) = self.y_range;
        self.py(v.clamp(y0, y1))
    }
}

/// One panel: frame, ticks with grid lines, axis labels (`title`, `y_label`), the curves with
/// a marker per epoch, and the legend in the top right corner, or the bottom right one where
/// falling curves leave room (`legend_low`, for rising accuracy curves).
fn panel(
    svg: &mut String,
    frame: &Frame,
    (title, y_label): (&str, &str),
    series: &[Series],
    legend_low: bool,
) {
    axes(svg, frame, title, y_label);
    for (i, s) in series.iter().enumerate() {
        curve(svg, frame, s);
        let first_row = if legend_low {
            frame.bottom() - 18.0 * series.len() as f64
        } else {
            TOP + 18.0
        };
        legend_row(svg, frame, s, first_row + 18.0 * i as f64);
    }
}

/// The panel's title, its ticks with grid lines, its frame and its axis labels.
fn axes(svg: &mut String, frame: &Frame, title: &str, y_label: &str) {
    let (left, bottom, (y0, y1)) = (frame.left, frame.bottom(), frame.y_range);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{}</text>"#,
        left + PANEL_W / 2.0,
        TOP - 12.0,
        escape(title)
    );
    for v in ticks(y0, y1, 5) {
        let y = frame.py(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="#ddd"/><text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"##,
            left + PANEL_W,
            left - 6.0,
            y + 4.0,
            tick_label(v, y1 - y0)
        );
    }
    for e in ticks(1.0, frame.last_epoch, 10)
        .into_iter()
        .filter(|e| e.fract() == 0.0)
    {
        let x = frame.px(e);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.2}" y1="{bottom}" x2="{x:.2}" y2="{:.2}" stroke="#333"/><text x="{x:.2}" y="{:.2}" text-anchor="middle">{e}</text>"##,
            bottom + 5.0,
            bottom + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">epoch</text>"#,
        left + PANEL_W / 2.0,
        bottom + 38.0
    );
    let (lx, ly) = (left - 52.0, TOP + PANEL_H / 2.0);
    let _ = writeln!(
        svg,
        r#"<text x="{lx}" y="{ly}" text-anchor="middle" transform="rotate(-90 {lx} {ly})">{}</text>"#,
        escape(y_label)
    );
}

/// The dash pattern attribute of a dashed curve (empty for a solid one).
fn dash(s: &Series) -> &'static str {
    if s.dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    }
}

/// One curve: a polyline through its points and a marker at each.
fn curve(svg: &mut String, frame: &Frame, s: &Series) {
    let mut pts = String::new();
    for &(e, v) in &s.points {
        let _ = write!(pts, "{:.2},{:.2} ", frame.px(e), frame.point_y(v));
    }
    let _ = writeln!(
        svg,
        r#"<polyline fill="none" stroke="{}" stroke-width="2"{} points="{}"><title>{}</title></polyline>"#,
        s.color,
        dash(s),
        pts.trim_end(),
        escape(s.name)
    );
    for &(e, v) in &s.points {
        let _ = writeln!(
            svg,
            r#"<circle cx="{:.2}" cy="{:.2}" r="3" fill="{}"/>"#,
            frame.px(e),
            frame.point_y(v),
            s.color
        );
    }
}

/// The legend's row for `s`, at height `y`.
fn legend_row(svg: &mut String, frame: &Frame, s: &Series, y: f64) {
    let x = frame.left + PANEL_W - 110.0;
    let _ = writeln!(
        svg,
        r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{}/><text x="{}" y="{}">{}</text>"#,
        x + 24.0,
        s.color,
        dash(s),
        x + 30.0,
        y + 4.0,
        escape(s.name)
    );
}

/// About `n` round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi].
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = hi - lo;
    if span.is_nan() || span <= 0.0 || span.is_infinite() {
        return vec![lo];
    }
    let raw = span / n as f64;
    let pow = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * pow)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * pow);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn tick_label(v: f64, span: f64) -> String {
    let decimals = if span >= 5.0 {
        0
    } else if span >= 0.5 {
        1
    } else if span >= 0.05 {
        2
    } else {
        3
    };
    format!("{v:.decimals$}")
}

/// Escapes text for XML content and attribute values.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize, with_val: bool) -> Vec<EpochMetrics> {
        (1..=n)
            .map(|e| {
                let t = e as f64;
                EpochMetrics {
                    lr: 0.05,
                    epoch: e,
                    train_loss: 0.3 / t,
                    train_accuracy: 0.9 + 0.009 * t,
                    test_loss: 0.2 / t,
                    test_accuracy: 0.95 + 0.004 * t,
                    seconds: 2.0,
                    val_loss: with_val.then_some(0.25 / t),
                    val_accuracy: with_val.then_some(0.94 + 0.005 * t),
                }
            })
            .collect()
    }

    /// Every number in every `points` attribute, checked to be finite and inside the canvas.
    fn polyline_points(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.split("<polyline")
            .skip(1)
            .map(|rest| {
                let start = rest.find("points=\"").unwrap() + 8;
                let end = start + rest[start..].find('"').unwrap();
                rest[start..end]
                    .split_whitespace()
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                        assert!(x.is_finite() && y.is_finite());
                        assert!(
                            (0.0..=WIDTH).contains(&x) && (0.0..=HEIGHT).contains(&y),
                            "{x},{y}"
                        );
                        (x, y)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn structure_of_the_document() {
        let svg = render_svg(&records(10, false), "LeNet-5 on MNIST <test & run>");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Four series (train/test loss, train/test accuracy), ten points each.
        let lines = polyline_points(&svg);
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.len() == 10));
        assert!(
            svg.contains("LeNet-5 on MNIST &lt;test &amp; run&gt;"),
            "title escaped"
        );
        for label in ["epoch", "loss", "accuracy (%)", ">train<", ">test<"] {
            assert!(svg.contains(label), "missing {label}");
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Tags balance: every opened element is closed or self-closing.
        let end_tags = svg.matches("</").count();
        let start_tags = svg.matches('<').count() - end_tags;
        assert_eq!(start_tags, end_tags + svg.matches("/>").count());
    }

    #[test]
    fn loss_falls_and_accuracy_rises_on_screen() {
        let svg = render_svg(&records(5, false), "t");
        let lines = polyline_points(&svg);
        // SVG y grows downwards: a falling loss has growing y, a rising accuracy a shrinking y.
        assert!(lines[0]
            .windows(2)
            .all(|w| w[1].1 > w[0].1 && w[1].0 > w[0].0));
        assert!(lines[2].windows(2).all(|w| w[1].1 < w[0].1));
    }

    #[test]
    fn validation_curves_and_single_epoch_and_nan() {
        let svg = render_svg(&records(3, true), "t");
        assert_eq!(polyline_points(&svg).len(), 6);
        assert!(svg.contains(">validation<"));

        let mut one = records(1, false);
        one[0].train_loss = f64::NAN;
        let svg = render_svg(&one, "t");
        // The NaN loss is left out; the three other series have their single point.
        let lines = polyline_points(&svg);
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() == 1));
    }

    #[test]
    fn round_ticks() {
        let t = ticks(0.0, 1.0, 5);
        assert_eq!(t.len(), 6);
        assert!(t
            .iter()
            .zip([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
            .all(|(a, b)| (a - b).abs() < 1e-12));
        assert_eq!(
            ticks(1.0, 10.0, 10),
            (1..=10).map(|e| e as f64).collect::<Vec<_>>()
        );
        assert_eq!(ticks(3.0, 3.0, 5), vec![3.0]);
    }

    #[test]
    fn written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curves.svg");
        write_plot(&path, &records(2, false), "t").unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("<svg"));
    }
}
