//! `cairn-csi client snapshot ...`: CreateSnapshot, DeleteSnapshot,
//! ListSnapshots and GetSnapshot, and the content source of
//! `volume create --from-snapshot/--from-volume`.

use std::time::Duration;

use cairn_proto::v1::controller_client::ControllerClient;
use cairn_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use cairn_proto::v1::*;
use clap::Subcommand;
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::render::capacity_text;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// CreateSnapshot of a volume.
    Create {
        name: String,
        source_volume_id: String,
        /// VolumeSnapshotClass parameter key=value (repeatable).
        #[arg(long = "param", value_parser = super::parse_key_value)]
        params: Vec<(String, String)>,
        /// Repeat the call every second until the snapshot is ready to use,
        /// as the external-snapshotter does (bounded by --timeout).
        #[arg(long)]
        wait: bool,
    },
    /// DeleteSnapshot.
    Delete { snapshot_id: String },
    /// GetSnapshot.
    Get { snapshot_id: String },
    /// ListSnapshots, following every page.
    List {
        /// Only this volume's snapshots.
        #[arg(long, value_name = "VOLUME_ID")]
        source: Option<String>,
        /// Only this snapshot.
        #[arg(long)]
        snapshot_id: Option<String>,
        /// Page size asked of the driver (0: the driver decides).
        #[arg(long, default_value_t = 0)]
        page_size: i32,
    },
}

/// A CreateVolume content source from `--from-snapshot` / `--from-volume`.
pub fn content_source(
    from_snapshot: Option<String>,
    from_volume: Option<String>,
) -> Option<VolumeContentSource> {
    let r#type = match (from_snapshot, from_volume) {
        (Some(snapshot_id), _) => SourceType::Snapshot(SnapshotSource { snapshot_id }),
        (None, Some(volume_id)) => SourceType::Volume(VolumeSource { volume_id }),
        (None, None) => return None,
    };
    Some(VolumeContentSource {
        r#type: Some(r#type),
    })
}

pub fn source_json(source: Option<&VolumeContentSource>) -> Value {
    match source.and_then(|s| s.r#type.as_ref()) {
        Some(SourceType::Snapshot(s)) => json!({"snapshot_id": s.snapshot_id}),
        Some(SourceType::Volume(v)) => json!({"volume_id": v.volume_id}),
        None => Value::Null,
    }
}

fn snapshot_json(s: &Snapshot) -> Value {
    json!({
        "snapshot_id": s.snapshot_id,
        "source_volume_id": s.source_volume_id,
        "size_bytes": s.size_bytes,
        "creation_time": s.creation_time.as_ref().map(|t| t.to_string()),
        "ready_to_use": s.ready_to_use,
    })
}

fn snapshot_line(s: &Snapshot) -> String {
    format!(
        "{:<60} {:>10}  {:<8} {:<24} source {}",
        s.snapshot_id,
        capacity_text(s.size_bytes),
        if s.ready_to_use { "ready" } else { "copying" },
        s.creation_time
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_default(),
        s.source_volume_id
    )
}

/// Runs one snapshot command; returns text for people and JSON for scripts.
pub async fn run(
    mut controller: ControllerClient<Channel>,
    command: SnapshotCommand,
) -> Result<(String, Value), tonic::Status> {
    match command {
        SnapshotCommand::Create {
            name,
            source_volume_id,
            params,
            wait,
        } => {
            let request = CreateSnapshotRequest {
                source_volume_id,
                name,
                parameters: params.into_iter().collect(),
                ..Default::default()
            };
            loop {
                let snapshot = controller
                    .create_snapshot(request.clone())
                    .await?
                    .into_inner()
                    .snapshot
                    .unwrap_or_default();
                if !wait || snapshot.ready_to_use {
                    let verb = if snapshot.ready_to_use {
                        "created"
                    } else {
                        "creating (not ready to use yet; repeat the command)"
                    };
                    return Ok((
                        format!("{verb} {}\n", snapshot_line(&snapshot)),
                        snapshot_json(&snapshot),
                    ));
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        SnapshotCommand::Delete { snapshot_id } => {
            controller
                .delete_snapshot(DeleteSnapshotRequest {
                    snapshot_id: snapshot_id.clone(),
                    secrets: Default::default(),
                })
                .await?;
            let text = format!("deleted {snapshot_id}");
            Ok((text.clone(), json!({"ok": true, "message": text})))
        }
        SnapshotCommand::Get { snapshot_id } => {
            let snapshot = controller
                .get_snapshot(GetSnapshotRequest {
                    snapshot_id,
                    secrets: Default::default(),
                })
                .await?
                .into_inner()
                .snapshot
                .unwrap_or_default();
            Ok((snapshot_line(&snapshot), snapshot_json(&snapshot)))
        }
        SnapshotCommand::List {
            source,
            snapshot_id,
            page_size,
        } => {
            let mut snapshots = Vec::new();
            let mut token = String::new();
            loop {
                let page = controller
                    .list_snapshots(ListSnapshotsRequest {
                        max_entries: page_size,
                        starting_token: token,
                        source_volume_id: source.clone().unwrap_or_default(),
                        snapshot_id: snapshot_id.clone().unwrap_or_default(),
                        secrets: Default::default(),
                    })
                    .await?
                    .into_inner();
                snapshots.extend(page.entries.into_iter().filter_map(|e| e.snapshot));
                if page.next_token.is_empty() {
                    break;
                }
                token = page.next_token;
            }
            let mut text = format!("{} snapshot(s)\n", snapshots.len());
            for s in &snapshots {
                text.push_str(&snapshot_line(s));
                text.push('\n');
            }
            Ok((
                text,
                Value::Array(snapshots.iter().map(snapshot_json).collect()),
            ))
        }
    }
}
