//! A real filesystem on a loop device, made inside a temporary directory: for tests that need what
//! tmpfs or the host's `/` cannot give, such as XFS with reflink (shared blocks).
//!
//! The image is a sparse file, so a 512 MiB filesystem costs only what is written into it.
//! Dropping a [`LoopFs`] unmounts it (lazily if something still holds it), detaches the loop
//! device and removes the image, also when the test panicked.

use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

use crate::error::{io_err, Result};
use crate::process::run;
use crate::skip::{find_program, require_loop_devices, require_program};

/// `Ok` if an XFS with reflink can be made on a loop device here: root, `/dev/loop-control`,
/// `mkfs.xfs` and `losetup`; otherwise the reason.
pub fn require_loop_xfs() -> std::result::Result<(), String> {
    require_loop_devices()?;
    for program in ["mkfs.xfs", "losetup"] {
        require_program(program)?;
    }
    Ok(())
}

/// A filesystem image attached to a loop device and mounted in a temporary directory.
#[derive(Debug)]
pub struct LoopFs {
    dir: tempfile::TempDir,
    mount_point: PathBuf,
    device: Option<String>,
    mounted: bool,
}

impl LoopFs {
    /// A fresh XFS with reflink of `size_mib` MiB (mkfs.xfs wants at least 300).
    pub fn xfs_reflink(size_mib: u64) -> Result<LoopFs> {
        Self::make(size_mib, "xfs", &["-q", "-m", "reflink=1"], "mkfs.xfs")
    }

    /// A fresh XFS without reflink (every copy is a full copy), for comparisons.
    pub fn xfs_without_reflink(size_mib: u64) -> Result<LoopFs> {
        Self::make(size_mib, "xfs", &["-q", "-m", "reflink=0"], "mkfs.xfs")
    }

    fn make(size_mib: u64, fstype: &str, mkfs_args: &[&str], mkfs: &str) -> Result<LoopFs> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-loopfs-")
            .tempdir()
            .map_err(io_err("create a temporary directory"))?;
        let image = dir.path().join("image");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point)
            .map_err(io_err(format!("create {}", mount_point.display())))?;
        let file =
            std::fs::File::create(&image).map_err(io_err(format!("create {}", image.display())))?;
        file.set_len(size_mib << 20)
            .map_err(io_err(format!("size {}", image.display())))?;
        drop(file);
        let mut fs = LoopFs {
            dir,
            mount_point,
            device: None,
            mounted: false,
        };
        run(
            Command::new(find_program(mkfs).unwrap_or_else(|| mkfs.into()))
                .args(mkfs_args)
                .arg(&image),
        )?;
        let device = run(Command::new(
            find_program("losetup").unwrap_or_else(|| "losetup".into()),
        )
        .args(["--find", "--show"])
        .arg(&image))?;
        fs.device = Some(device.trim().to_string());
        mount(
            device.trim(),
            &fs.mount_point,
            fstype,
            MountFlags::empty(),
            None,
        )
        .map_err(|e| {
            io_err(format!(
                "mount {} at {}",
                device.trim(),
                fs.mount_point.display()
            ))(e.into())
        })?;
        fs.mounted = true;
        Ok(fs)
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// The loop device, e.g. `/dev/loop3`.
    pub fn device(&self) -> &str {
        self.device.as_deref().unwrap_or("")
    }

    /// Free bytes as `statvfs` reports them (what a reflink copy must barely change).
    pub fn free_bytes(&self) -> Result<u64> {
        let st = rustix::fs::statvfs(&self.mount_point)
            .map_err(|e| io_err(format!("statvfs {}", self.mount_point.display()))(e.into()))?;
        Ok(st.f_bfree * st.f_frsize)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            // Lazily if a test left something open: the device is then freed on last close.
            if unmount(&self.mount_point, UnmountFlags::empty()).is_err() {
                let _ = unmount(&self.mount_point, UnmountFlags::DETACH);
            }
        }
        if let Some(device) = &self.device {
            let _ = run(
                Command::new(find_program("losetup").unwrap_or_else(|| "losetup".into()))
                    .args(["--detach", device]),
            );
        }
        // The image goes with the temporary directory.
        let _ = &self.dir;
    }
}
