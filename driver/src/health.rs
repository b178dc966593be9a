//! The optional HTTP listener for operators: `/healthz` for liveness
//! checks and `/metrics` in Prometheus text format. Off unless
//! `--health-address` is given; CSI itself is only ever served on the socket.

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

async fn scrape(State(driver): State<Arc<Driver>>) -> impl IntoResponse {
    let counted = blocking(move || {
        let Some(local) = &driver.backends.local else {
            return Ok((0, Default::default()));
        };
        let volumes = local.count()?;
        let mounts = match &driver.kubelet {
            Some(kubelet) => local.count_mounts(kubelet.real())?,
            None => Default::default(),
        };
        Ok((volumes, mounts))
    })
    .await;
    let metrics = metrics::global();
    match counted {
        Ok((volumes, mounts)) => {
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            metrics
                .volumes
                .get_or_create(&BackendLabels { backend: "local" })
                .set(gauge(volumes));
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
