//! Raw block volumes of the local backend (`access_type: block`).
//!
//! ```text
//! <root>/volumes/<key>/meta.json          "access_type": "block"
//! <root>/volumes/<key>/block              sparse file of the capacity: the device's bytes
//! <root>/volumes/<key>/attachments/<h>    loop devices serving the staging path whose sha256 is <h>
//! ```
//! NodeStageVolume attaches the file to a loop device and records which;
//! NodePublishVolume places that device node at the target. A read-only
//! publish gets a second, read-only loop device of the same file, made at
//! the first such publish: a read-only bind mount of a device node does
//! not stop writes to the device. NodeUnstageVolume detaches both.
//!
//! The record is the way from a staging path (or a volume) to its devices
//! without scanning every loop device. It is never trusted alone: each use
//! checks with `LOOP_GET_STATUS64` that the device still serves this very
//! file (device and inode) with the expected read-only flag, so a stale
//! record — after a reboot, or with the number reused — is recognized and
//! replaced. Records are not flushed: whatever loses them (a power cut)
//! takes the loop devices with it.
//!
//! A device is attached before its record is written, so a crash in between
//! leaves a device that no record names. At startup [`recover`] detaches
//! every loop device serving a file under the local root that no live
//! record names — devices of deleted or half-made volumes, or whose staging
//! path is gone — and keeps the rest, which pods may be using.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::{Health, Stats, Usage};
use crate::capacity::Range;
use crate::error::{Error, Result};
use crate::ids::VolumeId;
use crate::loopdev::{self, AttachOptions, LoopDevice, LoopStatus};
use crate::mount::PathState;

/// The file holding a block volume's bytes, in its volume directory.
pub(super) const BLOCK_FILE: &str = "block";
const ATTACHMENTS_DIR: &str = "attachments";
/// Only root (the driver) touches the file; pods get the device.
const BLOCK_FILE_MODE: u32 = 0o600;
/// Block volumes are whole 4 KiB blocks: a loop device is sized in 512-byte
/// sectors, and direct I/O wants the backing filesystem's block size.
const BLOCK_ALIGN: u64 = 4096;
/// Scratch names of records being written.
const TEMP_SUFFIX: &str = ".tmp";

/// Which loop devices serve one staging path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Attachment {
    staging: PathBuf,
    /// The read-write device made by NodeStageVolume.
    device: u32,
    /// The read-only device made by the first read-only NodePublishVolume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_only_device: Option<u32>,
}

impl Attachment {
    /// The devices with the read-only flag each must have.
    fn devices(&self) -> impl Iterator<Item = (u32, bool)> + '_ {
        std::iter::once((self.device, false)).chain(self.read_only_device.map(|n| (n, true)))
    }
}

/// What startup recovery did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Devices still staged, kept for the pods using them.
    pub kept: usize,
    /// Devices nothing stages any more, detached.
    pub detached: usize,
}

fn file(dir: &Path) -> PathBuf {
    dir.join(BLOCK_FILE)
}

fn attachments(dir: &Path) -> PathBuf {
    dir.join(ATTACHMENTS_DIR)
}

fn record_file(dir: &Path, staging: &Path) -> PathBuf {
    attachments(dir).join(crate::record_dir::name_of_path(staging))
}

fn gone(id: &VolumeId) -> Error {
    Error::NotFound(format!("volume {id} does not exist"))
}

/// Whether the volume in `dir` is a block volume (has its block file).
pub(super) fn is_block(dir: &Path) -> Result<bool> {
    let path = file(dir);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) => Ok(meta.is_file()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", &path)(e)),
    }
}

/// The block file's metadata: what a device must serve. NotFound when the
/// volume is gone.
fn file_meta(dir: &Path, id: &VolumeId) -> Result<Metadata> {
    let path = file(dir);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(meta),
        Ok(_) => Err(gone(id)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(gone(id)),
        Err(e) => Err(Error::io("stat", &path)(e)),
    }
}

/// The capacity of a new block volume: `size` rounded up to whole blocks,
/// if the requested range allows it.
pub(super) fn capacity(size: u64, range: &Range) -> Result<u64> {
    let rounded = size
        .checked_next_multiple_of(BLOCK_ALIGN)
        .ok_or_else(|| Error::OutOfRange(format!("{size} bytes is too large")))?;
    if range.limit.is_some_and(|limit| rounded > limit) {
        return Err(Error::OutOfRange(format!(
            "block volumes are whole {BLOCK_ALIGN}-byte blocks: {rounded} bytes exceeds limit_bytes"
        )));
    }
    Ok(rounded)
}

/// Makes a block volume's payload in its scratch directory: the sparse
/// file (no blocks allocated until written) and the attachments directory.
pub(super) fn make_payload(scratch: &Path, capacity: u64) -> Result<()> {
    let path = file(scratch);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(BLOCK_FILE_MODE)
        .open(&path)
        .map_err(Error::io("create", &path))?;
    finish_payload(scratch, capacity)
}

/// Completes a block payload whose file is in place (new and empty, or a
/// restored copy of a smaller or equal source): grows it to the capacity,
/// sparse, makes it durable, and adds the attachments directory.
pub(super) fn finish_payload(scratch: &Path, capacity: u64) -> Result<()> {
    let path = file(scratch);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(Error::io("open", &path))?;
    let len = file.metadata().map_err(Error::io("stat", &path))?.len();
    if len > capacity {
        return Err(Error::Internal(format!(
            "{} holds {len} bytes, more than the volume's {capacity}",
            path.display()
        )));
    }
    file.set_len(capacity)
        .and_then(|()| file.sync_all())
        .map_err(Error::io("size", &path))?;
    let dir = attachments(scratch);
    std::fs::create_dir(&dir).map_err(Error::io("create", &dir))
}

fn read_record(dir: &Path, staging: &Path) -> Result<Option<Attachment>> {
    read_record_file(&record_file(dir, staging))
}

fn read_record_file(path: &Path) -> Result<Option<Attachment>> {
    crate::json_record::read_file(path, "attachment record")
}

/// Writes the record whole (a rename). Not flushed: see the module doc.
fn write_record(dir: &Path, id: &VolumeId, record: &Attachment) -> Result<()> {
    let path = record_file(dir, &record.staging);
    let mut temp = path.clone().into_os_string();
    temp.push(TEMP_SUFFIX);
    let temp = PathBuf::from(temp);
    let bytes = crate::json_record::encode(record, "attachment record")?;
    match std::fs::write(&temp, bytes) {
        Ok(()) => {}
        // The volume directory is gone (deleted under us).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone(id)),
        Err(e) => return Err(Error::io("write", &temp)(e)),
    }
    std::fs::rename(&temp, &path).map_err(Error::io("rename", &temp))
}

fn remove_record(dir: &Path, staging: &Path) -> Result<()> {
    let path = record_file(dir, staging);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &path)(e)),
    }
}

/// Device `number` with its status, if it serves the file `meta` describes.
fn serving(number: u32, meta: &Metadata) -> Result<Option<(LoopDevice, LoopStatus)>> {
    let device = match LoopDevice::open(number) {
        Ok(device) => device,
        // Removed since, or never there (a record from before a reboot).
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENXIO)) => return Ok(None),
        Err(e) => return Err(Error::io("open", loopdev::device_path(number))(e)),
    };
    let status = device
        .status()
        .map_err(Error::io("read status of", device.path()))?;
    Ok(status
        .filter(|s| s.serves(meta))
        .map(|status| (device, status)))
}

/// Device `number` if it serves the file with the read-only flag given and
/// is not on its way out (a pending detach).
fn live(number: u32, meta: &Metadata, read_only: bool) -> Result<Option<LoopDevice>> {
    Ok(serving(number, meta)?
        .filter(|(_, s)| s.read_only == read_only && !s.autoclear)
        .map(|(device, _)| device))
}

fn attach(dir: &Path, read_only: bool) -> Result<LoopDevice> {
    let path = file(dir);
    LoopDevice::attach(
        &path,
        AttachOptions {
            read_only,
            direct_io: true,
        },
    )
    .map_err(Error::io("attach a loop device to", &path))
}

/// NodeStageVolume: a read-write loop device for `staging`, attached once.
pub(super) fn stage(dir: &Path, id: &VolumeId, staging: &Path) -> Result<()> {
    let meta = file_meta(dir, id)?;
    let old = read_record(dir, staging)?;
    if let Some(old) = &old {
        if live(old.device, &meta, false)?.is_some() {
            return Ok(());
        }
    }
    let device = attach(dir, false)?;
    // A read-only device of an earlier staging that still serves stays.
    let read_only_device = match old.and_then(|o| o.read_only_device) {
        Some(n) if live(n, &meta, true)?.is_some() => Some(n),
        _ => None,
    };
    let record = Attachment {
        staging: staging.to_path_buf(),
        device: device.number(),
        read_only_device,
    };
    if let Err(e) = write_record(dir, id, &record) {
        let _ = device.detach();
        return Err(e);
    }
    tracing::info!(volume = %id, device = %device.path().display(), staging = %staging.display(), "attached loop device");
    Ok(())
}

/// The device node to publish: the staged read-write device, or the
/// read-only one (attached at the first read-only publish).
pub(super) fn device(
    dir: &Path,
    id: &VolumeId,
    staging: &Path,
    read_only: bool,
) -> Result<PathBuf> {
    let meta = file_meta(dir, id)?;
    let not_staged = || {
        Error::FailedPrecondition(format!(
            "volume {id} is not staged at {}; call NodeStageVolume first",
            staging.display()
        ))
    };
    let mut record = read_record(dir, staging)?.ok_or_else(not_staged)?;
    let read_write = live(record.device, &meta, false)?.ok_or_else(not_staged)?;
    if !read_only {
        return Ok(read_write.path());
    }
    if let Some(n) = record.read_only_device {
        if let Some(device) = live(n, &meta, true)? {
            return Ok(device.path());
        }
    }
    let device = attach(dir, true)?;
    record.read_only_device = Some(device.number());
    if let Err(e) = write_record(dir, id, &record) {
        let _ = device.detach();
        return Err(e);
    }
    tracing::info!(volume = %id, device = %device.path().display(), "attached read-only loop device");
    Ok(device.path())
}

/// NodeUnstageVolume: detaches the devices recorded for `staging` (those
/// that still serve this volume's file) and forgets the record.
pub(super) fn unstage(dir: &Path, id: &VolumeId, staging: &Path) -> Result<()> {
    let Some(record) = read_record(dir, staging)? else {
        return Ok(());
    };
    let meta = match file_meta(dir, id) {
        Ok(meta) => Some(meta),
        Err(Error::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    if let Some(meta) = &meta {
        for (number, read_only) in record.devices() {
            if let Some((device, status)) = serving(number, meta)? {
                if status.read_only == read_only {
                    let path = device.path();
                    device.detach().map_err(Error::io("detach", &path))?;
                    tracing::info!(volume = %id, device = %path.display(), "detached loop device");
                }
            }
        }
    }
    remove_record(dir, staging)
}

/// DeleteVolume refuses a volume whose device is still attached for a
/// staging (spec: FAILED_PRECONDITION, "volume in use"): deleting it would
/// pull the bytes from under a pod.
pub(super) fn check_unused(dir: &Path, id: &VolumeId) -> Result<()> {
    let meta = match file_meta(dir, id) {
        Ok(meta) => meta,
        Err(Error::NotFound(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    for record in records(dir)? {
        for (number, read_only) in record.devices() {
            if live(number, &meta, read_only)?.is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id} is in use: staged at {} (loop device {}); unstage it first",
                    record.staging.display(),
                    loopdev::device_path(number).display()
                )));
            }
        }
    }
    Ok(())
}

/// Every record of the volume in `dir` (one per staging; usually one).
fn records(dir: &Path) -> Result<Vec<Attachment>> {
    let path = attachments(dir);
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", &path)(e)),
    };
    let mut records = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("read", &path))?;
        if entry.file_name().to_string_lossy().ends_with(TEMP_SUFFIX) {
            continue;
        }
        if let Some(record) = read_record_file(&entry.path())? {
            records.push(record);
        }
    }
    Ok(records)
}

/// Controller-side health: the block file is there.
pub(super) fn health(dir: &Path, id: &VolumeId) -> Health {
    match file_meta(dir, id) {
        Ok(_) => Health::Ok,
        Err(e) => Health::Abnormal(format!("backing file unusable: {e}")),
    }
}

fn device_usage(device: &LoopDevice) -> Result<Stats> {
    // Spec: for a block volume only the total is meaningful.
    let total = device
        .size_bytes()
        .map_err(Error::io("read size of", device.path()))?;
    Ok(Stats {
        usage: Some(Usage {
            bytes_total: total,
            ..Usage::default()
        }),
        health: Health::Ok,
    })
}

/// NodeGetVolumeStats at a publish target (`state`: one statx of `path`,
/// not a directory): the device placed there must serve this volume.
pub(super) fn stats_at_target(
    dir: &Path,
    id: &VolumeId,
    path: &Path,
    state: &PathState,
) -> Result<Stats> {
    let not_found = || {
        Error::NotFound(format!(
            "volume {id} is not published at {}",
            path.display()
        ))
    };
    let meta = file_meta(dir, id);
    if !state.is_mount_root {
        meta?;
        return Ok(Stats {
            usage: None,
            health: Health::Abnormal(format!("no device is placed at {}", path.display())),
        });
    }
    let device = LoopDevice::open_node(path)
        .map_err(Error::io("open", path))?
        .ok_or_else(not_found)?;
    let status = device
        .status()
        .map_err(Error::io("read status of", device.path()))?;
    match (status, meta) {
        (Some(status), Ok(meta)) if status.serves(&meta) => device_usage(&device),
        (_, Ok(_)) => Err(not_found()),
        // The volume was deleted while a device still serves its file.
        (_, Err(Error::NotFound(_))) => Ok(Stats {
            usage: None,
            health: Health::Abnormal(format!("volume {id} was deleted while published")),
        }),
        (_, Err(e)) => Err(e),
    }
}

/// NodeGetVolumeStats at the staging path (a directory holding nothing: the
/// record says which device serves it).
pub(super) fn stats_at_staging(dir: &Path, id: &VolumeId, staging: &Path) -> Result<Stats> {
    let meta = file_meta(dir, id)?;
    let record = read_record(dir, staging)?.ok_or_else(|| {
        Error::NotFound(format!(
            "volume {id} is not staged at {}",
            staging.display()
        ))
    })?;
    match live(record.device, &meta, false)? {
        Some(device) => device_usage(&device),
        None => Ok(Stats {
            usage: None,
            health: Health::Abnormal(format!(
                "the loop device staged for volume {id} no longer serves it"
            )),
        }),
    }
}

/// Expansion, step one: grows the block file to `bytes` (rounded up to
/// whole blocks); never shrinks it. Returns the file's size afterwards.
/// Attached devices keep their old size until [`refresh_devices`].
pub(super) fn grow(dir: &Path, id: &VolumeId, bytes: u64) -> Result<u64> {
    let path = file(dir);
    let target = bytes
        .checked_next_multiple_of(BLOCK_ALIGN)
        .ok_or_else(|| Error::OutOfRange(format!("{bytes} bytes is too large")))?;
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone(id)),
        Err(e) => return Err(Error::io("open", &path)(e)),
    };
    let current = file.metadata().map_err(Error::io("stat", &path))?.len();
    if target <= current {
        return Ok(current);
    }
    file.set_len(target)
        .and_then(|()| file.sync_all())
        .map_err(Error::io("grow", &path))?;
    Ok(target)
}

/// Expansion, step two: every device attached for the volume picks up the
/// file's size (`LOOP_SET_CAPACITY`). Returns how many were refreshed.
pub(super) fn refresh_devices(dir: &Path, id: &VolumeId) -> Result<usize> {
    let meta = file_meta(dir, id)?;
    let mut refreshed = 0;
    for record in records(dir)? {
        for (number, read_only) in record.devices() {
            if let Some(device) = live(number, &meta, read_only)? {
                device
                    .set_capacity()
                    .map_err(Error::io("set the capacity of", device.path()))?;
                refreshed += 1;
            }
        }
    }
    Ok(refreshed)
}

/// Where a backing file lies under the (canonical) local root.
enum Place {
    /// `volumes/<key>/block`: the volume directory.
    Volume(PathBuf),
    /// `tmp/<entry>/block` or `trash/<entry>/block`: a half-made or
    /// half-deleted volume.
    Leftover,
}

fn place(root: &Path, backing: &Path) -> Option<Place> {
    let rest = backing.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rest
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        ["volumes", key, BLOCK_FILE] => Some(Place::Volume(root.join("volumes").join(key))),
        ["tmp" | "trash", _, BLOCK_FILE] => Some(Place::Leftover),
        _ => None,
    }
}

/// Whether a record of the volume in `dir` names device `number` for a
/// staging path that still exists, and the device serves the file.
fn still_staged(dir: &Path, number: u32) -> Result<bool> {
    let Ok(meta) = std::fs::symlink_metadata(file(dir)) else {
        return Ok(false);
    };
    for record in records(dir)? {
        for (n, read_only) in record.devices() {
            // The kubelet never unstages a staging path it no longer has.
            if n == number && record.staging.is_dir() && live(n, &meta, read_only)?.is_some() {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Startup: detaches every loop device serving a block file under `root`
/// that is not staged any more; keeps the staged ones. Reads the loop
/// devices once; per device of ours, one volume's records.
pub(super) fn recover(root: &Path) -> Result<Recovery> {
    let root = root.canonicalize().map_err(Error::io("resolve", root))?;
    let mut recovery = Recovery::default();
    for attached in loopdev::attached().map_err(Error::io("list loop devices in", "/sys/block"))? {
        let Some(place) = place(&root, &attached.backing_file) else {
            continue;
        };
        let keep = !attached.deleted
            && match &place {
                Place::Volume(dir) => still_staged(dir, attached.number)?,
                Place::Leftover => false,
            };
        if keep {
            recovery.kept += 1;
            continue;
        }
        let path = loopdev::device_path(attached.number);
        match LoopDevice::open(attached.number) {
            Ok(device) => device.detach().map_err(Error::io("detach", &path))?,
            // Detached since the list was read.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENXIO)) => continue,
            Err(e) => return Err(Error::io("open", &path)(e)),
        }
        tracing::warn!(device = %path.display(), backing = %attached.backing_file.display(), deleted = attached.deleted, "detached a loop device nothing stages any more");
        recovery.detached += 1;
    }
    Ok(recovery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::backend::{Backend, NewVolume};
    use crate::capability::AccessKind;
    use crate::ids::{NodeId, VolumeName};
    use cairn_proto::v1::volume_capability::{
        access_mode::Mode, AccessMode, AccessType, BlockVolume,
    };
    use cairn_proto::v1::VolumeCapability;

    fn backend(root: &Path) -> LocalBackend {
        LocalBackend::open(NodeId::parse("node-a").unwrap(), root, 1 << 20).unwrap()
    }

    fn request(name: &str, bytes: u64, access: AccessKind) -> NewVolume {
        NewVolume {
            name: VolumeName::parse(name).unwrap(),
            capacity: Range {
                required: bytes,
                limit: None,
            },
            parameters: Default::default(),
            mount_flags: Vec::new(),
            access,
        }
    }

    fn block_cap() -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        }
    }

    /// Unstages when the test ends, failed or not: no loop device outlives it.
    struct Staged<'a>(&'a LocalBackend, VolumeId, PathBuf);

    impl Drop for Staged<'_> {
        fn drop(&mut self) {
            let _ = self.0.unstage(&self.1, &self.2);
        }
    }

    fn device_size(path: &Path) -> u64 {
        LoopDevice::open_node(path)
            .unwrap()
            .expect("a loop device")
            .size_bytes()
            .unwrap()
    }

    #[test]
    fn records_from_before_block_volumes_are_mount_volumes() {
        let meta: super::super::Meta =
            serde_json::from_str(r#"{"name":"x","capacity_bytes":1}"#).unwrap();
        assert_eq!(meta.access_type, AccessKind::Mount);
    }

    #[test]
    fn create_makes_a_sparse_file_and_conflicts_on_access_type() {
        let root = tempfile::tempdir().unwrap();
        let b = backend(root.path());
        let v = b
            .create_volume(&request("pvc-b", 5 << 20, AccessKind::Block))
            .unwrap();
        let file = root.path().join("volumes/pvc-b/block");
        let meta = std::fs::metadata(&file).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.len(), 5 << 20);
        assert_eq!(meta.mode() & 0o777, BLOCK_FILE_MODE);
        assert!(meta.blocks() * 512 <= 64 << 10, "not sparse");
        assert!(root.path().join("volumes/pvc-b/attachments").is_dir());
        assert!(!root.path().join("volumes/pvc-b/data").exists());
        assert_eq!(
            b.create_volume(&request("pvc-b", 5 << 20, AccessKind::Block))
                .unwrap(),
            v
        );
        assert!(matches!(
            b.create_volume(&request("pvc-b", 5 << 20, AccessKind::Mount)),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(b.volume_health(&v.id), Health::Ok));
        assert!(matches!(
            b.grow_block_file(
                &b.create_volume(&request("pvc-m", 0, AccessKind::Mount))
                    .unwrap()
                    .id,
                1
            ),
            Err(Error::FailedPrecondition(_))
        ));
    }

    #[test]
    fn expansion_grows_the_file_then_the_attached_devices() {
        cairn_harness::require!(cairn_harness::require_loop_devices());
        let root = tempfile::tempdir().unwrap();
        let kubelet = tempfile::tempdir().unwrap();
        let b = backend(root.path());
        let v = b
            .create_volume(&request("pvc-grow", 1 << 20, AccessKind::Block))
            .unwrap();
        let staging = kubelet.path().join("staging");
        std::fs::create_dir(&staging).unwrap();
        b.stage(&v.id, &staging, &block_cap()).unwrap();
        let _staged = Staged(&b, v.id.clone(), staging.clone());
        let rw = b.block_device(&v.id, &staging, false).unwrap();
        let ro = b.block_device(&v.id, &staging, true).unwrap();
        assert_ne!(rw, ro);
        assert_eq!(device_size(&rw), 1 << 20);

        let grown = (3 << 20) + 4096;
        assert_eq!(b.grow_block_file(&v.id, (3 << 20) + 1).unwrap(), grown);
        // Never shrinks; growing again to the same size is a no-op.
        assert_eq!(b.grow_block_file(&v.id, 1 << 20).unwrap(), grown);
        assert_eq!(b.grow_block_file(&v.id, grown).unwrap(), grown);
        assert_eq!(device_size(&rw), 1 << 20, "device resized before refresh");
        assert_eq!(b.refresh_block_devices(&v.id).unwrap(), 2);
        assert_eq!(device_size(&rw), grown);
        assert_eq!(device_size(&ro), grown);

        // Staged: DeleteVolume refuses; after unstage it deletes.
        assert!(matches!(
            b.delete_volume(&v.id),
            Err(Error::FailedPrecondition(_))
        ));
        b.unstage(&v.id, &staging).unwrap();
        assert_eq!(b.refresh_block_devices(&v.id).unwrap(), 0);
        b.delete_volume(&v.id).unwrap();
    }

    #[test]
    fn capacity_is_whole_blocks_within_the_limit() {
        let range = |required, limit| Range { required, limit };
        assert_eq!(capacity(1, &range(1, None)).unwrap(), 4096);
        assert_eq!(capacity(1 << 20, &range(1 << 20, None)).unwrap(), 1 << 20);
        assert_eq!(capacity(5000, &range(5000, Some(8192))).unwrap(), 8192);
        assert!(matches!(
            capacity(5000, &range(5000, Some(6000))),
            Err(Error::OutOfRange(_))
        ));
    }

    #[test]
    fn places_under_the_root() {
        let root = Path::new("/r");
        assert!(matches!(
            place(root, Path::new("/r/volumes/pvc-1/block")),
            Some(Place::Volume(d)) if d == Path::new("/r/volumes/pvc-1")
        ));
        assert!(matches!(
            place(root, Path::new("/r/tmp/x.1.2/block")),
            Some(Place::Leftover)
        ));
        assert!(matches!(
            place(root, Path::new("/r/trash/x.1.2/block")),
            Some(Place::Leftover)
        ));
        for other in [
            "/r/volumes/pvc-1/data/block",
            "/r/volumes/pvc-1/other",
            "/r/images/x/block",
            "/elsewhere/volumes/pvc-1/block",
            "/r2/volumes/pvc-1/block",
        ] {
            assert!(place(root, Path::new(other)).is_none(), "{other}");
        }
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(attachments(dir.path())).unwrap();
        let id = VolumeId::parse("local:n:pvc-1").unwrap();
        let staging = Path::new("/k/plugins/kubernetes.io/csi/volumeDevices/staging/pv");
        assert_eq!(read_record(dir.path(), staging).unwrap(), None);
        let record = Attachment {
            staging: staging.to_path_buf(),
            device: 3,
            read_only_device: None,
        };
        write_record(dir.path(), &id, &record).unwrap();
        assert_eq!(
            read_record(dir.path(), staging).unwrap(),
            Some(record.clone())
        );
        assert_eq!(records(dir.path()).unwrap(), vec![record]);
        remove_record(dir.path(), staging).unwrap();
        remove_record(dir.path(), staging).unwrap();
        assert!(records(dir.path()).unwrap().is_empty());
    }
}
