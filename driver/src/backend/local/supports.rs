//! Which capabilities a local volume serves: any single-node access mode,
//! a directory (no fs_type, bind-mount flags only) or a raw block device.

use cairn_proto::v1::volume_capability::{access_mode::Mode, AccessType};
use cairn_proto::v1::VolumeCapability;

use crate::capability::Unsupported;
use crate::mount::BindFlags;

/// Whether a local (node-local directory) volume can serve `cap`.
/// The caller has already checked that `cap` is well formed.
pub fn supports(cap: &VolumeCapability) -> Result<(), Unsupported> {
    let mode = cap.access_mode.as_ref().map_or(Mode::Unknown, |m| m.mode());
    match mode {
        Mode::SingleNodeWriter
        | Mode::SingleNodeReaderOnly
        | Mode::SingleNodeSingleWriter
        | Mode::SingleNodeMultiWriter => {}
        other => {
            return Err(Unsupported(format!(
                "access mode {} is not supported: local volumes live on one node",
                other.as_str_name()
            )))
        }
    }
    match &cap.access_type {
        Some(AccessType::Mount(mount)) => {
            if !mount.fs_type.is_empty() {
                return Err(Unsupported(format!(
                    "fs_type {:?} is not supported: local volumes are directories, leave fs_type empty",
                    mount.fs_type
                )));
            }
            if !mount.volume_mount_group.is_empty() {
                return Err(Unsupported(
                    "volume_mount_group is not supported (no VOLUME_MOUNT_GROUP capability)".into(),
                ));
            }
            BindFlags::parse(&mount.mount_flags).map_err(Unsupported)?;
            Ok(())
        }
        // A sparse file attached to a loop device (backend/local/block.rs).
        Some(AccessType::Block(_)) => Ok(()),
        None => Err(Unsupported("access_type is required".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::test_caps::{block, cap, mount};

    #[test]
    fn single_node_mount_is_supported() {
        for mode in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ] {
            assert_eq!(supports(&cap(mode, mount("", &["noatime"]))), Ok(()));
        }
    }

    #[test]
    fn single_node_block_is_supported_multi_node_is_not() {
        for mode in [
            Mode::SingleNodeWriter,
            Mode::SingleNodeReaderOnly,
            Mode::SingleNodeSingleWriter,
            Mode::SingleNodeMultiWriter,
        ] {
            assert_eq!(supports(&cap(mode, block())), Ok(()));
        }
        for mode in [
            Mode::MultiNodeMultiWriter,
            Mode::MultiNodeSingleWriter,
            Mode::MultiNodeReaderOnly,
        ] {
            assert!(supports(&cap(mode, block())).is_err());
        }
    }

    #[test]
    fn multi_node_fs_type_and_odd_flags_are_not() {
        assert!(supports(&cap(Mode::MultiNodeMultiWriter, mount("", &[]))).is_err());
        assert!(supports(&cap(Mode::MultiNodeReaderOnly, mount("", &[]))).is_err());
        assert!(supports(&cap(Mode::SingleNodeWriter, mount("ext4", &[]))).is_err());
        assert!(supports(&cap(Mode::SingleNodeWriter, mount("", &["uid=0"]))).is_err());
    }
}
