//! What the driver says it can do, asked once before any case runs.

use cairn_proto::v1::{
    controller_service_capability, node_service_capability, plugin_capability,
    ControllerServiceCapability, NodeServiceCapability, PluginCapability,
};

pub use controller_service_capability::rpc::Type as ControllerCap;
pub use node_service_capability::rpc::Type as NodeCap;
pub use plugin_capability::service::Type as PluginService;
pub use plugin_capability::volume_expansion::Type as Expansion;

/// The advertised capabilities. `None` for a service means it could not be
/// asked (not advertised, or its GetCapabilities call failed; `problems` says
/// which).
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub plugin: Vec<PluginService>,
    pub expansion: Vec<Expansion>,
    pub controller: Option<Vec<ControllerCap>>,
    pub node: Option<Vec<NodeCap>>,
    /// Why a service's capabilities are unknown, for skip messages.
    pub problems: Vec<String>,
}

impl Capabilities {
    pub fn has_plugin(&self, service: PluginService) -> bool {
        self.plugin.contains(&service)
    }

    pub fn has_controller(&self, cap: ControllerCap) -> bool {
        self.controller.as_ref().is_some_and(|c| c.contains(&cap))
    }

    pub fn has_node(&self, cap: NodeCap) -> bool {
        self.node.as_ref().is_some_and(|c| c.contains(&cap))
    }
}

/// Plugin capabilities split into services and expansion modes.
pub fn plugin_caps(caps: &[PluginCapability]) -> (Vec<PluginService>, Vec<Expansion>) {
    let mut services = Vec::new();
    let mut expansion = Vec::new();
    for cap in caps {
        match cap.r#type {
            Some(plugin_capability::Type::Service(s)) => services.push(s.r#type()),
            Some(plugin_capability::Type::VolumeExpansion(e)) => expansion.push(e.r#type()),
            None => {}
        }
    }
    (services, expansion)
}

pub fn controller_caps(caps: &[ControllerServiceCapability]) -> Vec<ControllerCap> {
    caps.iter()
        .filter_map(|c| c.r#type)
        .map(|controller_service_capability::Type::Rpc(rpc)| rpc.r#type())
        .collect()
}

pub fn node_caps(caps: &[NodeServiceCapability]) -> Vec<NodeCap> {
    caps.iter()
        .filter_map(|c| c.r#type)
        .map(|node_service_capability::Type::Rpc(rpc)| rpc.r#type())
        .collect()
}
