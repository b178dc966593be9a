//! Publish targets of raw block volumes: NodePublishVolume creates the
//! target as a file and bind-mounts the volume's device node on it (what
//! the kubelet expects at `.../volumeDevices/publish/<pv>/<pod-uid>`; it
//! creates only the parent). NodeUnpublishVolume removes the file again.
//!
//! Whether the target already holds the device is read from one `statx`:
//! a mount root showing the device node's inode.

use std::io;
use std::path::Path;

use crate::error::{Error, Result};
use crate::ids::VolumeId;
use crate::mount::{self, BindFlags};
use crate::mounter::Mounter;

/// Mode of the target files the driver creates (the device's own mode
/// decides who may open it).
const TARGET_FILE_MODE: u32 = 0o640;

fn inspect(m: &dyn Mounter, path: &Path) -> Result<Option<mount::PathState>> {
    m.inspect(path).map_err(Error::io("inspect", path))
}

/// Creates the target file; one left by an interrupted publish is reused.
/// Never follows a symlink planted there.
fn create_file(m: &dyn Mounter, target: &Path) -> Result<()> {
    m.create_file(target, TARGET_FILE_MODE)
        .map_err(Error::io("create target file", target))
}

/// What is at a publish target before a publish: checked before a device
/// is chosen (or attached) for it.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// Nothing, or a file left by an interrupted publish: free to use.
    Free,
    /// Something is mounted there already (this device, or not).
    Mounted(mount::PathState),
}

/// Refuses a target that is anything but a regular file or nothing
/// (a directory, a symlink, a device...); nothing is touched.
pub fn check(m: &dyn Mounter, target: &Path) -> Result<Target> {
    let not_a_file = || {
        Error::FailedPrecondition(format!(
            "{} exists and is not a file; a block volume is published on a file",
            target.display()
        ))
    };
    match inspect(m, target)? {
        None => Ok(Target::Free),
        Some(state) if state.is_mount_root => Ok(Target::Mounted(state)),
        Some(state) if state.is_dir || state.is_symlink => Err(not_a_file()),
        Some(_) => match m.is_regular_file(target) {
            Ok(true) => Ok(Target::Free),
            Ok(false) => Err(not_a_file()),
            // Removed in between: free.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Target::Free),
            Err(e) => Err(Error::io("stat", target)(e)),
        },
    }
}

/// Places `device` (a loop device node) at `target`, as [`check`] found
/// it, with `flags` (read-only for a read-only publish; the device itself
/// must refuse writes, which a read-only mount of a device node does not).
pub fn publish(
    m: &dyn Mounter,
    id: &VolumeId,
    device: &Path,
    target: &Path,
    found: Target,
    flags: BindFlags,
) -> Result<()> {
    if let Target::Mounted(state) = found {
        let expected = inspect(m, device)?.ok_or_else(|| {
            Error::Internal(format!("device node {} is missing", device.display()))
        })?;
        if state.same_inode(&expected) {
            return Ok(());
        }
        return Err(Error::AlreadyExists(format!(
            "{} already holds another device or mount (another volume, or this one with \
             another readonly flag); volume {id} cannot be published there",
            target.display()
        )));
    }
    create_file(m, target)?;
    m.bind_file(device, target, flags)
        .map_err(Error::io("place block device at", target))
}

/// Removes a target the driver created, after its unmount: a directory
/// (mount volumes) or a file (block volumes). Gone already is fine.
pub fn remove(m: &dyn Mounter, target: &Path) -> Result<()> {
    match m.remove(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove target", target)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounter::RealMounter;
    use rustix::fs::Mode;

    const M: &RealMounter = &RealMounter;

    #[test]
    fn remove_takes_files_directories_and_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pod-uid");
        std::fs::write(&file, b"").unwrap();
        remove(M, &file).unwrap();
        assert!(!file.exists());
        let sub = dir.path().join("mount");
        std::fs::create_dir(&sub).unwrap();
        remove(M, &sub).unwrap();
        assert!(!sub.exists());
        remove(M, &sub).unwrap();
        // A directory that is not empty is not ours to remove.
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("x"), b"").unwrap();
        assert!(remove(M, &sub).is_err());
    }

    #[test]
    fn check_takes_files_and_nothing_only() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            check(M, &dir.path().join("none")),
            Ok(Target::Free)
        ));
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(check(M, &file), Ok(Target::Free)));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for bad in [dir.path().to_path_buf(), link, fifo] {
            assert!(
                matches!(check(M, &bad), Err(Error::FailedPrecondition(_))),
                "{}",
                bad.display()
            );
        }
    }

    #[test]
    fn create_file_refuses_symlinks_and_reuses_files() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(outside.path().join("planted"), &link).unwrap();
        // O_EXCL|O_NOFOLLOW: the link itself "exists"; nothing is made where it points.
        let _ = create_file(M, &link);
        assert!(!outside.path().join("planted").exists());
        let file = dir.path().join("target");
        create_file(M, &file).unwrap();
        create_file(M, &file).unwrap();
        assert!(file.is_file());
    }
}
