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

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

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
    let backends = driver.backends.clone();
    match blocking(move || backends.ready()).await {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

/// Ready when every backend is usable and could take a new volume (the
/// local root: the same `maximum_volume_size` GetCapacity reports, which
/// the scheduler sees through CSIStorageCapacity, is not 0).
async fn readyz(State(driver): State<Arc<Driver>>) -> impl IntoResponse {
    let backends = driver.backends.clone();
    let ready = blocking(move || {
        backends.ready()?;
        Ok(backends
            .iter()
            .try_for_each(|backend| backend.accepts_new_volumes()))
    })
    .await;
    match ready.map_err(|e| e.to_string()).and_then(|accepts| accepts) {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn scrape(State(driver): State<Arc<Driver>>) -> impl IntoResponse {
    let counted = blocking(move || {
        let kubelet = driver
            .node_context
            .as_ref()
            .map(|node| node.kubelet.real().to_path_buf());
        let mut censuses = Vec::new();
        for backend in driver.backends.iter() {
            if let Some(census) = backend.census(kubelet.as_deref())? {
                censuses.push((backend.kind(), census));
            }
        }
        Ok(censuses)
    })
    .await;
    let metrics = metrics::global();
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    match counted {
        Ok(censuses) => {
            let (mut staging, mut publish) = (0, 0);
            for (kind, census) in censuses {
                metrics
                    .volumes
                    .get_or_create(&BackendLabels {
                        backend: kind.as_str(),
                    })
                    .set(gauge(census.volumes));
                // Only a backend bound to this node has a maximum here.
                if let Some(maximum) = census.maximum_volume_bytes {
                    metrics
                        .local_maximum_volume_bytes
                        .set(i64::try_from(maximum).unwrap_or(i64::MAX));
                }
                staging += census.mounts.staging;
                publish += census.mounts.publish;
            }
            for (kind, n) in [("staging", staging), ("publish", publish)] {
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
