//! NodeGetInfo: what the kubelet records in CSINode.

use super::prelude::*;

pub fn cases() -> Vec<Case> {
    vec![
        case!("NodeGetInfo/node-id-present", "NodeGetInfo: node_id is REQUIRED", node_id_present),
        case!("NodeGetInfo/node-id-length", "NodeGetInfo: node_id SHALL NOT exceed 256 bytes", node_id_length),
        case!("NodeGetInfo/max-volumes-not-negative", "NodeGetInfo: the plugin MUST NOT set negative max_volumes_per_node", max_volumes),
        case!("NodeGetInfo/topology-needs-capability", "NodeGetInfo: a plugin that returns accessible_topology MUST also set VOLUME_ACCESSIBILITY_CONSTRAINTS", topology_needs_cap),
        case!("NodeGetInfo/stable", "NodeGetInfo: node_id uniquely identifies this node, so repeated calls agree", stable),
    ]
}

async fn info(cx: &Ctx) -> Result<v1::NodeGetInfoResponse, Stop> {
    cx.need_node_service()?;
    check::ok(
        cx.node_get_info(v1::NodeGetInfoRequest {}).await,
        "NodeGetInfo",
    )
}

async fn node_id_present(cx: Ctx) -> CaseResult {
    let info = info(&cx).await?;
    ensure!(!info.node_id.is_empty(), "node_id is empty");
    Ok(())
}

async fn node_id_length(cx: Ctx) -> CaseResult {
    let info = info(&cx).await?;
    ensure!(
        info.node_id.len() <= 256,
        "node_id is {} bytes",
        info.node_id.len()
    );
    Ok(())
}

async fn max_volumes(cx: Ctx) -> CaseResult {
    let info = info(&cx).await?;
    ensure!(
        info.max_volumes_per_node >= 0,
        "max_volumes_per_node is {}",
        info.max_volumes_per_node
    );
    Ok(())
}

async fn topology_needs_cap(cx: Ctx) -> CaseResult {
    let info = info(&cx).await?;
    let has_topology = info
        .accessible_topology
        .as_ref()
        .is_some_and(|t| !t.segments.is_empty());
    ensure!(
        !has_topology
            || cx
                .caps()
                .has_plugin(PluginService::VolumeAccessibilityConstraints),
        "accessible_topology {:?} returned without VOLUME_ACCESSIBILITY_CONSTRAINTS",
        info.accessible_topology
    );
    Ok(())
}

async fn stable(cx: Ctx) -> CaseResult {
    let first = info(&cx).await?;
    let second = info(&cx).await?;
    ensure!(first == second, "first call {first:?}, second {second:?}");
    Ok(())
}
