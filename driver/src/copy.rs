//! Copying a volume's payload (a directory tree, or one file for a raw block
//! volume) for snapshots, restores and clones.
//!
//! Each regular file is first cloned with `FICLONE`, which shares its blocks
//! with the source where the filesystem can (XFS with reflink, btrfs): a
//! copy of any size then costs metadata only. Where it cannot, the file is
//! copied with `copy_file_range` over its data ranges (`SEEK_DATA` /
//! `SEEK_HOLE`), so holes stay holes.
//!
//! The source is written by pods, so it is hostile and may change under the
//! copy:
//! - the walk holds directory fds and opens every entry relative to its
//!   parent with `O_NOFOLLOW`: no symlink is ever followed, and a directory
//!   swapped for a symlink mid-copy is refused by the open, not traversed;
//! - regular files are opened `O_PATH` first and reopened for reading only
//!   after `fstat` says they are regular, so a device node swapped in never
//!   sees an `open` (opening some devices has side effects);
//! - entries that vanish or change type between listing and copying are
//!   skipped and counted (a copy of a live volume is not point-in-time
//!   consistent anyway: files are copied one after the other).
//!
//! What is kept: contents, mode (with setuid/setgid/sticky), owner, access
//! and modification times, extended attributes (POSIX ACLs included) where
//! the destination takes them; symlinks are copied as symlinks and fifos
//! are recreated. Device nodes and sockets are skipped and counted: a copy
//! must not hand a pod a device it could not create itself. Hard links
//! within the tree stay hard links (the file is copied once and linked
//! again), so a copy takes no more space than its source; a link to a file
//! outside the tree (nothing else shares a volume's filesystem tree) is
//! copied as a file.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::Timespec;
use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, SeekFrom, Stat, Timestamps, Uid, XattrFlags, CWD,
};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// Deepest directory nesting copied. The walk holds two fds per level; a
/// hostile tree nested deeper fails the copy with a clear error instead of
/// exhausting the process's fds.
pub const MAX_DEPTH: usize = 1000;
/// Bytes per `copy_file_range` call, so a cancel is noticed within one chunk.
const CHUNK: usize = 16 << 20;

/// What a copy did, for logs and figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files copied, and how many of them by sharing blocks.
    pub files: u64,
    pub reflinked: u64,
    /// Bytes of regular files (their sizes, holes included).
    pub bytes: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub fifos: u64,
    /// Names linked to a file copied earlier (hard links kept).
    pub hardlinks: u64,
    /// Device nodes and sockets, not copied.
    pub skipped_special: u64,
    /// Entries that disappeared or changed type while being copied.
    pub changed: u64,
    /// Extended attributes the destination refused.
    pub xattrs_skipped: u64,
}

impl CopyStats {
    /// Whether every regular file shares its blocks with its source.
    pub fn all_reflinked(&self) -> bool {
        self.reflinked == self.files
    }
}

/// Copies the entry `src_name` of directory `src_dir` (a directory tree or a
/// regular file) to the new entry `dst_name` of `dst_dir`, which must not
/// exist. `cancel` is checked between files and chunks; when set, the copy
/// stops with Aborted and leaves its partial output for the caller to remove.
pub fn copy(
    src_dir: BorrowedFd<'_>,
    src_name: &str,
    dst_dir: BorrowedFd<'_>,
    dst_name: &str,
    cancel: &AtomicBool,
) -> Result<CopyStats> {
    let mut copier = Copier::new(cancel, src_name);
    copier.check_cancel()?;
    let st = rustix::fs::statat(src_dir, src_name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| copier.fail("stat", e))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => copier.tree(src_dir, src_name, Dest::New(dst_dir, dst_name))?,
        FileType::RegularFile => {
            let done = copier.file(src_dir, src_name, dst_dir, dst_name)?;
            if !done {
                return Err(Error::FailedPrecondition(format!(
                    "{src_name} changed while it was being copied"
                )));
            }
        }
        other => {
            return Err(Error::Internal(format!(
                "{src_name} is a {other:?}, neither a directory nor a regular file"
            )))
        }
    }
    Ok(copier.stats)
}

/// Where a copied tree's root goes.
enum Dest<'a> {
    New(BorrowedFd<'a>, &'a str),
    Existing(BorrowedFd<'a>),
}

/// Copies the directory `src_name` of `src_dir` into the existing, empty
/// directory `dst`: its entries, then its owner, mode and times. For a new
/// volume whose data directory is made (and set up) before it is filled.
pub fn copy_into(
    src_dir: BorrowedFd<'_>,
    src_name: &str,
    dst: BorrowedFd<'_>,
    cancel: &AtomicBool,
) -> Result<CopyStats> {
    let mut copier = Copier::new(cancel, src_name);
    copier.check_cancel()?;
    copier.tree(src_dir, src_name, Dest::Existing(dst))?;
    Ok(copier.stats)
}

/// [`copy`] between paths the driver owns: the parents are trusted (they
/// are under the local root), the final components are not followed.
pub fn copy_path(src: &Path, dst: &Path, cancel: &AtomicBool) -> Result<CopyStats> {
    let (src_parent, src_name) = split(src)?;
    let (dst_parent, dst_name) = split(dst)?;
    let open = |dir: &Path| {
        rustix::fs::openat(
            CWD,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", dir)(e.into()))
    };
    let src_fd = open(src_parent)?;
    let dst_fd = open(dst_parent)?;
    copy(src_fd.as_fd(), src_name, dst_fd.as_fd(), dst_name, cancel)
}

fn split(path: &Path) -> Result<(&Path, &str)> {
    match (path.parent(), path.file_name().and_then(OsStr::to_str)) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(Error::Internal(format!(
            "{} has no parent directory or no name",
            path.display()
        ))),
    }
}

/// Makes everything written below `dir`'s filesystem durable (one `syncfs`
/// instead of an fsync per copied file and directory).
pub fn sync_filesystem(dir: &Path) -> Result<()> {
    let fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::io("open", dir)(e.into()))?;
    rustix::fs::syncfs(&fd).map_err(|e| Error::io("syncfs", dir)(e.into()))
}

/// One directory being copied: its listing, both fds, and the source's
/// metadata, applied to the copy once its children are in place (writing
/// them would change its times).
struct Level {
    src: Dir,
    dst: OwnedFd,
    meta: Stat,
}

struct Copier<'a> {
    stats: CopyStats,
    cancel: &'a AtomicBool,
    /// False once the filesystem said it cannot share blocks.
    reflink: bool,
    /// Where the walk is, relative to the copy's root (for errors, and
    /// where hard links point).
    path: PathBuf,
    /// Files with more than one link, by source (device, inode): where
    /// their copy is, relative to the destination root.
    linked: HashMap<(u64, u64), PathBuf>,
}

/// What happened to an entry between listing and copying it.
fn is_gone(e: Errno) -> bool {
    // ENOENT: removed; ELOOP: became a symlink (O_NOFOLLOW); ENOTDIR: a
    // directory became something else.
    matches!(e, Errno::NOENT | Errno::LOOP | Errno::NOTDIR)
}

impl<'a> Copier<'a> {
    fn new(cancel: &'a AtomicBool, root: &str) -> Self {
        Copier {
            stats: CopyStats::default(),
            cancel,
            reflink: true,
            path: PathBuf::from(root),
            linked: HashMap::new(),
        }
    }

    fn fail(&self, action: &'static str, e: Errno) -> Error {
        Error::io(action, self.path.clone())(e.into())
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Aborted(format!(
                "copy cancelled at {}",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Opens a directory entry that must be a directory, never following a
    /// symlink. `None` when it is gone or no longer a directory.
    fn open_dir(&self, parent: BorrowedFd<'_>, name: &CStr) -> Result<Option<OwnedFd>> {
        match rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if is_gone(e) => Ok(None),
            Err(e) => Err(self.fail("open directory", e)),
        }
    }

    fn new_dir(&self, parent: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
            .map_err(|e| self.fail("create directory", e))?;
        rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.fail("open new directory", e))
    }

    /// Copies a directory tree, depth first, without recursion. `dst` is
    /// where the tree's root goes: a new entry of a directory, or an existing
    /// directory whose owner, mode and times become the source root's.
    fn tree(&mut self, src_parent: BorrowedFd<'_>, src_name: &str, dst: Dest<'_>) -> Result<()> {
        let Some(src) = self.open_dir(src_parent, &cstring(src_name)?)? else {
            return Err(Error::FailedPrecondition(format!(
                "{src_name} changed while it was being copied"
            )));
        };
        let meta = rustix::fs::fstat(&src).map_err(|e| self.fail("stat", e))?;
        let dst = match dst {
            Dest::New(parent, name) => self.new_dir(parent, &cstring(name)?)?,
            Dest::Existing(dir) => dir
                .try_clone_to_owned()
                .map_err(|e| Error::io("duplicate fd of", self.path.clone())(e))?,
        };
        let src = Dir::new(src).map_err(|e| self.fail("read directory", e))?;
        let root = dst
            .try_clone()
            .map_err(|e| Error::io("duplicate fd of", self.path.clone())(e))?;
        let mut stack = vec![Level { src, dst, meta }];
        self.path = PathBuf::new();
        loop {
            let depth = stack.len();
            let Some(level) = stack.last_mut() else {
                break;
            };
            let entry = match level.src.read() {
                None => {
                    let done = stack.pop().expect("non-empty stack");
                    self.finish_dir(&done)?;
                    self.path.pop();
                    continue;
                }
                Some(Err(e)) => return Err(self.fail("read directory", e)),
                Some(Ok(entry)) => entry,
            };
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            self.check_cancel()?;
            let name = name.to_owned();
            self.path.push(OsStr::from_bytes(name.to_bytes()));
            let src_dir = level.src.fd().map_err(|e| self.fail("read directory", e))?;
            let dst_dir = level.dst.as_fd();
            let st = match rustix::fs::statat(src_dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(e) if is_gone(e) => {
                    self.stats.changed += 1;
                    self.path.pop();
                    continue;
                }
                Err(e) => return Err(self.fail("stat", e)),
            };
            let mut deeper = None;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    if depth >= MAX_DEPTH {
                        return Err(Error::FailedPrecondition(format!(
                            "{} is nested deeper than {MAX_DEPTH} directories; \
                             such a tree cannot be copied",
                            self.path.display()
                        )));
                    }
                    match self.open_dir(src_dir, &name)? {
                        None => self.stats.changed += 1,
                        Some(fd) => {
                            let meta = rustix::fs::fstat(&fd).map_err(|e| self.fail("stat", e))?;
                            let dst = self.new_dir(dst_dir, &name)?;
                            let src = Dir::new(fd).map_err(|e| self.fail("read directory", e))?;
                            deeper = Some(Level { src, dst, meta });
                        }
                    }
                }
                FileType::RegularFile => {
                    self.regular(src_dir, &name, dst_dir, root.as_fd(), &st)?
                }
                FileType::Symlink => self.symlink(src_dir, &name, dst_dir, &st)?,
                FileType::Fifo => self.fifo(dst_dir, &name, &st)?,
                _ => self.stats.skipped_special += 1,
            }
            let descended = deeper.is_some();
            stack.extend(deeper);
            if !descended {
                self.path.pop();
            }
        }
        Ok(())
    }

    /// Gives a copied directory its source's owner, attributes, mode and
    /// times, now that nothing more is written into it.
    fn finish_dir(&mut self, level: &Level) -> Result<()> {
        let src = level.src.fd().map_err(|e| self.fail("read directory", e))?;
        self.apply_meta(src, level.dst.as_fd(), &level.meta)?;
        self.stats.dirs += 1;
        Ok(())
    }

    /// Owner first (chown clears setuid bits and file capabilities), then
    /// extended attributes, mode, and times last.
    fn apply_meta(&mut self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>, st: &Stat) -> Result<()> {
        rustix::fs::fchown(
            dst,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(|e| self.fail("chown", e))?;
        self.copy_xattrs(src, dst)?;
        rustix::fs::fchmod(dst, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(|e| self.fail("chmod", e))?;
        rustix::fs::futimens(dst, &times(st)).map_err(|e| self.fail("set times of", e))
    }

    /// A regular file met in the walk: linked to its earlier copy when it
    /// is another name of a file already copied, else copied.
    fn regular(
        &mut self,
        src_dir: BorrowedFd<'_>,
        name: &CStr,
        dst_dir: BorrowedFd<'_>,
        dst_root: BorrowedFd<'_>,
        st: &Stat,
    ) -> Result<()> {
        let inode = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.linked.get(&inode) {
                // The destination tree is the copy's own (made by this walk,
                // not reachable by pods), so its relative path is safe to
                // resolve; the final name is never followed.
                rustix::fs::linkat(dst_root, first.as_path(), dst_dir, name, AtFlags::empty())
                    .map_err(|e| self.fail("link", e))?;
                self.stats.hardlinks += 1;
                return Ok(());
            }
        }
        if !self.file_c(src_dir, name, dst_dir, name)? {
            self.stats.changed += 1;
        } else if st.st_nlink > 1 {
            self.linked.insert(inode, self.path.clone());
        }
        Ok(())
    }

    fn file(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &str,
        dst_dir: BorrowedFd<'_>,
        dst_name: &str,
    ) -> Result<bool> {
        self.file_c(src_dir, &cstring(src_name)?, dst_dir, &cstring(dst_name)?)
    }

    /// Copies one regular file; false when it vanished or stopped being a
    /// regular file before it could be opened.
    fn file_c(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
        dst_dir: BorrowedFd<'_>,
        dst_name: &CStr,
    ) -> Result<bool> {
        let Some((src, st)) = self.open_regular(src_dir, src_name)? else {
            return Ok(false);
        };
        let dst = rustix::fs::openat(
            dst_dir,
            dst_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.fail("create", e))?;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if self.clone_file(&src, &dst)? {
            self.stats.reflinked += 1;
        } else {
            self.copy_data(&src, &dst, size)?;
        }
        self.apply_meta(src.as_fd(), dst.as_fd(), &st)?;
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(true)
    }

    /// Opens a regular file for reading without ever opening anything else:
    /// `O_PATH` does not open the inode, so a fifo or device swapped in is
    /// detected by `fstat` before any real open. The reopen goes through the
    /// fd's magic link, which names that inode, not a path.
    fn open_regular(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<Option<(OwnedFd, Stat)>> {
        let path_fd = match rustix::fs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) if is_gone(e) => return Ok(None),
            Err(e) => return Err(self.fail("open", e)),
        };
        let st = rustix::fs::fstat(&path_fd).map_err(|e| self.fail("stat", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Ok(None);
        }
        let magic = format!("/proc/self/fd/{}", path_fd.as_raw_fd());
        let fd = rustix::fs::open(
            magic.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| self.fail("reopen (through /proc/self/fd)", e))?;
        Ok(Some((fd, st)))
    }

    /// Shares the source's blocks with the (empty) destination. False when
    /// this filesystem cannot; the caller then copies.
    fn clone_file(&mut self, src: &OwnedFd, dst: &OwnedFd) -> Result<bool> {
        if !self.reflink {
            return Ok(false);
        }
        match rustix::fs::ioctl_ficlone(dst, src) {
            Ok(()) => Ok(true),
            // Not supported by this filesystem (or these two files): stop
            // asking for the rest of the copy.
            Err(Errno::OPNOTSUPP | Errno::NOTTY | Errno::XDEV | Errno::NOSYS) => {
                self.reflink = false;
                Ok(false)
            }
            // EINVAL: this file cannot be cloned (e.g. unaligned size on some
            // filesystems); copying it still works.
            Err(Errno::INVAL) => Ok(false),
            Err(e) => Err(self.fail("clone", e)),
        }
    }

    /// Copies the data ranges of a file; holes are left unwritten and the
    /// length set at the end, so a sparse file stays sparse.
    fn copy_data(&self, src: &OwnedFd, dst: &OwnedFd, size: u64) -> Result<()> {
        let mut offset = 0u64;
        while offset < size {
            self.check_cancel()?;
            let data = match rustix::fs::seek(src, SeekFrom::Data(offset)) {
                Ok(data) => data,
                // Only holes from here on.
                Err(Errno::NXIO) => break,
                // No hole support: everything is data.
                Err(Errno::INVAL | Errno::OPNOTSUPP) => offset,
                Err(e) => return Err(self.fail("seek", e)),
            };
            if data >= size {
                break;
            }
            let hole = rustix::fs::seek(src, SeekFrom::Hole(data))
                .unwrap_or(size)
                .min(size);
            self.copy_range(src, dst, data, hole)?;
            offset = hole.max(data + 1);
        }
        rustix::fs::ftruncate(dst, size).map_err(|e| self.fail("set length of", e))
    }

    fn copy_range(&self, src: &OwnedFd, dst: &OwnedFd, start: u64, end: u64) -> Result<()> {
        let mut in_off = start;
        let mut out_off = start;
        while in_off < end {
            self.check_cancel()?;
            let len = usize::try_from(end - in_off).unwrap_or(CHUNK).min(CHUNK);
            match rustix::fs::copy_file_range(src, Some(&mut in_off), dst, Some(&mut out_off), len)
            {
                // The file shrank under us: nothing more to copy here.
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(Errno::XDEV | Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) => {
                    return self.copy_range_rw(src, dst, in_off, end)
                }
                Err(e) => return Err(self.fail("copy", e)),
            }
        }
        Ok(())
    }

    /// The plain read/write fallback for filesystems without
    /// `copy_file_range` between these files.
    fn copy_range_rw(&self, src: &OwnedFd, dst: &OwnedFd, start: u64, end: u64) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = start;
        while offset < end {
            self.check_cancel()?;
            let want = usize::try_from(end - offset)
                .unwrap_or(buf.len())
                .min(buf.len());
            let n = rustix::io::pread(src, &mut buf[..want], offset)
                .map_err(|e| self.fail("read", e))?;
            if n == 0 {
                return Ok(());
            }
            let mut written = 0;
            while written < n {
                written += rustix::io::pwrite(dst, &buf[written..n], offset + written as u64)
                    .map_err(|e| self.fail("write", e))?;
            }
            offset += n as u64;
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        src_dir: BorrowedFd<'_>,
        name: &CStr,
        dst_dir: BorrowedFd<'_>,
        st: &Stat,
    ) -> Result<()> {
        let target = match rustix::fs::readlinkat(src_dir, name, Vec::new()) {
            Ok(target) => target,
            // Gone, or no longer a symlink (EINVAL).
            Err(e) if is_gone(e) || e == Errno::INVAL => {
                self.stats.changed += 1;
                return Ok(());
            }
            Err(e) => return Err(self.fail("read link", e)),
        };
        rustix::fs::symlinkat(target.as_c_str(), dst_dir, name)
            .map_err(|e| self.fail("create symlink", e))?;
        rustix::fs::chownat(
            dst_dir,
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fail("chown", e))?;
        rustix::fs::utimensat(dst_dir, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail("set times of", e))?;
        self.stats.symlinks += 1;
        Ok(())
    }

    fn fifo(&mut self, dst_dir: BorrowedFd<'_>, name: &CStr, st: &Stat) -> Result<()> {
        rustix::fs::mknodat(dst_dir, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
            .map_err(|e| self.fail("create fifo", e))?;
        // The new fifo is ours (in the copy, which nobody else writes): it
        // can be addressed by name, with no open that would block.
        rustix::fs::chownat(
            dst_dir,
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.fail("chown", e))?;
        rustix::fs::chmodat(
            dst_dir,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(|e| self.fail("chmod", e))?;
        rustix::fs::utimensat(dst_dir, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail("set times of", e))?;
        self.stats.fifos += 1;
        Ok(())
    }

    /// Copies every extended attribute the destination accepts; those it
    /// refuses (no xattr support, a namespace it does not allow) are counted.
    fn copy_xattrs(&mut self, src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<()> {
        let unsupported = |e: Errno| matches!(e, Errno::OPNOTSUPP | Errno::PERM | Errno::ACCESS);
        let size = match rustix::fs::flistxattr_query(src) {
            Ok(0) => return Ok(()),
            Ok(size) => size,
            Err(e) if unsupported(e) => return Ok(()),
            Err(e) => return Err(self.fail("list attributes of", e)),
        };
        let mut names = vec![0u8; size];
        let len = match rustix::fs::flistxattr(src, &mut names[..]) {
            Ok(len) => len,
            // Grew since the query: a pod is changing it; skip, as a race.
            Err(Errno::RANGE) => {
                self.stats.xattrs_skipped += 1;
                return Ok(());
            }
            Err(e) => return Err(self.fail("list attributes of", e)),
        };
        for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let Ok(name) = CString::new(name) else {
                continue;
            };
            let value = match self.read_xattr(src, &name)? {
                Some(value) => value,
                None => {
                    self.stats.xattrs_skipped += 1;
                    continue;
                }
            };
            match rustix::fs::fsetxattr(dst, name.as_c_str(), &value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) if unsupported(e) => self.stats.xattrs_skipped += 1,
                Err(e) => return Err(self.fail("set attribute of", e)),
            }
        }
        Ok(())
    }

    /// One attribute's value; `None` when it vanished or changed size.
    fn read_xattr(&self, fd: BorrowedFd<'_>, name: &CStr) -> Result<Option<Vec<u8>>> {
        let size = match rustix::fs::fgetxattr_query(fd, name) {
            Ok(size) => size,
            Err(Errno::NODATA | Errno::RANGE) => return Ok(None),
            Err(e) => return Err(self.fail("read attribute of", e)),
        };
        let mut value = vec![0u8; size];
        match rustix::fs::fgetxattr(fd, name, &mut value[..]) {
            Ok(len) => {
                value.truncate(len);
                Ok(Some(value))
            }
            Err(Errno::NODATA | Errno::RANGE) => Ok(None),
            Err(e) => Err(self.fail("read attribute of", e)),
        }
    }
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

fn cstring(name: &str) -> Result<CString> {
    CString::new(name).map_err(|_| Error::Internal(format!("{name:?} contains NUL")))
}

#[cfg(test)]
mod tests;
