//! Command-line flags. Every flag can also come from the environment, so a
//! DaemonSet can pass `NODE_ID` from the downward API.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::backend::local::UnenforcedCapacity;
use crate::backend::BackendKind;
use crate::capacity::parse_quantity;
use crate::driver::Mode;

#[derive(Debug, Parser)]
#[command(
    name = "cairn-csi",
    version,
    about = "Cairn: a CSI driver for local and NFS volumes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the CSI Identity, Controller and Node services on a unix socket.
    Serve(ServeArgs),
    /// Speak CSI to an endpoint (any driver's), for debugging on a node.
    Client(crate::client::ClientArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// CSI endpoint: unix:///path/to/csi.sock or a bare socket path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,

    /// This node's name (Kubernetes spec.nodeName); local volumes are created on it.
    /// Required unless only the NFS controller is served.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// Kinds of volumes to serve, comma-separated: local, nfs.
    #[arg(
        long,
        env = "CAIRN_BACKENDS",
        value_enum,
        value_delimiter = ',',
        default_value = "local,nfs"
    )]
    pub backends: Vec<BackendKind>,

    /// CSI driver name reported by GetPluginInfo; must match the CSIDriver object.
    #[arg(long, env = "CSI_DRIVER_NAME", default_value = "cairn.csi.io")]
    pub driver_name: String,

    /// Which services to serve: controller, node, or all.
    #[arg(long, env = "CAIRN_MODE", value_enum, default_value_t = Mode::All)]
    pub mode: Mode,

    /// Directory local volumes live under (must exist when local volumes are served).
    #[arg(long, env = "CAIRN_LOCAL_ROOT", default_value = "/var/lib/cairn")]
    pub local_root: PathBuf,

    /// The kubelet's root directory; staging and target paths outside it are refused.
    #[arg(long, env = "KUBELET_DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: PathBuf,

    /// Log format: text for people, json for log pipelines. Level from RUST_LOG (default info).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Size of a volume whose request gives no capacity (e.g. 1Gi, 512Mi).
    #[arg(long, env = "CAIRN_DEFAULT_VOLUME_SIZE", default_value = "1Gi", value_parser = parse_quantity)]
    pub default_volume_size: u64,

    /// What CreateVolume does when the local root cannot enforce volume sizes
    /// (no project quotas): refuse, or allow volumes whose size is recorded
    /// but not enforced (a warning is logged for each).
    #[arg(long, env = "CAIRN_UNENFORCED_CAPACITY", value_enum, default_value_t = UnenforcedCapacity::Refuse)]
    pub unenforced_capacity: UnenforcedCapacity,

    /// Whether local volumes may together be promised more than the local
    /// root's filesystem holds. false: GetCapacity reports what is not yet
    /// promised and CreateVolume refuses a volume that does not fit.
    #[arg(long, env = "CAIRN_OVERCOMMIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub overcommit: bool,

    /// Most volumes the kubelet may place on this node (0: no limit).
    #[arg(long, env = "CAIRN_MAX_VOLUMES_PER_NODE", default_value_t = 0)]
    pub max_volumes_per_node: i64,

    /// Seconds to let in-flight calls finish after SIGTERM before exiting.
    #[arg(long, env = "CAIRN_SHUTDOWN_TIMEOUT", default_value_t = 10)]
    pub shutdown_timeout: u64,

    /// Seconds an NFS operation (controller call or kernel mount) may take before it fails.
    #[arg(long, env = "CAIRN_NFS_TIMEOUT", default_value_t = 30)]
    pub nfs_timeout: u64,

    /// Address for the HTTP /healthz and /metrics listener, e.g. 127.0.0.1:9809 (off when unset).
    #[arg(long, env = "CAIRN_HEALTH_ADDRESS")]
    pub health_address: Option<std::net::SocketAddr>,

    /// Most threads doing filesystem and mount work at once.
    #[arg(long, env = "CAIRN_IO_THREADS", default_value_t = 8)]
    pub io_threads: usize,
}
