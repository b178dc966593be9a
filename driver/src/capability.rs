//! Which volume capabilities (access type + access mode) a volume can serve.

use cairn_proto::v1::volume_capability::{access_mode::Mode, AccessType};
use cairn_proto::v1::VolumeCapability;

use crate::error::Error;

/// How a volume is consumed: a mounted filesystem or a raw block device.
/// Recorded with a volume; records from before block support are mounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessKind {
    #[default]
    Mount,
    Block,
}

impl AccessKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessKind::Mount => "mount",
            AccessKind::Block => "block",
        }
    }
}

/// The access type of a (well formed) capability.
pub fn access_kind(cap: &VolumeCapability) -> AccessKind {
    match cap.access_type {
        Some(AccessType::Block(_)) => AccessKind::Block,
        _ => AccessKind::Mount,
    }
}

/// The one access type a CreateVolume asks for. A volume is either a
/// filesystem or a device, so a request mixing both is invalid.
pub fn access_kind_of(caps: &[VolumeCapability], field: &str) -> Result<AccessKind, Error> {
    let mut kinds = caps.iter().map(access_kind);
    let first = kinds.next().unwrap_or_default();
    if kinds.any(|k| k != first) {
        return Err(Error::InvalidArgument(format!(
            "{field} mixes access types mount and block; a volume is one or the other"
        )));
    }
    Ok(first)
}

/// A capability a caller may legitimately ask for that the volume cannot serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// Rejects capabilities that are not even well formed: no access type or no
/// access mode (spec: "Missing required field").
pub fn check_well_formed(caps: &[VolumeCapability], field: &str) -> Result<(), Error> {
    if caps.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is required")));
    }
    caps.iter()
        .try_for_each(|cap| check_one_well_formed(cap, field))
}

pub fn check_one_well_formed(cap: &VolumeCapability, field: &str) -> Result<(), Error> {
    if cap.access_type.is_none() {
        return Err(Error::InvalidArgument(format!(
            "{field}: access_type (mount or block) is required"
        )));
    }
    let mode = cap.access_mode.as_ref().map(|m| m.mode());
    match mode {
        None => Err(Error::InvalidArgument(format!(
            "{field}: access_mode is required"
        ))),
        Some(Mode::Unknown) => Err(Error::InvalidArgument(format!(
            "{field}: access_mode UNKNOWN is not an access mode"
        ))),
        Some(_) => Ok(()),
    }
}

/// Whether the access mode only allows reading.
pub fn is_read_only_mode(cap: &VolumeCapability) -> bool {
    matches!(
        cap.access_mode.as_ref().map(|m| m.mode()),
        Some(Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly)
    )
}

/// The mount flags a capability carries, if it is a mount capability.
pub fn mount_flags(cap: &VolumeCapability) -> &[String] {
    match &cap.access_type {
        Some(AccessType::Mount(mount)) => &mount.mount_flags,
        _ => &[],
    }
}

/// Capabilities for unit tests, here and in the backends.
#[cfg(test)]
pub mod test_caps {
    use super::*;
    use cairn_proto::v1::volume_capability::{AccessMode, BlockVolume, MountVolume};

    pub fn cap(mode: Mode, access: Option<AccessType>) -> VolumeCapability {
        VolumeCapability {
            access_type: access,
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    pub fn mount(fs: &str, flags: &[&str]) -> Option<AccessType> {
        Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: flags.iter().map(|s| s.to_string()).collect(),
            volume_mount_group: String::new(),
        }))
    }

    pub fn block() -> Option<AccessType> {
        Some(AccessType::Block(BlockVolume {}))
    }
}

#[cfg(test)]
mod tests {
    use super::test_caps::{block, cap, mount};
    use super::*;

    #[test]
    fn a_request_is_mount_or_block_never_both() {
        let m = cap(Mode::SingleNodeWriter, mount("", &[]));
        let b = cap(Mode::SingleNodeWriter, block());
        assert_eq!(
            access_kind_of(&[m.clone(), m.clone()], "c").unwrap(),
            AccessKind::Mount
        );
        assert_eq!(
            access_kind_of(&[b.clone(), b.clone()], "c").unwrap(),
            AccessKind::Block
        );
        assert!(matches!(
            access_kind_of(&[m, b], "c"),
            Err(Error::InvalidArgument(_))
        ));
        let json = serde_json::to_string(&AccessKind::Block).unwrap();
        assert_eq!(json, "\"block\"");
    }

    #[test]
    fn malformed_capabilities_are_invalid_arguments() {
        assert!(check_well_formed(&[], "volume_capabilities").is_err());
        assert!(check_well_formed(&[cap(Mode::Unknown, mount("", &[]))], "c").is_err());
        assert!(check_well_formed(&[cap(Mode::SingleNodeWriter, None)], "c").is_err());
        let no_mode = VolumeCapability {
            access_type: mount("", &[]),
            access_mode: None,
        };
        assert!(check_well_formed(&[no_mode], "c").is_err());
        assert!(check_well_formed(&[cap(Mode::SingleNodeWriter, mount("", &[]))], "c").is_ok());
    }
}
