//! `cairn-csi client`: speaks CSI to any endpoint, for debugging on a node.
//! Output is for people by default and JSON with `--output json`.

mod commands;
mod render;
mod snapshot;

use clap::{Args, Subcommand, ValueEnum};

pub use commands::run;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// CSI endpoint to talk to: unix:///path/to/csi.sock or a socket path.
    #[arg(
        long,
        env = "CSI_ENDPOINT",
        default_value = "unix:///csi/csi.sock",
        global = true
    )]
    pub endpoint: String,

    /// Output format: text for people, json for scripts.
    #[arg(long, short, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,

    /// Seconds to wait for each call.
    #[arg(long, default_value_t = 30, global = true)]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: ClientCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Plugin name, version, capabilities and readiness (Identity service).
    Info,
    /// Controller and node capabilities.
    Capabilities,
    /// Controller calls on volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Node calls, as the kubelet makes them.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Controller calls on snapshots.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
}

/// Access modes, named as in the CSI spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessModeArg {
    SingleNodeWriter,
    SingleNodeReaderOnly,
    SingleNodeSingleWriter,
    SingleNodeMultiWriter,
    MultiNodeReaderOnly,
    MultiNodeSingleWriter,
    MultiNodeMultiWriter,
}

#[derive(Debug, Args)]
pub struct CapabilityArgs {
    /// Access mode requested.
    #[arg(long, value_enum, default_value_t = AccessModeArg::SingleNodeWriter)]
    pub access_mode: AccessModeArg,
    /// Mount flag (repeatable), like a StorageClass's mountOptions.
    #[arg(long = "mount-flag")]
    pub mount_flags: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// CreateVolume.
    Create {
        name: String,
        /// Requested size, e.g. 1Gi (omit for the driver's default).
        #[arg(long, value_parser = crate::capacity::parse_quantity)]
        size: Option<u64>,
        /// StorageClass parameter key=value (repeatable).
        #[arg(long = "param", value_parser = parse_key_value)]
        params: Vec<(String, String)>,
        #[command(flatten)]
        capability: CapabilityArgs,
        /// Fill the volume from this snapshot (restore).
        #[arg(long, value_name = "SNAPSHOT_ID", conflicts_with = "from_volume")]
        from_snapshot: Option<String>,
        /// Fill the volume from this volume (clone).
        #[arg(long, value_name = "VOLUME_ID")]
        from_volume: Option<String>,
    },
    /// DeleteVolume.
    Delete { volume_id: String },
    /// ControllerGetVolume.
    Get { volume_id: String },
    /// ListVolumes, following every page.
    List {
        /// Page size asked of the driver (0: the driver decides).
        #[arg(long, default_value_t = 0)]
        page_size: i32,
    },
    /// ControllerExpandVolume.
    Expand {
        volume_id: String,
        /// The new size, e.g. 2Gi.
        #[arg(long, value_parser = crate::capacity::parse_quantity)]
        size: u64,
    },
    /// GetCapacity.
    Capacity {
        #[arg(long = "param", value_parser = parse_key_value)]
        params: Vec<(String, String)>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// NodeGetInfo.
    Info,
    /// NodeStageVolume.
    Stage {
        volume_id: String,
        staging_path: String,
        #[command(flatten)]
        capability: CapabilityArgs,
    },
    /// NodeUnstageVolume.
    Unstage {
        volume_id: String,
        staging_path: String,
    },
    /// NodePublishVolume.
    Publish {
        volume_id: String,
        target_path: String,
        /// The staging path the volume was staged at.
        #[arg(long)]
        staging_path: String,
        #[arg(long)]
        readonly: bool,
        #[command(flatten)]
        capability: CapabilityArgs,
    },
    /// NodeUnpublishVolume.
    Unpublish {
        volume_id: String,
        target_path: String,
    },
    /// NodeGetVolumeStats.
    Stats {
        volume_id: String,
        volume_path: String,
    },
    /// NodeExpandVolume, at the volume's staging or target path.
    Expand {
        volume_id: String,
        volume_path: String,
        /// The size the volume was expanded to (omit: whatever it is).
        #[arg(long, value_parser = crate::capacity::parse_quantity)]
        size: Option<u64>,
    },
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    if key.is_empty() {
        return Err(format!("{text:?} has an empty key"));
    }
    Ok((key.to_string(), value.to_string()))
}
