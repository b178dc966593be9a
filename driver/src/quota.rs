//! Project quotas (XFS, and ext4 with the `project` and `quota` features):
//! every syscall the driver makes to enforce and read a volume's size.
//!
//! A directory gets a *project id* and the `PROJINHERIT` flag (through the
//! `FS_IOC_FSSETXATTR` ioctl); everything created below it then belongs to
//! the same project, and the filesystem charges its blocks and inodes to
//! that project's quota. A hard block limit on the project makes writes
//! beyond it fail with `EDQUOT`.
//!
//! Quotas are reached with `quotactl_fd(2)` (Linux 5.14+) on any open file
//! of the filesystem, so no block device has to be found for a mount. Reads
//! use the XFS-style commands (`Q_XGETQSTATV`, `Q_XGETQUOTA`), which the
//! kernel serves for ext4 too and, unlike `Q_GETQUOTA`, does not count as a
//! write (it works through a read-only bind mount). The limit is set with
//! the generic `Q_SETQUOTA`, in KiB.
//!
//! `struct fsxattr`, its ioctls, the filesystem magics and the syscall
//! number come from linux-raw-sys. It has nothing of `<linux/quota.h>` or
//! `<linux/dqblk_xfs.h>`, so the quota commands and structures are declared
//! here, each layout pinned to the kernel's size at compile time.

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use linux_raw_sys::general::{
    fsxattr, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, FS_XFLAG_PROJINHERIT,
    NFS_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC, V9FS_MAGIC, XFS_SUPER_MAGIC,
};
use linux_raw_sys::ioctl::{FS_IOC_FSGETXATTR, FS_IOC_FSSETXATTR};
use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

// Not in linux-raw-sys 0.12 (no <linux/quota.h>, no <linux/dqblk_xfs.h>):
// the quota commands, flags and structures below are written out by hand.

/// `PRJQUOTA` from `<linux/quota.h>`.
const PRJQUOTA: u32 = 2;
/// `QCMD`: the command in the high bits, the quota type in the low byte.
const fn qcmd(cmd: u32, kind: u32) -> u32 {
    (cmd << 8) | (kind & 0xff)
}
/// Generic quota commands (`<linux/quota.h>`).
const Q_SETQUOTA: u32 = 0x80_0008;
/// XFS-style commands (`<linux/dqblk_xfs.h>`): `XQM_CMD(n) = ('X' << 8) + n`.
const Q_XGETQUOTA: u32 = (b'X' as u32) << 8 | 3;
const Q_XGETQSTATV: u32 = (b'X' as u32) << 8 | 8;

/// `if_dqblk.dqb_valid`: the block limits are being set.
const QIF_BLIMITS: u32 = 1;
/// `if_dqblk` limits are in units of 1 KiB (`QIF_DQBLKSIZE`).
const QIF_BLOCK: u64 = 1024;
/// `fs_disk_quota` block counts are in 512-byte "basic blocks".
const BASIC_BLOCK: u64 = 512;

const FS_QSTATV_VERSION1: i8 = 1;
/// `fs_quota_statv.qs_flags`: project quota accounting / enforcement is on.
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;

/// `struct if_dqblk` (`<linux/quota.h>`), for `Q_SETQUOTA`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}
const _: () = assert!(size_of::<IfDqblk>() == 72);

/// `struct fs_disk_quota` (`<linux/dqblk_xfs.h>`), for `Q_XGETQUOTA`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsDiskQuota {
    version: i8,
    flags: i8,
    fieldmask: u16,
    id: u32,
    blk_hardlimit: u64,
    blk_softlimit: u64,
    ino_hardlimit: u64,
    ino_softlimit: u64,
    bcount: u64,
    icount: u64,
    itimer: i32,
    btimer: i32,
    iwarns: u16,
    bwarns: u16,
    itimer_hi: i8,
    btimer_hi: i8,
    rtbtimer_hi: i8,
    padding2: i8,
    rtb_hardlimit: u64,
    rtb_softlimit: u64,
    rtbcount: u64,
    rtbtimer: i32,
    rtbwarns: u16,
    padding3: i16,
    padding4: [u8; 8],
}
const _: () = assert!(size_of::<FsDiskQuota>() == 112);

/// `struct fs_qfilestatv` (`<linux/dqblk_xfs.h>`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsQfilestatv {
    ino: u64,
    nblks: u64,
    nextents: u32,
    pad: u32,
}
const _: () = assert!(size_of::<FsQfilestatv>() == 24);

/// `struct fs_quota_statv` (`<linux/dqblk_xfs.h>`), for `Q_XGETQSTATV`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FsQuotaStatv {
    version: i8,
    pad1: u8,
    flags: u16,
    incoredqs: u32,
    uquota: FsQfilestatv,
    gquota: FsQfilestatv,
    pquota: FsQfilestatv,
    btimelimit: i32,
    itimelimit: i32,
    rtbtimelimit: i32,
    bwarnlimit: u16,
    iwarnlimit: u16,
    rtbwarnlimit: u16,
    pad3: u16,
    pad4: u32,
    pad2: [u64; 7],
}
const _: () = assert!(size_of::<FsQuotaStatv>() == 160);

/// A project id a volume can own: never 0 (the project every file starts
/// in) nor `u32::MAX` (the kernel's invalid id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(NonZeroU32);

impl ProjectId {
    pub fn new(id: u32) -> Option<Self> {
        if id == u32::MAX {
            return None;
        }
        NonZeroU32::new(id).map(Self)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// The id derived from a volume directory's inode number: inode numbers
    /// are unique among the filesystem's live inodes, so two live volumes
    /// never derive the same one. `None` when the inode number does not fit
    /// (XFS `inode64` on large filesystems) or is not a valid id.
    pub fn from_inode(ino: u64) -> Option<Self> {
        u32::try_from(ino).ok().and_then(Self::new)
    }

    /// Ids to try, in order, for a volume whose directory has inode `ino`
    /// and key `key`: the inode-derived id first, then a probe sequence
    /// derived from the key, in the upper half of the id space (where small
    /// inode numbers, the common case on ext4 and small XFS, do not live).
    /// The caller takes the first id no file is charged to.
    pub fn candidates(ino: u64, key: &str) -> impl Iterator<Item = ProjectId> {
        const BASE: u32 = 1 << 31;
        const SPAN: u32 = u32::MAX - 1 - BASE; // ids BASE..u32::MAX-1
        let digest = Sha256::digest(key.as_bytes());
        let start = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % SPAN;
        let derived =
            (0..FALLBACK_PROBES).filter_map(move |i| Self::new(BASE + (start + i) % SPAN));
        Self::from_inode(ino).into_iter().chain(derived)
    }
}

/// How many key-derived ids are tried before giving up (each costs one
/// quotactl; every one taken means a live project with that exact id).
pub const FALLBACK_PROBES: u32 = 64;

impl std::fmt::Display for ProjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether a filesystem can enforce project quotas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Project quotas are accounted and enforced.
    Enforced,
    /// Usage is accounted per project but limits are not enforced
    /// (XFS `pqnoenforce`, ext4 with the quota feature but no `prjquota`).
    AccountingOnly,
    /// No project quotas; why, for people.
    Unsupported(String),
}

impl Support {
    /// Whether volumes can be given project ids (usage is then per volume).
    pub fn accounts(&self) -> bool {
        matches!(self, Support::Enforced | Support::AccountingOnly)
    }
}

/// A project's usage and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub bytes_used: u64,
    /// Hard limit in bytes; 0: none.
    pub bytes_limit: u64,
    pub inodes_used: u64,
    /// Hard limit on inodes; 0: none.
    pub inodes_limit: u64,
}

impl Usage {
    /// Nothing is charged to the project: no live file has its id.
    pub fn is_unused(&self) -> bool {
        self.bytes_used == 0 && self.inodes_used == 0
    }
}

/// A directory's project id and whether new entries inherit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectAttr {
    /// 0: the directory belongs to no project.
    pub id: u32,
    pub inherit: bool,
}

/// Opens a directory (never following a final symlink) for the calls below.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

/// `quotactl_fd(fd, cmd, id, addr)`: quota command `cmd` for quota `id` of
/// the filesystem holding `fd`.
///
/// # Safety
///
/// `addr` must point to a structure of the type `cmd` expects (`IfDqblk`
/// for `Q_SETQUOTA`, `FsDiskQuota` for `Q_XGETQUOTA`, `FsQuotaStatv` for
/// `Q_XGETQSTATV`), valid for the reads and writes the command makes of it
/// for the whole call: the kernel trusts the pointer and the command alone.
unsafe fn quotactl_fd(
    fd: BorrowedFd<'_>,
    cmd: u32,
    id: u32,
    addr: *mut libc::c_void,
) -> io::Result<()> {
    // SAFETY: the syscall touches only the structure at `addr`, which the
    // caller vouches for; the other arguments are plain integers.
    let rc = unsafe {
        libc::syscall(
            linux_raw_sys::general::__NR_quotactl_fd as libc::c_long,
            fd.as_raw_fd() as libc::c_uint,
            cmd as libc::c_uint,
            id as libc::c_uint,
            addr,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn fsxattr_get(dir: BorrowedFd<'_>) -> io::Result<fsxattr> {
    let mut attr = fsxattr {
        fsx_xflags: 0,
        fsx_extsize: 0,
        fsx_nextents: 0,
        fsx_projid: 0,
        fsx_cowextsize: 0,
        fsx_pad: [0; 8],
    };
    // SAFETY: FS_IOC_FSGETXATTR writes one struct fsxattr to the pointer.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSGETXATTR as _, &mut attr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

/// The filesystem's name for messages: `xfs`, `ext4`, `tmpfs`, ... or its magic.
pub fn filesystem_name(fd: BorrowedFd<'_>) -> String {
    let Ok(st) = rustix::fs::fstatfs(fd) else {
        return "an unknown filesystem".into();
    };
    // f_type is a signed long on most targets (u32 on s390x), holding the
    // kernel's u32 magic: compare the low 32 bits, which also matches magics
    // above i32::MAX where the long is 32 bits wide.
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as u32;
    match magic {
        XFS_SUPER_MAGIC => "xfs".into(),
        EXT4_SUPER_MAGIC => "ext4 (or ext2/3)".into(),
        TMPFS_MAGIC => "tmpfs".into(),
        BTRFS_SUPER_MAGIC => "btrfs".into(),
        OVERLAYFS_SUPER_MAGIC => "overlayfs".into(),
        NFS_SUPER_MAGIC => "nfs".into(),
        V9FS_MAGIC => "9p".into(),
        F2FS_SUPER_MAGIC => "f2fs".into(),
        other => format!("a filesystem with magic {other:#x}"),
    }
}

/// What an operator does about a root that cannot enforce.
const HOW_TO_ENFORCE: &str = "put the local root on XFS mounted with prjquota, or on ext4 \
     with the quota and project features (mkfs.ext4 -O quota,project, or tune2fs -O \
     quota,project while unmounted) mounted with prjquota";

/// Whether the filesystem holding `fd` accounts and enforces project quotas.
pub fn probe(fd: BorrowedFd<'_>) -> Support {
    let fs = filesystem_name(fd);
    let mut stat = FsQuotaStatv {
        version: FS_QSTATV_VERSION1,
        ..Default::default()
    };
    let cmd = qcmd(Q_XGETQSTATV, PRJQUOTA);
    // SAFETY: Q_XGETQSTATV reads the version from and writes one
    // fs_quota_statv to `stat`, a live local borrowed mutably for the call.
    let got = unsafe { quotactl_fd(fd, cmd, 0, (&mut stat as *mut FsQuotaStatv).cast()) };
    if let Err(e) = got {
        let why = match e.raw_os_error() {
            // Also what XFS answers when mounted without quotas.
            Some(libc::ENOSYS) => format!(
                "project quotas are off on this {fs} filesystem, or this kernel has no quota \
                 support (quotactl_fd: {e}); {HOW_TO_ENFORCE}"
            ),
            Some(libc::ENOTSUP) | Some(libc::EINVAL) => {
                format!("{fs} does not support project quotas (quotactl_fd: {e}); {HOW_TO_ENFORCE}")
            }
            _ => format!("cannot read the project quota state of {fs}: {e}"),
        };
        return Support::Unsupported(why);
    }
    let accounting = stat.flags & FS_QUOTA_PDQ_ACCT != 0;
    let enforced = stat.flags & FS_QUOTA_PDQ_ENFD != 0;
    match (accounting, enforced) {
        (true, true) => Support::Enforced,
        (true, false) => Support::AccountingOnly,
        _ => Support::Unsupported(format!(
            "project quotas are off on this {fs} filesystem; {HOW_TO_ENFORCE}"
        )),
    }
}

/// The project id of a directory (and whether it passes it on).
pub fn project_of(dir: BorrowedFd<'_>) -> io::Result<ProjectAttr> {
    let attr = fsxattr_get(dir)?;
    Ok(ProjectAttr {
        id: attr.fsx_projid,
        inherit: attr.fsx_xflags & FS_XFLAG_PROJINHERIT != 0,
    })
}

/// Puts a directory into project `id`, with `PROJINHERIT` so everything
/// created below it joins the same project. The directory's own inode is
/// moved to the project's quota at once (it counts one inode there).
pub fn assign(dir: BorrowedFd<'_>, id: ProjectId) -> io::Result<()> {
    let mut attr = fsxattr_get(dir)?;
    attr.fsx_projid = id.get();
    attr.fsx_xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: FS_IOC_FSSETXATTR reads one struct fsxattr from the pointer.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSSETXATTR as _, &attr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets project `id`'s hard block limit to `bytes` (rounded up to the
/// next KiB; 0 removes the limit); no soft limit. `fs` is any file of the
/// filesystem on a writable mount.
pub fn set_limit(fs: BorrowedFd<'_>, id: ProjectId, bytes: u64) -> io::Result<()> {
    let mut dq = IfDqblk {
        bhardlimit: bytes.div_ceil(QIF_BLOCK),
        bsoftlimit: 0,
        valid: QIF_BLIMITS,
        ..Default::default()
    };
    // SAFETY: Q_SETQUOTA reads one if_dqblk from `dq`, a live local
    // borrowed for the call.
    unsafe {
        quotactl_fd(
            fs,
            qcmd(Q_SETQUOTA, PRJQUOTA),
            id.get(),
            (&mut dq as *mut IfDqblk).cast(),
        )
    }
}

/// Usage and limits of project `id`. A project nothing was ever charged
/// to reads as all zeros (XFS answers ENOENT for it).
pub fn usage(fs: BorrowedFd<'_>, id: ProjectId) -> io::Result<Usage> {
    let mut dq = FsDiskQuota::default();
    // SAFETY: Q_XGETQUOTA writes one fs_disk_quota to `dq`, a live local
    // borrowed mutably for the call.
    let got = unsafe {
        quotactl_fd(
            fs,
            qcmd(Q_XGETQUOTA, PRJQUOTA),
            id.get(),
            (&mut dq as *mut FsDiskQuota).cast(),
        )
    };
    match got {
        Ok(()) => Ok(Usage {
            bytes_used: dq.bcount.saturating_mul(BASIC_BLOCK),
            bytes_limit: dq.blk_hardlimit.saturating_mul(BASIC_BLOCK),
            inodes_used: dq.icount,
            inodes_limit: dq.ino_hardlimit,
        }),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Usage::default()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::os::fd::AsFd;

    #[test]
    fn structures_match_the_kernel_abi() {
        // The sizes are checked where each structure is declared; here the
        // offsets of the fields the driver reads or sets, from
        // <linux/quota.h> and <linux/dqblk_xfs.h> on x86_64.
        assert_eq!(offset_of!(IfDqblk, bhardlimit), 0);
        assert_eq!(offset_of!(IfDqblk, valid), 64);
        assert_eq!(offset_of!(FsDiskQuota, blk_hardlimit), 8);
        assert_eq!(offset_of!(FsDiskQuota, ino_hardlimit), 24);
        assert_eq!(offset_of!(FsDiskQuota, bcount), 40);
        assert_eq!(offset_of!(FsDiskQuota, icount), 48);
        assert_eq!(offset_of!(FsQuotaStatv, flags), 2);
        assert_eq!(offset_of!(FsQuotaStatv, pquota), 56);
        // linux-raw-sys's ioctl numbers encode the size of the fsxattr it
        // declares (_IOC(dir, 'X', nr, size)): the pointer we pass matches.
        let ioc = |dir: u32, nr: u32| {
            (dir << 30) | ((size_of::<fsxattr>() as u32) << 16) | (u32::from(b'X') << 8) | nr
        };
        assert_eq!(FS_IOC_FSGETXATTR, ioc(2, 31));
        assert_eq!(FS_IOC_FSSETXATTR, ioc(1, 32));
    }

    #[test]
    fn commands_are_encoded_like_qcmd() {
        assert_eq!(qcmd(Q_XGETQSTATV, PRJQUOTA), 0x0058_0802);
        assert_eq!(qcmd(Q_XGETQUOTA, PRJQUOTA), 0x0058_0302);
        assert_eq!(qcmd(Q_SETQUOTA, PRJQUOTA), 0x8000_0802);
    }

    #[test]
    fn project_ids_exclude_zero_and_the_invalid_id() {
        assert_eq!(ProjectId::new(0), None);
        assert_eq!(ProjectId::new(u32::MAX), None);
        assert_eq!(ProjectId::new(7).map(ProjectId::get), Some(7));
        assert_eq!(ProjectId::from_inode(131).map(ProjectId::get), Some(131));
        assert_eq!(ProjectId::from_inode(0), None);
        assert_eq!(ProjectId::from_inode(u64::from(u32::MAX)), None);
        assert_eq!(ProjectId::from_inode(1 << 40), None);
    }

    #[test]
    fn candidates_start_with_the_inode_then_probe_from_the_key() {
        let c: Vec<u32> = ProjectId::candidates(131, "pvc-1")
            .map(ProjectId::get)
            .collect();
        assert_eq!(c[0], 131);
        assert_eq!(c.len(), 1 + FALLBACK_PROBES as usize);
        // Deterministic (a restart derives the same), distinct, in the upper half.
        let again: Vec<u32> = ProjectId::candidates(131, "pvc-1")
            .map(ProjectId::get)
            .collect();
        assert_eq!(c, again);
        let fallback = &c[1..];
        assert!(fallback.iter().all(|id| (1 << 31..u32::MAX).contains(id)));
        let mut sorted = fallback.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), fallback.len());
        // A huge XFS inode number contributes nothing; the key decides.
        let big: Vec<u32> = ProjectId::candidates(1 << 40, "pvc-1")
            .map(ProjectId::get)
            .collect();
        assert_eq!(big, fallback);
        let other: Vec<u32> = ProjectId::candidates(1 << 40, "pvc-2")
            .map(ProjectId::get)
            .collect();
        assert_ne!(other[0], big[0]);
    }

    #[test]
    fn tmpfs_has_no_project_quotas() {
        // /dev/shm is tmpfs on any Linux; this host kernel has no quota
        // support at all, and tmpfs has no project quotas on any kernel.
        let dir = tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm");
        let fd = open_dir(dir.path()).unwrap();
        assert_eq!(filesystem_name(fd.as_fd()), "tmpfs");
        match probe(fd.as_fd()) {
            Support::Unsupported(why) => assert!(why.contains("tmpfs"), "{why}"),
            other => panic!("tmpfs reported {other:?}"),
        }
    }

    #[test]
    fn project_attr_reads_on_any_directory() {
        let dir = tempfile::tempdir().unwrap();
        let fd = open_dir(dir.path()).unwrap();
        // Filesystems without the ioctl answer ENOTTY/EOPNOTSUPP; a fresh
        // directory elsewhere is in project 0 without inheritance.
        match project_of(fd.as_fd()) {
            Ok(attr) => assert_eq!(
                attr,
                ProjectAttr {
                    id: 0,
                    inherit: false
                }
            ),
            Err(e) => assert!(
                matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EOPNOTSUPP)),
                "{e}"
            ),
        }
    }
}
