//! Identity service: GetPluginInfo, GetPluginCapabilities, Probe, and that
//! advertised services answer.

use super::prelude::*;

pub fn cases() -> Vec<Case> {
    vec![
        case!("GetPluginInfo/ok", "GetPluginInfo: a Plugin MUST implement the Identity service; the call succeeds", info_ok),
        case!("GetPluginInfo/name-present", "GetPluginInfo: name is REQUIRED", name_present),
        case!("GetPluginInfo/name-format", "GetPluginInfo: name MUST be 63 characters or less, begin and end alphanumeric, with dashes, dots and alphanumerics between", name_format),
        case!("GetPluginInfo/vendor-version-present", "GetPluginInfo: vendor_version is REQUIRED", vendor_version_present),
        case!("GetPluginInfo/stable", "GetPluginInfo: the name identifies the plugin, so repeated calls return the same name and version", info_stable),
        case!("GetPluginInfo/same-name-on-controller-endpoint", "GetPluginInfo: a plugin split over a node and a controller endpoint serves Identity on both, under one name", same_name_both_endpoints),
        case!("GetPluginCapabilities/ok", "GetPluginCapabilities: a Plugin MUST implement this RPC", plugin_caps_ok),
        case!("GetPluginCapabilities/controller-service-answers", "GetPluginCapabilities: CONTROLLER_SERVICE means the plugin provides the Controller service, which MUST implement ControllerGetCapabilities", controller_answers),
        case!("GetPluginCapabilities/no-unknown", "GetPluginCapabilities: every capability names a defined service type (UNKNOWN is the unset value, not a capability)", no_unknown_plugin_caps),
        case!("Probe/ok", "Probe: a Plugin MUST implement Probe; a healthy plugin answers OK", probe_ok),
        case!("Probe/ready", "Probe: ready unset means ready; a plugin serving requests reports ready (true or unset)", probe_ready),
        case!("Probe/repeatable", "Probe: a CO MAY invoke this call multiple times", probe_repeat),
        case!("ControllerGetCapabilities/ok", "ControllerGetCapabilities: a Controller Plugin MUST implement this RPC", controller_caps_ok),
        case!("ControllerGetCapabilities/no-unknown", "ControllerGetCapabilities: every capability names a defined RPC type (UNKNOWN is the unset value)", no_unknown_controller_caps),
        case!("NodeGetCapabilities/ok", "NodeGetCapabilities: a Node Plugin MUST implement this RPC", node_caps_ok),
        case!("NodeGetCapabilities/no-unknown", "NodeGetCapabilities: every capability names a defined RPC type (UNKNOWN is the unset value)", no_unknown_node_caps),
    ]
}

async fn info(cx: &Ctx) -> Result<v1::GetPluginInfoResponse, Stop> {
    check::ok(
        cx.get_plugin_info(v1::GetPluginInfoRequest {}).await,
        "GetPluginInfo",
    )
}

async fn info_ok(cx: Ctx) -> CaseResult {
    info(&cx).await.map(drop)
}

async fn name_present(cx: Ctx) -> CaseResult {
    let info = info(&cx).await?;
    ensure!(!info.name.is_empty(), "name is empty");
    Ok(())
}

/// The spec's plugin-name rule: 1 to 63 chars, `[a-zA-Z0-9]` at both ends,
/// `[a-zA-Z0-9.-]` between.
pub fn valid_plugin_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
}

async fn name_format(cx: Ctx) -> CaseResult {
    let info = info(&cx).await?;
    ensure!(
        valid_plugin_name(&info.name),
        "name {:?} breaks the format rule",
        info.name
    );
    Ok(())
}

async fn vendor_version_present(cx: Ctx) -> CaseResult {
    let info = info(&cx).await?;
    ensure!(!info.vendor_version.is_empty(), "vendor_version is empty");
    Ok(())
}

async fn info_stable(cx: Ctx) -> CaseResult {
    let first = info(&cx).await?;
    let second = info(&cx).await?;
    ensure!(
        first.name == second.name && first.vendor_version == second.vendor_version,
        "first call said {:?} {:?}, second {:?} {:?}",
        first.name,
        first.vendor_version,
        second.name,
        second.vendor_version
    );
    Ok(())
}

async fn same_name_both_endpoints(cx: Ctx) -> CaseResult {
    if !cx.split_endpoints() {
        return Err(Stop::Skip("one endpoint serves every service".into()));
    }
    let node_side = info(&cx).await?;
    let controller_side = check::ok(
        cx.controller_plugin_info().await,
        "GetPluginInfo on the controller endpoint",
    )?;
    ensure!(
        node_side.name == controller_side.name,
        "endpoint says {:?}, controller endpoint says {:?}",
        node_side.name,
        controller_side.name
    );
    Ok(())
}

async fn plugin_caps_ok(cx: Ctx) -> CaseResult {
    check::ok(
        cx.get_plugin_capabilities(v1::GetPluginCapabilitiesRequest {})
            .await,
        "GetPluginCapabilities",
    )
    .map(drop)
}

async fn controller_answers(cx: Ctx) -> CaseResult {
    cx.need_plugin(PluginService::ControllerService)?;
    check::ok(
        cx.controller_get_capabilities(v1::ControllerGetCapabilitiesRequest {})
            .await,
        "ControllerGetCapabilities",
    )
    .map(drop)
}

async fn no_unknown_plugin_caps(cx: Ctx) -> CaseResult {
    let resp = check::ok(
        cx.get_plugin_capabilities(v1::GetPluginCapabilitiesRequest {})
            .await,
        "GetPluginCapabilities",
    )?;
    let (services, expansion) = crate::caps::plugin_caps(&resp.capabilities);
    ensure!(
        !services.contains(&PluginService::Unknown),
        "a service capability has type UNKNOWN"
    );
    ensure!(
        !expansion.contains(&crate::caps::Expansion::Unknown),
        "a volume expansion capability has type UNKNOWN"
    );
    ensure!(
        resp.capabilities.iter().all(|c| c.r#type.is_some()),
        "a capability has no type set"
    );
    Ok(())
}

async fn probe_ok(cx: Ctx) -> CaseResult {
    check::ok(cx.probe(v1::ProbeRequest {}).await, "Probe").map(drop)
}

async fn probe_ready(cx: Ctx) -> CaseResult {
    let resp = check::ok(cx.probe(v1::ProbeRequest {}).await, "Probe")?;
    ensure!(resp.ready != Some(false), "ready is false after start-up");
    Ok(())
}

async fn probe_repeat(cx: Ctx) -> CaseResult {
    for _ in 0..5 {
        check::ok(cx.probe(v1::ProbeRequest {}).await, "Probe")?;
    }
    Ok(())
}

async fn controller_caps_ok(cx: Ctx) -> CaseResult {
    cx.need_plugin(PluginService::ControllerService)?;
    check::ok(
        cx.controller_get_capabilities(v1::ControllerGetCapabilitiesRequest {})
            .await,
        "ControllerGetCapabilities",
    )
    .map(drop)
}

async fn no_unknown_controller_caps(cx: Ctx) -> CaseResult {
    cx.need_controller_service()?;
    let resp = check::ok(
        cx.controller_get_capabilities(v1::ControllerGetCapabilitiesRequest {})
            .await,
        "ControllerGetCapabilities",
    )?;
    ensure!(
        !crate::caps::controller_caps(&resp.capabilities).contains(&ControllerCap::Unknown)
            && resp.capabilities.iter().all(|c| c.r#type.is_some()),
        "a capability is UNKNOWN or has no type"
    );
    Ok(())
}

async fn node_caps_ok(cx: Ctx) -> CaseResult {
    let result = cx
        .node_get_capabilities(v1::NodeGetCapabilitiesRequest {})
        .await;
    if matches!(&result, Err(s) if s.code() == Code::Unimplemented) {
        return Err(Stop::Skip("endpoint serves no Node service".into()));
    }
    check::ok(result, "NodeGetCapabilities").map(drop)
}

async fn no_unknown_node_caps(cx: Ctx) -> CaseResult {
    cx.need_node_service()?;
    let resp = check::ok(
        cx.node_get_capabilities(v1::NodeGetCapabilitiesRequest {})
            .await,
        "NodeGetCapabilities",
    )?;
    ensure!(
        !crate::caps::node_caps(&resp.capabilities).contains(&NodeCap::Unknown)
            && resp.capabilities.iter().all(|c| c.r#type.is_some()),
        "a capability is UNKNOWN or has no type"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_plugin_name;

    #[test]
    fn plugin_name_rule() {
        assert!(valid_plugin_name("cairn.csi.example.org"));
        assert!(valid_plugin_name("a"));
        assert!(valid_plugin_name(&"a".repeat(63)));
        assert!(!valid_plugin_name(&"a".repeat(64)));
        assert!(!valid_plugin_name(""));
        assert!(!valid_plugin_name("-cairn"));
        assert!(!valid_plugin_name("cairn."));
        assert!(!valid_plugin_name("cairn_csi"));
        assert!(!valid_plugin_name("cairn csi"));
    }
}
