//! The driver's one error type and its one mapping to gRPC status codes.
//!
//! Every variant names the CSI error it stands for, so reading the code that
//! returns it tells what the caller sees (spec.md, "Error Scheme").

use std::path::PathBuf;

/// What can go wrong while serving a CSI call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unimplemented(String),
    /// A server we depend on (an NFS server) cannot be reached or timed out.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// An I/O failure on a path we own; the message carries what we were doing.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// The gRPC code this error is reported with.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Aborted(_) => Code::Aborted,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Unavailable(_) => Code::Unavailable,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            // Out of space is a condition the caller can wait out.
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC) => {
                Code::ResourceExhausted
            }
            // A path of ours that vanished mid-call is a volume or snapshot
            // deleted by a call that ran just before (stage, stats or a
            // snapshot racing a DeleteVolume): it does not exist.
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Code::NotFound
            }
            // A symlink met where paths are resolved refusing them: a path
            // from the request that is (or just became) a symlink.
            Error::Io { source, .. } if source.raw_os_error() == Some(libc::ELOOP) => {
                Code::InvalidArgument
            }
            Error::Io { .. } | Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        tonic::Status::new(err.code(), err.to_string())
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(err: tokio::task::JoinError) -> Self {
        Error::Internal(format!("blocking task failed: {err}"))
    }
}

/// Untrusted input as quoted in an error or a log line: at most
/// [`QUOTE_LIMIT`] bytes of it. A whole 1 MB token in a message would exceed
/// the client's header limit and hide the real error behind
/// RESOURCE_EXHAUSTED.
pub fn quote(raw: &str) -> String {
    if raw.len() <= QUOTE_LIMIT {
        return format!("{raw:?}");
    }
    let mut end = QUOTE_LIMIT;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &raw[..end], raw.len())
}

/// How much of an untrusted value [`quote`] keeps.
pub const QUOTE_LIMIT: usize = 200;

/// Shorthand for the common "required field is missing" error.
pub fn missing(field: &str) -> Error {
    Error::InvalidArgument(format!("{field} is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vanished_path_is_not_found_other_io_errors_internal() {
        let gone =
            Error::io("stat", "/root/volumes/v")(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(gone.code(), tonic::Code::NotFound);
        let full = Error::io("write", "/x")(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.code(), tonic::Code::ResourceExhausted);
        let broken = Error::io("read", "/x")(std::io::Error::from_raw_os_error(libc::EIO));
        assert_eq!(broken.code(), tonic::Code::Internal);
    }

    #[test]
    fn quote_keeps_short_values_and_cuts_long_ones() {
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        let long = "é".repeat(1000);
        let quoted = quote(&long);
        assert!(quoted.len() < QUOTE_LIMIT + 40, "{}", quoted.len());
        assert!(quoted.ends_with("... (2000 bytes)"), "{quoted}");
    }
}
