//! Two drivers in one standalone SVG: p50 per RPC and the lifecycle's p99,
//! the driver's series solid with round markers, the reference's dashed with
//! square ones, one colour per RPC. Over a sweep, lines against K; at a
//! single K, grouped bars. The latency axis is logarithmic: RPCs differ by
//! orders of magnitude, and equal ratios then look equally far apart.

use std::fmt::Write as _;

use super::svg::COLORS;
use super::text::in_lifecycle_order;
use super::{Comparison, Point};
use crate::report::xml_escape;

const WIDTH: f64 = 900.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 46.0;
const BOTTOM: f64 = 50.0;
const LINE_HEIGHT: f64 = 480.0;
/// Height of one category in the bar chart (two bars and a gap).
const BAND: f64 = 34.0;
const LIFECYCLE_COLOR: &str = "#000000";
/// The two drivers' bars.
const BAR_COLORS: [&str; 2] = ["#1f77b4", "#ff7f0e"];
const DASH: &str = "7 4";

/// Renders `c`: a line chart over K when the sweep has several points, bars
/// otherwise.
pub fn chart(c: &Comparison) -> String {
    let (a, b) = (&c.driver.label, &c.versus.label);
    let run = format!(
        "workers={}, {} rounds interleaved",
        c.driver.workers, c.rounds
    );
    let pairs: Vec<(&Point, &Point)> = c.driver.points.iter().zip(&c.versus.points).collect();
    if pairs.len() > 1 {
        let title = format!("{a} vs {b}: p50 per RPC and lifecycle p99 against K ({run})");
        lines(&pairs, [a, b], &title)
    } else {
        let title = format!("{a} vs {b}: p50 per RPC, lifecycle p50 and p99 ({run})");
        bars(&pairs, [a, b], &title)
    }
}

/// A log10 scale from `lo` to `hi` (powers of ten around the data).
#[derive(Debug, Clone, Copy, PartialEq)]
struct LogScale {
    lo: f64,
    hi: f64,
}

impl LogScale {
    fn around(values: impl Iterator<Item = f64>) -> Self {
        let (mut min, mut max) = (f64::INFINITY, 0.0_f64);
        for v in values.filter(|v| v.is_finite() && *v > 0.0) {
            min = min.min(v);
            max = max.max(v);
        }
        if !min.is_finite() {
            return Self { lo: 0.1, hi: 1.0 };
        }
        let lo = 10f64.powf(min.log10().floor());
        let hi = 10f64.powf(max.log10().ceil()).max(lo * 10.0);
        Self { lo, hi }
    }

    /// 0 at `lo`, 1 at `hi`.
    fn fraction(&self, v: f64) -> f64 {
        let v = v.clamp(self.lo, self.hi);
        (v / self.lo).log10() / (self.hi / self.lo).log10()
    }

    /// The powers of ten from `lo` to `hi`.
    fn decades(&self) -> Vec<i32> {
        let (a, b) = (
            self.lo.log10().round() as i32,
            self.hi.log10().round() as i32,
        );
        (a..=b).collect()
    }
}

/// 10^e as a person writes it: 0.01, 0.1, 1, 10.
fn decade_label(e: i32) -> String {
    if e >= 0 {
        format!("1{}", "0".repeat(e.unsigned_abs() as usize))
    } else {
        format!("0.{}1", "0".repeat(e.unsigned_abs() as usize - 1))
    }
}

fn usable(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

fn header(svg: &mut String, height: f64, title: &str) {
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="24" font-size="15">{}</text>"#,
        xml_escape(title)
    );
}

/// A legend line: a short stroke (and marker) in the series' style.
fn legend_entry(
    svg: &mut String,
    y: f64,
    color: &str,
    dashed: bool,
    marker: Option<bool>,
    text: &str,
) {
    let lx = WIDTH - RIGHT + 16.0;
    let dash = if dashed {
        format!(r#" stroke-dasharray="{DASH}""#)
    } else {
        String::new()
    };
    let _ = writeln!(
        svg,
        r#"<line x1="{lx}" x2="{}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="2.5"{dash}/>"#,
        lx + 26.0
    );
    if let Some(square) = marker {
        point_marker(svg, lx + 13.0, y, color, square);
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}">{}</text>"#,
        lx + 32.0,
        y + 4.0,
        xml_escape(text)
    );
}

/// Round for the driver, square for the reference.
fn point_marker(svg: &mut String, x: f64, y: f64, color: &str, square: bool) {
    let _ = if square {
        writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="7" height="7" fill="{color}"/>"#,
            x - 3.5,
            y - 3.5
        )
    } else {
        writeln!(
            svg,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{color}"/>"#
        )
    };
}

/// One series of the line chart.
struct Series<'a> {
    color: &'a str,
    /// The reference's: dashed, square markers.
    versus: bool,
    width: f64,
    /// (K, ms); points without a usable value are left out.
    values: Vec<(usize, f64)>,
}

fn lines(pairs: &[(&Point, &Point)], labels: [&str; 2], title: &str) -> String {
    let rpcs = in_lifecycle_order(
        pairs
            .iter()
            .flat_map(|(a, b)| a.rpcs.keys().chain(b.rpcs.keys()))
            .map(String::as_str),
    );
    let per_driver: [Vec<&Point>; 2] = [
        pairs.iter().map(|pair| pair.0).collect(),
        pairs.iter().map(|pair| pair.1).collect(),
    ];
    let mut series = Vec::new();
    for (side, points) in per_driver.iter().enumerate() {
        for (i, rpc) in rpcs.iter().enumerate() {
            series.push(Series {
                color: COLORS[i % COLORS.len()],
                versus: side == 1,
                width: 2.0,
                values: points
                    .iter()
                    .map(|p| (p.preloaded, p.rpcs.get(*rpc).map_or(0.0, |s| s.p50_ms)))
                    .collect(),
            });
        }
        series.push(Series {
            color: LIFECYCLE_COLOR,
            versus: side == 1,
            width: 3.0,
            values: points
                .iter()
                .map(|p| (p.preloaded, p.lifecycle.p99_ms))
                .collect(),
        });
    }
    let y_scale = LogScale::around(series.iter().flat_map(|s| s.values.iter().map(|v| v.1)));
    let ks: Vec<usize> = pairs.iter().map(|(a, _)| a.preloaded).collect();
    let kx = |k: usize| ((k + 1) as f64).log10();
    let (xmin, xmax) = (
        ks.iter()
            .map(|k| kx(*k))
            .fold(f64::INFINITY, f64::min)
            .min(0.0),
        ks.iter().map(|k| kx(*k)).fold(0.0, f64::max).max(1.0),
    );
    let x_of = |k: usize| LEFT + (kx(k) - xmin) / (xmax - xmin).max(1e-9) * (WIDTH - LEFT - RIGHT);
    let y0 = LINE_HEIGHT - BOTTOM;
    let y_of = |ms: f64| y0 - y_scale.fraction(ms) * (y0 - TOP);

    let mut svg = String::new();
    header(&mut svg, LINE_HEIGHT, title);
    let _ = writeln!(
        svg,
        r#"<path d="M{LEFT} {TOP} V{y0} H{}" stroke="black" fill="none"/>"#,
        WIDTH - RIGHT
    );
    for e in y_scale.decades() {
        let y = y_of(10f64.powi(e));
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            decade_label(e)
        );
    }
    for &k in &ks {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{k}</text>"#,
            x_of(k),
            y0 + 18.0
        );
    }
    super::svg::axis_titles(
        &mut svg,
        (LEFT + WIDTH - RIGHT) / 2.0,
        LINE_HEIGHT - 12.0,
        (TOP + y0) / 2.0,
        "latency, ms (log scale)",
    );
    for s in &series {
        let coords: Vec<(f64, f64)> = s
            .values
            .iter()
            .filter(|(_, v)| usable(*v))
            .map(|&(k, v)| (x_of(k), y_of(v)))
            .collect();
        let dash = if s.versus {
            format!(r#" stroke-dasharray="{DASH}""#)
        } else {
            String::new()
        };
        let points: Vec<String> = coords
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}"{dash}/>"#,
            points.join(" "),
            s.color,
            s.width
        );
        for (x, y) in coords {
            point_marker(&mut svg, x, y, s.color, s.versus);
        }
    }
    let mut y = TOP;
    for (i, rpc) in rpcs.iter().enumerate() {
        legend_entry(
            &mut svg,
            y,
            COLORS[i % COLORS.len()],
            false,
            None,
            &format!("{rpc} p50"),
        );
        y += 18.0;
    }
    legend_entry(&mut svg, y, LIFECYCLE_COLOR, false, None, "lifecycle p99");
    y += 30.0;
    legend_entry(&mut svg, y, "#555", false, Some(false), labels[0]);
    legend_entry(&mut svg, y + 18.0, "#555", true, Some(true), labels[1]);
    svg.push_str("</svg>\n");
    svg
}

fn bars(pairs: &[(&Point, &Point)], labels: [&str; 2], title: &str) -> String {
    let Some((a, b)) = pairs.first() else {
        let mut svg = String::new();
        header(&mut svg, 120.0, title);
        let _ = writeln!(svg, r#"<text x="{LEFT}" y="70">no measurements</text>"#);
        svg.push_str("</svg>\n");
        return svg;
    };
    let rpcs = in_lifecycle_order(a.rpcs.keys().chain(b.rpcs.keys()).map(String::as_str));
    let p50 = |p: &Point, rpc: &str| p.rpcs.get(rpc).map_or(0.0, |s| s.p50_ms);
    let mut categories: Vec<(String, [f64; 2])> = rpcs
        .iter()
        .map(|rpc| (format!("{rpc} p50"), [p50(a, rpc), p50(b, rpc)]))
        .collect();
    categories.push((
        "lifecycle p50".into(),
        [a.lifecycle.p50_ms, b.lifecycle.p50_ms],
    ));
    categories.push((
        "lifecycle p99".into(),
        [a.lifecycle.p99_ms, b.lifecycle.p99_ms],
    ));

    let label_width = 170.0;
    let x_left = LEFT + label_width - 60.0;
    let x_right = WIDTH - RIGHT;
    let height = TOP + BAND * categories.len() as f64 + BOTTOM;
    let y0 = height - BOTTOM;
    let scale = LogScale::around(categories.iter().flat_map(|(_, v)| v.iter().copied()));
    let x_of = |ms: f64| x_left + scale.fraction(ms) * (x_right - x_left);

    let mut svg = String::new();
    header(&mut svg, height, &format!("{title}, K={}", a.preloaded));
    for e in scale.decades() {
        let x = x_of(10f64.powi(e));
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{y0}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y0 + 16.0,
            decade_label(e)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">latency, ms (log scale)</text>"#,
        (x_left + x_right) / 2.0,
        height - 12.0
    );
    let bar = (BAND - 8.0) / 2.0;
    for (i, (name, values)) in categories.iter().enumerate() {
        let top = TOP + BAND * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            x_left - 8.0,
            top + BAND / 2.0,
            xml_escape(name)
        );
        for (side, &v) in values.iter().enumerate() {
            if !usable(v) {
                continue;
            }
            let y = top + 2.0 + bar * side as f64;
            let w = (x_of(v) - x_left).max(1.0);
            let _ = writeln!(
                svg,
                r#"<rect class="bar" x="{x_left:.1}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10">{v:.3}</text>"#,
                bar - 1.0,
                BAR_COLORS[side],
                x_left + w + 4.0,
                y + bar - 3.0
            );
        }
    }
    let _ = writeln!(
        svg,
        r#"<path d="M{x_left} {TOP} V{y0} H{x_right}" stroke="black" fill="none"/>"#
    );
    for (side, label) in labels.iter().enumerate() {
        let lx = WIDTH - RIGHT + 16.0;
        let ly = TOP + 20.0 * side as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="{}" width="14" height="10" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            ly - 5.0,
            BAR_COLORS[side],
            lx + 20.0,
            ly + 4.0,
            xml_escape(label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Stats;
    use crate::bench::{ratio, BenchReport};

    const RPCS: [&str; 3] = ["CreateVolume", "NodePublishVolume", "DeleteVolume"];

    fn point(k: usize, scale: f64) -> Point {
        let mut p = Point {
            preloaded: k,
            lifecycle: Stats {
                count: 10,
                p50_ms: 2.0 * scale,
                p99_ms: 5.0 * scale,
                ..Default::default()
            },
            ..Default::default()
        };
        for (i, rpc) in RPCS.iter().enumerate() {
            let stats = Stats {
                count: 10,
                p50_ms: 0.1 * (i + 1) as f64 * scale,
                ..Default::default()
            };
            p.rpcs.insert(rpc.to_string(), stats);
        }
        p
    }

    fn comparison(ks: &[usize]) -> Comparison {
        let report = |label: &str, scale: f64| BenchReport {
            label: label.into(),
            endpoint: String::new(),
            workers: 2,
            points: ks.iter().map(|k| point(*k, scale)).collect(),
            baseline: None,
            durable_floor: None,
            round_trip: None,
            driver_rss_idle_kib: None,
            driver_rss_max_kib: None,
        };
        let (a, b) = (report("cairn <a>", 1.0), report("hostpath", 10.0));
        let ratios = a
            .points
            .iter()
            .zip(&b.points)
            .map(|(x, y)| ratio::compare(x, y))
            .collect();
        Comparison {
            rounds: 4,
            driver: a,
            versus: b,
            ratios,
        }
    }

    #[test]
    fn log_scale_spans_whole_decades() {
        let s = LogScale::around([0.15, 3.0, 42.0].into_iter());
        assert_eq!((s.lo, s.hi), (0.1, 100.0));
        assert_eq!(s.decades(), vec![-1, 0, 1, 2]);
        assert!((s.fraction(1.0) - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.fraction(0.0), 0.0);
        let empty = LogScale::around([0.0, f64::NAN].into_iter());
        assert_eq!((empty.lo, empty.hi), (0.1, 1.0));
        assert_eq!(decade_label(-3), "0.001");
        assert_eq!(decade_label(-1), "0.1");
        assert_eq!(decade_label(0), "1");
        assert_eq!(decade_label(2), "100");
    }

    #[test]
    fn sweep_draws_both_drivers_per_rpc_and_lifecycle() {
        let svg = chart(&comparison(&[0, 100, 1000]));
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Per driver: one line per RPC and one for the lifecycle's p99.
        let per_driver = RPCS.len() + 1;
        assert_eq!(svg.matches("<polyline").count(), 2 * per_driver);
        let dashed_lines = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains("stroke-dasharray"))
            .count();
        assert_eq!(dashed_lines, per_driver, "the reference's lines are dashed");
        // Markers: round for the driver, square for the reference, per K.
        assert_eq!(svg.matches("<circle").count(), 3 * per_driver + 1);
        assert!(svg.contains(">1000</text>"));
        // Legend: every RPC, the lifecycle, and both drivers (escaped).
        for rpc in RPCS {
            assert!(svg.contains(&format!(">{rpc} p50</text>")), "{rpc}");
        }
        assert!(svg.contains(">lifecycle p99</text>"));
        assert!(svg.contains(">cairn &lt;a&gt;</text>"));
        assert!(svg.contains(">hostpath</text>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn single_k_draws_paired_bars() {
        let svg = chart(&comparison(&[0]));
        let categories = RPCS.len() + 2;
        assert_eq!(svg.matches(r#"class="bar""#).count(), 2 * categories);
        assert_eq!(svg.matches(BAR_COLORS[0]).count(), categories + 1);
        assert_eq!(svg.matches(BAR_COLORS[1]).count(), categories + 1);
        assert!(svg.contains(">lifecycle p99</text>"));
        assert!(svg.contains(">cairn &lt;a&gt;</text>"));
        assert!(svg.contains("K=0"));
        // 5 ms against 50 ms, labelled on the bars.
        assert!(svg.contains(">5.000</text>") && svg.contains(">50.000</text>"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn missing_values_are_left_out_not_drawn_at_zero() {
        let mut c = comparison(&[0]);
        c.versus.points[0].rpcs.clear();
        let svg = chart(&c);
        assert_eq!(svg.matches(r#"class="bar""#).count(), (RPCS.len() + 2) + 2);
        let empty = Comparison {
            driver: BenchReport {
                points: vec![],
                ..c.driver.clone()
            },
            ..c
        };
        assert!(chart(&empty).contains("no measurements"));
    }
}
