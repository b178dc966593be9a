//! CSI inline ephemeral volumes: the kubelet calls only NodePublishVolume,
//! with a volume id it made up and `csi.storage.k8s.io/ephemeral: "true"`,
//! and NodeUnpublishVolume when the pod goes. The volume lives exactly as
//! long as the pod: a local volume is created at publish (named after the
//! kubelet's id, sized from the pod's volume attributes) and bound straight
//! to the target, and deleted at unpublish.
//!
//! Only ids of the kubelet's own shape (`csi-` and a SHA-256 in hex) are
//! taken for ephemeral volumes, so a mistyped or hostile id is still refused
//! as before rather than silently treated as a volume to delete.

use std::collections::{BTreeMap, HashMap};

use crate::backend::Backend;
use crate::capacity::{parse_quantity, Range};
use crate::error::{Error, Result};
use crate::ids::{VolumeId, VolumeName};

/// The volume-context key the kubelet sets for inline volumes.
pub const EPHEMERAL_KEY: &str = "csi.storage.k8s.io/ephemeral";
/// The volume attribute that sizes an inline volume (`size: 64Mi`).
pub const SIZE_ATTRIBUTE: &str = "size";
/// Keys the kubelet adds with `podInfoOnMount` (and the ephemeral key).
const KUBELET_PREFIX: &str = "csi.storage.k8s.io/";

/// Whether a NodePublishVolume request is for an inline ephemeral volume.
pub fn is_ephemeral(context: &HashMap<String, String>) -> bool {
    context.get(EPHEMERAL_KEY).is_some_and(|v| v == "true")
}

/// Whether `raw` has the shape of the kubelet's inline volume handles:
/// `csi-<sha256 hex>` (pkg/volume/csi: makeVolumeHandle).
fn is_kubelet_handle(raw: &str) -> bool {
    raw.strip_prefix("csi-")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The volume behind an inline volume handle, on the backend that hosts
/// inline volumes; `None` when `raw` is not such a handle (it is then
/// parsed as one of our own ids).
pub fn volume_id(raw: &str, host: &dyn Backend) -> Option<(VolumeName, VolumeId)> {
    if !is_kubelet_handle(raw) {
        return None;
    }
    let name = VolumeName::parse(raw).ok()?;
    let id = host.inline_volume_id(&name)?;
    Some((name, id))
}

/// Parses a volume id the node service was given: ours, or a kubelet inline
/// handle mapped to its volume on `host` (when inline volumes are served).
pub fn parse_node_volume_id(raw: &str, host: Option<&dyn Backend>) -> Result<VolumeId> {
    if let Some((_, id)) = host.and_then(|host| volume_id(raw, host)) {
        return Ok(id);
    }
    VolumeId::parse(raw)
}

/// What an inline volume asks for: its size, and the parameters recorded
/// with it (which mark it ephemeral so unpublish knows to delete it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineRequest {
    pub capacity: Range,
    pub parameters: BTreeMap<String, String>,
}

/// Validates the pod's volume attributes. Unknown attributes are refused
/// by name, as StorageClass parameters are: a typo must not be ignored.
pub fn inline_request(context: &HashMap<String, String>) -> Result<InlineRequest> {
    let unknown = crate::parameters::unknown(context.keys(), &[SIZE_ATTRIBUTE], KUBELET_PREFIX);
    if !unknown.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "unknown volume attributes for an inline volume: {} (known: {SIZE_ATTRIBUTE})",
            unknown.join(", ")
        )));
    }
    let required = match context.get(SIZE_ATTRIBUTE) {
        Some(size) => parse_quantity(size).map_err(|e| {
            Error::InvalidArgument(format!("volume attribute {SIZE_ATTRIBUTE}: {e}"))
        })?,
        None => 0,
    };
    let mut parameters = BTreeMap::new();
    parameters.insert(EPHEMERAL_KEY.to_string(), "true".to_string());
    Ok(InlineRequest {
        capacity: Range {
            required,
            limit: None,
        },
        parameters,
    })
}

/// Whether a recorded volume was made for an inline volume (and so is
/// deleted with its pod).
pub fn is_inline_volume(parameters: &BTreeMap<String, String>) -> bool {
    parameters.get(EPHEMERAL_KEY).is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDLE: &str = "csi-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn only_kubelet_shaped_handles_are_inline() {
        let root = tempfile::tempdir().unwrap();
        let node = crate::ids::NodeId::parse("node-a").unwrap();
        let local = crate::backend::local::LocalBackend::open(node, root.path(), 1 << 20).unwrap();
        let host = &local as &dyn Backend;
        let (name, id) = volume_id(HANDLE, host).unwrap();
        assert_eq!(name.as_str(), HANDLE);
        assert_eq!(id.to_string(), format!("local:node-a:{}", name.key()));
        for other in [
            "csi-abc",
            "pvc-1",
            "local:node-a:pvc-1",
            "csi-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
        ] {
            assert!(volume_id(other, host).is_none(), "{other}");
        }
        assert!(parse_node_volume_id("csi-abc", Some(host)).is_err());
        assert_eq!(parse_node_volume_id(HANDLE, Some(host)).unwrap(), id);
    }

    #[test]
    fn attributes_are_checked_by_name() {
        let mut ctx = HashMap::new();
        ctx.insert(EPHEMERAL_KEY.to_string(), "true".to_string());
        ctx.insert("csi.storage.k8s.io/pod.name".to_string(), "p".to_string());
        ctx.insert(SIZE_ATTRIBUTE.to_string(), "64Mi".to_string());
        let req = inline_request(&ctx).unwrap();
        assert_eq!(req.capacity.required, 64 << 20);
        assert!(is_inline_volume(&req.parameters));
        ctx.insert("sise".to_string(), "1Gi".to_string());
        let err = inline_request(&ctx).unwrap_err().to_string();
        assert!(err.contains("sise"), "{err}");
        ctx.remove("sise");
        ctx.insert(SIZE_ATTRIBUTE.to_string(), "lots".to_string());
        assert!(inline_request(&ctx).is_err());
    }
}
