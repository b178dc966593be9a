//! Request pieces the cases share, named for what they ask for.

use cairn_proto::v1::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use cairn_proto::v1::{CapacityRange, VolumeCapability};

/// A filesystem volume with the driver's default fs type.
pub fn mount(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A raw block volume.
pub fn block(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// What a ReadWriteOnce PVC asks for: the one capability every filesystem
/// driver supports.
pub fn single_writer() -> VolumeCapability {
    mount(Mode::SingleNodeWriter)
}

/// A capability with an access type but no access mode.
pub fn without_access_mode() -> VolumeCapability {
    VolumeCapability {
        access_mode: None,
        ..single_writer()
    }
}

/// A capability with an access mode but no access type.
pub fn without_access_type() -> VolumeCapability {
    VolumeCapability {
        access_type: None,
        ..single_writer()
    }
}

/// Bytes as the wire's int64; sizes come from `u64` config values that
/// `parse_size` already bounded.
pub fn bytes(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

pub fn range(required: i64, limit: i64) -> Option<CapacityRange> {
    Some(CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    })
}
