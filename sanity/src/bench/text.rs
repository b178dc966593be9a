//! Tables for a person (the report's stderr side): one driver's points, or
//! two drivers' side by side with ratios, each beside the floors.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::stats::Stats;
use super::{Baseline, BenchReport, Comparison, Point};

/// The RPCs of a lifecycle in the order a cluster sends them; tables list
/// RPCs in this order, then any others by name.
pub const LIFECYCLE_RPCS: [&str; 7] = [
    "CreateVolume",
    "NodeStageVolume",
    "NodePublishVolume",
    "NodeGetVolumeStats",
    "NodeUnpublishVolume",
    "NodeUnstageVolume",
    "DeleteVolume",
];

const KERNEL_FLOOR: &str = "bare kernel (mkdir, 2x bind mount, stat, 2x umount, rmdir)";
const DURABLE_FLOOR: &str = "durable floor (bare kernel + per volume: mkdir, record write, fsync, \
     dir fsync at create; unlink, rmdir, dir fsync at delete)";

/// `names` in lifecycle order, unknown ones after, each once.
pub fn in_lifecycle_order<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let names: BTreeSet<&str> = names.into_iter().collect();
    let known = LIFECYCLE_RPCS.iter().copied().filter(|r| names.contains(r));
    let others = names
        .iter()
        .copied()
        .filter(|n| !LIFECYCLE_RPCS.contains(n));
    known.chain(others).collect()
}

/// Columns padded to their widest cell: the first left-aligned, the rest
/// right-aligned (numbers), each line indented by `indent`.
pub fn columns(rows: &[Vec<String>], indent: &str) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                let _ = write!(line, "{cell:<w$}", w = widths[0]);
            } else {
                let _ = write!(line, "  {cell:>w$}", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `3.21x`, or `-` when there is no ratio.
pub fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))
}

fn ms(v: f64) -> String {
    format!("{v:.3}")
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn floors_text(out: &mut String, report: &BenchReport) {
    for (name, floor) in [
        (KERNEL_FLOOR, &report.baseline),
        (DURABLE_FLOOR, &report.durable_floor),
    ] {
        let Some(b) = floor else { continue };
        let _ = match &b.error {
            Some(e) => writeln!(out, "{name} failed: {e}"),
            None => writeln!(
                out,
                "{name} x{}: p50 {:.3} ms, p99 {:.3} ms",
                b.iterations, b.lifecycle.p50_ms, b.lifecycle.p99_ms
            ),
        };
    }
}

/// The floor an RPC is set beside: its step in the durable floor (which
/// has every RPC), or in the kernel floor (mount RPCs only), plus one round
/// trip: no RPC can take less than a call with no work behind it, and a
/// node step alone (a few µs) is far below that.
pub struct RpcFloor<'a> {
    floors: &'a BenchReport,
    round_trip_ms: Option<f64>,
}

impl<'a> RpcFloor<'a> {
    /// With `reports`' fastest Probe p50 as the round trip: one floor for
    /// every driver, the cheapest call any of them answered.
    pub fn new(floors: &'a BenchReport, reports: &[&BenchReport]) -> Self {
        let round_trip_ms = reports
            .iter()
            .filter_map(|r| r.round_trip.as_ref())
            .filter(|s| s.count > s.errors)
            .map(|s| s.p50_ms)
            .reduce(f64::min);
        Self {
            floors,
            round_trip_ms,
        }
    }

    /// The floor step alone.
    pub fn step_ms(&self, rpc: &str) -> Option<f64> {
        let step = |floor: &Option<Baseline>| {
            floor
                .as_ref()
                .filter(|b| b.error.is_none())
                .and_then(|b| b.steps.get(rpc))
                .filter(|s| s.count > s.errors)
                .map(|s| s.p50_ms)
        };
        step(&self.floors.durable_floor).or_else(|| step(&self.floors.baseline))
    }

    /// Step plus round trip, if the step was measured.
    pub fn ms(&self, rpc: &str) -> Option<f64> {
        self.step_ms(rpc)
            .map(|step| step + self.round_trip_ms.unwrap_or(0.0))
    }

    fn describe(&self, out: &mut String) {
        let durable = self.floors.durable_floor.as_ref();
        let which = if durable.is_some_and(|b| b.error.is_none()) {
            "durable"
        } else {
            "bare kernel"
        };
        let _ = match self.round_trip_ms {
            Some(rt) => writeln!(
                out,
                "per-RPC floor: the RPC's step of the {which} floor + one round trip (fastest Probe p50, {rt:.3} ms)"
            ),
            None => writeln!(out, "per-RPC floor: the RPC's step of the {which} floor"),
        };
    }
}

fn times(value: f64, floor: Option<f64>) -> String {
    ratio_cell(floor.and_then(|f| super::ratio::times_floor(value, f)))
}

/// One driver: the floors, then a block per K.
pub fn to_text(report: &BenchReport) -> String {
    let mut out = String::new();
    floors_text(&mut out, report);
    if let Some(s) = &report.round_trip {
        let _ = writeln!(
            out,
            "round trip (Probe) x{}: p50 {:.3} ms, p99 {:.3} ms",
            s.count, s.p50_ms, s.p99_ms
        );
    }
    let rpc_floor = RpcFloor::new(report, &[report]);
    if report.baseline.is_some() || report.durable_floor.is_some() {
        rpc_floor.describe(&mut out);
    }
    for p in &report.points {
        let _ = writeln!(
            out,
            "\nK={} workers={}: {} lifecycles ({} failed) in {:.2}s = {:.1}/s; lifecycle p50 {:.3} ms p99 {:.3} ms{}{}",
            p.preloaded,
            p.workers,
            p.lifecycles,
            p.failed_lifecycles,
            p.seconds,
            p.lifecycles_per_second,
            p.lifecycle.p50_ms,
            p.lifecycle.p99_ms,
            p.ratio_to_kernel_p50
                .map(|r| format!(", {r:.2}x the bare kernel"))
                .unwrap_or_default(),
            p.ratio_to_durable_p50
                .map(|r| format!(", {r:.2}x the durable floor"))
                .unwrap_or_default()
        );
        let mut rows = vec![[
            "rpc", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms", "floor", "x floor",
        ]
        .map(String::from)
        .to_vec()];
        for rpc in in_lifecycle_order(p.rpcs.keys().map(String::as_str)) {
            let s = &p.rpcs[rpc];
            let floor = rpc_floor.ms(rpc);
            rows.push(vec![
                rpc.to_string(),
                s.count.to_string(),
                s.errors.to_string(),
                ms(s.p50_ms),
                ms(s.p90_ms),
                ms(s.p99_ms),
                ms(s.max_ms),
                floor.map_or_else(|| "-".into(), ms),
                times(s.p50_ms, floor),
            ]);
        }
        out.push_str(&columns(&rows, "  "));
        if let Some(d) = &p.driver {
            let _ = writeln!(
                out,
                "  driver: RSS max {} KiB, end {} KiB, CPU {:.3} s",
                d.rss_max_kib, d.rss_end_kib, d.cpu_seconds
            );
        }
    }
    if let Some(idle) = report.driver_rss_idle_kib {
        let _ = writeln!(out, "\ndriver RSS idle before the run: {idle} KiB");
    }
    if let Some(max) = report.driver_rss_max_kib {
        let _ = writeln!(out, "driver RSS max over the whole run: {max} KiB");
    }
    out
}

/// Two drivers: the floors, then per K the figures of both with ratios and
/// a row per RPC, then memory over the whole run.
pub fn comparison_text(c: &Comparison) -> String {
    let (a, b) = (&c.driver, &c.versus);
    let (la, lb) = (a.label.as_str(), b.label.as_str());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{la} ({}) vs {lb} ({}); ratio: how many times better {la} is \
         (lifecycles/s {la}/{lb}; latency, RSS, CPU {lb}/{la}), above 1 = {la} better",
        a.endpoint, b.endpoint
    );
    floors_text(&mut out, a);
    let rpc_floor = RpcFloor::new(a, &[a, b]);
    if a.baseline.is_some() || a.durable_floor.is_some() {
        rpc_floor.describe(&mut out);
    }
    for (i, (pa, pb)) in a.points.iter().zip(&b.points).enumerate() {
        let ratios = c.ratios.get(i).cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "\nK={} workers={}: {} rounds per driver, interleaved ({la} first in odd rounds, \
             {lb} in even), {} lifecycles per driver",
            pa.preloaded, pa.workers, pa.rounds, pa.lifecycles
        );
        let figures = figure_rows((la, lb), (pa, pb), &ratios);
        out.push_str(&columns(&figures, "  "));
        out.push('\n');
        let rpcs = rpc_rows(&rpc_floor, (la, lb), (pa, pb), &ratios);
        out.push_str(&columns(&rpcs, "  "));
    }
    out.push_str(&whole_run_text(a, b));
    out
}

/// Figures of the whole run rather than of a point: each driver's round
/// trip (measured once, before the sweep) and its memory.
fn whole_run_text(a: &BenchReport, b: &BenchReport) -> String {
    let round_trip = |r: &BenchReport| r.round_trip.as_ref().map(|s| s.p50_ms);
    let kib = |v: Option<u64>| v.map(|v| v as f64);
    let figures = [
        ("Probe p50 ms (round trip)", round_trip(a), round_trip(b), 3),
        (
            "RSS idle before the run, KiB",
            kib(a.driver_rss_idle_kib),
            kib(b.driver_rss_idle_kib),
            0,
        ),
        (
            "RSS max over the run, KiB",
            kib(a.driver_rss_max_kib),
            kib(b.driver_rss_max_kib),
            0,
        ),
    ];
    let mut rows = vec![vec![
        "whole run".to_string(),
        a.label.clone(),
        b.label.clone(),
        "ratio".into(),
    ]];
    for (name, x, y, decimals) in figures {
        if x.is_none() && y.is_none() {
            continue;
        }
        let cell = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"));
        let ratio = x
            .zip(y)
            .and_then(|(x, y)| super::ratio::less_is_better(x, y));
        rows.push(vec![name.into(), cell(x), cell(y), ratio_cell(ratio)]);
    }
    if rows.len() == 1 {
        return String::new();
    }
    format!("\n{}", columns(&rows, ""))
}

fn figure_rows(
    (la, lb): (&str, &str),
    (pa, pb): (&Point, &Point),
    r: &super::ratio::PointRatios,
) -> Vec<Vec<String>> {
    let usage = |p: &Point| p.driver.as_ref().map(|d| d.rss_max_kib);
    let mut rows = vec![
        vec!["figure".into(), la.into(), lb.into(), "ratio".into()],
        vec![
            "lifecycles/s".into(),
            format!("{:.1}", pa.lifecycles_per_second),
            format!("{:.1}", pb.lifecycles_per_second),
            ratio_cell(r.lifecycles_per_second),
        ],
        vec![
            "lifecycle p50 ms".into(),
            ms(pa.lifecycle.p50_ms),
            ms(pb.lifecycle.p50_ms),
            ratio_cell(r.lifecycle_p50),
        ],
        vec![
            "lifecycle p99 ms".into(),
            ms(pa.lifecycle.p99_ms),
            ms(pb.lifecycle.p99_ms),
            ratio_cell(r.lifecycle_p99),
        ],
        vec![
            "failed lifecycles".into(),
            pa.failed_lifecycles.to_string(),
            pb.failed_lifecycles.to_string(),
            String::new(),
        ],
    ];
    let floors = [
        (
            "lifecycle p50 / kernel floor",
            pa.ratio_to_kernel_p50,
            pb.ratio_to_kernel_p50,
        ),
        (
            "lifecycle p50 / durable floor",
            pa.ratio_to_durable_p50,
            pb.ratio_to_durable_p50,
        ),
    ];
    for (name, x, y) in floors {
        if x.is_some() || y.is_some() {
            rows.push(vec![
                name.into(),
                ratio_cell(x),
                ratio_cell(y),
                String::new(),
            ]);
        }
    }
    if pa.driver.is_some() || pb.driver.is_some() {
        rows.push(vec![
            "RSS max KiB".into(),
            opt(usage(pa)),
            opt(usage(pb)),
            ratio_cell(r.rss_max),
        ]);
        let cpu = |p: &Point| p.cpu_ms_per_lifecycle().map_or_else(|| "-".into(), ms);
        rows.push(vec![
            "CPU ms per lifecycle".into(),
            cpu(pa),
            cpu(pb),
            ratio_cell(r.cpu_per_lifecycle),
        ]);
    }
    rows
}

fn rpc_rows(
    floor: &RpcFloor,
    (la, lb): (&str, &str),
    (pa, pb): (&Point, &Point),
    r: &super::ratio::PointRatios,
) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "rpc".to_string(),
        format!("{la} p50"),
        format!("{lb} p50"),
        "ratio".into(),
        format!("{la} p99"),
        format!("{lb} p99"),
        "ratio".into(),
        "floor".into(),
        format!("{la}/floor"),
        format!("{lb}/floor"),
    ]];
    let names = pa.rpcs.keys().chain(pb.rpcs.keys()).map(String::as_str);
    let names = in_lifecycle_order(names);
    let empty = Stats::default();
    for &rpc in &names {
        let (sa, sb) = (
            pa.rpcs.get(rpc).unwrap_or(&empty),
            pb.rpcs.get(rpc).unwrap_or(&empty),
        );
        let rpc_floor = floor.ms(rpc);
        let cell = |s: &Stats, v: f64| {
            if s.count > s.errors {
                ms(v)
            } else {
                "-".into()
            }
        };
        rows.push(vec![
            rpc.to_string(),
            cell(sa, sa.p50_ms),
            cell(sb, sb.p50_ms),
            ratio_cell(r.rpc_p50.get(rpc).copied().flatten()),
            cell(sa, sa.p99_ms),
            cell(sb, sb.p99_ms),
            ratio_cell(r.rpc_p99.get(rpc).copied().flatten()),
            rpc_floor.map_or_else(|| "-".into(), ms),
            times(sa.p50_ms, rpc_floor),
            times(sb.p50_ms, rpc_floor),
        ]);
    }
    // Without floors (--baseline 0) their three columns would be all dashes.
    if !names.iter().any(|rpc| floor.ms(rpc).is_some()) {
        for row in &mut rows {
            row.truncate(7);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::procfs::ProcUsage;
    use crate::bench::ratio;

    fn stats(p50: f64) -> Stats {
        Stats {
            count: 100,
            p50_ms: p50,
            p99_ms: p50 * 2.0,
            ..Default::default()
        }
    }

    fn floor(p50: f64, steps: &[(&str, f64)]) -> Baseline {
        Baseline {
            iterations: 50,
            lifecycle: stats(p50),
            steps: steps
                .iter()
                .map(|(s, v)| (s.to_string(), stats(*v)))
                .collect(),
            error: None,
        }
    }

    fn report(label: &str, scale: f64, rss: Option<u64>) -> BenchReport {
        let rpcs = [
            ("DeleteVolume", 0.5),
            ("CreateVolume", 1.0),
            ("NodePublishVolume", 0.3),
        ];
        let point = Point {
            preloaded: 100,
            workers: 1,
            rounds: 4,
            lifecycles: 300,
            lifecycles_per_second: 100.0 / scale,
            lifecycle: stats(2.0 * scale),
            rpcs: rpcs
                .iter()
                .map(|(r, v)| (r.to_string(), stats(v * scale)))
                .collect(),
            driver: rss.map(|kib| ProcUsage {
                rss_max_kib: kib,
                rss_end_kib: kib,
                cpu_seconds: 0.3 * scale,
            }),
            ratio_to_kernel_p50: Some(8.0 * scale),
            ratio_to_durable_p50: Some(2.0 * scale),
            ..Default::default()
        };
        BenchReport {
            label: label.into(),
            endpoint: format!("unix:///run/{label}.sock"),
            workers: 1,
            points: vec![point],
            baseline: Some(floor(0.25, &[("NodePublishVolume", 0.1)])),
            durable_floor: Some(floor(
                1.0,
                &[
                    ("CreateVolume", 0.4),
                    ("NodePublishVolume", 0.1),
                    ("DeleteVolume", 0.25),
                ],
            )),
            round_trip: Some(stats(0.1 * scale)),
            driver_rss_idle_kib: rss.map(|k| k / 2),
            driver_rss_max_kib: rss,
        }
    }

    fn comparison(rss: Option<u64>) -> Comparison {
        let (a, b) = (
            report("cairn", 1.0, rss),
            report("hostpath", 4.0, rss.map(|k| k * 3)),
        );
        let ratios = vec![ratio::compare(&a.points[0], &b.points[0])];
        Comparison {
            rounds: 4,
            driver: a,
            versus: b,
            ratios,
        }
    }

    /// The line whose first cell is `name`, split into cells.
    fn row<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{text}"));
        line[line.find(name).unwrap() + name.len()..]
            .split_whitespace()
            .collect()
    }

    #[test]
    fn orders_rpcs_as_a_lifecycle_runs() {
        assert_eq!(
            in_lifecycle_order([
                "DeleteVolume",
                "Zed",
                "CreateVolume",
                "Alpha",
                "CreateVolume"
            ]),
            vec!["CreateVolume", "DeleteVolume", "Alpha", "Zed"]
        );
    }

    #[test]
    fn pads_columns_to_the_widest_cell() {
        let rows = vec![
            vec!["name".to_string(), "1".into()],
            vec!["x".to_string(), "1000".into()],
        ];
        assert_eq!(columns(&rows, "> "), "> name     1\n> x     1000\n");
        assert_eq!(ratio_cell(Some(4.0789)), "4.08x");
        assert_eq!(ratio_cell(None), "-");
    }

    #[test]
    fn comparison_shows_both_drivers_ratios_and_floors() {
        let text = comparison_text(&comparison(Some(8_000)));
        assert!(
            text.starts_with("cairn (unix:///run/cairn.sock) vs hostpath"),
            "{text}"
        );
        assert!(text.contains("bare kernel (mkdir"), "{text}");
        assert!(text.contains("durable floor (bare kernel"), "{text}");
        assert!(
            text.contains("K=100 workers=1: 4 rounds per driver"),
            "{text}"
        );

        // Throughput: cairn over hostpath.
        assert_eq!(row(&text, "lifecycles/s"), ["100.0", "25.0", "4.00x"]);
        // Latency: hostpath over cairn.
        assert_eq!(row(&text, "lifecycle p50 ms"), ["2.000", "8.000", "4.00x"]);
        assert_eq!(row(&text, "lifecycle p99 ms"), ["4.000", "16.000", "4.00x"]);
        assert_eq!(
            row(&text, "Probe p50 ms (round trip)"),
            ["0.100", "0.400", "4.00x"]
        );
        assert_eq!(
            row(&text, "lifecycle p50 / kernel floor"),
            ["8.00x", "32.00x"]
        );
        assert_eq!(
            row(&text, "lifecycle p50 / durable floor"),
            ["2.00x", "8.00x"]
        );
        assert_eq!(row(&text, "RSS max KiB"), ["8000", "24000", "3.00x"]);
        assert_eq!(
            row(&text, "CPU ms per lifecycle"),
            ["1.000", "4.000", "4.00x"]
        );

        // Per RPC: both p50s, ratio, both p99s, ratio, the floor (its step
        // of the durable floor + the faster driver's round trip), each over it.
        assert!(
            text.contains("per-RPC floor: the RPC's step of the durable floor + one round trip (fastest Probe p50, 0.100 ms)"),
            "{text}"
        );
        assert_eq!(
            row(&text, "CreateVolume"),
            ["1.000", "4.000", "4.00x", "2.000", "8.000", "4.00x", "0.500", "2.00x", "8.00x"]
        );
        assert_eq!(
            row(&text, "DeleteVolume"),
            ["0.500", "2.000", "4.00x", "1.000", "4.000", "4.00x", "0.350", "1.43x", "5.71x"]
        );
        // Lifecycle order: create before publish before delete.
        let at = |s: &str| text.find(&format!("  {s} ")).unwrap();
        assert!(at("CreateVolume") < at("NodePublishVolume"));
        assert!(at("NodePublishVolume") < at("DeleteVolume"));

        assert_eq!(
            row(&text, "RSS idle before the run, KiB"),
            ["4000", "12000", "3.00x"]
        );
        assert_eq!(
            row(&text, "RSS max over the run, KiB"),
            ["8000", "24000", "3.00x"]
        );
    }

    #[test]
    fn comparison_without_floors_has_no_floor_rows_or_columns() {
        let mut c = comparison(None);
        for report in [&mut c.driver, &mut c.versus] {
            report.baseline = None;
            report.durable_floor = None;
            for p in &mut report.points {
                p.ratio_to_kernel_p50 = None;
                p.ratio_to_durable_p50 = None;
            }
        }
        let text = comparison_text(&c);
        assert!(!text.contains("floor"), "{text}");
        assert_eq!(
            row(&text, "CreateVolume"),
            ["1.000", "4.000", "4.00x", "2.000", "8.000", "4.00x"]
        );
    }

    #[test]
    fn comparison_without_pids_has_no_memory_rows() {
        let text = comparison_text(&comparison(None));
        assert!(!text.contains("RSS max"), "{text}");
        assert!(!text.contains("RSS idle"), "{text}");
        // The round trip is measured whether or not pids are given.
        assert_eq!(
            row(&text, "Probe p50 ms (round trip)"),
            ["0.100", "0.400", "4.00x"]
        );
        assert!(!text.contains("CPU ms"), "{text}");
        assert!(text.contains("lifecycles/s"));
    }

    #[test]
    fn an_rpc_one_driver_never_answered_shows_dashes() {
        let mut c = comparison(None);
        c.versus.points[0].rpcs.remove("DeleteVolume");
        c.ratios = vec![ratio::compare(&c.driver.points[0], &c.versus.points[0])];
        let text = comparison_text(&c);
        assert_eq!(
            row(&text, "DeleteVolume"),
            ["0.500", "-", "-", "1.000", "-", "-", "0.350", "1.43x", "-"]
        );
    }

    #[test]
    fn single_driver_table_keeps_its_lines_and_adds_the_floor() {
        let text = to_text(&report("cairn", 1.0, Some(6000)));
        assert!(text.contains("bare kernel (mkdir, 2x bind mount, stat, 2x umount, rmdir) x50: p50 0.250 ms, p99 0.500 ms"), "{text}");
        assert!(
            text.contains("durable floor (bare kernel + per volume"),
            "{text}"
        );
        assert!(
            text.contains("8.00x the bare kernel, 2.00x the durable floor"),
            "{text}"
        );
        assert!(
            text.contains("round trip (Probe) x100: p50 0.100 ms"),
            "{text}"
        );
        // The durable floor's step plus the driver's own round trip.
        assert_eq!(
            row(&text, "CreateVolume"),
            ["100", "0", "1.000", "0.000", "2.000", "0.000", "0.500", "2.00x"]
        );
        assert_eq!(row(&text, "NodePublishVolume")[6..], ["0.200", "1.50x"]);
        assert!(text.contains("driver RSS idle before the run: 3000 KiB"));
        assert!(text.contains("driver RSS max over the whole run: 6000 KiB"));
    }

    #[test]
    fn floor_falls_back_to_the_kernel_floor() {
        let mut r = report("cairn", 1.0, None);
        r.durable_floor = None;
        let floor = RpcFloor::new(&r, &[&r]);
        assert_eq!(floor.step_ms("NodePublishVolume"), Some(0.1));
        assert_eq!(floor.ms("NodePublishVolume"), Some(0.2));
        // The kernel floor has no create step.
        assert_eq!(floor.ms("CreateVolume"), None);
        // Without a round trip, the step alone.
        assert_eq!(RpcFloor::new(&r, &[]).ms("NodePublishVolume"), Some(0.1));
        r.baseline.as_mut().unwrap().error = Some("not root".into());
        assert_eq!(RpcFloor::new(&r, &[&r]).ms("NodePublishVolume"), None);
        assert!(to_text(&r).contains(
            "bare kernel (mkdir, 2x bind mount, stat, 2x umount, rmdir) failed: not root"
        ));
    }
}
