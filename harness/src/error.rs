//! One error type for the harness; every variant names the thing it concerns, so a failing test
//! says which daemon, path or command went wrong without a debugger.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while starting, running or stopping harness pieces.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call failed; `what` says which call and on what.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A helper command (`ip`, `depmod`, ...) ran but reported failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// A daemon exited before it became ready; `log` is the tail of its log.
    #[error("{name} exited during start-up ({status}); log tail:\n{log}")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        log: String,
    },
    /// A daemon kept running but never became ready.
    #[error("{name} not ready within {timeout:?}; log tail:\n{log}")]
    NotReady {
        name: String,
        timeout: Duration,
        log: String,
    },
    /// Something the harness needs is not installed (see `harness/install-deps.sh`).
    #[error("{0}")]
    Missing(String),
    /// A path can't be handed to QEMU or the guest as given.
    #[error("unusable path {path}: {why}")]
    BadPath { path: PathBuf, why: &'static str },
}

/// Shorthand used throughout the harness.
pub type Result<T> = std::result::Result<T, Error>;

/// Builds a closure for `map_err` that wraps an `io::Error` with a description of the call.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
