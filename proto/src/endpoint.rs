//! Dialing a CSI endpoint. CSI endpoints are unix sockets given either in
//! gRPC target form (`unix:///csi/csi.sock`) or as a bare path.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// Why an endpoint string could not be used.
#[derive(Debug)]
pub enum EndpointError {
    /// Not `unix://` or an absolute/relative path (e.g. `tcp://...`).
    Unsupported(String),
    /// The socket could not be reached.
    Connect(tonic::transport::Error),
}

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsupported(e) => write!(
                f,
                "unsupported endpoint {e:?}: expected unix:///path/to/csi.sock or a socket path"
            ),
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
        }
    }
}

impl std::error::Error for EndpointError {}

/// The socket path named by `endpoint` (`unix:///a/b`, `unix:/a/b` or `/a/b`).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, EndpointError> {
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        rest
    } else if endpoint.contains("://") {
        return Err(EndpointError::Unsupported(endpoint.to_string()));
    } else {
        endpoint
    };
    if path.is_empty() {
        return Err(EndpointError::Unsupported(endpoint.to_string()));
    }
    Ok(PathBuf::from(path))
}

/// Connects a gRPC channel to the unix socket named by `endpoint`.
pub async fn connect(endpoint: &str) -> Result<Channel, EndpointError> {
    let path = socket_path(endpoint)?;
    connect_path(&path).await
}

/// Connects a gRPC channel to the unix socket at `path`.
pub async fn connect_path(path: &Path) -> Result<Channel, EndpointError> {
    let path = path.to_path_buf();
    // The URI is never dialed; the connector below always opens the socket.
    Endpoint::from_static("http://csi.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(EndpointError::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_target_syntax_and_bare_paths() {
        assert_eq!(
            socket_path("unix:///csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("unix:/csi/csi.sock").unwrap(),
            PathBuf::from("/csi/csi.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
    }

    #[test]
    fn refuses_tcp_and_empty() {
        assert!(socket_path("tcp://127.0.0.1:10000").is_err());
        assert!(socket_path("unix://").is_err());
        assert!(socket_path("").is_err());
    }
}
