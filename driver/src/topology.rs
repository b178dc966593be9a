//! Node topology: every local volume is reachable only on the node that
//! created it, named by one segment key.

use std::collections::HashMap;

use cairn_proto::v1::{Topology, TopologyRequirement};

use crate::ids::NodeId;

/// The topology key this driver reports in NodeGetInfo and CreateVolume.
pub const NODE_KEY: &str = "topology.cairn.csi.io/node";

/// The one segment that names `node`.
pub fn of_node(node: &NodeId) -> Topology {
    Topology {
        segments: HashMap::from([(NODE_KEY.to_string(), node.as_str().to_string())]),
    }
}

/// Whether `topology` is exactly this node's segment. Segments with keys we
/// do not report cannot be satisfied by us, so they do not match.
pub fn is_node(topology: &Topology, node: &NodeId) -> bool {
    topology.segments.len() == 1
        && topology.segments.get(NODE_KEY).map(String::as_str) == Some(node.as_str())
}

/// Whether a volume may be created on `node` under `requirement`: the
/// requisite list if given (else the preferred list) must name this node.
pub fn admits(requirement: Option<&TopologyRequirement>, node: &NodeId) -> bool {
    let Some(requirement) = requirement else {
        return true;
    };
    let candidates = if requirement.requisite.is_empty() {
        &requirement.preferred
    } else {
        &requirement.requisite
    };
    candidates.is_empty() || candidates.iter().any(|t| is_node(t, node))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeId {
        NodeId::parse(n).unwrap()
    }

    #[test]
    fn requisite_must_name_this_node() {
        let a = node("a");
        let req = |requisite: Vec<Topology>, preferred: Vec<Topology>| TopologyRequirement {
            requisite,
            preferred,
        };
        assert!(admits(None, &a));
        assert!(admits(Some(&req(vec![], vec![])), &a));
        assert!(admits(
            Some(&req(vec![of_node(&node("b")), of_node(&a)], vec![])),
            &a
        ));
        assert!(!admits(
            Some(&req(vec![of_node(&node("b"))], vec![of_node(&a)])),
            &a
        ));
        assert!(admits(Some(&req(vec![], vec![of_node(&a)])), &a));
        let mut zoned = of_node(&a);
        zoned.segments.insert("zone".into(), "z1".into());
        assert!(!admits(Some(&req(vec![zoned], vec![])), &a));
    }
}
