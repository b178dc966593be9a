//! `cairn-csi`: parse flags, set up logging, run.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use cairn_csi::cli::{Cli, Command, LogFormat};

/// The level filter from `RUST_LOG`: `info`, `debug`, `cairn_csi=debug,h2=warn`
/// (targets and levels; the span and regex syntax of tracing's `EnvFilter`
/// is left out, and so is the regex engine it would add to the binary).
fn log_filter(value: Option<&str>) -> (Targets, Option<String>) {
    let info = Targets::new().with_default(tracing::Level::INFO);
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => (info, None),
        Some(v) => match v.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (
                info,
                Some(format!("RUST_LOG={v:?} ignored ({e}); logging at info")),
            ),
        },
    }
}

fn init_logging(format: LogFormat) {
    let (filter, problem) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    // Colour only for a person at a terminal: a container's stderr is a
    // log file, where escape codes are noise to every reader and grep.
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
        Command::Client(args) => client(args),
    }
}

fn client(args: cairn_csi::client::ClientArgs) -> std::process::ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(cairn_csi::client::run(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates its own malloc arena; with the
/// blocking pool's threads that is most of the driver's memory. Two arenas
/// keep a node plugin's RSS in single-digit MB at no measurable cost.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator tunable; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn serve(args: cairn_csi::cli::ServeArgs) -> std::process::ExitCode {
    limit_malloc_arenas();
    init_logging(args.log_format);
    // One node runs one copy: a single async thread plus a small, bounded
    // pool for blocking filesystem and mount work keeps memory low.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(args.io_threads.max(1))
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(cairn_csi::server::run(args)),
        Err(e) => Err(anyhow::Error::new(e).context("starting the async runtime")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cairn-csi: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn rust_log_sets_levels_per_target_and_bad_values_fall_back_to_info() {
        let (filter, problem) = log_filter(Some("cairn_csi=debug,h2=warn"));
        assert!(problem.is_none());
        assert!(filter.would_enable("cairn_csi::node", &tracing::Level::DEBUG));
        assert!(!filter.would_enable("h2::proto", &tracing::Level::INFO));
        let (filter, problem) = log_filter(None);
        assert!(problem.is_none());
        assert_eq!(filter.default_level(), Some(LevelFilter::INFO));
        let (filter, problem) = log_filter(Some("cairn_csi=loud"));
        assert!(problem.unwrap().contains("loud"));
        assert_eq!(filter.default_level(), Some(LevelFilter::INFO));
    }
}
