//! A line chart of p99 latency per RPC against the number of volumes the
//! node already holds (K), as a standalone SVG file.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::Point;
use crate::report::xml_escape;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// One colour per RPC, shared by the single-driver and two-driver charts.
pub(super) const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// X positions on a log scale of K+1 (so K = 0 has a place).
fn x_of(k: usize, min: f64, max: f64) -> f64 {
    let v = ((k + 1) as f64).log10();
    let span = (max - min).max(1e-9);
    LEFT + (v - min) / span * (WIDTH - LEFT - RIGHT)
}

fn y_of(ms: f64, max: f64) -> f64 {
    HEIGHT - BOTTOM - ms / max.max(1e-9) * (HEIGHT - TOP - BOTTOM)
}

/// The two axis titles of a chart against K: K's centred at `x_mid` on the
/// line at `x_title_y`, `y_title` turned along the latency axis at `y_mid`.
pub(super) fn axis_titles(svg: &mut String, x_mid: f64, x_title_y: f64, y_mid: f64, y_title: &str) {
    let _ = writeln!(
        svg,
        r#"<text x="{x_mid}" y="{x_title_y}" text-anchor="middle">K: volumes already published on the node (log scale)</text>"#,
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {y_mid}) rotate(-90)" text-anchor="middle">{}</text>"#,
        xml_escape(y_title)
    );
}

/// Renders the sweep; one polyline per RPC plus the whole lifecycle's p50.
pub fn chart(points: &[Point], title: &str) -> String {
    let rpcs: BTreeSet<&str> = points
        .iter()
        .flat_map(|p| p.rpcs.keys().map(String::as_str))
        .collect();
    let xs: Vec<f64> = points
        .iter()
        .map(|p| ((p.preloaded + 1) as f64).log10())
        .collect();
    let (xmin, xmax) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).min(0.0),
        xs.iter().copied().fold(0.0, f64::max).max(1.0),
    );
    let ymax = points
        .iter()
        .flat_map(|p| p.rpcs.values().map(|s| s.p99_ms))
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.1;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="15">{}</text>"#,
        xml_escape(title)
    );
    // Axes, y ticks and x ticks.
    let (x0, y0) = (LEFT, HEIGHT - BOTTOM);
    let _ = writeln!(
        svg,
        r#"<path d="M{LEFT} {TOP} V{y0} H{}" stroke="black" fill="none"/>"#,
        WIDTH - RIGHT
    );
    for i in 0..=4 {
        let ms = ymax * f64::from(i) / 4.0;
        let y = y_of(ms, ymax);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{ms:.2}</text>"##,
            WIDTH - RIGHT,
            x0 - 6.0,
            y + 4.0
        );
    }
    for p in points {
        let x = x_of(p.preloaded, xmin, xmax);
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            y0 + 18.0,
            p.preloaded
        );
    }
    axis_titles(
        &mut svg,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 12.0,
        (TOP + y0) / 2.0,
        "p99 latency (ms)",
    );
    for (i, rpc) in rpcs.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let coords: Vec<String> = points
            .iter()
            .filter_map(|p| {
                p.rpcs.get(*rpc).map(|s| {
                    format!(
                        "{:.1},{:.1}",
                        x_of(p.preloaded, xmin, xmax),
                        y_of(s.p99_ms, ymax)
                    )
                })
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            coords.join(" ")
        );
        for c in &coords {
            let (cx, cy) = c.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
        }
        let ly = TOP + 18.0 * i as f64;
        let lx = WIDTH - RIGHT + 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            xml_escape(rpc)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Stats;

    #[test]
    fn draws_one_line_per_rpc_and_a_tick_per_k() {
        let point = |k: usize, p99: f64| {
            let mut p = Point {
                preloaded: k,
                ..Default::default()
            };
            for rpc in ["CreateVolume", "NodePublishVolume"] {
                p.rpcs.insert(
                    rpc.to_string(),
                    Stats {
                        p99_ms: p99,
                        ..Default::default()
                    },
                );
            }
            p
        };
        let svg = chart(
            &[point(10, 1.0), point(100, 2.0), point(1000, 3.0)],
            "a <title>",
        );
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains(">1000</text>"));
        assert!(svg.contains("a &lt;title&gt;"));
        assert!(!svg.contains("NaN"));
    }
}
