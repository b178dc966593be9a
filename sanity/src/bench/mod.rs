//! `cairn-bench`: the lifecycle a cluster runs, against any CSI endpoint,
//! with N workers, after pre-publishing K volumes, beside two floors (the
//! bare kernel cost of the same mounts, and that plus the durable writes of
//! a crash-safe driver); optionally against a second driver, interleaved
//! round by round.

pub mod durable;
pub mod kernel;
mod lifecycle;
mod measure;
pub mod procfs;
pub mod ratio;
pub mod schedule;
pub mod stats;
pub mod svg;
pub mod svg_versus;
pub mod text;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::caps::ControllerCap;
use crate::context::Clients;
use crate::runner::{connect, discover, run_id, Bases, RunError};
use kernel::Floor;
use lifecycle::Driver;
use measure::{Held, RoundPlan, RoundUsage, RssWatch};
use procfs::ProcUsage;
use ratio::PointRatios;
use schedule::{Side, Turn};
use stats::{Samples, Stats};

pub use text::{comparison_text, to_text};

/// One driver to measure and where to reach it.
#[derive(Debug, Clone)]
pub struct DriverSpec {
    /// Names the driver in tables and charts.
    pub label: String,
    pub endpoint: String,
    pub controller_endpoint: Option<String>,
    /// Base for staging dirs (default: a fresh temp dir). Must be inside a
    /// path-confining driver's allowed tree, as for `cairn-sanity`.
    pub staging_base: Option<PathBuf>,
    pub target_base: Option<PathBuf>,
    /// StorageClass parameters for CreateVolume.
    pub params: BTreeMap<String, String>,
    /// The driver's pid, for RSS and CPU time.
    pub pid: Option<u32>,
}

impl DriverSpec {
    /// A driver at `endpoint`, everything else defaulted.
    pub fn new(label: &str, endpoint: &str) -> Self {
        Self {
            label: label.to_string(),
            endpoint: endpoint.to_string(),
            controller_endpoint: None,
            staging_base: None,
            target_base: None,
            params: BTreeMap::new(),
            pid: None,
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub driver: DriverSpec,
    pub volume_size: u64,
    /// Concurrent lifecycles.
    pub workers: usize,
    /// Lifecycles per measurement and driver (the run stops at `count` or
    /// `duration`, whichever comes first).
    pub count: u64,
    pub duration: Option<Duration>,
    /// K values: volumes created and published before each measurement.
    pub sweep: Vec<usize>,
    /// Iterations of each floor, and Probes per driver (0: skip them).
    pub baseline_iterations: usize,
    /// Against a second driver: rounds each point is split into.
    pub rounds: usize,
}

/// One measurement at one K.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Point {
    pub preloaded: usize,
    pub workers: usize,
    /// Rounds whose samples were merged (1 without a second driver).
    pub rounds: usize,
    pub lifecycles: usize,
    pub failed_lifecycles: usize,
    /// Wall time of the rounds, summed.
    pub seconds: f64,
    pub lifecycles_per_second: f64,
    /// Wall time of a whole lifecycle.
    pub lifecycle: Stats,
    pub rpcs: BTreeMap<String, Stats>,
    pub driver: Option<ProcUsage>,
    /// Lifecycle p50 over the bare-kernel p50.
    pub ratio_to_kernel_p50: Option<f64>,
    /// Lifecycle p50 over the durable floor's p50.
    pub ratio_to_durable_p50: Option<f64>,
}

impl Point {
    /// Driver CPU time per successful lifecycle, when its pid was given.
    pub fn cpu_ms_per_lifecycle(&self) -> Option<f64> {
        let done = self.lifecycles.saturating_sub(self.failed_lifecycles);
        let usage = self.driver.as_ref()?;
        (done > 0).then(|| usage.cpu_seconds * 1000.0 / done as f64)
    }
}

/// A floor: whole iterations and each step, named by the RPC it stands for.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Baseline {
    pub iterations: usize,
    pub lifecycle: Stats,
    pub steps: BTreeMap<String, Stats>,
    pub error: Option<String>,
}

impl Baseline {
    /// The floor's p50, if it was measured.
    pub fn p50_ms(&self) -> Option<f64> {
        (self.error.is_none() && self.lifecycle.count > 0).then_some(self.lifecycle.p50_ms)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub label: String,
    pub endpoint: String,
    pub workers: usize,
    pub points: Vec<Point>,
    /// The bare-kernel floor.
    pub baseline: Option<Baseline>,
    /// The kernel floor plus a crash-safe driver's durable writes.
    pub durable_floor: Option<Baseline>,
    /// Probe, as many times as each floor: one round trip to this driver
    /// with no work behind it.
    pub round_trip: Option<Stats>,
    /// Driver RSS after connecting, before anything was created.
    pub driver_rss_idle_kib: Option<u64>,
    /// Driver RSS during preloading and teardown too.
    pub driver_rss_max_kib: Option<u64>,
}

/// Two drivers measured side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Rounds each point was split into.
    pub rounds: usize,
    pub driver: BenchReport,
    pub versus: BenchReport,
    /// Per point (same order as the points): above 1, `driver` is better.
    pub ratios: Vec<PointRatios>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Setup(#[from] RunError),
    #[error("{label}: the endpoint cannot run a lifecycle: {reason}")]
    Unsupported { label: String, reason: String },
    #[error("{label}: preloading K={k}: {status}")]
    Preload {
        label: String,
        k: usize,
        status: tonic::Status,
    },
}

/// Runs the floors, then one measurement per K in the sweep.
pub async fn run_bench(config: BenchConfig) -> Result<BenchReport, BenchError> {
    let specs = [config.driver.clone()];
    let mut reports = run_drivers(&config, &specs).await?;
    Ok(reports.remove(0))
}

/// The same, against two drivers: each point runs both, in interleaved
/// rounds.
pub async fn run_comparison(
    config: BenchConfig,
    versus: DriverSpec,
) -> Result<Comparison, BenchError> {
    let specs = [config.driver.clone(), versus];
    let mut reports = run_drivers(&config, &specs).await?.into_iter();
    let (Some(driver), Some(versus)) = (reports.next(), reports.next()) else {
        unreachable!("run_drivers returns one report per driver")
    };
    let ratios = driver
        .points
        .iter()
        .zip(&versus.points)
        .map(|(ours, theirs)| ratio::compare(ours, theirs))
        .collect();
    Ok(Comparison {
        rounds: config.rounds.max(1),
        driver,
        versus,
        ratios,
    })
}

/// One driver as a run holds it.
struct Contender {
    spec: DriverSpec,
    driver: Arc<Driver>,
    bases: Bases,
    rss_idle: Option<u64>,
    rss_watch: Option<RssWatch>,
    round_trip: Option<Stats>,
    held: Held,
    points: Vec<Point>,
}

impl Contender {
    async fn connect(
        spec: &DriverSpec,
        side: usize,
        run: &str,
        volume_size: u64,
    ) -> Result<Self, BenchError> {
        let main = connect(&spec.endpoint).await?;
        let controller = match &spec.controller_endpoint {
            Some(e) => connect(e).await?,
            None => main.clone(),
        };
        let clients = Clients::new(main, controller);
        let caps = discover(&clients).await;
        if !caps.has_controller(ControllerCap::CreateDeleteVolume) || caps.node.is_none() {
            return Err(BenchError::Unsupported {
                label: spec.label.clone(),
                reason: "needs CREATE_DELETE_VOLUME and a node service on the endpoint(s)".into(),
            });
        }
        // Two drivers never share a default scratch dir.
        let tool = ["cairn-bench", "cairn-bench-versus"][side.min(1)];
        let bases = Bases::prepare(
            tool,
            run,
            spec.staging_base.as_deref(),
            spec.target_base.as_deref(),
        )?;
        let driver = Arc::new(Driver {
            clients,
            caps,
            params: spec.params.clone().into_iter().collect(),
            size: crate::fixtures::bytes(volume_size),
            staging_base: bases.staging.clone(),
            target_base: bases.target.clone(),
            samples: Mutex::new(HashMap::new()),
            lifecycles: Mutex::new(Samples::default()),
        });
        Ok(Self {
            spec: spec.clone(),
            driver,
            bases,
            rss_idle: spec.pid.and_then(|pid| procfs::rss_kib(pid).ok()),
            rss_watch: None,
            round_trip: None,
            held: Vec::new(),
            points: Vec::new(),
        })
    }

    async fn release(&mut self) {
        measure::release(&self.driver, std::mem::take(&mut self.held)).await;
    }

    /// Gives up on the run: stops watching the driver and removes the
    /// scratch dir this run made (nothing is mounted there any more).
    fn abandon(self) {
        let _ = self.bases.remove_scratch();
        if let Some(watch) = self.rss_watch {
            watch.stop();
        }
    }

    fn into_report(self, workers: usize, floors: &Floors) -> BenchReport {
        let _ = self.bases.remove_scratch();
        BenchReport {
            label: self.spec.label,
            endpoint: self.spec.endpoint,
            workers,
            points: self.points,
            baseline: floors.kernel.clone(),
            durable_floor: floors.durable.clone(),
            round_trip: self.round_trip,
            driver_rss_idle_kib: self.rss_idle,
            driver_rss_max_kib: self.rss_watch.map(RssWatch::stop),
        }
    }
}

/// Both floors, measured once per run before any driver works.
struct Floors {
    kernel: Option<Baseline>,
    durable: Option<Baseline>,
}

impl Floors {
    async fn measure(base: &Path, iterations: usize) -> Self {
        if iterations == 0 {
            return Self {
                kernel: None,
                durable: None,
            };
        }
        Self {
            kernel: Some(measure_floor(base, Floor::Kernel, iterations).await),
            durable: Some(measure_floor(base, Floor::Durable, iterations).await),
        }
    }

    fn set_ratios(&self, point: &mut Point) {
        if point.lifecycle.count == point.lifecycle.errors {
            return;
        }
        let over = |floor: &Option<Baseline>| {
            floor
                .as_ref()
                .and_then(Baseline::p50_ms)
                .and_then(|p50| ratio::times_floor(point.lifecycle.p50_ms, p50))
        };
        point.ratio_to_kernel_p50 = over(&self.kernel);
        point.ratio_to_durable_p50 = over(&self.durable);
    }
}

async fn run_drivers(
    config: &BenchConfig,
    specs: &[DriverSpec],
) -> Result<Vec<BenchReport>, BenchError> {
    let run = run_id();
    let mut sides: Vec<Contender> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        match Contender::connect(spec, i, &run, config.volume_size).await {
            Ok(side) => sides.push(side),
            Err(e) => {
                sides.into_iter().for_each(Contender::abandon);
                return Err(e);
            }
        }
    }
    let floors = Floors::measure(&sides[0].driver.staging_base, config.baseline_iterations).await;
    for side in &mut sides {
        if config.baseline_iterations > 0 {
            let probes = side.driver.round_trip(config.baseline_iterations).await;
            side.round_trip = Some(probes.summary());
        }
        side.rss_watch = side.spec.pid.map(RssWatch::start);
    }
    let turns = if sides.len() == 1 {
        schedule::alone(config.count)
    } else {
        schedule::interleave(config.count, config.rounds)
    };
    for &k in &config.sweep {
        if let Err(e) = measure_point(config, &mut sides, &turns, &run, k).await {
            for mut side in sides {
                side.release().await;
                side.abandon();
            }
            return Err(e);
        }
    }
    let workers = config.workers.max(1);
    Ok(sides
        .into_iter()
        .map(|mut side| {
            for point in &mut side.points {
                floors.set_ratios(point);
            }
            side.into_report(workers, &floors)
        })
        .collect())
}

/// Preloads K on every driver, runs the turns, merges each driver's rounds
/// into its point and releases the preloaded volumes.
async fn measure_point(
    config: &BenchConfig,
    sides: &mut [Contender],
    turns: &[Turn],
    run: &str,
    k: usize,
) -> Result<(), BenchError> {
    for side in sides.iter_mut() {
        let prefix = format!("bench-{run}-k{k}");
        match measure::preload(&side.driver, &prefix, k).await {
            Ok(held) => side.held = held,
            Err((held, status)) => {
                side.held = held;
                return Err(BenchError::Preload {
                    label: side.spec.label.clone(),
                    k,
                    status,
                });
            }
        }
    }
    for side in sides.iter() {
        side.driver.reset();
    }
    let mut usage: Vec<Vec<RoundUsage>> = vec![Vec::new(); sides.len()];
    let rounds = turns
        .iter()
        .filter(|t| t.side == Side::Driver)
        .count()
        .max(1);
    for turn in turns {
        let side = &sides[turn.side.index()];
        let prefix = format!("bench-{run}-k{k}-r{}", turn.round);
        let plan = RoundPlan {
            workers: config.workers,
            count: turn.count,
            duration: config.duration.map(|d| d / rounds as u32),
            prefix: &prefix,
            pid: side.spec.pid,
        };
        usage[turn.side.index()].push(measure::run_round(&side.driver, plan).await);
    }
    for (side, rounds) in sides.iter_mut().zip(&usage) {
        let point = measure::summarise(&side.driver, k, config.workers, rounds, side.spec.pid);
        side.points.push(point);
        side.release().await;
    }
    Ok(())
}

async fn measure_floor(base: &Path, floor: Floor, iterations: usize) -> Baseline {
    let dir = kernel::work_dir(base, floor);
    let work = dir.clone();
    let result = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&work)?;
        let samples = kernel::measure(floor, &work, iterations);
        let _ = crate::cleanup::remove_dir(&work);
        samples
    })
    .await;
    let failed = |error: String| Baseline {
        iterations,
        error: Some(error),
        ..Default::default()
    };
    match result {
        Ok(Ok(samples)) => Baseline {
            iterations,
            lifecycle: samples.lifecycle.summary(),
            steps: samples
                .steps
                .iter()
                .map(|(step, s)| (step.to_string(), s.summary()))
                .collect(),
            error: None,
        },
        Ok(Err(e)) => failed(format!("{}: {e}", dir.display())),
        Err(e) => failed(e.to_string()),
    }
}
