//! Startup, serving and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cairn_proto::v1::controller_server::ControllerServer;
use cairn_proto::v1::identity_server::IdentityServer;
use cairn_proto::v1::node_server::NodeServer;
use tokio::net::UnixListener;
use tonic::codegen::http;

use crate::backend::Backends;
use crate::cli::ServeArgs;
use crate::controller::ControllerService;
use crate::driver::{check_driver_name, Driver};
use crate::identity::IdentityService;
use crate::ids::NodeId;
use crate::locks::KeyedLocks;
use crate::mounter::RealMounter;
use crate::node::{NodeContext, NodeService};
use crate::paths::KubeletDir;
use crate::published::PublishedRecords;
use crate::staged::StagedRecords;
use crate::{connections, health, rpc, signal, socket};

/// Builds the driver from flags, failing with what to fix. Runs inside the
/// async runtime (the NFS backend keeps a handle to it).
pub fn build(args: &ServeArgs) -> anyhow::Result<Driver> {
    check_driver_name(&args.driver_name).map_err(anyhow::Error::msg)?;
    let node = match &args.node_id {
        Some(id) => Some(NodeId::parse(id).context("--node-id")?),
        None if args.mode.serves_node() => {
            bail!("--node-id (or NODE_ID) is required to serve the node service")
        }
        // Backends bound to a node say so when they are opened.
        None => None,
    };
    if args.max_volumes_per_node < 0 {
        bail!("--max-volumes-per-node must be 0 (no limit) or more");
    }
    let backends = Backends::open(args, node.as_ref())?;
    if backends.is_empty() {
        bail!("--backends names no backend to serve");
    }
    // What a crash left behind on the node (loop devices) is the node
    // plugin's to clear: a controller-only process would race its stages.
    // Failing to check is logged, not fatal: mount volumes still work.
    if args.mode.serves_node() {
        for backend in backends.iter() {
            if let Err(e) = backend.recover_node() {
                tracing::warn!(backend = %backend.kind(), error = %e, "could not recover node state");
            }
        }
    }
    let node_context = if args.mode.serves_node() {
        // Checked above: the node service is not served without a node id.
        let node = node
            .clone()
            .context("--node-id is required by the node service")?;
        Some(Arc::new(node_context(args, node)?))
    } else {
        None
    };
    Ok(Driver {
        name: args.driver_name.clone(),
        mode: args.mode,
        node,
        backends,
        node_context,
        max_volumes_per_node: args.max_volumes_per_node,
        locks: KeyedLocks::default(),
    })
}

/// What the node service works with: the kubelet dir, and the node
/// plugin's own directory beside its socket (kept across restarts) for its
/// records.
fn node_context(args: &ServeArgs, node: NodeId) -> anyhow::Result<NodeContext> {
    let kubelet = KubeletDir::open(&args.kubelet_dir).with_context(|| {
        format!(
            "--kubelet-dir {} is not an accessible directory",
            args.kubelet_dir.display()
        )
    })?;
    let own = kubelet.real().join("plugins").join(&args.driver_name);
    let unwritable = |dir: &std::path::Path| {
        format!(
            "cannot create {}: is --kubelet-dir writable?",
            dir.display()
        )
    };
    let staged_dir = own.join("staged");
    let published_dir = own.join("published");
    Ok(NodeContext {
        node,
        staged: StagedRecords::open(staged_dir.clone()).with_context(|| unwritable(&staged_dir))?,
        published: PublishedRecords::open(published_dir.clone())
            .with_context(|| unwritable(&published_dir))?,
        kubelet,
        mounter: Arc::new(RealMounter),
    })
}

/// A request body that is not the method's protobuf message is the
/// caller's error: tonic answers it INTERNAL ("failed to decode Protobuf
/// message") before any handler runs; the spec's code for a malformed
/// request is INVALID_ARGUMENT. The status travels in the response headers
/// (a trailers-only response), where this rewrites it.
fn undecodable_requests_are_invalid_arguments(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let internal = headers
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == b"13");
    let undecodable = headers.get("grpc-message").is_some_and(|message| {
        let message = message.as_bytes();
        message.starts_with(b"failed to decode Protobuf message")
            || message.starts_with(b"failed%20to%20decode%20Protobuf%20message")
    });
    if internal && undecodable {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
    response
}

/// Serves `driver` on `listener` until `shutdown` completes, then lets
/// in-flight calls finish for at most `drain`. Idle connections (the
/// kubelet keeps one open) do not delay the exit.
pub async fn serve(
    driver: Arc<Driver>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> anyhow::Result<()> {
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: no new calls accepted");
        let _ = stopping_tx.send(());
    };
    let mut router = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            undecodable_requests_are_invalid_arguments,
        ))
        .add_service(IdentityServer::new(IdentityService(driver.clone())));
    if driver.mode.serves_controller() {
        router = router.add_service(ControllerServer::new(ControllerService(driver.clone())));
    }
    if let Some(node) = driver.node_context.clone() {
        router = router.add_service(NodeServer::new(NodeService::new(driver.clone(), node)));
    }
    let incoming = connections::accept(listener, connections::Limits::for_this_process());
    let server = router.serve_with_incoming_shutdown(incoming, shutdown);
    tokio::pin!(server);
    let drained = async {
        if stopping_rx.await.is_err() {
            return std::future::pending::<()>().await;
        }
        tokio::select! {
            () = rpc::all_finished() => tracing::info!("in-flight calls finished"),
            () = tokio::time::sleep(drain) => {
                tracing::warn!(?drain, "in-flight calls did not finish in time; exiting anyway")
            }
        }
    };
    tokio::select! {
        result = &mut server => result.context("serving gRPC")?,
        () = drained => {}
    }
    Ok(())
}

/// The whole life of `cairn-csi serve`.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // Before anything can be seen from outside (see `signal::terminated`).
    let terminated = signal::terminated();
    let driver = Arc::new(build(&args)?);
    // Health first: once the CSI socket exists (what the kubelet, the
    // probes and the tests wait for), /healthz and /metrics answer too.
    let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
    let health = match args.health_address {
        Some(address) => {
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("--health-address: cannot listen on {address}"))?;
            tracing::info!(%address, "serving /healthz and /metrics");
            let stopped = async {
                let _ = health_stopped.await;
            };
            Some(tokio::spawn(health::serve(
                listener,
                driver.clone(),
                stopped,
            )))
        }
        None => None,
    };
    let path = cairn_proto::endpoint::socket_path(&args.endpoint)
        .map_err(|e| anyhow::anyhow!("--endpoint: {e}"))?;
    let listener = socket::bind(&path)
        .with_context(|| format!("--endpoint: cannot listen on {}", path.display()))?;
    let listener = UnixListener::from_std(listener).context("registering the socket")?;
    tracing::info!(
        endpoint = %path.display(),
        mode = ?args.mode,
        node = ?driver.node.as_ref().map(|n| n.to_string()),
        driver = %driver.name,
        version = env!("CARGO_PKG_VERSION"),
        startup_ms = started.elapsed().as_secs_f64() * 1000.0,
        "serving"
    );
    let backends = driver.backends.clone();
    let result = serve(
        driver,
        listener,
        terminated,
        Duration::from_secs(args.shutdown_timeout),
    )
    .await;
    // Work still running (a long full-copy snapshot) would hold up the exit.
    for backend in backends.iter() {
        backend.shut_down();
    }
    let _ = stop_health.send(());
    if let Some(health) = health {
        match health.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "health listener failed"),
            Err(e) => tracing::warn!(error = %e, "health listener task failed"),
        }
    }
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(error = %e, path = %path.display(), "could not remove the socket");
    }
    tracing::info!("stopped");
    result
}
