//! The optional HTTP listener for operators: `/healthz` for liveness
//! checks, `/readyz` for readiness and `/metrics` in Prometheus text format.
//! Off unless `--health-address` is given; CSI itself is only ever served on
//! the socket.
//!
//! `/readyz` exists for one case a cluster otherwise hides: a node whose
//! local root would refuse every new volume (no enforcing project quotas
//! under `--unenforced-capacity=refuse`) reports a capacity of 0, and all
//! the user sees is the scheduler's "did not have enough free storage". A
//! readiness probe on `/readyz` turns that into a node pod that is not
//! ready, which `kubectl get pods` and `kubectl rollout status` show, and
//! the gauge `cairn_local_maximum_volume_bytes` lets an alert say which node.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::backend::Backend;
use crate::driver::Driver;
use crate::metrics::{self, BackendLabels, MountLabels};
use crate::rpc::blocking;

pub fn router(driver: Arc<Driver>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(driver)
}

pub async fn serve(
    listener: TcpListener,
    driver: Arc<Driver>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(driver))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(driver): State<Arc<Driver>>) -> impl IntoResponse {
    let local = driver.backends.local.clone();
    let ready = match local {
        Some(local) => blocking(move || local.ready()).await,
        None => Ok(()),
    };
    match ready {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

/// Ready when the local root is usable and could take a new volume: the
/// same `maximum_volume_size` GetCapacity reports (and the scheduler sees
/// through CSIStorageCapacity) is not 0. Without the local backend, as
/// `/healthz`.
async fn readyz(State(driver): State<Arc<Driver>>) -> impl IntoResponse {
    let Some(local) = driver.backends.local.clone() else {
        return (StatusCode::OK, "ok\n".to_string());
    };
    let maximum = blocking(move || {
        local.ready()?;
        local.maximum_volume_bytes(&BTreeMap::new(), &[])
    })
    .await;
    match maximum.map_err(|e| e.to_string()).and_then(readiness) {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Whether a node whose local volumes can be at most `maximum` bytes is
/// ready; the refusal says what to look for.
fn readiness(maximum: Option<u64>) -> Result<(), String> {
    if maximum == Some(0) {
        return Err(
            "this node accepts no new local volume (GetCapacity reports 0): its local root \
             cannot enforce volume sizes and --unenforced-capacity=refuse is set (the startup \
             log line \"cannot enforce volume sizes\" or \"does not enforce them\" says why), \
             or with --overcommit=false everything is already promised"
                .to_string(),
        );
    }
    Ok(())
}

async fn scrape(State(driver): State<Arc<Driver>>) -> impl IntoResponse {
    let counted = blocking(move || {
        let Some(local) = &driver.backends.local else {
            return Ok((0, Default::default(), None));
        };
        let volumes = local.count()?;
        let mounts = match &driver.node_context {
            Some(node) => local.count_mounts(node.kubelet.real())?,
            None => Default::default(),
        };
        let maximum = local.maximum_volume_bytes(&BTreeMap::new(), &[])?;
        Ok((volumes, mounts, maximum))
    })
    .await;
    let metrics = metrics::global();
    match counted {
        Ok((volumes, mounts, maximum)) => {
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            metrics
                .volumes
                .get_or_create(&BackendLabels { backend: "local" })
                .set(gauge(volumes));
            if let Some(maximum) = maximum {
                metrics
                    .local_maximum_volume_bytes
                    .set(i64::try_from(maximum).unwrap_or(i64::MAX));
            }
            for (kind, n) in [("staging", mounts.staging), ("publish", mounts.publish)] {
                metrics
                    .mounts
                    .get_or_create(&MountLabels { kind })
                    .set(gauge(n));
            }
        }
        Err(e) => tracing::warn!(error = %e, "counting volumes and mounts for /metrics"),
    }
    match metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::readiness;

    #[test]
    fn a_node_that_takes_no_local_volume_is_not_ready_and_says_why() {
        let why = readiness(Some(0)).unwrap_err();
        assert!(why.contains("--unenforced-capacity=refuse"), "{why}");
        assert!(why.contains("cannot enforce volume sizes"), "{why}");
        assert_eq!(readiness(Some(1 << 30)), Ok(()));
        assert_eq!(readiness(None), Ok(()));
    }
}
