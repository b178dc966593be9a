//! The local backend's id formats: `local:<node>:<key>` for a volume and
//! `snap:<node>:<key>` for a snapshot. The node names where the directory
//! lives, the key which directory (made from the CreateVolume or
//! CreateSnapshot name, see [`VolumeName::key`]).

use std::fmt;

#[cfg(doc)]
use crate::ids::VolumeName;
use crate::ids::{LockKey, NodeId, VolumeKey};

/// The first tag of a local volume's id.
pub const VOLUME_TAG: &str = "local";
/// The first tag of a local snapshot's id. (Not `snap:local:...`: with the
/// longest node id and key that would exceed `MAX_ID_LEN`; another kind of
/// snapshot gets another first tag.)
pub const SNAPSHOT_TAG: &str = "snap";

/// A local volume's id: the node that holds it and its directory key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVolumeId {
    pub node: NodeId,
    pub key: VolumeKey,
}

/// `<node>:<key>`, what follows the tag; why not, when it is not one.
fn parse_node_and_key(rest: &str, shape: &str) -> Result<(NodeId, VolumeKey), String> {
    let (node, key) = rest
        .split_once(':')
        .ok_or_else(|| format!("expected {shape}"))?;
    let node = NodeId::parse(node).map_err(|e| e.to_string())?;
    let key = VolumeKey::parse(key).map_err(|e| e.to_string())?;
    Ok((node, key))
}

impl LocalVolumeId {
    /// Parses what follows `local:`.
    pub fn parse_rest(rest: &str) -> Result<Self, String> {
        let (node, key) = parse_node_and_key(rest, "local:<node>:<volume>")?;
        Ok(Self { node, key })
    }

    /// Calls on a local volume serialize on its key.
    pub fn lock_key(&self) -> LockKey {
        LockKey::of_id(self.key.to_string())
    }
}

impl fmt::Display for LocalVolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VOLUME_TAG}:{}:{}", self.node, self.key)
    }
}

/// A local snapshot's id: the node that holds it and its directory key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSnapshotId {
    pub node: NodeId,
    pub key: VolumeKey,
}

impl LocalSnapshotId {
    /// Parses what follows `snap:`.
    pub fn parse_rest(rest: &str) -> Result<Self, String> {
        let (node, key) = parse_node_and_key(rest, "snap:<node>:<snapshot>")?;
        Ok(Self { node, key })
    }

    /// Never equal to a volume's: a local volume's key has no `:`.
    pub fn lock_key(&self) -> LockKey {
        LockKey::of_id(format!("{SNAPSHOT_TAG}:{}", self.key))
    }
}

impl fmt::Display for LocalSnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SNAPSHOT_TAG}:{}:{}", self.node, self.key)
    }
}
