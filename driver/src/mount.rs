//! Every mount syscall and mount-point check of the driver, and nowhere else.
//!
//! Binds are made with the new mount API: the source is cloned into a
//! detached mount (`open_tree`), given its flags there (`mount_setattr`) and
//! only then attached at the target (`move_mount`). A bind is therefore
//! atomic: a crash leaves either no mount or one with its final flags, never
//! a read-write window for a read-only publish. The target is opened with
//! `O_NOFOLLOW`, so a symlink planted at the target cannot redirect a mount.
//!
//! Paths are resolved once, by the kernel, with `openat2`
//! (RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS): a symlink in *any*
//! component — swapped in for a parent directory while the call runs — is
//! refused (ELOOP), never followed. Mounts, unmounts and removals then act
//! on the handles opened, not on the path again: a target is opened from
//! its opened parent, an unmount names `/proc/self/fd/<parent>/<name>`
//! (the parent pinned by its handle, the last component not followed). So a
//! path checked and then swapped cannot send a mount, an unmount or a
//! removal outside the directory it was checked in. Callers pass real
//! paths (`KubeletDir::resolve`, the local root): no component is a
//! symlink legitimately.
//!
//! Mount checks use `statx` of the path (and at most its parent): their cost
//! does not grow with the number of mounts on the node.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxAttributes, StatxFlags, CWD};
use rustix::mount::{MountAttrFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags};

/// Mount options a bind mount can honour, as `mount_setattr` attributes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindFlags {
    set: u64,
    clear: u64,
}

impl BindFlags {
    /// Parses CSI `mount_flags` (StorageClass `mountOptions`). Options a bind
    /// mount cannot apply are refused by name rather than silently ignored.
    pub fn parse(options: &[String]) -> Result<Self, String> {
        let mut flags = Self::default();
        for option in options.iter().flat_map(|o| o.split(',')) {
            let atime = |flags: &mut Self, value: MountAttrFlags| {
                flags.clear |= MountAttrFlags::MOUNT_ATTR__ATIME.bits() as u64;
                flags.set = (flags.set & !(MountAttrFlags::MOUNT_ATTR__ATIME.bits() as u64))
                    | value.bits() as u64;
            };
            match option.trim() {
                "" | "rw" | "defaults" | "bind" => {}
                "ro" => flags.set |= MountAttrFlags::MOUNT_ATTR_RDONLY.bits() as u64,
                "nosuid" => flags.set |= MountAttrFlags::MOUNT_ATTR_NOSUID.bits() as u64,
                "nodev" => flags.set |= MountAttrFlags::MOUNT_ATTR_NODEV.bits() as u64,
                "noexec" => flags.set |= MountAttrFlags::MOUNT_ATTR_NOEXEC.bits() as u64,
                "nodiratime" => flags.set |= MountAttrFlags::MOUNT_ATTR_NODIRATIME.bits() as u64,
                "noatime" => atime(&mut flags, MountAttrFlags::MOUNT_ATTR_NOATIME),
                "relatime" => atime(&mut flags, MountAttrFlags::MOUNT_ATTR_RELATIME),
                "strictatime" => atime(&mut flags, MountAttrFlags::MOUNT_ATTR_STRICTATIME),
                other => {
                    return Err(format!(
                        "mount option {other:?} cannot be applied to a bind mount \
                         (supported: ro, rw, nosuid, nodev, noexec, noatime, nodiratime, relatime, strictatime)"
                    ))
                }
            }
        }
        Ok(flags)
    }

    /// The same flags, read-only.
    pub fn read_only(mut self) -> Self {
        self.set |= MountAttrFlags::MOUNT_ATTR_RDONLY.bits() as u64;
        self
    }

    pub fn is_read_only(&self) -> bool {
        self.set & MountAttrFlags::MOUNT_ATTR_RDONLY.bits() as u64 != 0
    }
}

/// What one `statx` tells about a path, without following a final symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathState {
    pub dev: (u32, u32),
    pub ino: u64,
    pub is_dir: bool,
    pub is_symlink: bool,
    /// Whether the path is the root of a mount (something is mounted here).
    pub is_mount_root: bool,
}

impl PathState {
    /// Whether `self` and `other` are the same directory (a bind mount shows
    /// its source's device and inode).
    pub fn same_inode(&self, other: &PathState) -> bool {
        self.dev == other.dev && self.ino == other.ino
    }
}

/// `statx` of `path`'s last component through its parent, opened the way
/// every mount is made ([`open_parent`]): a symlink swapped into a parent
/// makes the check fail (ELOOP) instead of describing whatever the link
/// points at, so what a check sees is what the mount that follows acts on.
fn statx(path: &Path) -> io::Result<rustix::fs::Statx> {
    // DONT_SYNC: cached attributes are enough to tell a mount root and an
    // inode, and a network filesystem's server is never waited on.
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC;
    let mask = StatxFlags::TYPE | StatxFlags::INO | StatxFlags::MNT_ID;
    let stat = match open_parent(path) {
        Ok((parent, name)) => rustix::fs::statx(&parent, name, flags, mask),
        // "/": no parent to open.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            rustix::fs::statx(CWD, path, flags, mask)
        }
        Err(e) => return Err(e),
    };
    stat.map_err(io::Error::from)
}

/// Inspects `path`; `Ok(None)` when nothing is there.
pub fn inspect(path: &Path) -> io::Result<Option<PathState>> {
    let st = match statx(path) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let file_type = rustix::fs::FileType::from_raw_mode(st.stx_mode.into());
    let is_mount_root = if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) {
        st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
    } else {
        // Kernels before 5.8: a mount root sits on another mount than its parent.
        match path.parent() {
            Some(parent) => statx(parent)?.stx_mnt_id != st.stx_mnt_id,
            None => true,
        }
    };
    Ok(Some(PathState {
        dev: (st.stx_dev_major, st.stx_dev_minor),
        ino: st.stx_ino,
        is_dir: file_type == rustix::fs::FileType::Directory,
        is_symlink: file_type == rustix::fs::FileType::Symlink,
        is_mount_root,
    }))
}

/// Whether the mount at `path` is read-only.
pub fn is_read_only(path: &Path) -> io::Result<bool> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// Filesystem usage of whatever is mounted at `path`.
pub fn usage(path: &Path) -> io::Result<rustix::fs::StatVfs> {
    Ok(rustix::fs::statvfs(path)?)
}

/// Opens `path` as a handle (O_PATH) without following a symlink in any
/// of its components; `directory` also requires it to be one.
pub fn open_beneath_no_symlinks(path: &Path, directory: bool) -> io::Result<OwnedFd> {
    // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS refuses a final symlink too (ELOOP),
    // where O_NOFOLLOW would open the link itself.
    let mut flags = OFlags::PATH | OFlags::CLOEXEC;
    if directory {
        flags |= OFlags::DIRECTORY;
    }
    Ok(rustix::fs::openat2(
        CWD,
        path,
        flags,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// The parent directory of `path`, opened without following a symlink
/// anywhere, and the last component's name.
pub fn open_parent(path: &Path) -> io::Result<(OwnedFd, &std::ffi::OsStr)> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent directory", path.display()),
        ));
    };
    Ok((open_beneath_no_symlinks(parent, true)?, name))
}

/// A path naming `name` inside the directory held open by `parent`: the
/// kernel resolves the magic link to that very directory, whatever was
/// renamed or swapped since it was opened.
fn through(parent: &OwnedFd, name: &std::ffi::OsStr) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name)
}

/// Opens a directory as a handle that pins it: its parent opened without
/// following any symlink, itself with O_NOFOLLOW.
fn open_dir_nofollow(path: &Path) -> io::Result<OwnedFd> {
    let (parent, name) = open_parent(path)?;
    Ok(rustix::fs::openat(
        &parent,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Creates the directory `path` (mode `mode`) through its opened parent;
/// `Ok(false)` when something already exists there.
pub fn create_dir_at(path: &Path, mode: u32) -> io::Result<bool> {
    let (parent, name) = open_parent(path)?;
    match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(mode)) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates the empty regular file `path` (mode `mode`) through its opened
/// parent, never through a symlink; one already there is left as it is.
pub fn create_file_at(path: &Path, mode: u32) -> io::Result<()> {
    let (parent, name) = open_parent(path)?;
    match rustix::fs::openat(
        &parent,
        name,
        OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::from_raw_mode(mode),
    ) {
        Ok(_) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the directory (or file) at `path` through its opened parent:
/// never anything a swapped parent would point at.
pub fn remove_at(path: &Path) -> io::Result<()> {
    let (parent, name) = open_parent(path)?;
    match rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR) {
        Err(rustix::io::Errno::NOTDIR) => {
            Ok(rustix::fs::unlinkat(&parent, name, AtFlags::empty())?)
        }
        other => Ok(other?),
    }
}

/// Bind-mounts the directory `source` at the directory `target`, with
/// `flags` applied before the mount becomes visible.
pub fn bind(source: &Path, target: &Path, flags: BindFlags) -> io::Result<()> {
    let target_fd = open_dir_nofollow(target)?;
    let source_fd = open_beneath_no_symlinks(source, true)?;
    let tree = rustix::mount::open_tree(
        &source_fd,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )?;
    if flags != BindFlags::default() {
        mount_setattr(tree.as_fd(), flags)?;
    }
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        target_fd.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    Ok(())
}

/// Bind-mounts the file `source` (a device node, for a raw block volume)
/// on the existing regular file `target`, with `flags` applied before the
/// mount becomes visible. Neither path is followed if it is a symlink.
///
/// A read-only bind does not stop writes to a device node (they bypass the
/// mount); callers that need a read-only device must bind a device that
/// is read-only itself.
pub fn bind_file(source: &Path, target: &Path, flags: BindFlags) -> io::Result<()> {
    let (parent, name) = open_parent(target)?;
    let target_fd = rustix::fs::openat(
        &parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if !rustix::fs::fstat(&target_fd).map(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
    })? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", target.display()),
        ));
    }
    let tree = rustix::mount::open_tree(
        CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    if flags != BindFlags::default() {
        mount_setattr(tree.as_fd(), flags)?;
    }
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        target_fd.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    Ok(())
}

/// `struct mount_attr` of linux/mount.h (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// rustix has no `mount_setattr` wrapper yet; this is the raw syscall.
fn mount_setattr(fd: BorrowedFd<'_>, flags: BindFlags) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: flags.set,
        attr_clr: flags.clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a valid NUL-terminated empty string, `attr` lives
    // across the call and its size is passed; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts everything mounted at `path` (stacked mounts included) without
/// following a symlink there. Returns whether anything was unmounted.
///
/// It never stats the mount: on an NFS mount whose server is gone a stat
/// blocks, while umount2 resolves the path without asking the server.
/// A busy mount is detached lazily: the kubelet has already stopped the
/// containers, and a retry loop on EBUSY would never end.
pub fn unmount_all(path: &Path) -> io::Result<bool> {
    // Bounded: each round removes one mount; more than this is not ours.
    const MAX_STACKED: usize = 16;
    // The parent is held open (never a symlink on the way); the mount is
    // named through it, its last component not followed and not stat'ed.
    let (parent, name) = match open_parent(path) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let at = through(&parent, name);
    let mut unmounted = false;
    for _ in 0..MAX_STACKED {
        match rustix::mount::unmount(&at, UnmountFlags::NOFOLLOW) {
            Ok(()) => unmounted = true,
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(&at, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)?;
                unmounted = true;
            }
            // Not a mount point (any more), or not there at all.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => return Ok(unmounted),
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(format!(
        "more than {MAX_STACKED} mounts stacked at {}",
        path.display()
    )))
}

/// Mounts the NFS export `source` (`server:/path`) at `target` with the
/// kernel client, giving up after `deadline`.
///
/// It runs the system's mount helper (`mount.nfs`, nfs-common) rather than
/// mount(2): the helper resolves the server, negotiates the version, talks
/// to rpcbind and mountd for NFSv3 and sets up locking — what every
/// distribution tests. It runs as a child process, so a server that does
/// not answer costs a killed process, never a thread stuck in the kernel
/// that would block later mounts to the same server.
pub fn mount_nfs(
    source: &str,
    target: &Path,
    options: &str,
    deadline: std::time::Duration,
) -> io::Result<()> {
    let helper = ["/sbin/mount.nfs", "/usr/sbin/mount.nfs"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mount.nfs");
    let mut child = std::process::Command::new(helper)
        .arg(source)
        .arg(target)
        .arg("-o")
        .arg(options)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot run {helper}: {e} (install nfs-common)"),
            )
        })?;
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            // The server says the directory is not there: the volume is gone.
            let kind = if stderr.contains("No such file or directory") {
                io::ErrorKind::NotFound
            } else {
                io::ErrorKind::Other
            };
            return Err(io::Error::new(
                kind,
                format!("{helper} {source} failed ({status}): {}", stderr.trim()),
            ));
        }
        if started.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            // The kernel may have finished the mount as the helper died.
            let _ = unmount_all(target);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{helper} {source} did not finish within {deadline:?}"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Volume mounts held on the node, by where they are mounted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MountCounts {
    pub staging: usize,
    pub publish: usize,
}

/// Counts mounts of volume directories (mount root `.../volumes/<key>/data`
/// on device `dev`) under the kubelet dir. This reads the whole mount
/// table: it serves `/metrics` scrapes only, never an RPC.
pub fn count_volume_mounts(dev: (u32, u32), kubelet: &Path) -> io::Result<MountCounts> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let device = format!("{}:{}", dev.0, dev.1);
    let staging_dir = kubelet.join("plugins");
    let mut counts = MountCounts::default();
    for line in table.lines() {
        let mut fields = line.split(' ').skip(2);
        let (Some(line_dev), Some(root), Some(point)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let is_volume = line_dev == device && root.ends_with("/data") && root.contains("/volumes/");
        let point = Path::new(point);
        if !is_volume || !point.starts_with(kubelet) {
            continue;
        }
        if point.starts_with(&staging_dir) {
            counts.staging += 1;
        } else {
            counts.publish += 1;
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Result<BindFlags, String> {
        BindFlags::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn bind_flags_parse() {
        assert_eq!(opts(&[]).unwrap(), BindFlags::default());
        assert!(opts(&["ro"]).unwrap().is_read_only());
        assert!(!opts(&["rw", "noatime"]).unwrap().is_read_only());
        assert!(opts(&["nosuid,nodev", "noexec"]).is_ok());
        assert!(opts(&["uid=1000"]).unwrap_err().contains("uid=1000"));
        assert!(opts(&["nfsvers=4.1"]).is_err());
        assert!(BindFlags::default().read_only().is_read_only());
    }

    #[test]
    fn inspect_missing_and_plain_dirs() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inspect(&dir.path().join("nope")).unwrap(), None);
        let state = inspect(dir.path()).unwrap().unwrap();
        assert!(state.is_dir && !state.is_symlink && !state.is_mount_root);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/", &link).unwrap();
        assert!(inspect(&link).unwrap().unwrap().is_symlink);
    }
}
