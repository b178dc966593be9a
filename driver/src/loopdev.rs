//! Loop devices: a file served as a block device, through the ioctls of
//! `/dev/loop-control` and `/dev/loopN` (linux/loop.h).
//!
//! Attaching takes a free device number (`LOOP_CTL_GET_FREE`) and binds the
//! file to it in one step (`LOOP_CONFIGURE`, Linux 5.8; `LOOP_SET_FD` +
//! `LOOP_SET_STATUS64` before that). Another process may take the same free
//! number between the two calls; the loser sees EBUSY and asks again.
//!
//! Which file a device serves is read from `LOOP_GET_STATUS64`: the device
//! and inode number of the backing file, compared with a `stat` of the file
//! we expect. Paths are not compared: the kernel keeps only 64 bytes of one,
//! and a file may be renamed or deleted while it is attached.
//!
//! Detaching (`LOOP_CLR_FD`) of a device that someone still holds open (a
//! pod, the kubelet's own lock on the device) is deferred by the kernel to
//! the last close (autoclear): the device is gone once nobody uses it.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use linux_raw_sys::ioctl::BLKGETSIZE64;
use linux_raw_sys::loop_device::{
    loop_config, loop_info64, LOOP_CLR_FD, LOOP_CONFIGURE, LOOP_CTL_GET_FREE, LOOP_GET_STATUS64,
    LOOP_SET_CAPACITY, LOOP_SET_FD, LOOP_SET_STATUS64,
};

// linux-raw-sys declares the flags as members of a C enum; `lo_flags` is a u32.
const LO_FLAGS_READ_ONLY: u32 = linux_raw_sys::loop_device::LO_FLAGS_READ_ONLY as u32;
const LO_FLAGS_AUTOCLEAR: u32 = linux_raw_sys::loop_device::LO_FLAGS_AUTOCLEAR as u32;
const LO_FLAGS_DIRECT_IO: u32 = linux_raw_sys::loop_device::LO_FLAGS_DIRECT_IO as u32;
const LO_NAME_SIZE: usize = linux_raw_sys::loop_device::LO_NAME_SIZE as usize;

/// The major number of loop devices (Documentation/admin-guide/devices.txt;
/// linux/major.h, which linux-raw-sys 0.12 does not include).
pub const LOOP_MAJOR: u32 = 7;

/// How often attach asks for another free device when others keep taking
/// the one it was given.
const ATTACH_ATTEMPTS: usize = 64;
/// How long detach retries a device the kernel reports busy.
const DETACH_BUSY_RETRIES: usize = 50;
const DETACH_BUSY_PAUSE: Duration = Duration::from_millis(20);

/// A `loop_info64` with every field zero.
fn zeroed_info() -> loop_info64 {
    // SAFETY: a plain C struct of integers and byte arrays; all zeroes
    // is a valid value (and what the kernel expects for unused fields).
    unsafe { std::mem::zeroed() }
}

/// How to attach a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttachOptions {
    /// The device refuses writes (the file is opened read-only too).
    pub read_only: bool,
    /// Bypass the page cache of the backing file (no double caching); the
    /// device falls back to buffered I/O where the filesystem cannot.
    pub direct_io: bool,
}

/// What `LOOP_GET_STATUS64` says about a bound device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopStatus {
    /// Device (major, minor) of the filesystem holding the backing file.
    pub backing_dev: (u32, u32),
    pub backing_ino: u64,
    pub read_only: bool,
    /// Detach is pending until the last user closes the device.
    pub autoclear: bool,
    pub direct_io: bool,
    /// The name given at attach, at most 63 bytes (informational only).
    pub file_name: String,
}

impl LoopStatus {
    /// Whether the device serves the file `meta` describes.
    pub fn serves(&self, meta: &std::fs::Metadata) -> bool {
        self.backing_ino == meta.ino() && self.backing_dev == split_dev(meta.dev())
    }
}

/// A loop device, held open.
#[derive(Debug)]
pub struct LoopDevice {
    fd: OwnedFd,
    number: u32,
}

/// The path of loop device `number`.
pub fn device_path(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

/// Splits a userspace `dev_t` (glibc encoding) into (major, minor).
pub fn split_dev(dev: u64) -> (u32, u32) {
    (libc::major(dev), libc::minor(dev))
}

/// Decodes the kernel's `huge_encode_dev` form used in `loop_info64`.
fn decode_huge_dev(dev: u64) -> (u32, u32) {
    let major = ((dev & 0xfff00) >> 8) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

/// One ioctl whose argument is a pointer or a plain integer.
///
/// SAFETY (callers): `arg` must be what the request expects: a pointer to a
/// live, correctly sized struct for the pointer requests, or an integer.
unsafe fn ioctl(fd: &impl AsRawFd, request: u32, arg: usize) -> io::Result<libc::c_int> {
    // linux-raw-sys spells requests as u32; libc's type for them differs
    // between C libraries (c_ulong for glibc, c_int for musl).
    let rc = libc::ioctl(fd.as_raw_fd(), request as _, arg);
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

fn errno_is(result: &io::Result<()>, code: i32) -> bool {
    result.as_ref().err().and_then(errno) == Some(code)
}

/// The attach name: the path's last 63 bytes (what losetup shows without sysfs).
fn file_name_field(path: &Path) -> [u8; LO_NAME_SIZE] {
    let bytes = path.as_os_str().as_encoded_bytes();
    let tail = &bytes[bytes.len().saturating_sub(LO_NAME_SIZE - 1)..];
    let mut field = [0u8; LO_NAME_SIZE];
    field[..tail.len()].copy_from_slice(tail);
    field
}

impl LoopDevice {
    /// Attaches `backing` to a free loop device.
    pub fn attach(backing: &Path, options: AttachOptions) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!options.read_only)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(backing)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", backing.display()),
            ));
        }
        let control = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/loop-control")?;
        let mut flags = 0;
        if options.read_only {
            flags |= LO_FLAGS_READ_ONLY;
        }
        if options.direct_io {
            flags |= LO_FLAGS_DIRECT_IO;
        }
        let name = file_name_field(backing);
        let mut last_busy = None;
        for _ in 0..ATTACH_ATTEMPTS {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
            let number = unsafe { ioctl(&control, LOOP_CTL_GET_FREE, 0)? } as u32;
            let device = match Self::open_mode(number, !options.read_only) {
                Ok(device) => device,
                // Removed again (LOOP_CTL_REMOVE by someone) before we opened it.
                Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ENXIO)) => {
                    last_busy = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            match device.configure(&file, flags, &name) {
                Ok(()) => return Ok(device),
                // Another attacher bound it first: ask for another.
                Err(e) if errno(&e) == Some(libc::EBUSY) => last_busy = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "no free loop device after {ATTACH_ATTEMPTS} attempts (last: {})",
                last_busy.map_or_else(|| "none".to_string(), |e| e.to_string())
            ),
        ))
    }

    /// Binds `file` to this (free) device with `flags`. Where the
    /// filesystem cannot do direct I/O (tmpfs) the device is buffered
    /// instead; kernels before 5.8 (no LOOP_CONFIGURE: EINVAL or ENOTTY)
    /// bind with LOOP_SET_FD, then set the flags, without direct I/O.
    fn configure(&self, file: &File, flags: u32, name: &[u8; LO_NAME_SIZE]) -> io::Result<()> {
        let mut info = zeroed_info();
        info.lo_flags = flags;
        info.lo_file_name = *name;
        let mut result = self.loop_configure(file, info);
        if flags & LO_FLAGS_DIRECT_IO != 0 && errno_is(&result, libc::EINVAL) {
            info.lo_flags &= !LO_FLAGS_DIRECT_IO;
            result = self.loop_configure(file, info);
        }
        if !(errno_is(&result, libc::EINVAL) || errno_is(&result, libc::ENOTTY)) {
            return result;
        }
        info.lo_flags &= !LO_FLAGS_DIRECT_IO;
        // SAFETY: LOOP_SET_FD takes the backing file descriptor.
        unsafe { ioctl(&self.fd, LOOP_SET_FD, file.as_raw_fd() as usize)? };
        // SAFETY: LOOP_SET_STATUS64 reads a `struct loop_info64`, which
        // lives across the call.
        let set = unsafe {
            ioctl(
                &self.fd,
                LOOP_SET_STATUS64,
                &info as *const loop_info64 as usize,
            )
        };
        if let Err(e) = set {
            let _ = self.clear();
            return Err(e);
        }
        Ok(())
    }

    fn loop_configure(&self, file: &File, info: loop_info64) -> io::Result<()> {
        let config = loop_config {
            fd: file.as_raw_fd() as u32,
            block_size: 0,
            info,
            __reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which lives
        // across the call.
        unsafe {
            ioctl(
                &self.fd,
                LOOP_CONFIGURE,
                &config as *const loop_config as usize,
            )?
        };
        Ok(())
    }

    /// Opens existing loop device `number` (for status, resize or detach).
    pub fn open(number: u32) -> io::Result<Self> {
        Self::open_mode(number, false)
    }

    /// Opens `/dev/loopN`. Read-write for an attach: the kernel makes a
    /// device configured through a read-only descriptor read-only.
    fn open_mode(number: u32, write: bool) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_CLOEXEC)
            .open(device_path(number))?;
        Ok(Self {
            fd: file.into(),
            number,
        })
    }

    /// Opens the loop device at `path` (a device node, e.g. a bind-mounted
    /// publish target), without following a symlink. `Ok(None)` when it is
    /// not a loop device.
    pub fn open_node(path: &Path) -> io::Result<Option<Self>> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        let meta = file.metadata()?;
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_block_device() || libc::major(meta.rdev()) != LOOP_MAJOR {
            return Ok(None);
        }
        Ok(Some(Self {
            fd: file.into(),
            number: libc::minor(meta.rdev()),
        }))
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    pub fn path(&self) -> PathBuf {
        device_path(self.number)
    }

    /// What the device serves; `None` when it is not bound to a file.
    pub fn status(&self) -> io::Result<Option<LoopStatus>> {
        let mut info = zeroed_info();
        // SAFETY: LOOP_GET_STATUS64 writes a `struct loop_info64`, which
        // lives across the call.
        match unsafe {
            ioctl(
                &self.fd,
                LOOP_GET_STATUS64,
                &mut info as *mut loop_info64 as usize,
            )
        } {
            Ok(_) => {}
            Err(e) if errno(&e) == Some(libc::ENXIO) => return Ok(None),
            Err(e) => return Err(e),
        }
        let name_len = info
            .lo_file_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(LO_NAME_SIZE);
        Ok(Some(LoopStatus {
            backing_dev: decode_huge_dev(info.lo_device),
            backing_ino: info.lo_inode,
            read_only: info.lo_flags & LO_FLAGS_READ_ONLY != 0,
            autoclear: info.lo_flags & LO_FLAGS_AUTOCLEAR != 0,
            direct_io: info.lo_flags & LO_FLAGS_DIRECT_IO != 0,
            file_name: String::from_utf8_lossy(&info.lo_file_name[..name_len]).into_owned(),
        }))
    }

    /// The device's size in bytes.
    pub fn size_bytes(&self) -> io::Result<u64> {
        let mut size: u64 = 0;
        // SAFETY: BLKGETSIZE64 writes one u64, which lives across the call.
        unsafe { ioctl(&self.fd, BLKGETSIZE64, &mut size as *mut u64 as usize)? };
        Ok(size)
    }

    /// Makes the device pick up its backing file's new size (after the
    /// file grew): expansion of an attached volume.
    pub fn set_capacity(&self) -> io::Result<()> {
        // SAFETY: LOOP_SET_CAPACITY takes no argument.
        unsafe { ioctl(&self.fd, LOOP_SET_CAPACITY, 0)? };
        Ok(())
    }

    fn clear(&self) -> io::Result<()> {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { ioctl(&self.fd, LOOP_CLR_FD, 0)? };
        Ok(())
    }

    /// Detaches the device from its file. Succeeds when it already was;
    /// while others hold it open the kernel completes it at their last close.
    pub fn detach(self) -> io::Result<()> {
        for _ in 0..DETACH_BUSY_RETRIES {
            match self.clear() {
                Ok(()) => return Ok(()),
                // Not bound (any more).
                Err(e) if errno(&e) == Some(libc::ENXIO) => return Ok(()),
                // Older kernels refuse while a partition scan or udev probe
                // holds it for a moment.
                Err(e) if errno(&e) == Some(libc::EBUSY) => std::thread::sleep(DETACH_BUSY_PAUSE),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!("loop device {} stayed busy", self.path().display()),
        ))
    }
}

/// A bound loop device as sysfs lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub number: u32,
    /// The backing file's path as the kernel prints it (from this process's
    /// root), without the ` (deleted)` mark.
    pub backing_file: PathBuf,
    /// The backing file has been unlinked.
    pub deleted: bool,
}

/// Every bound loop device, from `/sys/block/loop*/loop/backing_file`.
/// This reads one sysfs file per device: for startup and tests, never per call.
pub fn attached() -> io::Result<Vec<Attached>> {
    const DELETED: &str = " (deleted)";
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block")? {
        let name = entry?.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix("loop"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let file = Path::new("/sys/block")
            .join(&name)
            .join("loop/backing_file");
        let text = match std::fs::read(&file) {
            Ok(text) => text,
            // Unbound devices have no loop/ directory (or an empty file).
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound) => continue,
            Err(e) if errno(&e) == Some(libc::ENXIO) => continue,
            Err(e) => return Err(e),
        };
        let mut text = text;
        while text.last() == Some(&b'\n') {
            text.pop();
        }
        if text.is_empty() {
            continue;
        }
        let text: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(text);
        let (path, deleted) = match text.to_str().and_then(|t| t.strip_suffix(DELETED)) {
            Some(stripped) => (PathBuf::from(stripped), true),
            None => (PathBuf::from(text), false),
        };
        found.push(Attached {
            number,
            backing_file: path,
            deleted,
        });
    }
    found.sort_by_key(|a| a.number);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_harness::{require, require_loop_devices};
    use std::io::{Read, Seek, SeekFrom, Write};

    /// Detaches the device when the test ends, failed or not.
    struct Guard(Option<LoopDevice>);

    impl Guard {
        fn device(&self) -> &LoopDevice {
            self.0.as_ref().unwrap()
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(device) = self.0.take() {
                let _ = device.detach();
            }
        }
    }

    fn sparse_file(dir: &Path, name: &str, size: u64) -> PathBuf {
        let path = dir.join(name);
        File::create(&path).unwrap().set_len(size).unwrap();
        path
    }

    /// Waits for the kernel to finish a detach (the last close runs it), up to a deadline
    /// generous for a busy machine: the detach is asynchronous, its time is not ours to choose.
    fn wait_unbound(number: u32) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match LoopDevice::open(number) {
                Ok(d) if d.status().unwrap().is_none() => return true,
                Err(_) => return true,
                Ok(_) if std::time::Instant::now() >= deadline => return false,
                Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    fn open_device(number: u32, write: bool) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(device_path(number))
            .unwrap()
    }

    #[test]
    fn huge_dev_decoding() {
        // huge_encode_dev: (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)
        let encode =
            |major: u64, minor: u64| (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        assert_eq!(decode_huge_dev(encode(8, 1)), (8, 1));
        assert_eq!(decode_huge_dev(encode(259, 0x12345)), (259, 0x12345));
        assert_eq!(split_dev(libc::makedev(253, 7)), (253, 7));
    }

    #[test]
    fn name_field_keeps_the_tail() {
        let long = PathBuf::from(format!("/{}/block", "x".repeat(100)));
        let field = file_name_field(&long);
        assert_eq!(field[LO_NAME_SIZE - 1], 0);
        assert!(String::from_utf8_lossy(&field)
            .trim_end_matches('\0')
            .ends_with("x/block"));
    }

    #[test]
    fn attach_status_write_read_detach() {
        require!(require_loop_devices());
        let dir = tempfile::tempdir().unwrap();
        let file = sparse_file(dir.path(), "vol", 4 << 20);
        let guard = Guard(Some(
            LoopDevice::attach(
                &file,
                AttachOptions {
                    read_only: false,
                    direct_io: true,
                },
            )
            .unwrap(),
        ));
        let device = guard.device();
        let number = device.number();
        let status = device.status().unwrap().expect("bound");
        assert!(status.serves(&std::fs::metadata(&file).unwrap()));
        assert!(!status.read_only && !status.autoclear);
        eprintln!("direct I/O asked, in effect: {}", status.direct_io);
        assert!(status.file_name.ends_with("/vol"), "{}", status.file_name);
        assert_eq!(device.size_bytes().unwrap(), 4 << 20);
        assert!(attached()
            .unwrap()
            .iter()
            .any(|a| a.number == number && a.backing_file == file && !a.deleted));

        // Bytes written through the device land in the file.
        let mut dev = open_device(number, true);
        dev.seek(SeekFrom::Start(8192)).unwrap();
        dev.write_all(&[0xAB; 4096]).unwrap();
        dev.sync_all().unwrap();
        drop(dev);
        let mut back = vec![0u8; 4096];
        let mut f = File::open(&file).unwrap();
        f.seek(SeekFrom::Start(8192)).unwrap();
        f.read_exact(&mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0xAB));

        // The guard's descriptor is the only one open: detach is immediate.
        let mut guard = guard;
        guard.0.take().unwrap().detach().unwrap();
        assert!(wait_unbound(number), "loop{number} still bound");
        // Detaching again is not an error.
        LoopDevice::open(number).unwrap().detach().unwrap();
        assert!(!attached().unwrap().iter().any(|a| a.backing_file == file));
    }

    /// Unmounts a test mount when the test ends.
    struct Unmount(PathBuf);

    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }

    #[test]
    fn direct_io_falls_back_where_the_filesystem_cannot() {
        require!(require_loop_devices());
        // ramfs has no O_DIRECT: LOOP_CONFIGURE with direct I/O is EINVAL there.
        let dir = tempfile::tempdir().unwrap();
        rustix::mount::mount(
            "ramfs",
            dir.path(),
            "ramfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        let _unmount = Unmount(dir.path().to_path_buf());
        let file = sparse_file(dir.path(), "ramfs", 1 << 20);
        let guard = Guard(Some(
            LoopDevice::attach(
                &file,
                AttachOptions {
                    read_only: false,
                    direct_io: true,
                },
            )
            .unwrap(),
        ));
        let status = guard.device().status().unwrap().unwrap();
        assert!(status.serves(&std::fs::metadata(&file).unwrap()));
        assert!(!status.direct_io);
    }

    #[test]
    fn read_only_devices_refuse_writes() {
        require!(require_loop_devices());
        let dir = tempfile::tempdir().unwrap();
        let file = sparse_file(dir.path(), "ro", 1 << 20);
        let guard = Guard(Some(
            LoopDevice::attach(
                &file,
                AttachOptions {
                    read_only: true,
                    direct_io: false,
                },
            )
            .unwrap(),
        ));
        let number = guard.device().number();
        assert!(guard.device().status().unwrap().unwrap().read_only);
        let refused = std::fs::OpenOptions::new()
            .write(true)
            .open(device_path(number))
            .and_then(|mut f| f.write_all(&[1; 512]).and_then(|()| f.sync_all()));
        let err = refused.expect_err("a write to a read-only loop device succeeded");
        eprintln!("write to a read-only loop device: {err}");
        assert!(
            matches!(
                err.raw_os_error(),
                Some(libc::EPERM | libc::EROFS | libc::EACCES)
            ),
            "{err}"
        );
        assert!(std::fs::read(&file).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn set_capacity_follows_the_file() {
        require!(require_loop_devices());
        let dir = tempfile::tempdir().unwrap();
        let file = sparse_file(dir.path(), "grow", 1 << 20);
        let guard = Guard(Some(
            LoopDevice::attach(&file, AttachOptions::default()).unwrap(),
        ));
        assert_eq!(guard.device().size_bytes().unwrap(), 1 << 20);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(3 << 20)
            .unwrap();
        assert_eq!(guard.device().size_bytes().unwrap(), 1 << 20);
        guard.device().set_capacity().unwrap();
        assert_eq!(guard.device().size_bytes().unwrap(), 3 << 20);
    }

    #[test]
    fn detach_while_open_completes_at_last_close() {
        require!(require_loop_devices());
        let dir = tempfile::tempdir().unwrap();
        let file = sparse_file(dir.path(), "busy", 1 << 20);
        let device = LoopDevice::attach(&file, AttachOptions::default()).unwrap();
        let number = device.number();
        let holder = open_device(number, false);
        device.detach().unwrap();
        let status = LoopDevice::open(number).unwrap().status().unwrap();
        if let Some(status) = status {
            assert!(status.autoclear, "busy detach neither done nor deferred");
        }
        drop(holder);
        assert!(wait_unbound(number), "loop{number} never detached");
    }

    #[test]
    fn concurrent_attaches_get_distinct_devices() {
        require!(require_loop_devices());
        let dir = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = (0..6)
            .map(|i| sparse_file(dir.path(), &format!("f{i}"), 1 << 20))
            .collect();
        let guards: Vec<Guard> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .iter()
                .map(|f| s.spawn(move || LoopDevice::attach(f, AttachOptions::default())))
                .collect();
            handles
                .into_iter()
                .map(|h| Guard(Some(h.join().unwrap().unwrap())))
                .collect()
        });
        let mut numbers: Vec<u32> = guards.iter().map(|g| g.device().number()).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), files.len());
        for (guard, file) in guards.iter().zip(&files) {
            let status = guard.device().status().unwrap().unwrap();
            assert!(status.serves(&std::fs::metadata(file).unwrap()));
        }
    }

    #[test]
    fn open_node_tells_loop_devices_from_other_files() {
        require!(require_loop_devices());
        let dir = tempfile::tempdir().unwrap();
        let plain = sparse_file(dir.path(), "plain", 4096);
        assert!(LoopDevice::open_node(&plain).unwrap().is_none());
        assert!(LoopDevice::open_node(Path::new("/dev/null"))
            .unwrap()
            .is_none());
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/loop0", &link).unwrap();
        assert!(LoopDevice::open_node(&link).is_err());
        let guard = Guard(Some(
            LoopDevice::attach(&plain, AttachOptions::default()).unwrap(),
        ));
        let node = LoopDevice::open_node(&guard.device().path())
            .unwrap()
            .unwrap();
        assert_eq!(node.number(), guard.device().number());
    }
}
