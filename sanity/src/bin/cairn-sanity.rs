//! `cairn-sanity`: run the CSI conformance suite against a driver endpoint.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use cairn_sanity::{parse_param, parse_size, Config, Filter};
use clap::Parser;

/// Checks a CSI driver against the CSI v1.12 spec, case by case.
///
/// Node cases create `<staging-dir>/<case>/globalmount` and the parent of
/// `<target-dir>/<case>/mount`, like the kubelet. A driver that only accepts
/// paths under its kubelet dir (Cairn's `--kubelet-dir`) needs both bases
/// inside it, e.g. `--staging-dir <kubelet>/plugins --target-dir <kubelet>/pods`.
#[derive(Debug, Parser)]
#[command(name = "cairn-sanity", version)]
struct Args {
    /// Endpoint serving Identity and Node: unix:///path/csi.sock or a path.
    #[arg(long, env = "CSI_ENDPOINT", required_unless_present = "list")]
    endpoint: Option<String>,
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
    /// VolumeSnapshotClass parameter for CreateSnapshot, key=value (repeatable).
    #[arg(long = "snapshot-param", value_parser = parse_param)]
    snapshot_params: Vec<(String, String)>,
    /// Size of the volumes the suite creates: bytes or 10Mi, 1Gi, 500M...
    #[arg(long, default_value = "10Mi", value_parser = parse_size)]
    volume_size: u64,
    /// Run only cases whose name matches this regex.
    #[arg(long)]
    run: Option<String>,
    /// Skip cases whose name matches this regex.
    #[arg(long)]
    skip: Option<String>,
    /// Also write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Print the case names (after --run/--skip) with the rule each checks.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cairn-sanity: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let args = Args::parse();
    let filter = Filter::new(args.run.as_deref(), args.skip.as_deref())
        .context("bad --run/--skip pattern")?;
    if args.list {
        for (name, rule) in cairn_sanity::list_cases() {
            if filter.selects(name) {
                println!("{name}\n    {rule}");
            }
        }
        return Ok(true);
    }
    let mut config = Config::new(args.endpoint.context("--endpoint is required")?);
    config.controller_endpoint = args.controller_endpoint;
    config.staging_base = args.staging_dir;
    config.target_base = args.target_dir;
    config.params = args.params.into_iter().collect();
    config.snapshot_params = args.snapshot_params.into_iter().collect();
    config.volume_size = args.volume_size;
    config.filter = filter;
    config.progress = true;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(cairn_sanity::run(config))?;
    if let Some(path) = &args.junit {
        std::fs::write(path, report.to_junit())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", report.to_text());
    Ok(report.success())
}
