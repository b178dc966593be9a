//! `cairn-bench`: time the volume lifecycle against a CSI endpoint.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cairn_sanity::bench::{self, BenchConfig};
use cairn_sanity::{parse_param, parse_size};
use clap::Parser;

/// Runs CreateVolume → NodeStageVolume → NodePublishVolume →
/// NodeGetVolumeStats → NodeUnpublishVolume → NodeUnstageVolume →
/// DeleteVolume with N workers, after pre-publishing K volumes, and the same
/// mounts with no driver at all. Prints a table on stderr and JSON on stdout
/// (or to --json).
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
    /// Bare-kernel iterations for the baseline (0 to skip; needs root).
    #[arg(long, default_value_t = 200)]
    baseline: usize,
    /// Write JSON here instead of stdout.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw p99 latency per RPC against K as SVG here.
    #[arg(long)]
    svg: Option<PathBuf>,
}

/// Most lifecycles one measurement may run: keeps request loops bounded.
const MAX_COUNT: u64 = 1_000_000;
/// Most volumes a sweep point may preload.
const MAX_PRELOAD: usize = 100_000;

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
    let config = BenchConfig {
        endpoint: args.endpoint,
        controller_endpoint: args.controller_endpoint,
        staging_base: args.staging_dir,
        target_base: args.target_dir,
        params: args.params.into_iter().collect(),
        volume_size: args.volume_size,
        workers: args.workers.max(1),
        count: args.count,
        duration,
        sweep,
        driver_pid: args.driver_pid,
        baseline_iterations: args.baseline,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(bench::run_bench(config))?;
    eprint!("{}", bench::to_text(&report));
    let json = serde_json::to_string_pretty(&report)?;
    match &args.json {
        Some(path) => {
            std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{json}"),
    }
    if let Some(path) = &args.svg {
        let title = format!(
            "{} — p99 latency vs K ({} workers)",
            report.endpoint, report.workers
        );
        std::fs::write(path, bench::svg::chart(&report.points, &title))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.points.iter().all(|p| p.failed_lifecycles == 0))
}
