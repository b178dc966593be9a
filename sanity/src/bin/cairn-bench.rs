//! `cairn-bench`: time the volume lifecycle against a CSI endpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cairn_sanity::bench::{self, BenchConfig, DriverSpec};
use cairn_sanity::{parse_param, parse_size};
use clap::Parser;

/// Runs CreateVolume → NodeStageVolume → NodePublishVolume →
/// NodeGetVolumeStats → NodeUnpublishVolume → NodeUnstageVolume →
/// DeleteVolume with N workers, after pre-publishing K volumes, beside two
/// floors: the same mounts with no driver at all, and those plus the durable
/// writes a crash-safe driver makes. With --versus, a second driver runs the
/// same points, interleaved in rounds. Prints a table on stderr and JSON on
/// stdout (or to --json).
#[derive(Debug, Parser)]
#[command(name = "cairn-bench", version)]
struct Args {
    /// Endpoint serving Identity and Node: unix:///path/csi.sock or a path.
    #[arg(long, env = "CSI_ENDPOINT")]
    endpoint: String,
    /// Endpoint serving Controller, when not the same as --endpoint.
    #[arg(long)]
    controller_endpoint: Option<String>,
    /// Base directory for staging paths (default: a fresh temp dir).
    #[arg(long)]
    staging_dir: Option<PathBuf>,
    /// Base directory for publish targets (default: a fresh temp dir).
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// StorageClass parameter for CreateVolume, key=value (repeatable).
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Size of each volume: bytes or 10Mi, 1Gi...
    #[arg(long, default_value = "10Mi", value_parser = parse_size)]
    volume_size: u64,
    /// Concurrent lifecycles.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Lifecycles per measurement.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Stop each measurement after this many seconds even if --count is not reached.
    #[arg(long)]
    duration: Option<f64>,
    /// Volumes to create and publish before measuring (one K).
    #[arg(long, default_value_t = 0, conflicts_with = "sweep")]
    preload: usize,
    /// Measure at each of these K values, e.g. 10,100,1000.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<usize>,
    /// The driver's pid, to report its RSS and CPU time from /proc.
    #[arg(long)]
    driver_pid: Option<u32>,
    /// Names the driver in tables and charts.
    #[arg(long, default_value = "driver")]
    label: String,
    /// Iterations of each floor, bare kernel and durable (0 to skip; needs root).
    #[arg(long, default_value_t = 200)]
    baseline: usize,
    /// A second driver to compare against: every point runs on both, interleaved.
    #[arg(long, value_name = "ENDPOINT")]
    versus: Option<String>,
    /// The second driver's Controller endpoint, when not the same as --versus.
    #[arg(long, requires = "versus")]
    versus_controller_endpoint: Option<String>,
    /// Base directory for the second driver's staging paths.
    #[arg(long, requires = "versus")]
    versus_staging_dir: Option<PathBuf>,
    /// Base directory for the second driver's publish targets.
    #[arg(long, requires = "versus")]
    versus_target_dir: Option<PathBuf>,
    /// StorageClass parameter for the second driver, key=value (repeatable).
    #[arg(long = "versus-param", value_parser = parse_param, requires = "versus")]
    versus_params: Vec<(String, String)>,
    /// The second driver's pid, for its RSS and CPU time.
    #[arg(long, requires = "versus")]
    versus_pid: Option<u32>,
    /// Names the second driver in tables and charts.
    #[arg(long, default_value = "reference", requires = "versus")]
    versus_label: String,
    /// With --versus: rounds each point is split into (A B, B A, ...).
    #[arg(long, default_value_t = 4, requires = "versus")]
    rounds: usize,
    /// Write JSON here instead of stdout.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw latency per RPC against K as SVG here (with --versus: both drivers).
    #[arg(long)]
    svg: Option<PathBuf>,
}

/// Most lifecycles one measurement may run: keeps request loops bounded.
const MAX_COUNT: u64 = 1_000_000;
/// Most volumes a sweep point may preload.
const MAX_PRELOAD: usize = 100_000;
/// Most rounds a point may be split into.
const MAX_ROUNDS: usize = 1_000;

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cairn-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let args = Args::parse();
    anyhow::ensure!(args.count <= MAX_COUNT, "--count is capped at {MAX_COUNT}");
    let sweep = if args.sweep.is_empty() {
        vec![args.preload]
    } else {
        args.sweep
    };
    anyhow::ensure!(
        sweep.iter().all(|k| *k <= MAX_PRELOAD),
        "K is capped at {MAX_PRELOAD}"
    );
    let duration = args
        .duration
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .context("--duration must be a positive number of seconds")
        })
        .transpose()?;
    anyhow::ensure!(
        (1..=MAX_ROUNDS).contains(&args.rounds),
        "--rounds must be 1 to {MAX_ROUNDS}"
    );
    let config = BenchConfig {
        driver: DriverSpec {
            label: args.label,
            endpoint: args.endpoint,
            controller_endpoint: args.controller_endpoint,
            staging_base: args.staging_dir,
            target_base: args.target_dir,
            params: args.params.into_iter().collect(),
            pid: args.driver_pid,
        },
        volume_size: args.volume_size,
        workers: args.workers.max(1),
        count: args.count,
        duration,
        sweep,
        baseline_iterations: args.baseline,
        rounds: args.rounds,
    };
    let versus = args.versus.map(|endpoint| DriverSpec {
        label: args.versus_label,
        endpoint,
        controller_endpoint: args.versus_controller_endpoint,
        staging_base: args.versus_staging_dir,
        target_base: args.versus_target_dir,
        params: args.versus_params.into_iter().collect(),
        pid: args.versus_pid,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let outputs = Outputs {
        json: args.json,
        svg: args.svg,
    };
    match versus {
        None => {
            let report = runtime.block_on(bench::run_bench(config))?;
            eprint!("{}", bench::to_text(&report));
            let title = format!(
                "{} — p99 latency vs K ({} workers)",
                report.endpoint, report.workers
            );
            outputs.write(&report, || bench::svg::chart(&report.points, &title))?;
            Ok(all_succeeded(&report))
        }
        Some(versus) => {
            let comparison = runtime.block_on(bench::run_comparison(config, versus))?;
            eprint!("{}", bench::comparison_text(&comparison));
            outputs.write(&comparison, || bench::svg_versus::chart(&comparison))?;
            Ok(all_succeeded(&comparison.driver) && all_succeeded(&comparison.versus))
        }
    }
}

/// Where the JSON and the chart go.
struct Outputs {
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
}

impl Outputs {
    fn write<T: serde::Serialize>(
        &self,
        report: &T,
        svg: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(report)?;
        match &self.json {
            Some(path) => {
                std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?
            }
            None => println!("{json}"),
        }
        if let Some(path) = &self.svg {
            std::fs::write(path, svg()).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

fn all_succeeded(report: &bench::BenchReport) -> bool {
    report.points.iter().all(|p| p.failed_lifecycles == 0)
}
