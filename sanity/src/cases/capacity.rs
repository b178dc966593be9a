//! GetCapacity: the storage left, with and without narrowing fields.

use super::prelude::*;

pub fn cases() -> Vec<Case> {
    vec![
        case!("GetCapacity/ok", "GetCapacity: with GET_CAPACITY the plugin MUST implement it; available_capacity MUST NOT be negative", capacity_ok),
        case!("GetCapacity/with-capabilities", "GetCapacity: volume_capabilities is OPTIONAL; given, the plugin reports capacity for volumes with ALL of them", with_capabilities),
        case!("GetCapacity/with-parameters", "GetCapacity: parameters is OPTIONAL; given, the plugin reports capacity for volumes with those parameters", with_parameters),
        case!("GetCapacity/with-topology", "GetCapacity: accessible_topology is OPTIONAL and only set with VOLUME_ACCESSIBILITY_CONSTRAINTS; given, the plugin reports that segment's capacity", with_topology),
        case!("GetCapacity/volume-size-bounds", "GetCapacity: maximum_volume_size and minimum_volume_size MUST NOT be negative, and the minimum cannot exceed the maximum", size_bounds),
    ]
}

async fn capacity(cx: &Ctx, req: v1::GetCapacityRequest) -> Result<v1::GetCapacityResponse, Stop> {
    cx.need_controller(ControllerCap::GetCapacity)?;
    let resp = check::ok(cx.get_capacity(req).await, "GetCapacity")?;
    ensure!(
        resp.available_capacity >= 0,
        "available_capacity is {}",
        resp.available_capacity
    );
    Ok(resp)
}

async fn capacity_ok(cx: Ctx) -> CaseResult {
    capacity(&cx, v1::GetCapacityRequest::default())
        .await
        .map(drop)
}

async fn with_capabilities(cx: Ctx) -> CaseResult {
    let req = v1::GetCapacityRequest {
        volume_capabilities: vec![fixtures::single_writer()],
        ..Default::default()
    };
    capacity(&cx, req).await.map(drop)
}

async fn with_parameters(cx: Ctx) -> CaseResult {
    let req = v1::GetCapacityRequest {
        volume_capabilities: vec![fixtures::single_writer()],
        parameters: cx.params(),
        ..Default::default()
    };
    capacity(&cx, req).await.map(drop)
}

async fn with_topology(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::GetCapacity)?;
    cx.need_plugin(PluginService::VolumeAccessibilityConstraints)?;
    cx.need_node_service()?;
    let info = check::ok(
        cx.node_get_info(v1::NodeGetInfoRequest {}).await,
        "NodeGetInfo",
    )?;
    let topology = info
        .accessible_topology
        .ok_or_else(|| Stop::Skip("node reports no accessible_topology to ask about".into()))?;
    let req = v1::GetCapacityRequest {
        volume_capabilities: vec![fixtures::single_writer()],
        parameters: cx.params(),
        accessible_topology: Some(topology),
    };
    capacity(&cx, req).await.map(drop)
}

async fn size_bounds(cx: Ctx) -> CaseResult {
    let resp = capacity(&cx, v1::GetCapacityRequest::default()).await?;
    if let Some(max) = resp.maximum_volume_size {
        ensure!(max >= 0, "maximum_volume_size is {max}");
    }
    if let Some(min) = resp.minimum_volume_size {
        ensure!(min >= 0, "minimum_volume_size is {min}");
    }
    if let (Some(min), Some(max)) = (resp.minimum_volume_size, resp.maximum_volume_size) {
        ensure!(
            min <= max,
            "minimum_volume_size {min} > maximum_volume_size {max}"
        );
    }
    Ok(())
}
