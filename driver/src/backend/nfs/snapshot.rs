//! NFS snapshots: a copy of the volume's directory on the same export,
//! made through the controller's userspace client (NFS has no snapshot
//! operation of its own, and the controller never mounts).
//!
//! Layout on the share (names starting with '.' are never volume dirs):
//! ```text
//! .cairn-snapshots/<leaf>/              the copy
//! .cairn-snapshots/.<leaf>.cairn.json   its record: the commit point
//! .cairn-snapshots/.<leaf>.partial/     a copy in progress
//! .cairn-snapshots/.<leaf>.claim       who the copy is being made for
//! ```
//! A snapshot exists exactly when its record does. Before anything is
//! copied, a claim naming the snapshot and its source is written, once
//! (exclusively): it is what makes the copy, the partial copy and the
//! record Cairn's own, and it goes last when the snapshot is deleted. The
//! copy is made under `.partial`, renamed into place, and only then
//! recorded; a crash at any point leaves no record, and the retry under
//! the same claim clears what the crash left and starts over. A copy or
//! partial copy that no claim covers is not Cairn's, and is never removed
//! or written over.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::client::{CopyCount, Share};
use super::id::{NfsSnapshotId, NfsVolumeId};
use super::{beside, nfs_id, NfsBackend};
use crate::backend::{NewVolume, Snapshot};
use crate::error::{Error, Result};
use crate::ids::{ContentSource, SnapshotId, VolumeId, VolumeName, MAX_ID_LEN};

/// The directory on the share that holds every snapshot.
const SNAPSHOTS_DIR: &str = ".cairn-snapshots";
/// Marks a restored volume's directory until its record is written.
const RESTORE_MARKER: &str = ".cairn-restoring";

/// Where a snapshot's copy lives on its share; its record and a copy in
/// progress sit beside it ([`beside`]), as a volume's record does.
fn snapshot_dir(id: &NfsSnapshotId) -> String {
    format!("{SNAPSHOTS_DIR}/{}", id.leaf)
}

fn record_path(id: &NfsSnapshotId) -> String {
    beside(&snapshot_dir(id), ".cairn.json")
}

fn partial_dir(id: &NfsSnapshotId) -> String {
    beside(&snapshot_dir(id), ".partial")
}

fn claim_path(id: &NfsSnapshotId) -> String {
    beside(&snapshot_dir(id), ".claim")
}

/// Who a snapshot's copy is being made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claim {
    name: String,
    /// The source volume's id.
    source: String,
}

/// What a snapshot's record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NfsSnapshot {
    pub name: String,
    /// The source volume's id.
    pub source: String,
    pub size_bytes: u64,
    /// Seconds and nanoseconds since the epoch when the copy completed.
    pub created: (u64, u32),
}

fn now() -> (u64, u32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()))
}

async fn read_snapshot(share: &Share, id: &NfsSnapshotId) -> Result<Option<NfsSnapshot>> {
    share.read_json(&record_path(id)).await
}

impl NfsBackend {
    /// The id a snapshot named `name` of `source` gets.
    pub fn snapshot_id(source: &NfsVolumeId, name: &VolumeName) -> Result<NfsSnapshotId> {
        let id = NfsSnapshotId {
            server: source.server.clone(),
            port: source.port,
            share: source.share.clone(),
            leaf: name.short_dir_name(),
        };
        if id.to_string().len() > MAX_ID_LEN {
            return Err(Error::InvalidArgument(format!(
                "server and share make a snapshot id over {MAX_ID_LEN} bytes"
            )));
        }
        Ok(id)
    }

    /// Copies `source` into the snapshot `id` ([`Self::snapshot_id`] of
    /// `name`); idempotent on name.
    pub async fn make_snapshot(
        &self,
        id: &NfsSnapshotId,
        source: &VolumeId,
        name: &VolumeName,
    ) -> Result<NfsSnapshot> {
        let volume = nfs_id(source)?;
        self.on_volume_share(volume, &[], async |share| {
            if let Some(existing) = read_snapshot(share, id).await? {
                if existing.name != name.as_str() || existing.source != source.to_string() {
                    return Err(Error::AlreadyExists(format!(
                        "snapshot {:?} already exists for volume {}",
                        existing.name, existing.source
                    )));
                }
                return Ok(existing);
            }
            let record = self
                .read_record(share, volume)
                .await?
                .ok_or_else(|| Error::NotFound(format!("source volume {source} does not exist")))?;
            share.mkdir_all(SNAPSHOTS_DIR, 0o700).await?;
            let (dir, partial) = (snapshot_dir(id), partial_dir(id));
            let claim = Claim {
                name: name.as_str().to_string(),
                source: source.to_string(),
            };
            if share.write_json_new(&claim_path(id), &claim).await? {
                // A new claim: nothing can be ours here yet.
                if share.exists(&dir).await? || share.exists(&partial).await? {
                    share.remove_file(&claim_path(id)).await?;
                    return Err(Error::AlreadyExists(format!(
                        "{dir} or {partial} exists on the export without a Cairn record; \
                         snapshot {:?} does not write over it: move it away and retry",
                        name.as_str()
                    )));
                }
            } else {
                match share.read_json::<Claim>(&claim_path(id)).await? {
                    // Our own interrupted attempt: what it left is ours,
                    // and nothing of it was reported.
                    Some(existing) if existing == claim => {
                        share.remove_tree(&partial).await?;
                        share.remove_tree(&dir).await?;
                    }
                    Some(existing) => {
                        return Err(Error::AlreadyExists(format!(
                            "snapshot {:?} is being made of volume {}",
                            existing.name, existing.source
                        )))
                    }
                    None => {
                        return Err(Error::Aborted(format!(
                            "snapshot {:?} was deleted while this call began; retry",
                            name.as_str()
                        )))
                    }
                }
            }
            let started = Instant::now();
            let copied = share.copy_tree(volume.subdir.as_str(), &partial).await?;
            log_copy("snapshot", &id.to_string(), copied, started);
            share.rename(&partial, &dir).await?;
            let snapshot = NfsSnapshot {
                name: name.as_str().to_string(),
                source: source.to_string(),
                size_bytes: record.capacity_bytes,
                created: now(),
            };
            share.write_json(&record_path(id), &snapshot).await?;
            Ok(snapshot)
        })
        .await
    }

    /// Deletes a snapshot; an unknown one is already deleted.
    pub async fn remove_snapshot(&self, id: &NfsSnapshotId) -> Result<()> {
        self.on_share(&id.server, id.port, &id.share, &[], async |share| {
            let record = read_snapshot(share, id).await?;
            let claimed = share.exists(&claim_path(id)).await?;
            if !claimed {
                let Some(record) = record else {
                    // Neither recorded nor claimed: nothing here is ours.
                    return Ok(());
                };
                // Recorded by an earlier version, which wrote no claim: one
                // is written now, so that a retry after the record is gone
                // still knows the rest is ours.
                let claim = Claim {
                    name: record.name,
                    source: record.source,
                };
                share.write_json_new(&claim_path(id), &claim).await?;
            }
            // Record first: from here on the snapshot does not exist, and a
            // retry still removes what is left of the copy; the claim last.
            share.remove_file(&record_path(id)).await?;
            share.remove_tree(&snapshot_dir(id)).await?;
            share.remove_tree(&partial_dir(id)).await?;
            share.remove_file(&claim_path(id)).await
        })
        .await
    }

    pub async fn find_snapshot(&self, id: &NfsSnapshotId) -> Result<Option<NfsSnapshot>> {
        self.on_share(&id.server, id.port, &id.share, &[], async |share| {
            read_snapshot(share, id).await
        })
        .await
    }

    /// Fills the new volume `target` with a copy of `source` on the same
    /// share and returns the volume's size (at least the source's). The
    /// copy is made under `.<leaf>.restoring` beside the volume's directory
    /// and renamed into place with a marker naming the volume, which stays
    /// until the caller has written the volume's record: a restore that
    /// crashed before its record is recognised and redone, while a
    /// directory that is not ours is never written over.
    pub(super) async fn restore_into(
        &self,
        share: &Share,
        source: &NfsSource,
        target: &NfsVolumeId,
        request: &NewVolume,
        mode: u32,
    ) -> Result<u64> {
        if !source.same_share(target) {
            return Err(Error::InvalidArgument(format!(
                "{source} is on another NFS share than the new volume; \
                 a copy through the client stays on one share"
            )));
        }
        let (from, size) = match source {
            NfsSource::Snapshot(snap) => {
                let record = read_snapshot(share, snap)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("snapshot {snap} does not exist")))?;
                (snapshot_dir(snap), record.size_bytes)
            }
            NfsSource::Volume(volume) => {
                let record = self.read_record(share, volume).await?.ok_or_else(|| {
                    Error::NotFound(format!(
                        "source volume {} does not exist",
                        VolumeId::Nfs(volume.clone())
                    ))
                })?;
                (volume.subdir.as_str().to_string(), record.capacity_bytes)
            }
        };
        let capacity = request
            .capacity
            .for_copy_of(size, self.default_size, u64::MAX)?;
        let dir = target.subdir.as_str();
        if share.exists(dir).await? {
            match restore_marker(share, target).await? {
                Some(owner) if owner == request.name.as_str().as_bytes() => {
                    share.remove_tree(dir).await?
                }
                _ => {
                    return Err(Error::AlreadyExists(format!(
                        "directory {dir} already exists on the export without a Cairn record; \
                         a restore does not write over it"
                    )))
                }
            }
        }
        if let Some((parent, _)) = dir.rsplit_once('/') {
            share.mkdir_all(parent, mode).await?;
        }
        let partial = restoring_dir(target);
        share.remove_tree(&partial).await?;
        let started = Instant::now();
        let copied = share.copy_tree(&from, &partial).await?;
        let what = format!("{} from {source}", VolumeId::Nfs(target.clone()));
        log_copy("restore", &what, copied, started);
        let partial_marker = format!("{partial}/{RESTORE_MARKER}");
        share
            .write_atomic(&partial_marker, request.name.as_str().as_bytes().to_vec())
            .await?;
        share.rename(&partial, dir).await?;
        Ok(capacity)
    }

    /// Removes a restored volume's marker once its record is written.
    pub(super) async fn forget_restore(&self, share: &Share, target: &NfsVolumeId) -> Result<()> {
        share
            .remove_file(&format!("{}/{RESTORE_MARKER}", target.subdir.as_str()))
            .await
    }
}

/// What the marker in a restored volume's directory says (the volume's
/// name), if there is one.
pub(super) async fn restore_marker(share: &Share, target: &NfsVolumeId) -> Result<Option<Vec<u8>>> {
    share
        .read_small(&format!("{}/{RESTORE_MARKER}", target.subdir.as_str()))
        .await
}

/// One line per finished copy: NFS copies can take minutes, and what they
/// left out (devices, fifos, sockets) must not pass silently.
fn log_copy(what: &str, id: &str, copied: CopyCount, started: Instant) {
    let copy_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (files, bytes, skipped) = (copied.files, copied.bytes, copied.skipped);
    if skipped > 0 {
        tracing::warn!(
            what,
            id,
            copy_ms,
            files,
            bytes,
            skipped,
            "NFS copy finished; devices, fifos and sockets were left out"
        );
    } else {
        tracing::info!(what, id, copy_ms, files, bytes, "NFS copy finished");
    }
}

/// Where a restore into `target` copies before renaming into place: a
/// dot name beside the volume's directory, never a volume itself.
pub(super) fn restoring_dir(target: &NfsVolumeId) -> String {
    beside(target.subdir.as_str(), ".restoring")
}

/// Where a new NFS volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NfsSource {
    Snapshot(NfsSnapshotId),
    Volume(NfsVolumeId),
}

impl std::fmt::Display for NfsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NfsSource::Snapshot(id) => id.fmt(f),
            NfsSource::Volume(id) => VolumeId::Nfs(id.clone()).fmt(f),
        }
    }
}

/// The backend-neutral form of a snapshot read from its record.
pub(super) fn to_snapshot(id: &NfsSnapshotId, snapshot: NfsSnapshot) -> Result<Snapshot> {
    let source = VolumeId::parse(&snapshot.source).map_err(|e| {
        Error::Internal(format!(
            "snapshot {id}: its record names source {:?}, not a volume id: {e}",
            snapshot.source
        ))
    })?;
    Ok(Snapshot {
        id: SnapshotId::Nfs(id.clone()),
        source,
        size_bytes: snapshot.size_bytes,
        created: UNIX_EPOCH + Duration::new(snapshot.created.0, snapshot.created.1),
        // Made whole before CreateSnapshot answers.
        ready: true,
    })
}

impl NfsSource {
    /// The NFS form of a content source, when it names an NFS snapshot or
    /// volume.
    pub fn of(source: &ContentSource) -> Option<Self> {
        match source {
            ContentSource::Snapshot(SnapshotId::Nfs(id)) => Some(Self::Snapshot(id.clone())),
            ContentSource::Volume(VolumeId::Nfs(id)) => Some(Self::Volume(id.clone())),
            _ => None,
        }
    }

    /// Whether the source lives on the same export as `target` (a copy
    /// through the client cannot cross servers).
    pub fn same_share(&self, target: &NfsVolumeId) -> bool {
        let (server, port, share) = match self {
            NfsSource::Snapshot(s) => (&s.server, s.port, &s.share),
            NfsSource::Volume(v) => (&v.server, v.port, &v.share),
        };
        server == &target.server && port == target.port && share == &target.share
    }
}
