//! SIGTERM (what Kubernetes sends) and SIGINT (Ctrl-C) as one future.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};

/// Installs the handlers now and returns what completes when the process
/// is asked to stop. Installed before the socket exists: a SIGTERM that
/// comes as soon as the socket appears (the kubelet, a test, an operator)
/// must find the handler and not the default action, which kills the
/// process and leaves the socket behind.
pub fn terminated() -> impl Future<Output = ()> {
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
