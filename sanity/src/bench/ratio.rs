//! Ratios between two drivers, always oriented so that above 1 means the
//! driver under test is better: throughput is driver over reference,
//! latency, memory and CPU are reference over driver.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::Point;

/// For figures where more is better (lifecycles per second).
pub fn more_is_better(driver: f64, reference: f64) -> Option<f64> {
    quotient(driver, reference)
}

/// For figures where less is better (latency, RSS, CPU time).
pub fn less_is_better(driver: f64, reference: f64) -> Option<f64> {
    quotient(reference, driver)
}

/// How many times a floor a measured value is.
pub fn times_floor(value: f64, floor: f64) -> Option<f64> {
    quotient(value, floor)
}

/// `a / b` when both are positive and finite: a missing figure (0, as an
/// RPC the driver never served reports) must not become 0x or infinity.
fn quotient(a: f64, b: f64) -> Option<f64> {
    let usable = |v: f64| v.is_finite() && v > 0.0;
    (usable(a) && usable(b)).then(|| a / b)
}

/// One measurement point, the driver against the reference.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PointRatios {
    pub preloaded: usize,
    pub lifecycles_per_second: Option<f64>,
    pub lifecycle_p50: Option<f64>,
    pub lifecycle_p99: Option<f64>,
    /// Peak RSS during the point's rounds (both pids given).
    pub rss_max: Option<f64>,
    /// CPU time per successful lifecycle (both pids given).
    pub cpu_per_lifecycle: Option<f64>,
    /// Per RPC, over every RPC either driver was sent.
    pub rpc_p50: BTreeMap<String, Option<f64>>,
    pub rpc_p99: BTreeMap<String, Option<f64>>,
}

/// Compares the same point (same K, same workers) of both drivers.
pub fn compare(driver: &Point, reference: &Point) -> PointRatios {
    let rpcs: BTreeSet<&String> = driver.rpcs.keys().chain(reference.rpcs.keys()).collect();
    let per_rpc = |pick: fn(&super::Stats) -> f64| -> BTreeMap<String, Option<f64>> {
        rpcs.iter()
            .map(|rpc| {
                let ours = driver.rpcs.get(*rpc).map_or(0.0, pick);
                let theirs = reference.rpcs.get(*rpc).map_or(0.0, pick);
                ((*rpc).clone(), less_is_better(ours, theirs))
            })
            .collect()
    };
    let usage = |pick: fn(&Point) -> Option<f64>| match (pick(driver), pick(reference)) {
        (Some(ours), Some(theirs)) => less_is_better(ours, theirs),
        _ => None,
    };
    PointRatios {
        preloaded: driver.preloaded,
        lifecycles_per_second: more_is_better(
            driver.lifecycles_per_second,
            reference.lifecycles_per_second,
        ),
        lifecycle_p50: less_is_better(driver.lifecycle.p50_ms, reference.lifecycle.p50_ms),
        lifecycle_p99: less_is_better(driver.lifecycle.p99_ms, reference.lifecycle.p99_ms),
        rss_max: usage(|p| p.driver.as_ref().map(|d| d.rss_max_kib as f64)),
        cpu_per_lifecycle: usage(Point::cpu_ms_per_lifecycle),
        rpc_p50: per_rpc(|s| s.p50_ms),
        rpc_p99: per_rpc(|s| s.p99_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::procfs::ProcUsage;
    use crate::bench::stats::Stats;

    fn stats(p50: f64, p99: f64) -> Stats {
        Stats {
            count: 10,
            p50_ms: p50,
            p99_ms: p99,
            ..Default::default()
        }
    }

    fn point(rate: f64, p50: f64, rss: u64, cpu: f64, rpcs: &[(&str, f64)]) -> Point {
        Point {
            preloaded: 100,
            lifecycles: 10,
            lifecycles_per_second: rate,
            lifecycle: stats(p50, p50 * 2.0),
            rpcs: rpcs
                .iter()
                .map(|(name, p50)| (name.to_string(), stats(*p50, p50 * 3.0)))
                .collect(),
            driver: Some(ProcUsage {
                rss_max_kib: rss,
                rss_end_kib: rss,
                cpu_seconds: cpu,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn above_one_means_the_driver_wins() {
        assert_eq!(more_is_better(300.0, 100.0), Some(3.0));
        assert_eq!(less_is_better(2.0, 8.0), Some(4.0));
        assert_eq!(less_is_better(8.0, 2.0), Some(0.25));
        assert_eq!(times_floor(3.0, 1.5), Some(2.0));
    }

    #[test]
    fn missing_figures_give_no_ratio() {
        assert_eq!(less_is_better(0.0, 5.0), None);
        assert_eq!(less_is_better(5.0, 0.0), None);
        assert_eq!(more_is_better(f64::NAN, 1.0), None);
        assert_eq!(more_is_better(1.0, f64::INFINITY), None);
        assert_eq!(times_floor(1.0, -1.0), None);
    }

    #[test]
    fn compares_a_point_figure_by_figure() {
        let ours = point(
            200.0,
            5.0,
            8_000,
            0.5,
            &[("CreateVolume", 1.0), ("NodeGetVolumeStats", 0.2)],
        );
        let theirs = point(50.0, 20.0, 24_000, 1.0, &[("CreateVolume", 1.5)]);
        let r = compare(&ours, &theirs);
        assert_eq!(r.preloaded, 100);
        assert_eq!(r.lifecycles_per_second, Some(4.0));
        assert_eq!(r.lifecycle_p50, Some(4.0));
        assert_eq!(r.lifecycle_p99, Some(4.0));
        assert_eq!(r.rss_max, Some(3.0));
        // 0.5 s over 10 lifecycles against 1 s over 10.
        assert_eq!(r.cpu_per_lifecycle, Some(2.0));
        assert_eq!(r.rpc_p50["CreateVolume"], Some(1.5));
        assert_eq!(r.rpc_p99["CreateVolume"], Some(1.5));
        // Sent to one driver only: listed, with no ratio.
        assert_eq!(r.rpc_p50["NodeGetVolumeStats"], None);
        assert_eq!(r.rpc_p50.len(), 2);
    }

    #[test]
    fn no_pid_no_usage_ratio() {
        let mut ours = point(1.0, 1.0, 1, 1.0, &[]);
        ours.driver = None;
        let theirs = point(1.0, 1.0, 1, 1.0, &[]);
        let r = compare(&ours, &theirs);
        assert_eq!(r.rss_max, None);
        assert_eq!(r.cpu_per_lifecycle, None);
        assert_eq!(r.lifecycle_p50, Some(1.0));
    }
}
