//! What the Identity, Controller and Node services share.

use std::sync::Arc;

use crate::backend::Backends;
use crate::ids::NodeId;
use crate::locks::KeyedLocks;
use crate::node::NodeContext;

/// Which services this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Controller,
    Node,
    All,
}

impl Mode {
    pub fn serves_controller(self) -> bool {
        matches!(self, Mode::Controller | Mode::All)
    }

    pub fn serves_node(self) -> bool {
        matches!(self, Mode::Node | Mode::All)
    }
}

pub struct Driver {
    pub name: String,
    pub mode: Mode,
    /// This node; required when the node service or local volumes are served.
    pub node: Option<NodeId>,
    pub backends: Backends,
    /// What the node service works with (kubelet dir, records, mounter);
    /// present exactly when this process serves the node service.
    pub node_context: Option<Arc<NodeContext>>,
    pub max_volumes_per_node: i64,
    /// Serializes calls on one volume (keyed by volume key or id).
    pub locks: KeyedLocks,
}

/// The plugin name must be a domain name of at most 63 characters
/// (spec.md, GetPluginInfo).
pub fn check_driver_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "driver name {name:?} must be a domain name of at most 63 characters (e.g. cairn.csi.io)"
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn driver_names() {
        assert!(super::check_driver_name("cairn.csi.io").is_ok());
        for bad in ["", "-x.io", "x.io-", "a_b.io", &"a".repeat(64)] {
            assert!(super::check_driver_name(bad).is_err(), "{bad}");
        }
    }
}
