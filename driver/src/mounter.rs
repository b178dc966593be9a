//! The node service's door to the kernel: every mount, unmount and
//! mount-point check the node flow makes goes through [`Mounter`].
//!
//! [`RealMounter`] calls the functions of `mount.rs` — the openat2,
//! no-symlink implementations — and nothing else. Tests put a recording
//! double in its place (`fake::FakeMounter`), so the node rules
//! (idempotency, conflicts, retries) are unit tests that need no root and
//! make no mount, while the real-mount tests stay in `driver/tests`.

use std::io;
use std::path::Path;

use crate::mount::{self, BindFlags, PathState};

#[cfg(test)]
pub mod fake;

/// The mount operations of the node flow, one per function of `mount.rs`
/// it uses. Paths are real paths (resolved under the kubelet dir).
pub trait Mounter: Send + Sync + 'static {
    /// What is at `path` (`None`: nothing), without following a symlink.
    fn inspect(&self, path: &Path) -> io::Result<Option<PathState>>;
    /// Whether the mount at `path` is read-only.
    fn is_read_only(&self, path: &Path) -> io::Result<bool>;
    /// Whether `path` itself (not followed) is a regular file.
    fn is_regular_file(&self, path: &Path) -> io::Result<bool>;
    /// Creates the directory `path`; `Ok(false)` when something is there.
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<bool>;
    /// Creates the empty file `path`; one already there is left as it is.
    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Bind-mounts the directory `source` at the directory `target`.
    fn bind(&self, source: &Path, target: &Path, flags: BindFlags) -> io::Result<()>;
    /// Bind-mounts the file (device node) `source` on the file `target`.
    fn bind_file(&self, source: &Path, target: &Path, flags: BindFlags) -> io::Result<()>;
    /// Unmounts everything at `path`; whether anything was.
    fn unmount_all(&self, path: &Path) -> io::Result<bool>;
    /// Removes the directory or file at `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The kernel, through `mount.rs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealMounter;

impl Mounter for RealMounter {
    fn inspect(&self, path: &Path) -> io::Result<Option<PathState>> {
        mount::inspect(path)
    }

    fn is_read_only(&self, path: &Path) -> io::Result<bool> {
        mount::is_read_only(path)
    }

    fn is_regular_file(&self, path: &Path) -> io::Result<bool> {
        std::fs::symlink_metadata(path).map(|meta| meta.is_file())
    }

    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<bool> {
        mount::create_dir_at(path, mode)
    }

    fn create_file(&self, path: &Path, mode: u32) -> io::Result<()> {
        mount::create_file_at(path, mode)
    }

    fn bind(&self, source: &Path, target: &Path, flags: BindFlags) -> io::Result<()> {
        mount::bind(source, target, flags)
    }

    fn bind_file(&self, source: &Path, target: &Path, flags: BindFlags) -> io::Result<()> {
        mount::bind_file(source, target, flags)
    }

    fn unmount_all(&self, path: &Path) -> io::Result<bool> {
        mount::unmount_all(path)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        mount::remove_at(path)
    }
}
