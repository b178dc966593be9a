//! `cairn-bench`: the lifecycle a cluster runs, against any CSI endpoint,
//! with N workers, after pre-publishing K volumes, beside the bare kernel
//! cost of the same mounts.

pub mod durable;
pub mod kernel;
mod lifecycle;
pub mod procfs;
pub mod stats;
pub mod svg;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;

use crate::caps::ControllerCap;
use crate::context::Clients;
use crate::runner::{connect, discover, run_id, Bases, RunError};
use lifecycle::{Driver, Published};
use procfs::ProcUsage;
use stats::{Samples, Stats};

/// How often the driver's RSS is sampled during a measurement.
const RSS_EVERY: Duration = Duration::from_millis(50);

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub endpoint: String,
    pub controller_endpoint: Option<String>,
    /// Base for staging dirs (default: a fresh temp dir). Must be inside a
    /// path-confining driver's allowed tree, as for `cairn-sanity`.
    pub staging_base: Option<PathBuf>,
    pub target_base: Option<PathBuf>,
    pub params: BTreeMap<String, String>,
    pub volume_size: u64,
    /// Concurrent lifecycles.
    pub workers: usize,
    /// Lifecycles per measurement (the run stops at `count` or `duration`,
    /// whichever comes first).
    pub count: u64,
    pub duration: Option<Duration>,
    /// K values: volumes created and published before each measurement.
    pub sweep: Vec<usize>,
    /// The driver's pid, for RSS and CPU time.
    pub driver_pid: Option<u32>,
    /// Bare-kernel iterations (0: skip the baseline).
    pub baseline_iterations: usize,
}

/// One measurement at one K.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Point {
    pub preloaded: usize,
    pub workers: usize,
    pub lifecycles: usize,
    pub failed_lifecycles: usize,
    pub seconds: f64,
    pub lifecycles_per_second: f64,
    /// Wall time of a whole lifecycle.
    pub lifecycle: Stats,
    pub rpcs: BTreeMap<String, Stats>,
    pub driver: Option<ProcUsage>,
    /// Lifecycle p50 over the bare-kernel p50.
    pub ratio_to_kernel_p50: Option<f64>,
}

/// The bare-kernel floor.
#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub iterations: usize,
    pub lifecycle: Stats,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub endpoint: String,
    pub workers: usize,
    pub points: Vec<Point>,
    pub baseline: Option<Baseline>,
    /// Driver RSS during preloading and teardown too.
    pub driver_rss_max_kib: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Setup(#[from] RunError),
    #[error("the endpoint cannot run a lifecycle: {0}")]
    Unsupported(String),
    #[error("preloading K={k}: {status}")]
    Preload { k: usize, status: tonic::Status },
}

/// Runs the baseline, then one measurement per K in the sweep.
pub async fn run_bench(config: BenchConfig) -> Result<BenchReport, BenchError> {
    let main = connect(&config.endpoint).await?;
    let controller = match &config.controller_endpoint {
        Some(e) => connect(e).await?,
        None => main.clone(),
    };
    let clients = Clients::new(main, controller);
    let caps = discover(&clients).await;
    if !caps.has_controller(ControllerCap::CreateDeleteVolume) || caps.node.is_none() {
        return Err(BenchError::Unsupported(
            "needs CREATE_DELETE_VOLUME and a node service on the endpoint(s)".into(),
        ));
    }
    let run = run_id();
    let bases = Bases::prepare(
        "cairn-bench",
        &run,
        config.staging_base.as_deref(),
        config.target_base.as_deref(),
    )?;
    let (staging_base, target_base) = (bases.staging.clone(), bases.target.clone());

    let baseline = if config.baseline_iterations > 0 {
        Some(measure_kernel(&staging_base, config.baseline_iterations).await)
    } else {
        None
    };

    let driver = Arc::new(Driver {
        clients,
        caps,
        params: config.params.clone().into_iter().collect(),
        size: crate::fixtures::bytes(config.volume_size),
        staging_base,
        target_base,
        samples: Mutex::new(HashMap::new()),
        lifecycles: Mutex::new(Samples::default()),
    });
    let rss_watch = config.driver_pid.map(RssWatch::start);
    let mut points = Vec::new();
    for &k in &config.sweep {
        let preloaded = preload(&driver, &run, k).await;
        let point = match preloaded {
            Ok(held) => {
                let point = measure(&driver, &config, &run, k).await;
                release(&driver, held).await;
                point
            }
            Err((held, status)) => {
                release(&driver, held).await;
                return Err(BenchError::Preload { k, status });
            }
        };
        points.push(point);
    }
    let driver_rss_max_kib = rss_watch.map(RssWatch::stop);
    if let Some(base) = &baseline {
        let floor = base.lifecycle.p50_ms;
        for p in &mut points {
            if floor > 0.0 && p.lifecycle.count > 0 {
                p.ratio_to_kernel_p50 = Some(p.lifecycle.p50_ms / floor);
            }
        }
    }
    let _ = bases.remove_scratch();
    Ok(BenchReport {
        endpoint: config.endpoint,
        workers: config.workers,
        points,
        baseline,
        driver_rss_max_kib,
    })
}

async fn measure_kernel(base: &std::path::Path, iterations: usize) -> Baseline {
    let dir = base.join("cairn-bench-kernel");
    let work = dir.clone();
    let result = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&work)?;
        let samples = kernel::baseline(&work, iterations);
        let _ = crate::cleanup::remove_dir(&work);
        samples
    })
    .await;
    match result {
        Ok(Ok(samples)) => Baseline {
            iterations,
            lifecycle: samples.summary(),
            error: None,
        },
        Ok(Err(e)) => Baseline {
            iterations,
            lifecycle: Stats::default(),
            error: Some(format!("{}: {e}", dir.display())),
        },
        Err(e) => Baseline {
            iterations,
            lifecycle: Stats::default(),
            error: Some(e.to_string()),
        },
    }
}

type Held = Vec<Published>;

/// Creates and publishes `k` volumes; on failure hands back what it holds.
async fn preload(driver: &Arc<Driver>, run: &str, k: usize) -> Result<Held, (Held, tonic::Status)> {
    let mut held = Vec::with_capacity(k);
    for i in 0..k {
        match driver.bring_up(&format!("bench-{run}-k{k}-pre{i}")).await {
            Ok(up) => held.push(up),
            Err(status) => return Err((held, status)),
        }
    }
    Ok(held)
}

async fn release(driver: &Arc<Driver>, held: Held) {
    for up in held {
        driver.tear_down(up).await;
    }
}

/// N workers run lifecycles until `count` are started or time is up.
async fn measure(driver: &Arc<Driver>, config: &BenchConfig, run: &str, k: usize) -> Point {
    // Preloading and teardown are not part of the measurement.
    driver
        .samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    *driver.lifecycles.lock().unwrap_or_else(|p| p.into_inner()) = Samples::default();
    let cpu_before = config
        .driver_pid
        .and_then(|pid| procfs::cpu_seconds(pid).ok());
    let rss = config.driver_pid.map(RssWatch::start);

    let started = Instant::now();
    let deadline = config.duration.map(|d| started + d);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for w in 0..config.workers.max(1) {
        let (driver, next, run) = (Arc::clone(driver), Arc::clone(&next), run.to_string());
        let count = config.count;
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                driver
                    .lifecycle(&format!("bench-{run}-k{k}-w{w}-{i}"))
                    .await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();

    let lifecycle = driver
        .lifecycles
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .summary();
    let rpcs = driver
        .samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(rpc, s)| (rpc.to_string(), s.summary()))
        .collect();
    let driver_usage = config.driver_pid.map(|pid| ProcUsage {
        rss_max_kib: rss.map(RssWatch::stop).unwrap_or(0),
        rss_end_kib: procfs::rss_kib(pid).unwrap_or(0),
        cpu_seconds: procfs::cpu_seconds(pid)
            .ok()
            .zip(cpu_before)
            .map_or(0.0, |(after, before)| after - before),
    });
    let done = lifecycle.count - lifecycle.errors;
    Point {
        preloaded: k,
        workers: config.workers.max(1),
        lifecycles: lifecycle.count,
        failed_lifecycles: lifecycle.errors,
        seconds,
        lifecycles_per_second: if seconds > 0.0 {
            done as f64 / seconds
        } else {
            0.0
        },
        lifecycle,
        rpcs,
        driver: driver_usage,
        ratio_to_kernel_p50: None,
    }
}

/// Samples a pid's RSS in the background and keeps the maximum.
struct RssWatch {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(procfs::rss_kib(pid).unwrap_or(0)));
        let (s, m) = (Arc::clone(&stop), Arc::clone(&max));
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Ok(kib) = procfs::rss_kib(pid) {
                    m.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(RSS_EVERY).await;
            }
        });
        Self { stop, max }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.max.load(Ordering::Relaxed)
    }
}

/// A table for a person: one block per K.
pub fn to_text(report: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(b) = &report.baseline {
        match &b.error {
            Some(e) => {
                let _ = writeln!(out, "bare kernel baseline failed: {e}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "bare kernel (mkdir, 2x bind mount, stat, 2x umount, rmdir) x{}: p50 {:.3} ms, p99 {:.3} ms",
                    b.iterations, b.lifecycle.p50_ms, b.lifecycle.p99_ms
                );
            }
        }
    }
    for p in &report.points {
        let _ = writeln!(
            out,
            "\nK={} workers={}: {} lifecycles ({} failed) in {:.2}s = {:.1}/s; lifecycle p50 {:.3} ms p99 {:.3} ms{}",
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
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "  {:<22} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9}",
            "rpc", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        for (rpc, s) in &p.rpcs {
            let _ = writeln!(
                out,
                "  {rpc:<22} {:>7} {:>6} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                s.count, s.errors, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
            );
        }
        if let Some(d) = &p.driver {
            let _ = writeln!(
                out,
                "  driver: RSS max {} KiB, end {} KiB, CPU {:.3} s",
                d.rss_max_kib, d.rss_end_kib, d.cpu_seconds
            );
        }
    }
    if let Some(max) = report.driver_rss_max_kib {
        let _ = writeln!(out, "\ndriver RSS max over the whole run: {max} KiB");
    }
    out
}
