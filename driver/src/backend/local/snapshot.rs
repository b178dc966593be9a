//! Local snapshots, restores and clones.
//!
//! A snapshot is a copy of a volume's payload — its `data/` directory, or
//! the `block` file of a raw block volume — made with [`crate::copy`], so it
//! shares blocks with the volume where the filesystem can (reflink) and is a
//! full copy elsewhere:
//! ```text
//! <root>/snapshots/<key>/meta.json   name, source volume, size, creation time
//! <root>/snapshots/<key>/payload     the copy
//! ```
//! Like a volume, a snapshot is built in `tmp/`, made durable (one `syncfs`
//! for the copied tree, then the record and the directory) and renamed in;
//! it is deleted by a rename into `trash/`. After a crash it exists whole or
//! not at all, and startup removes the half-made copy.
//!
//! Snapshots are independent copies: deleting their source volume leaves
//! them fully usable (spec, DeleteVolume: "CSI plugins SHOULD treat volumes
//! independent from their snapshots").
//!
//! A restore (CreateVolume from a snapshot) or a clone (from a volume) copies
//! the source's payload into the new volume's `data/` while the volume is
//! still in its scratch directory: a half-restored volume is never visible.
//!
//! Copies run on the blocking pool as jobs (see `jobs`) so a long full copy
//! can outlive the call that started it. A copy notices when its source is
//! deleted under it (the source's directory is no longer the one it opened)
//! and fails instead of publishing a partial copy.
//!
//! A copy of a volume in use is made file after file: it is not a
//! point-in-time image across files. Applications that need one quiesce
//! their writes while the snapshot is taken.

use std::collections::BTreeSet;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Mode, OFlags, CWD};
use serde::{Deserialize, Serialize};

use super::id::LocalSnapshotId;
use super::jobs::{Job, Jobs};
use super::{check_compatible, check_parameters, keys_in, LocalBackend, Meta, DATA_DIR, META_FILE};
use crate::backend::{NewVolume, Snapshot, SnapshotPage, Volume};
use crate::capability::AccessKind;
use crate::copy::{self, CopyStats};
use crate::durable;
use crate::error::{Error, Result};
use crate::ids::{ContentSource, SnapshotId, VolumeId, VolumeKey, VolumeName};
use crate::json_record;
use crate::page_token;
use crate::rpc::blocking;

/// How long CreateSnapshot waits for its copy before answering
/// `ready_to_use: false`.
///
/// `ready_to_use` is honest: a reflink copy finishes in milliseconds, and
/// otherwise the call answers not ready while the copy goes on; the
/// external-snapshotter repeats the call, which joins the running copy,
/// until it is ready. How that reads against the spec: a local snapshot
/// is "cut" when CreateSnapshot first answers with its id, and the copy
/// still running is its "post-processing" (spec: `ready_to_use` false
/// until processed), so ListSnapshots and GetSnapshot show it, not ready.
/// A file-by-file copy is no point-in-time image in any case: an
/// application that needs one must hold its writes until the snapshot is
/// ready, not only until the call returns.
pub const GRACE: Duration = Duration::from_secs(1);

const SNAPSHOTS_DIR: &str = "snapshots";
const PAYLOAD: &str = "payload";
/// A raw block volume's payload, beside where a directory volume has `data/`.
const BLOCK_FILE: &str = "block";

/// What a payload is: a directory tree or one (sparse) file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    Directory,
    File,
}

/// A restored or cloned volume's source, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordedSource {
    Snapshot(String),
    Volume(String),
}

impl From<&ContentSource> for RecordedSource {
    fn from(source: &ContentSource) -> Self {
        match source {
            ContentSource::Snapshot(id) => RecordedSource::Snapshot(id.to_string()),
            ContentSource::Volume(id) => RecordedSource::Volume(id.to_string()),
        }
    }
}

impl fmt::Display for RecordedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordedSource::Snapshot(id) => write!(f, "snapshot {id}"),
            RecordedSource::Volume(id) => write!(f, "volume {id}"),
        }
    }
}

/// The on-disk record of a snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotMeta {
    name: String,
    source_volume_id: String,
    /// The source's capacity when the snapshot was taken: the smallest
    /// volume it can be restored into.
    size_bytes: u64,
    /// When the copy started, since the Unix epoch.
    created_secs: u64,
    created_nanos: u32,
    payload: PayloadKind,
    /// Whether every file shares its blocks with the source (for operators).
    reflinked: bool,
}

/// A snapshot to be made: checked, nothing written yet.
#[derive(Debug, Clone)]
pub struct SnapshotPlan {
    key: VolumeKey,
    name: String,
    source_key: VolumeKey,
    /// What CreateSnapshot answers while the copy runs.
    pub pending: Snapshot,
}

/// What a CreateSnapshot finds for its name.
pub enum SnapshotState {
    Ready(Snapshot),
    Running(Arc<Job<SnapshotPlan, Snapshot>>),
    New(SnapshotPlan),
}

/// A volume to be restored or cloned: checked, nothing written yet.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    key: VolumeKey,
    meta: Meta,
    /// The source's directory (`snapshots/<key>` or `volumes/<key>`) and
    /// the payload's name inside it.
    source_dir: PathBuf,
    payload: &'static str,
    /// A directory tree (into `data/`) or a block volume's file.
    kind: PayloadKind,
}

/// What a CreateVolume with a content source finds for its name.
pub enum RestoreState {
    Existing(Volume),
    Running(Arc<Job<RestorePlan, Volume>>),
    New(RestorePlan),
}

/// Copies (snapshots and restores together) that run at once; more wait.
/// Each holds a thread of the blocking pool (`--io-threads`, 8 by default)
/// for as long as it runs, and the others are needed for mounts.
const COPY_SLOTS: usize = 2;

/// The copies running in this process.
#[derive(Debug)]
pub struct Copies {
    snapshots: Jobs<SnapshotPlan, Snapshot>,
    restores: Jobs<RestorePlan, Volume>,
}

impl Default for Copies {
    fn default() -> Self {
        let slots = Arc::new(tokio::sync::Semaphore::new(COPY_SLOTS));
        Self {
            snapshots: Jobs::new(slots.clone()),
            restores: Jobs::new(slots),
        }
    }
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Opens a directory of the local root (trusted path) for a copy.
fn open_dir(dir: &Path) -> Result<Option<OwnedFd>> {
    match rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(Error::io("open", dir)(e.into())),
    }
}

/// Whether `dir` still names the directory `opened` (not deleted, renamed
/// away or replaced since it was opened).
fn still_there(dir: &Path, opened: &OwnedFd) -> Result<bool> {
    let now = match rustix::fs::statat(CWD, dir, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(Error::io("stat", dir)(e.into())),
    };
    let then = rustix::fs::fstat(opened).map_err(|e| Error::io("stat", dir)(e.into()))?;
    Ok(now.st_dev == then.st_dev && now.st_ino == then.st_ino)
}

/// A volume's payload: `data/`, or the `block` file of a raw block volume.
fn payload_of(volume: &OwnedFd, dir: &Path) -> Result<(&'static str, PayloadKind)> {
    for (name, kind) in [
        (DATA_DIR, PayloadKind::Directory),
        (BLOCK_FILE, PayloadKind::File),
    ] {
        match rustix::fs::statat(volume, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => return Ok((name, kind)),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(Error::io("stat", dir.join(name))(e.into())),
        }
    }
    Err(Error::Internal(format!(
        "volume directory {} has neither {DATA_DIR}/ nor {BLOCK_FILE}",
        dir.display()
    )))
}

fn log_copy(what: &str, id: &str, stats: &CopyStats, started: Instant, copied: Duration) {
    tracing::info!(
        what,
        id,
        copy_ms = copied.as_secs_f64() * 1000.0,
        files = stats.files,
        reflinked = stats.reflinked,
        hardlinks = stats.hardlinks,
        bytes = stats.bytes,
        dirs = stats.dirs,
        symlinks = stats.symlinks,
        skipped_special = stats.skipped_special,
        changed = stats.changed,
        xattrs_skipped = stats.xattrs_skipped,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        "copy finished"
    );
}

impl LocalBackend {
    pub(super) fn snapshots_dir(&self) -> PathBuf {
        self.root.join(SNAPSHOTS_DIR)
    }

    fn snapshot_dir(&self, key: &VolumeKey) -> PathBuf {
        self.snapshots_dir().join(key.as_str())
    }

    pub fn snapshot_id(&self, key: VolumeKey) -> SnapshotId {
        SnapshotId::local(self.node.clone(), key)
    }

    /// The local part of a snapshot id this node holds; `None` for another
    /// node's snapshot.
    fn own_snapshot<'a>(&self, id: &'a SnapshotId) -> Option<&'a LocalSnapshotId> {
        match id {
            SnapshotId::Local(local) if local.node == self.node => Some(local),
            SnapshotId::Local(_) | SnapshotId::Nfs(_) => None,
        }
    }

    fn read_snapshot_meta(&self, key: &VolumeKey) -> Result<Option<SnapshotMeta>> {
        json_record::read_file(&self.snapshot_dir(key).join(META_FILE), "snapshot record")
    }

    fn to_snapshot(&self, key: VolumeKey, meta: &SnapshotMeta) -> Result<Snapshot> {
        Ok(Snapshot {
            id: self.snapshot_id(key),
            source: VolumeId::parse(&meta.source_volume_id)?,
            size_bytes: meta.size_bytes,
            created: UNIX_EPOCH + Duration::new(meta.created_secs, meta.created_nanos),
            ready: true,
        })
    }

    /// The snapshot stored (ready) or being made (not ready) under `key`.
    fn snapshot_by_key(&self, key: &VolumeKey) -> Result<Option<Snapshot>> {
        // The job table first: a job leaves it only after its snapshot is on
        // disk, so this order never misses a snapshot being finished.
        let running = self.copies.snapshots.get(key);
        if let Some(meta) = self.read_snapshot_meta(key)? {
            return self.to_snapshot(key.clone(), &meta).map(Some);
        }
        Ok(running.map(|job| job.plan.pending.clone()))
    }

    /// What exists for a CreateSnapshot `name` of `source`: a snapshot, a
    /// copy running for it, or nothing (then a plan to make it). A name
    /// taken by a snapshot of another volume is AlreadyExists; a source
    /// that does not exist here is NotFound.
    pub fn snapshot_state(&self, name: &VolumeName, source: &VolumeId) -> Result<SnapshotState> {
        let key = name.key();
        let conflict = |other: &str| {
            Error::AlreadyExists(format!(
                "snapshot {:?} already exists with source {other}",
                name.as_str()
            ))
        };
        if let Some(job) = self.copies.snapshots.get(&key) {
            if job.plan.name != name.as_str() {
                return Err(conflict(&format!("and another name ({:?})", job.plan.name)));
            }
            if &job.plan.pending.source != source {
                return Err(conflict(&job.plan.pending.source.to_string()));
            }
            return Ok(SnapshotState::Running(job));
        }
        if let Some(meta) = self.read_snapshot_meta(&key)? {
            if meta.name != name.as_str() {
                return Err(conflict(&format!("and another name ({:?})", meta.name)));
            }
            if meta.source_volume_id != source.to_string() {
                return Err(conflict(&meta.source_volume_id));
            }
            return self.to_snapshot(key, &meta).map(SnapshotState::Ready);
        }
        let local = self.owned(source)?;
        let volume = self
            .read_meta(&local.key)?
            .ok_or_else(|| Error::NotFound(format!("volume {source} does not exist")))?;
        Ok(SnapshotState::New(SnapshotPlan {
            pending: Snapshot {
                id: self.snapshot_id(key.clone()),
                source: source.clone(),
                size_bytes: volume.capacity_bytes,
                created: SystemTime::now(),
                ready: false,
            },
            key,
            name: name.as_str().to_string(),
            source_key: local.key.clone(),
        }))
    }

    /// Starts the copy `plan` describes; the caller holds the snapshot's
    /// lock and found no copy running ([`Self::snapshot_state`]).
    pub fn start_snapshot(
        self: &Arc<Self>,
        plan: SnapshotPlan,
    ) -> Arc<Job<SnapshotPlan, Snapshot>> {
        let backend = self.clone();
        self.copies
            .snapshots
            .start(plan.key.clone(), plan, move |job| {
                backend.make_snapshot(&job.plan, job.cancelled())
            })
    }

    fn make_snapshot(&self, plan: &SnapshotPlan, cancel: &AtomicBool) -> Result<Snapshot> {
        let started = Instant::now();
        let scratch = self.tmp_dir().join(self.scratch_name(&plan.key));
        let result = (|| {
            let source_dir = self.volume_dir(&plan.source_key);
            let gone = || {
                Error::NotFound(format!(
                    "volume {} was deleted while it was being snapshotted",
                    plan.pending.source
                ))
            };
            let source = open_dir(&source_dir)?.ok_or_else(gone)?;
            let (payload, kind) = payload_of(&source, &source_dir)?;
            std::fs::create_dir(&scratch).map_err(Error::io("create", &scratch))?;
            let dst = open_dir(&scratch)?
                .ok_or_else(|| Error::Internal(format!("{} vanished", scratch.display())))?;
            let stats = copy::copy(source.as_fd(), payload, dst.as_fd(), PAYLOAD, cancel)?;
            let copied = started.elapsed();
            // A DeleteVolume during the copy removed files under it: the
            // copy may be partial. (One that starts after this check found
            // the copy complete.)
            if !still_there(&source_dir, &source)? {
                return Err(gone());
            }
            copy::sync_filesystem(&scratch)?;
            let created = since_epoch(plan.pending.created);
            let meta = SnapshotMeta {
                name: plan.name.clone(),
                source_volume_id: plan.pending.source.to_string(),
                size_bytes: plan.pending.size_bytes,
                created_secs: created.as_secs(),
                created_nanos: created.subsec_nanos(),
                payload: kind,
                reflinked: stats.all_reflinked(),
            };
            let record = json_record::encode(&meta, "snapshot record")?;
            durable::write_new_file(&scratch.join(META_FILE), &record)?;
            durable::sync_dir(&scratch)?;
            durable::rename(
                &scratch,
                &self.snapshot_dir(&plan.key),
                &self.snapshots_dir(),
            )?;
            log_copy(
                "snapshot",
                &plan.pending.id.to_string(),
                &stats,
                started,
                copied,
            );
            Ok(Snapshot {
                ready: true,
                ..plan.pending.clone()
            })
        })();
        if result.is_err() {
            // Best effort; anything left is cleared at the next start.
            let _ = std::fs::remove_dir_all(&scratch);
        }
        result
    }

    /// The snapshot `id`, ready or being made; `None` when it does not
    /// exist here (another node's included).
    pub fn find_snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>> {
        match self.own_snapshot(id) {
            Some(local) => self.snapshot_by_key(&local.key),
            None => Ok(None),
        }
    }

    /// The copy running for snapshot `id`, if any (DeleteSnapshot cancels it).
    pub fn snapshot_job(&self, id: &SnapshotId) -> Option<Arc<Job<SnapshotPlan, Snapshot>>> {
        self.own_snapshot(id)
            .and_then(|local| self.copies.snapshots.get(&local.key))
    }

    /// Deletes a stored snapshot; an unknown one is already deleted. Another
    /// node's is FailedPrecondition (it must be deleted there). The caller
    /// has stopped any copy running for it.
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<()> {
        let Some(local) = self.own_snapshot(id) else {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {id} is held by another node than {}; delete it from there",
                self.node
            )));
        };
        let dir = self.snapshot_dir(&local.key);
        let doomed = self.trash_dir().join(self.scratch_name(&local.key));
        match durable::rename(&dir, &doomed, &self.snapshots_dir()) {
            Ok(()) => {}
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
        self.janitor.remove(doomed);
        Ok(())
    }

    /// Snapshots in key order after `after`, at most `max` (0: all), only
    /// those of `source` if given. Snapshots being made are listed, not
    /// ready.
    pub fn snapshot_page(
        &self,
        after: Option<&VolumeKey>,
        max: usize,
        source: Option<&VolumeId>,
    ) -> Result<SnapshotPage> {
        // Those being made are listed too (not ready).
        let mut keys: BTreeSet<VolumeKey> = self.copies.snapshots.keys().into_iter().collect();
        keys.extend(keys_in(&self.snapshots_dir())?);
        let mut matching = Vec::new();
        for key in keys.into_iter().filter(|k| after.is_none_or(|a| k > a)) {
            // Deleted since the directory was read: skip it.
            if let Some(snapshot) = self.snapshot_by_key(&key)? {
                if source.is_none_or(|s| &snapshot.source == s) {
                    matching.push((key, snapshot));
                }
            }
        }
        let next = page_token::take_page(&mut matching, max, |(key, _)| key);
        Ok(SnapshotPage {
            snapshots: matching.into_iter().map(|(_, s)| s).collect(),
            next,
        })
    }

    /// What exists for a CreateVolume of `request` filled from `source`: the
    /// volume, a copy running for it, or nothing (then a plan to make it).
    pub fn restore_state(
        &self,
        request: &NewVolume,
        source: &ContentSource,
    ) -> Result<RestoreState> {
        let key = request.name.key();
        let recorded = RecordedSource::from(source);
        if let Some(job) = self.copies.restores.get(&key) {
            check_compatible(request, &job.plan.meta, Some(&recorded))?;
            return Ok(RestoreState::Running(job));
        }
        if let Some(existing) = self.read_meta(&key)? {
            check_compatible(request, &existing, Some(&recorded))?;
            return Ok(RestoreState::Existing(self.to_volume(key, existing)));
        }
        check_parameters(&request.parameters)?;
        let elsewhere = |what: String, node: &dyn fmt::Display| {
            // ResourceExhausted: external-provisioner then lets the
            // scheduler pick another node (WaitForFirstConsumer).
            Error::ResourceExhausted(format!(
                "{what} lives on node {node}; a volume made from it can only be created there, not on {}",
                self.node
            ))
        };
        let (source_dir, payload, kind, size) = match source {
            ContentSource::Snapshot(id) => {
                let SnapshotId::Local(local) = id else {
                    return Err(Error::InvalidArgument(format!(
                        "snapshot {id} is on an NFS export; a local volume cannot be restored from it"
                    )));
                };
                if local.node != self.node {
                    return Err(elsewhere(format!("snapshot {id}"), &local.node));
                }
                if self.copies.snapshots.get(&local.key).is_some() {
                    return Err(Error::FailedPrecondition(format!(
                        "snapshot {id} is not ready yet: its copy is still running"
                    )));
                }
                let meta = self
                    .read_snapshot_meta(&local.key)?
                    .ok_or_else(|| Error::NotFound(format!("snapshot {id} does not exist")))?;
                (
                    self.snapshot_dir(&local.key),
                    PAYLOAD,
                    meta.payload,
                    meta.size_bytes,
                )
            }
            ContentSource::Volume(id) => {
                let local = match id {
                    VolumeId::Local(local) if local.node == self.node => local,
                    VolumeId::Local(local) => {
                        return Err(elsewhere(format!("volume {id}"), &local.node))
                    }
                    VolumeId::Nfs(_) => {
                        return Err(Error::InvalidArgument(format!(
                            "volume {id} is an NFS volume; a local volume cannot be cloned from it"
                        )))
                    }
                };
                let meta = self
                    .read_meta(&local.key)?
                    .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))?;
                let dir = self.volume_dir(&local.key);
                let (payload, kind) = match meta.access_type {
                    AccessKind::Mount => (DATA_DIR, PayloadKind::Directory),
                    AccessKind::Block => (BLOCK_FILE, PayloadKind::File),
                };
                (dir, payload, kind, meta.capacity_bytes)
            }
        };
        // A filesystem tree fills a filesystem volume, a device image a
        // block volume; neither can become the other.
        let holds = match kind {
            PayloadKind::Directory => AccessKind::Mount,
            PayloadKind::File => AccessKind::Block,
        };
        if request.access != holds {
            let what = |access| match access {
                AccessKind::Mount => "a filesystem volume (access type mount)",
                AccessKind::Block => "a raw block volume",
            };
            return Err(Error::InvalidArgument(format!(
                "{source} holds the content of {}; it cannot fill {}",
                what(holds),
                what(request.access)
            )));
        }
        let mut capacity =
            request
                .capacity
                .for_copy_of(size, self.default_size, self.max_volume_bytes()?)?;
        if holds == AccessKind::Block {
            capacity = super::block::capacity(capacity, &request.capacity)?;
        }
        Ok(RestoreState::New(RestorePlan {
            key,
            meta: Meta {
                name: request.name.as_str().to_string(),
                capacity_bytes: capacity,
                parameters: request.parameters.clone(),
                access_type: holds,
                source: Some(recorded),
                project_id: None,
            },
            source_dir,
            payload,
            kind,
        }))
    }

    /// Starts the restore `plan` describes; the caller holds the volume's
    /// lock and found no copy running ([`Self::restore_state`]).
    pub fn start_restore(self: &Arc<Self>, plan: RestorePlan) -> Arc<Job<RestorePlan, Volume>> {
        let backend = self.clone();
        self.copies
            .restores
            .start(plan.key.clone(), plan, move |job| {
                backend.restore(&job.plan, job.cancelled())
            })
    }

    /// The restore running for `key`, if any (DeleteVolume cancels it).
    pub fn restore_job(&self, id: &VolumeId) -> Option<Arc<Job<RestorePlan, Volume>>> {
        match id {
            VolumeId::Local(local) if local.node == self.node => {
                self.copies.restores.get(&local.key)
            }
            _ => None,
        }
    }

    fn restore(&self, plan: &RestorePlan, cancel: &AtomicBool) -> Result<Volume> {
        let started = Instant::now();
        let source_name = plan
            .meta
            .source
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let gone = || {
            Error::NotFound(format!(
                "{source_name} was deleted while it was being copied"
            ))
        };
        let fill = |dst: &Path| -> Result<()> {
            let source = open_dir(&plan.source_dir)?.ok_or_else(gone)?;
            let dst_dir = open_dir(dst)?
                .ok_or_else(|| Error::Internal(format!("{} vanished", dst.display())))?;
            let stats = match plan.kind {
                PayloadKind::Directory => {
                    copy::copy_into(source.as_fd(), plan.payload, dst_dir.as_fd(), cancel)?
                }
                PayloadKind::File => copy::copy(
                    source.as_fd(),
                    plan.payload,
                    dst_dir.as_fd(),
                    BLOCK_FILE,
                    cancel,
                )?,
            };
            let copied = started.elapsed();
            if !still_there(&plan.source_dir, &source)? {
                return Err(gone());
            }
            copy::sync_filesystem(dst)?;
            let what = format!("volume {} from {source_name}", plan.key);
            log_copy("restore", &what, &stats, started, copied);
            Ok(())
        };
        // Sized and enforced like any new volume.
        let space = self.space_for(plan.meta.access_type)?;
        self.provision(&plan.key, plan.meta.clone(), space, Some(&fill))
    }

    /// CreateSnapshot: the snapshot, a running copy joined, or a new copy
    /// started; waits up to [`GRACE`] for the copy and otherwise answers
    /// it not ready (the next call joins it).
    pub(super) async fn take_snapshot(
        self: Arc<Self>,
        name: VolumeName,
        source: VolumeId,
    ) -> Result<Snapshot> {
        let state = {
            let backend = self.clone();
            blocking(move || backend.snapshot_state(&name, &source)).await?
        };
        let job = match state {
            SnapshotState::Ready(snapshot) => return Ok(snapshot),
            SnapshotState::Running(job) => job,
            SnapshotState::New(plan) => self.start_snapshot(plan),
        };
        match tokio::time::timeout(GRACE, job.wait()).await {
            Ok(done) => done,
            Err(_) => Ok(job.plan.pending.clone()),
        }
    }

    /// DeleteSnapshot: a copy still running for it is stopped first.
    pub(super) async fn drop_snapshot(self: Arc<Self>, id: SnapshotId) -> Result<()> {
        if let Some(job) = self.snapshot_job(&id) {
            job.cancel();
            // Cancelled, failed or (having raced the cancel) finished: what
            // is on disk now is deleted below.
            let _ = job.wait().await;
        }
        blocking(move || self.remove_snapshot(&id)).await
    }

    /// CreateVolume from `source`: the volume, a running restore joined,
    /// or a new one started; waits for it.
    pub(super) async fn fill_from(
        self: Arc<Self>,
        request: NewVolume,
        source: ContentSource,
    ) -> Result<Volume> {
        let state = {
            let backend = self.clone();
            blocking(move || backend.restore_state(&request, &source)).await?
        };
        let job = match state {
            RestoreState::Existing(volume) => return Ok(volume),
            RestoreState::Running(job) => job,
            RestoreState::New(plan) => self.start_restore(plan),
        };
        job.wait().await
    }

    /// Stops a restore running for `id`, if any, and waits for it.
    pub(super) async fn cancel_restore(&self, id: &VolumeId) {
        if let Some(job) = self.restore_job(id) {
            job.cancel();
            let _ = job.wait().await;
        }
    }

    /// Stops every running copy (shutdown); their scratch is removed by the
    /// copies themselves or at the next start.
    pub fn cancel_copies(&self) {
        self.copies.snapshots.cancel_all();
        self.copies.restores.cancel_all();
    }
}

#[cfg(test)]
mod tests;
