//! Where a filesystem volume is staged, recorded in the volume's own
//! directory, so DeleteVolume can refuse a volume that is in use instead
//! of moving its data out from under a pod (spec, DeleteVolume:
//! FAILED_PRECONDITION "Volume in use"). Block volumes keep their own
//! records of attached loop devices (`block.rs`).
//!
//! One small file per staging path under `<volume>/stagings/`, named by a
//! digest of the path and holding the path. Written before the bind and
//! removed after the unmount, never flushed: a bind mount does not
//! survive a power loss either, and a record whose staging path no longer
//! shows the volume is stale and ignored. The check reads this volume's
//! records only, never the mount table.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::VolumeId;
use crate::mount::{self, PathState};
use crate::record_dir::{name_of_path, RecordDir};

const STAGINGS_DIR: &str = "stagings";

fn records(volume_dir: &Path) -> RecordDir {
    RecordDir::at(volume_dir.join(STAGINGS_DIR))
}

/// Records that the volume in `volume_dir` is (about to be) staged at `staging`.
pub(super) fn record(volume_dir: &Path, staging: &Path) -> Result<()> {
    records(volume_dir).write(
        &name_of_path(staging),
        staging.as_os_str().as_encoded_bytes(),
    )
}

/// Forgets the staging at `staging`; nothing recorded is fine.
pub(super) fn forget(volume_dir: &Path, staging: &Path) -> Result<()> {
    records(volume_dir).remove(&name_of_path(staging))
}

/// FAILED_PRECONDITION when the volume whose data directory is `data` is
/// still mounted at a recorded staging path.
pub(super) fn check_unused(volume_dir: &Path, data: &PathState, id: &VolumeId) -> Result<()> {
    for bytes in records(volume_dir).contents()? {
        let staging = PathBuf::from(String::from_utf8_lossy(&bytes).into_owned());
        let state = mount::inspect(&staging).map_err(Error::io("inspect", &staging))?;
        if state.is_some_and(|s| s.is_mount_root && s.same_inode(data)) {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is in use: staged at {}; unpublish and unstage it before deleting",
                staging.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_and_go_and_stale_ones_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let volume = dir.path().join("vol");
        let data = volume.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let data_state = mount::inspect(&data).unwrap().unwrap();
        let id = VolumeId::parse("local:n:vol").unwrap();
        let staging = dir.path().join("globalmount");
        record(&volume, &staging).unwrap();
        record(&volume, &staging).unwrap();
        // Recorded, but nothing is mounted there: stale, not in use.
        check_unused(&volume, &data_state, &id).unwrap();
        forget(&volume, &staging).unwrap();
        forget(&volume, &staging).unwrap();
        assert!(records(&volume).contents().unwrap().is_empty());
    }
}
