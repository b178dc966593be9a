//! `cairn-csi`: parse flags, set up logging, run.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cairn_csi::cli::{Cli, Command, LogFormat};

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal: a container's stderr is a
    // log file, where escape codes are noise to every reader and grep.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
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
