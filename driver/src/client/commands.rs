//! One function per client command: build the request, call, render.

use std::time::Duration;

use anyhow::Context;
use cairn_proto::v1::controller_client::ControllerClient;
use cairn_proto::v1::identity_client::IdentityClient;
use cairn_proto::v1::node_client::NodeClient;
use cairn_proto::v1::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use cairn_proto::v1::*;
use serde_json::{json, Value};
use tonic::transport::Channel;

use super::render;
use super::{
    AccessModeArg, CapabilityArgs, ClientArgs, ClientCommand, NodeCommand, Output, VolumeCommand,
};

/// What a command prints: lines for people, a document for scripts.
struct Printed {
    text: String,
    json: Value,
}

/// Runs one client command; errors carry the gRPC code and message.
pub async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let channel = cairn_proto::endpoint::connect(&args.endpoint)
        .await
        .with_context(|| format!("endpoint {}", args.endpoint))?;
    let call = dispatch(channel, args.command);
    let printed = tokio::time::timeout(Duration::from_secs(args.timeout), call)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {} s", args.timeout))?
        .map_err(|status| {
            anyhow::anyhow!(
                "{}: {}",
                crate::rpc::code_name(status.code()),
                status.message()
            )
        })?;
    match args.output {
        Output::Text => println!("{}", printed.text.trim_end()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&printed.json)?),
    }
    Ok(())
}

async fn dispatch(channel: Channel, command: ClientCommand) -> Result<Printed, tonic::Status> {
    match command {
        ClientCommand::Info => info(IdentityClient::new(channel)).await,
        ClientCommand::Capabilities => capabilities(channel).await,
        ClientCommand::Volume(cmd) => volume(ControllerClient::new(channel), cmd).await,
        ClientCommand::Node(cmd) => node(NodeClient::new(channel), cmd).await,
        ClientCommand::Snapshot(cmd) => super::snapshot::run(ControllerClient::new(channel), cmd)
            .await
            .map(|(text, json)| Printed { text, json }),
    }
}

fn capability(args: &CapabilityArgs) -> VolumeCapability {
    let mode = match args.access_mode {
        AccessModeArg::SingleNodeWriter => Mode::SingleNodeWriter,
        AccessModeArg::SingleNodeReaderOnly => Mode::SingleNodeReaderOnly,
        AccessModeArg::SingleNodeSingleWriter => Mode::SingleNodeSingleWriter,
        AccessModeArg::SingleNodeMultiWriter => Mode::SingleNodeMultiWriter,
        AccessModeArg::MultiNodeReaderOnly => Mode::MultiNodeReaderOnly,
        AccessModeArg::MultiNodeSingleWriter => Mode::MultiNodeSingleWriter,
        AccessModeArg::MultiNodeMultiWriter => Mode::MultiNodeMultiWriter,
    };
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            mount_flags: args.mount_flags.clone(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn done(what: String) -> Printed {
    Printed {
        json: json!({"ok": true, "message": what}),
        text: what,
    }
}

async fn info(mut identity: IdentityClient<Channel>) -> Result<Printed, tonic::Status> {
    let info = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await?
        .into_inner();
    let caps = identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await?
        .into_inner();
    let probe = identity.probe(ProbeRequest {}).await?.into_inner();
    let names = render::plugin_capability_names(&caps.capabilities);
    let ready = probe.ready.unwrap_or(true);
    Ok(Printed {
        text: format!(
            "name:         {}\nversion:      {}\nready:        {ready}\ncapabilities: {}\n",
            info.name,
            info.vendor_version,
            names.join(", ")
        ),
        json: json!({
            "name": info.name,
            "vendor_version": info.vendor_version,
            "manifest": info.manifest,
            "ready": ready,
            "capabilities": names,
        }),
    })
}

async fn capabilities(channel: Channel) -> Result<Printed, tonic::Status> {
    let mut controller = ControllerClient::new(channel.clone());
    let mut node = NodeClient::new(channel);
    // A node-only or controller-only driver answers Unimplemented for the other.
    let controller_caps = match controller
        .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
        .await
    {
        Ok(r) => Some(render::controller_capability_names(
            &r.into_inner().capabilities,
        )),
        Err(s) if s.code() == tonic::Code::Unimplemented => None,
        Err(s) => return Err(s),
    };
    let node_caps = match node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
    {
        Ok(r) => Some(render::node_capability_names(&r.into_inner().capabilities)),
        Err(s) if s.code() == tonic::Code::Unimplemented => None,
        Err(s) => return Err(s),
    };
    let line = |caps: &Option<Vec<String>>| {
        caps.as_ref()
            .map_or("(service not served)".to_string(), |c| c.join(", "))
    };
    Ok(Printed {
        text: format!(
            "controller: {}\nnode:       {}\n",
            line(&controller_caps),
            line(&node_caps)
        ),
        json: json!({"controller": controller_caps, "node": node_caps}),
    })
}

async fn volume(
    mut controller: ControllerClient<Channel>,
    command: VolumeCommand,
) -> Result<Printed, tonic::Status> {
    match command {
        VolumeCommand::Create {
            name,
            size,
            params,
            capability: cap,
            from_snapshot,
            from_volume,
        } => {
            let source = super::snapshot::content_source(from_snapshot, from_volume);
            let request = CreateVolumeRequest {
                name,
                capacity_range: size.map(|bytes| CapacityRange {
                    required_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![capability(&cap)],
                parameters: params.into_iter().collect(),
                volume_content_source: source,
                ..Default::default()
            };
            let volume = controller
                .create_volume(request)
                .await?
                .into_inner()
                .volume
                .unwrap_or_default();
            Ok(Printed {
                text: format!(
                    "created {} ({})\n",
                    volume.volume_id,
                    render::capacity_text(volume.capacity_bytes)
                ),
                json: render::volume(&volume),
            })
        }
        VolumeCommand::Delete { volume_id } => {
            controller
                .delete_volume(DeleteVolumeRequest {
                    volume_id: volume_id.clone(),
                    secrets: Default::default(),
                })
                .await?;
            Ok(done(format!("deleted {volume_id}")))
        }
        VolumeCommand::Get { volume_id } => {
            let got = controller
                .controller_get_volume(ControllerGetVolumeRequest { volume_id })
                .await?
                .into_inner();
            let volume = got.volume.unwrap_or_default();
            let condition = got.status.and_then(|s| s.volume_condition);
            let mut json = render::volume(&volume);
            json["condition"] = render::condition(condition.as_ref());
            Ok(Printed {
                text: render::volume_line(&volume, condition.as_ref()),
                json,
            })
        }
        VolumeCommand::List { page_size } => {
            let mut entries = Vec::new();
            let mut token = String::new();
            loop {
                let page = controller
                    .list_volumes(ListVolumesRequest {
                        max_entries: page_size,
                        starting_token: token,
                    })
                    .await?
                    .into_inner();
                entries.extend(page.entries);
                if page.next_token.is_empty() {
                    break;
                }
                token = page.next_token;
            }
            let mut text = format!("{} volume(s)\n", entries.len());
            let mut json = Vec::new();
            for entry in &entries {
                let volume = entry.volume.clone().unwrap_or_default();
                let condition = entry
                    .status
                    .as_ref()
                    .and_then(|s| s.volume_condition.as_ref());
                text.push_str(&render::volume_line(&volume, condition));
                text.push('\n');
                let mut v = render::volume(&volume);
                v["condition"] = render::condition(condition);
                json.push(v);
            }
            Ok(Printed {
                text,
                json: Value::Array(json),
            })
        }
        VolumeCommand::Expand { volume_id, size } => {
            let expanded = controller
                .controller_expand_volume(ControllerExpandVolumeRequest {
                    volume_id: volume_id.clone(),
                    capacity_range: Some(CapacityRange {
                        required_bytes: i64::try_from(size).unwrap_or(i64::MAX),
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(Printed {
                text: format!(
                    "expanded {volume_id} to {}{}\n",
                    render::capacity_text(expanded.capacity_bytes),
                    if expanded.node_expansion_required {
                        " (NodeExpandVolume required)"
                    } else {
                        ""
                    }
                ),
                json: json!({
                    "volume_id": volume_id,
                    "capacity_bytes": expanded.capacity_bytes,
                    "node_expansion_required": expanded.node_expansion_required,
                }),
            })
        }
        VolumeCommand::Capacity { params } => {
            let capacity = controller
                .get_capacity(GetCapacityRequest {
                    parameters: params.into_iter().collect(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let maximum = capacity
                .maximum_volume_size
                .map_or("-".to_string(), render::capacity_text);
            Ok(Printed {
                text: format!(
                    "available: {}\nmaximum volume: {maximum}\n",
                    render::capacity_text(capacity.available_capacity)
                ),
                json: json!({
                    "available_capacity": capacity.available_capacity,
                    "maximum_volume_size": capacity.maximum_volume_size,
                    "minimum_volume_size": capacity.minimum_volume_size,
                }),
            })
        }
    }
}

async fn node(
    mut node: NodeClient<Channel>,
    command: NodeCommand,
) -> Result<Printed, tonic::Status> {
    match command {
        NodeCommand::Info => {
            let info = node
                .node_get_info(NodeGetInfoRequest {})
                .await?
                .into_inner();
            let topology = info
                .accessible_topology
                .map(|t| {
                    t.segments
                        .into_iter()
                        .collect::<std::collections::BTreeMap<_, _>>()
                })
                .unwrap_or_default();
            Ok(Printed {
                text: format!(
                    "node id:              {}\nmax volumes per node: {}\ntopology:             {:?}\n",
                    info.node_id, info.max_volumes_per_node, topology
                ),
                json: json!({
                    "node_id": info.node_id,
                    "max_volumes_per_node": info.max_volumes_per_node,
                    "accessible_topology": topology,
                }),
            })
        }
        NodeCommand::Stage {
            volume_id,
            staging_path,
            capability: cap,
        } => {
            node.node_stage_volume(NodeStageVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging_path.clone(),
                volume_capability: Some(capability(&cap)),
                ..Default::default()
            })
            .await?;
            Ok(done(format!("staged {volume_id} at {staging_path}")))
        }
        NodeCommand::Unstage {
            volume_id,
            staging_path,
        } => {
            node.node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging_path.clone(),
            })
            .await?;
            Ok(done(format!("unstaged {volume_id} from {staging_path}")))
        }
        NodeCommand::Publish {
            volume_id,
            target_path,
            staging_path,
            readonly,
            capability: cap,
        } => {
            node.node_publish_volume(NodePublishVolumeRequest {
                volume_id: volume_id.clone(),
                staging_target_path: staging_path,
                target_path: target_path.clone(),
                volume_capability: Some(capability(&cap)),
                readonly,
                ..Default::default()
            })
            .await?;
            Ok(done(format!(
                "published {volume_id} at {target_path}{}",
                if readonly { " (read-only)" } else { "" }
            )))
        }
        NodeCommand::Unpublish {
            volume_id,
            target_path,
        } => {
            node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume_id.clone(),
                target_path: target_path.clone(),
            })
            .await?;
            Ok(done(format!("unpublished {volume_id} from {target_path}")))
        }
        NodeCommand::Expand {
            volume_id,
            volume_path,
            size,
        } => {
            let expanded = node
                .node_expand_volume(NodeExpandVolumeRequest {
                    volume_id: volume_id.clone(),
                    volume_path: volume_path.clone(),
                    capacity_range: size.map(|bytes| CapacityRange {
                        required_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
                        limit_bytes: 0,
                    }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok(Printed {
                text: format!(
                    "node-expanded {volume_id} at {volume_path}: {}\n",
                    render::capacity_text(expanded.capacity_bytes)
                ),
                json: json!({
                    "volume_id": volume_id,
                    "capacity_bytes": expanded.capacity_bytes,
                }),
            })
        }
        NodeCommand::Stats {
            volume_id,
            volume_path,
        } => {
            let stats = node
                .node_get_volume_stats(NodeGetVolumeStatsRequest {
                    volume_id,
                    volume_path,
                    staging_target_path: String::new(),
                })
                .await?
                .into_inner();
            let mut text = String::new();
            for u in &stats.usage {
                let unit =
                    volume_usage::Unit::try_from(u.unit).unwrap_or(volume_usage::Unit::Unknown);
                let show = |n: i64| match unit {
                    volume_usage::Unit::Bytes => render::capacity_text(n),
                    _ => n.to_string(),
                };
                text.push_str(&format!(
                    "{:<7} used {} of {} ({} available)\n",
                    unit.as_str_name().to_lowercase(),
                    show(u.used),
                    show(u.total),
                    show(u.available)
                ));
            }
            if let Some(c) = &stats.volume_condition {
                text.push_str(&format!(
                    "condition: {}\n",
                    if c.abnormal {
                        format!("ABNORMAL: {}", c.message)
                    } else {
                        "healthy".into()
                    }
                ));
            }
            Ok(Printed {
                text,
                json: json!({
                    "usage": stats.usage.iter().map(render::usage).collect::<Vec<_>>(),
                    "condition": render::condition(stats.volume_condition.as_ref()),
                }),
            })
        }
    }
}
