//! Volume expansion: ControllerExpandVolume and NodeExpandVolume.

use super::prelude::*;
use crate::caps::Expansion;

pub fn cases() -> Vec<Case> {
    vec![
        case!("ControllerExpandVolume/no-id", "ControllerExpandVolume: volume_id is REQUIRED → 3 INVALID_ARGUMENT", no_id),
        case!("ControllerExpandVolume/no-capacity", "ControllerExpandVolume: capacity_range is REQUIRED → 3 INVALID_ARGUMENT", no_capacity),
        case!("ControllerExpandVolume/unknown-id", "ControllerExpandVolume: volume does not exist → 5 NOT_FOUND", unknown_id),
        case!("ControllerExpandVolume/never-issued-id", "ControllerExpandVolume: an id the plugin never issued names no volume → 5 NOT_FOUND", never_issued),
        case!("ControllerExpandVolume/grows", "ControllerExpandVolume: the returned capacity_bytes is at least the new required_bytes", grows),
        case!("ControllerExpandVolume/twice", "ControllerExpandVolume: MUST be idempotent; already at the requested size → 0 OK", twice),
        case!("NodeExpandVolume/no-id", "NodeExpandVolume: volume_id is REQUIRED → 3 INVALID_ARGUMENT", node_no_id),
        case!("NodeExpandVolume/no-path", "NodeExpandVolume: volume_path is REQUIRED → 3 INVALID_ARGUMENT", node_no_path),
        case!("NodeExpandVolume/unknown-volume", "NodeExpandVolume: volume does not exist → 5 NOT_FOUND", node_unknown),
        case!("NodeExpandVolume/never-issued-volume", "NodeExpandVolume: an id the plugin never issued names no volume → 5 NOT_FOUND", node_never_issued),
        case!("VolumeExpansion/plugin-capability-consistent", "GetPluginCapabilities: a plugin with VolumeExpansion MUST implement EXPAND_VOLUME on the controller or the node or both", consistent),
    ]
}

fn expand_req(id: &str, bytes: i64) -> v1::ControllerExpandVolumeRequest {
    v1::ControllerExpandVolumeRequest {
        volume_id: id.to_string(),
        capacity_range: fixtures::range(bytes, 0),
        volume_capability: Some(fixtures::single_writer()),
        ..Default::default()
    }
}

fn need(cx: &Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::ExpandVolume)
}

async fn no_id(cx: Ctx) -> CaseResult {
    need(&cx)?;
    check::invalid_argument(
        cx.controller_expand_volume(expand_req("", cx.size() * 2))
            .await,
    )
}

async fn no_capacity(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let volume = cx.new_volume().await?;
    let mut req = expand_req(&volume.volume_id, 0);
    req.capacity_range = None;
    check::invalid_argument(cx.controller_expand_volume(req).await)
}

async fn unknown_id(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let gone = cx.deleted_volume_id().await?;
    check::not_found(
        cx.controller_expand_volume(expand_req(&gone, cx.size() * 2))
            .await,
    )
}

async fn grows(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let volume = cx.new_volume().await?;
    let bigger = cx.size() * 2;
    let resp = check::ok(
        cx.controller_expand_volume(expand_req(&volume.volume_id, bigger))
            .await,
        "ControllerExpandVolume",
    )?;
    ensure!(
        resp.capacity_bytes >= bigger,
        "asked for {bigger} bytes, got {}",
        resp.capacity_bytes
    );
    Ok(())
}

async fn twice(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let volume = cx.new_volume().await?;
    let bigger = cx.size() * 2;
    for which in ["first expand", "second expand"] {
        check::ok(
            cx.controller_expand_volume(expand_req(&volume.volume_id, bigger))
                .await,
            which,
        )?;
    }
    Ok(())
}

fn node_req(id: &str, path: &str, bytes: i64) -> v1::NodeExpandVolumeRequest {
    v1::NodeExpandVolumeRequest {
        volume_id: id.to_string(),
        volume_path: path.to_string(),
        capacity_range: fixtures::range(bytes, 0),
        volume_capability: Some(fixtures::single_writer()),
        ..Default::default()
    }
}

async fn node_no_id(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::ExpandVolume)?;
    let target = cx.target_path(0)?;
    check::invalid_argument(
        cx.node_expand_volume(node_req("", &target, cx.size() * 2))
            .await,
    )
}

async fn node_no_path(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::ExpandVolume)?;
    cx.need_node_volume()?;
    let volume = cx.new_volume().await?;
    check::invalid_argument(
        cx.node_expand_volume(node_req(&volume.volume_id, "", cx.size() * 2))
            .await,
    )
}

async fn node_unknown(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::ExpandVolume)?;
    cx.need_node_volume()?;
    let gone = cx.deleted_volume_id().await?;
    let target = cx.target_path(0)?;
    check::not_found(
        cx.node_expand_volume(node_req(&gone, &target, cx.size() * 2))
            .await,
    )
}

async fn consistent(cx: Ctx) -> CaseResult {
    let advertised = cx
        .caps()
        .expansion
        .iter()
        .any(|e| matches!(e, Expansion::Online | Expansion::Offline));
    if !advertised {
        return Err(Stop::Skip(
            "plugin does not advertise VolumeExpansion".into(),
        ));
    }
    ensure!(
        cx.caps().has_controller(ControllerCap::ExpandVolume)
            || cx.caps().has_node(NodeCap::ExpandVolume),
        "VolumeExpansion advertised without EXPAND_VOLUME on controller or node"
    );
    Ok(())
}

async fn never_issued(cx: Ctx) -> CaseResult {
    need(&cx)?;
    for id in cx.never_issued_ids() {
        check::not_found(
            cx.controller_expand_volume(expand_req(&id, cx.size() * 2))
                .await,
        )
        .map_err(|stop| check::about(stop, format!("volume_id {id:?}")))?;
    }
    Ok(())
}

async fn node_never_issued(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::ExpandVolume)?;
    let target = cx.target_path(0)?;
    for id in cx.never_issued_ids() {
        check::not_found(
            cx.node_expand_volume(node_req(&id, &target, cx.size() * 2))
                .await,
        )
        .map_err(|stop| check::about(stop, format!("volume_id {id:?}")))?;
    }
    Ok(())
}
