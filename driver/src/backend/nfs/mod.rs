//! NFS volumes: a directory per volume on an existing export.
//!
//! The controller side speaks NFS from userspace ([`client`]): it needs no
//! privileges or kernel NFS client and never leaves a mount behind. Each
//! volume's request is recorded on its share ([`records`]), written whole
//! through a rename. Ownership: the controller deletes, archives or fills
//! only a directory it created and recorded; a directory that exists
//! without a record is never taken over (AlreadyExists), and no volume's
//! directory may lie inside another's. The node side mounts with the
//! kernel client at NodeStageVolume; publish is the common bind mount.

mod client;
pub mod id;
pub mod params;
mod records;
pub mod snapshot;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_proto::v1::volume_capability::{access_mode::Mode, AccessType};
use cairn_proto::v1::VolumeCapability;
use tokio::runtime::Handle;

use super::{
    Backend, BackendKind, Capacity, Expanded, Health, NewVolume, Snapshot, Stats, Usage, Volume,
};
use crate::capability::{self, Unsupported};
use crate::capacity::Range;
use crate::cli::ServeArgs;
use crate::error::{Error, Result};
use crate::ids::{ContentSource, SnapshotId, VolumeId, VolumeName, MAX_ID_LEN};
use crate::mount;
use client::Share;
use id::{NfsServer, NfsVolumeId, OnDelete, SharePath};
use params::{ClientOptions, NfsClass};
use records::{Claim, Layout, Neighbour, Record};
use snapshot::NfsSource;

pub use params::SERVER as SERVER_PARAMETER;

pub struct NfsBackend {
    /// Bound on every controller operation against a server.
    deadline: Duration,
    /// Bound on a kernel mount at NodeStageVolume.
    mount_timeout: Duration,
    default_size: u64,
    runtime: Handle,
    /// Volume paths with a statvfs still waiting on their server: a dead
    /// server gets one stuck thread per path, not one per kubelet poll.
    stats_waiting: Arc<Mutex<HashSet<PathBuf>>>,
}

fn nfs_id(id: &VolumeId) -> Result<&NfsVolumeId> {
    match id {
        VolumeId::Nfs(nfs) => Ok(nfs),
        VolumeId::Local(_) => Err(Error::Internal(format!("{id} is not an NFS volume"))),
    }
}

/// The hidden name beside directory `dir` that ends in `suffix`:
/// `a/b` gives `a/.b<suffix>`. A name starting with '.' is never a volume's
/// directory, so these never collide with one.
fn beside(dir: &str, suffix: &str) -> String {
    match dir.rsplit_once('/') {
        Some((parent, leaf)) => format!("{parent}/.{leaf}{suffix}"),
        None => format!(".{dir}{suffix}"),
    }
}

/// The refusal, naming the other volume, for a directory that would lie
/// inside another volume's directory or contain one: deleting or archiving
/// the outer one would take the inner one's data with it.
fn overlap(dir: &str, other: &Neighbour, how: &str) -> Error {
    Error::AlreadyExists(format!(
        "NFS directory {dir} would {how} {other}; volumes never nest \
         (deleting the outer one would delete the inner one): choose another subDir"
    ))
}

/// The refusal for a directory that exists without a Cairn record.
fn foreign_directory(dir: &str) -> Error {
    Error::AlreadyExists(format!(
        "NFS directory {dir} already exists but no Cairn volume recorded it; Cairn never takes \
         over a directory it did not create (deleting the volume would delete what is in it): \
         choose another subDir, or move the directory away and retry"
    ))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl NfsBackend {
    /// The backend `cairn-csi serve` asked for: every server operation and
    /// kernel mount bounded by `--nfs-timeout`.
    pub fn from_args(args: &ServeArgs) -> Self {
        let timeout = Duration::from_secs(args.nfs_timeout.max(1));
        Self::new(
            timeout,
            timeout,
            args.default_volume_size,
            Handle::current(),
        )
    }

    pub fn new(
        deadline: Duration,
        mount_timeout: Duration,
        default_size: u64,
        runtime: Handle,
    ) -> Self {
        Self {
            deadline,
            mount_timeout,
            default_size,
            runtime,
            stats_waiting: Arc::default(),
        }
    }

    /// Connects to a share, runs `work` on it and closes it. Every
    /// controller call awaits this on the runtime: the client is async, so
    /// no thread waits on a server.
    async fn on_share<T>(
        &self,
        server: &NfsServer,
        port: u16,
        share: &SharePath,
        mount_flags: &[String],
        work: impl AsyncFnOnce(&Share) -> Result<T>,
    ) -> Result<T> {
        let version = ClientOptions::from_mount_flags(mount_flags)?.version;
        let share = Share::connect(server, port, share, version.as_deref(), self.deadline).await?;
        let result = work(&share).await;
        share.close().await;
        result
    }

    /// [`Self::on_share`] on the share that holds volume `id`.
    async fn on_volume_share<T>(
        &self,
        id: &NfsVolumeId,
        mount_flags: &[String],
        work: impl AsyncFnOnce(&Share) -> Result<T>,
    ) -> Result<T> {
        self.on_share(&id.server, id.port, &id.share, mount_flags, work)
            .await
    }

    /// The record of volume `id`, if it exists (a claim of a CreateVolume
    /// that has not finished is not a volume yet).
    async fn read_record(&self, share: &Share, id: &NfsVolumeId) -> Result<Option<Record>> {
        Ok(records::read(share, id.subdir.as_str())
            .await?
            .map(|(record, _)| record)
            .filter(|r| !r.pending))
    }

    fn to_volume(id: &NfsVolumeId, record: Record) -> Volume {
        Volume {
            id: VolumeId::Nfs(id.clone()),
            capacity_bytes: record.capacity_bytes,
            parameters: record.parameters,
            node: None,
        }
    }

    /// The class a CreateVolume asks for and the id its volume gets.
    fn planned(request: &NewVolume) -> Result<(NfsClass, NfsVolumeId)> {
        let class = NfsClass::parse(&request.parameters)?;
        let sub_dir = class.sub_dir(&request.name, &request.parameters)?;
        let options = ClientOptions::from_mount_flags(&request.mount_flags)?;
        let id = NfsVolumeId {
            server: class.server.clone(),
            port: options.port,
            share: class.share.clone(),
            subdir: sub_dir,
            on_delete: class.on_delete,
        };
        let id_text = VolumeId::Nfs(id.clone()).to_string();
        if id_text.len() > MAX_ID_LEN {
            return Err(Error::InvalidArgument(format!(
                "server, share and subDir make a {}-byte volume id; CSI allows {MAX_ID_LEN}: shorten them",
                id_text.len()
            )));
        }
        Ok((class, id))
    }

    /// CreateVolume, with the new directory filled from `source` (a
    /// snapshot or another volume on the same share) when one is given.
    async fn create_with(
        &self,
        request: &NewVolume,
        source: Option<&snapshot::NfsSource>,
    ) -> Result<Volume> {
        let (class, id) = Self::planned(request)?;
        self.on_volume_share(&id, &request.mount_flags, async |share| {
            let dir = id.subdir.as_str();
            let wanted = Record {
                name: request.name.as_str().to_string(),
                capacity_bytes: 0,
                parameters: request.parameters.clone(),
                source: source.map(ToString::to_string),
                pending: true,
            };
            // Whether this call resumes its own claim, left by an attempt
            // that stopped before the volume was recorded.
            let resumed = match records::read(share, dir).await? {
                Some((existing, _)) => {
                    Self::same_request(&id, &existing, &wanted, request)?;
                    if !existing.pending {
                        if source.is_some() {
                            // Left when a restore stopped between record and cleanup.
                            self.forget_restore(share, &id).await?;
                        }
                        return Ok(Self::to_volume(&id, existing));
                    }
                    true
                }
                None => {
                    if let Some(outer) = records::old_ancestor(share, dir).await? {
                        return Err(overlap(dir, &outer, "lie inside"));
                    }
                    match records::claim(share, dir, &wanted).await? {
                        Claim::Made => {}
                        Claim::Taken => {
                            return Err(Error::Aborted(format!(
                            "another CreateVolume is creating NFS directory {dir} right now; retry"
                        )))
                        }
                        Claim::Inside(outer) => return Err(overlap(dir, &outer, "lie inside")),
                        Claim::Contains(inner) => return Err(overlap(dir, &inner, "contain")),
                    }
                    // A restore by an earlier version, stopped after its
                    // rename and before its record, left no claim; its
                    // marker names the volume, and restore_into redoes it.
                    if share.exists(dir).await?
                        && (source.is_none()
                            || snapshot::restore_marker(share, &id).await?.as_deref()
                                != Some(request.name.as_str().as_bytes()))
                    {
                        records::remove(share, dir).await?;
                        return Err(foreign_directory(dir));
                    }
                    false
                }
            };
            // NFS cannot enforce a size per directory: the request is
            // recorded and reported, not enforced.
            let filled = match source {
                Some(source) => {
                    self.restore_into(share, source, &id, request, class.mode)
                        .await
                }
                None => {
                    self.make_directory(share, &id, request, class.mode, resumed)
                        .await
                }
            };
            let capacity = match filled {
                Ok(capacity) => capacity,
                // The directory is someone else's, or the request can never
                // succeed as it is: the claim guards nothing, and left in
                // place it would reserve the directory for a PVC that may
                // be deleted without a DeleteVolume ever coming.
                Err(
                    e @ (Error::AlreadyExists(_)
                    | Error::InvalidArgument(_)
                    | Error::NotFound(_)
                    | Error::OutOfRange(_)),
                ) => {
                    records::remove(share, dir).await?;
                    return Err(e);
                }
                // Kept: the retry resumes what this attempt began.
                Err(e) => return Err(e),
            };
            let record = Record {
                capacity_bytes: capacity,
                pending: false,
                ..wanted
            };
            records::write(share, dir, Layout::Mirror, &record).await?;
            if source.is_some() {
                self.forget_restore(share, &id).await?;
            }
            Ok(Self::to_volume(&id, record))
        })
        .await
    }

    /// AlreadyExists unless `existing` (a volume, or a claim) was made by
    /// the same request as `wanted`.
    fn same_request(
        id: &NfsVolumeId,
        existing: &Record,
        wanted: &Record,
        request: &NewVolume,
    ) -> Result<()> {
        let conflict = |why: &str| {
            let what = if existing.pending {
                "is being created for"
            } else {
                "already belongs to"
            };
            Error::AlreadyExists(format!(
                "NFS directory {} {what} a volume with {why}",
                id.subdir.as_str()
            ))
        };
        if existing.name != wanted.name {
            return Err(conflict(&format!("another name ({:?})", existing.name)));
        }
        // A claim's size is only chosen once the directory is filled.
        if !existing.pending && !request.capacity.admits(existing.capacity_bytes) {
            return Err(conflict("a capacity outside the requested range"));
        }
        if existing.parameters != wanted.parameters {
            return Err(conflict("other parameters"));
        }
        if existing.source != wanted.source {
            return Err(conflict("another content source"));
        }
        Ok(())
    }

    /// Makes a new, empty volume directory; returns the volume's size.
    async fn make_directory(
        &self,
        share: &Share,
        id: &NfsVolumeId,
        request: &NewVolume,
        mode: u32,
        resumed: bool,
    ) -> Result<u64> {
        let capacity = request.capacity.choose(self.default_size, u64::MAX)?;
        let dir = id.subdir.as_str();
        if let Some((parent, _)) = dir.rsplit_once('/') {
            share.mkdir_all(parent, mode).await?;
        }
        if !share.mkdir(dir, mode).await? {
            // There already. Ours only when our own claim was there before
            // this call and the directory is empty: an attempt stopped
            // between mkdir and record, and a volume never handed out has
            // had no writer. Anything else belongs to someone else.
            if !(resumed && share.is_empty_dir(dir).await?) {
                return Err(foreign_directory(dir));
            }
        }
        Ok(capacity)
    }

    /// The kernel's view of the volume: `server:/share/subdir`.
    fn mount_source(id: &NfsVolumeId) -> String {
        let share = id.share.as_str().trim_end_matches('/');
        format!("{}:{share}/{}", id.server.host(), id.subdir.as_str())
    }
}

#[tonic::async_trait]
impl Backend for NfsBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Nfs
    }

    fn node(&self) -> Option<&crate::ids::NodeId> {
        None
    }

    fn check_parameters(&self, parameters: &BTreeMap<String, String>) -> Result<()> {
        NfsClass::parse(parameters).map(|_| ())
    }

    fn supports(&self, cap: &VolumeCapability) -> Result<(), Unsupported> {
        // Every access mode: several nodes sharing a volume is why NFS is chosen.
        if cap
            .access_mode
            .as_ref()
            .is_none_or(|m| m.mode() == Mode::Unknown)
        {
            return Err(Unsupported("access_mode is required".into()));
        }
        match &cap.access_type {
            Some(AccessType::Mount(mount)) => {
                if !matches!(mount.fs_type.as_str(), "" | "nfs" | "nfs4") {
                    return Err(Unsupported(format!(
                        "fs_type {:?} is not supported for NFS volumes (leave it empty)",
                        mount.fs_type
                    )));
                }
                if !mount.volume_mount_group.is_empty() {
                    return Err(Unsupported(
                        "volume_mount_group is not supported (no VOLUME_MOUNT_GROUP capability)"
                            .into(),
                    ));
                }
                ClientOptions::from_mount_flags(&mount.mount_flags)
                    .map_err(|e| Unsupported(e.to_string()))?;
                Ok(())
            }
            Some(AccessType::Block(_)) => {
                Err(Unsupported("NFS volumes cannot be block devices".into()))
            }
            None => Err(Unsupported("access_type is required".into())),
        }
    }

    fn volume_id_for(&self, request: &NewVolume) -> Result<VolumeId> {
        Ok(VolumeId::Nfs(Self::planned(request)?.1))
    }

    async fn create(self: Arc<Self>, request: NewVolume) -> Result<Volume> {
        self.create_with(&request, None).await
    }

    async fn delete(self: Arc<Self>, id: VolumeId) -> Result<()> {
        let nfs = nfs_id(&id)?;
        self.on_volume_share(nfs, &[], async |share| {
            let dir = nfs.subdir.as_str();
            // A restore given up on mid-copy (its CreateVolume never
            // retried) left this: a name only Cairn uses, never a volume,
            // cleared whatever the policy or the record.
            let scratch = snapshot::restoring_dir(nfs);
            let Some((record, _)) = records::read(share, dir).await? else {
                // No record: whatever is at this path is not ours to touch.
                return share.remove_tree(&scratch).await;
            };
            if record.pending {
                self.clear_unfinished(share, nfs, &record).await?;
            } else {
                if nfs.on_delete != OnDelete::Retain {
                    Self::refuse_inner(share, dir).await?;
                }
                match nfs.on_delete {
                    OnDelete::Delete => share.remove_tree(dir).await?,
                    OnDelete::Retain => {}
                    OnDelete::Archive => {
                        let archived = format!("{dir}-archived-{}", unix_seconds());
                        // RENAME replaces an empty directory at the target.
                        if share.exists(&archived).await? {
                            return Err(Error::Aborted(format!(
                                "cannot archive NFS directory {dir}: {archived} exists; retry"
                            )));
                        }
                        share.rename(dir, &archived).await?;
                    }
                }
            }
            share.remove_tree(&scratch).await?;
            // Last: while the record exists, a retry finds the volume.
            records::remove(share, dir).await
        })
        .await
    }

    async fn get(self: Arc<Self>, id: VolumeId) -> Result<Option<Volume>> {
        let nfs = nfs_id(&id)?;
        self.on_volume_share(nfs, &[], async |share| {
            Ok(self
                .read_record(share, nfs)
                .await?
                .map(|r| Self::to_volume(nfs, r)))
        })
        .await
    }

    /// What the export's filesystem has free; no particular maximum.
    async fn capacity(
        self: Arc<Self>,
        parameters: BTreeMap<String, String>,
        mount_flags: Vec<String>,
    ) -> Result<Capacity> {
        let class = NfsClass::parse(&parameters)?;
        let port = ClientOptions::from_mount_flags(&mount_flags)?.port;
        let available_bytes = self
            .on_share(
                &class.server,
                port,
                &class.share,
                &mount_flags,
                async |share| share.available_bytes().await,
            )
            .await?;
        Ok(Capacity {
            available_bytes,
            maximum_volume_bytes: None,
        })
    }

    /// Raises the size recorded beside the volume's directory. NFS has no
    /// per-directory limit: the new size, like the old one, is recorded and
    /// reported, not enforced, and nothing needs doing on the nodes.
    async fn expand(self: Arc<Self>, id: VolumeId, capacity: Range) -> Result<Expanded> {
        let nfs = nfs_id(&id)?;
        self.on_volume_share(nfs, &[], async |share| {
            let (mut record, layout) = records::read(share, nfs.subdir.as_str())
                .await?
                .filter(|(r, _)| !r.pending)
                .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))?;
            let new = capacity.grow(record.capacity_bytes)?;
            if new != record.capacity_bytes {
                let old = record.capacity_bytes;
                record.capacity_bytes = new;
                // Every node's resizer may expand the volume at once (the
                // `all` overlay): write_json's temp names keep their writes
                // apart; the last rename wins, and all write the same size.
                records::write(share, nfs.subdir.as_str(), layout, &record).await?;
                tracing::info!(
                    volume = %id, from = old, to = new,
                    "NFS volume's recorded size raised (recorded, not enforced: NFS has no per-directory limit)"
                );
            }
            Ok(Expanded {
                capacity_bytes: new,
                node_expansion_required: false,
            })
        })
        .await
    }

    async fn health(self: Arc<Self>, id: VolumeId) -> Health {
        let Ok(nfs) = nfs_id(&id) else {
            return Health::Abnormal(format!("{id} is not an NFS volume"));
        };
        let checked = self
            .on_volume_share(nfs, &[], async |share| {
                share.exists(nfs.subdir.as_str()).await
            })
            .await;
        match checked {
            Ok(true) => Health::Ok,
            Ok(false) => Health::Abnormal(format!(
                "directory {} is gone from the export",
                nfs.subdir.as_str()
            )),
            Err(e) => Health::Abnormal(e.to_string()),
        }
    }

    fn stage(&self, id: &VolumeId, staging: &Path, cap: &VolumeCapability) -> Result<()> {
        let nfs = nfs_id(id)?;
        let mounted = match mount::inspect(staging) {
            Ok(state) => state.is_some_and(|s| s.is_mount_root),
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => true,
            Err(e) => return Err(Error::io("inspect", staging)(e)),
        };
        if mounted {
            // Cached attributes cannot tell a stale mount (the directory was
            // replaced on the server); ask the server, within the deadline.
            match statvfs_with_deadline(staging, self.deadline, &self.stats_waiting) {
                Ok(_) => return Ok(()),
                Err(StatError::Stale) => {
                    tracing::warn!(volume = %id, path = %staging.display(), "replacing a stale NFS mount");
                    mount::unmount_all(staging)
                        .map_err(Error::io("unmount stale mount at", staging))?;
                }
                Err(e) => return Err(Error::Unavailable(e.to_string())),
            }
        }
        self.resolve_for_mount(nfs)?;
        let mut options: Vec<String> = capability::mount_flags(cap)
            .iter()
            .flat_map(|f| f.split(','))
            .map(str::to_string)
            .collect();
        if !options.iter().any(|o| o.starts_with("port=")) {
            options.push(format!("port={}", nfs.port));
        }
        mount::mount_nfs(
            &Self::mount_source(nfs),
            staging,
            &options.join(","),
            self.mount_timeout,
        )
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("volume {id} does not exist: {e}"))
            }
            std::io::ErrorKind::TimedOut => Error::Unavailable(format!(
                "mounting {} timed out after {:?}",
                Self::mount_source(nfs),
                self.mount_timeout
            )),
            _ if server_unreachable(&e.to_string()) => Error::Unavailable(format!(
                "mounting {} at {}: the server cannot be reached: {e}",
                Self::mount_source(nfs),
                staging.display()
            )),
            _ => Error::io("mount NFS volume at", staging)(e),
        })
    }

    fn publish_flags(&self, _capability: &VolumeCapability) -> Result<mount::BindFlags> {
        // The mount options were NFS options, applied at stage.
        Ok(mount::BindFlags::default())
    }

    fn staged(&self, _id: &VolumeId, staging: &Path) -> Result<Option<mount::PathState>> {
        let state = match mount::inspect(staging) {
            Ok(Some(state)) if state.is_mount_root => state,
            Ok(_) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => return Ok(None),
            Err(e) => return Err(Error::io("inspect", staging)(e)),
        };
        // Never publish a stale mount: report it unstaged, and the kubelet's
        // next NodeStageVolume replaces it.
        match statvfs_with_deadline(staging, self.deadline, &self.stats_waiting) {
            Ok(_) => Ok(Some(state)),
            Err(StatError::Stale) => Ok(None),
            Err(e) => Err(Error::Unavailable(e.to_string())),
        }
    }

    fn node_expand(
        &self,
        id: &VolumeId,
        path: &Path,
        _capability: Option<&VolumeCapability>,
        _capacity: &Range,
    ) -> Result<u64> {
        self.node_expand_volume(id, path)
    }

    fn stats(&self, id: &VolumeId, path: &Path) -> Result<Stats> {
        let state = match mount::inspect(path) {
            Ok(Some(state)) => state,
            Ok(None) => {
                return Err(Error::NotFound(format!(
                    "volume {id} is not published at {}",
                    path.display()
                )))
            }
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {
                return Ok(Stats {
                    usage: None,
                    health: Health::Abnormal(
                        "stale NFS file handle: the directory is gone on the server".into(),
                    ),
                })
            }
            Err(e) => return Err(Error::io("inspect", path)(e)),
        };
        if !state.is_mount_root {
            return Ok(Stats {
                usage: None,
                health: Health::Abnormal(format!("nothing is mounted at {}", path.display())),
            });
        }
        Ok(
            match statvfs_with_deadline(path, self.deadline, &self.stats_waiting) {
                Ok(st) => Stats {
                    usage: Some(Usage::from_statvfs(&st)),
                    health: Health::Ok,
                },
                Err(why) => Stats {
                    usage: None,
                    health: Health::Abnormal(why.to_string()),
                },
            },
        )
    }

    fn snapshot_id_for(&self, source: &VolumeId, name: &VolumeName) -> Result<SnapshotId> {
        Self::snapshot_id(nfs_id(source)?, name).map(SnapshotId::Nfs)
    }

    /// Synchronous: the copy is made on the export before the call answers.
    async fn create_snapshot(
        self: Arc<Self>,
        name: VolumeName,
        source: VolumeId,
    ) -> Result<Snapshot> {
        let id = Self::snapshot_id(nfs_id(&source)?, &name)?;
        let made = self.make_snapshot(&id, &source, &name).await?;
        snapshot::to_snapshot(&id, made)
    }

    async fn delete_snapshot(self: Arc<Self>, id: SnapshotId) -> Result<()> {
        let SnapshotId::Nfs(id) = id else {
            return Ok(());
        };
        self.remove_snapshot(&id).await
    }

    async fn snapshot(self: Arc<Self>, id: SnapshotId) -> Result<Option<Snapshot>> {
        let SnapshotId::Nfs(id) = id else {
            return Ok(None);
        };
        self.find_snapshot(&id)
            .await?
            .map(|found| snapshot::to_snapshot(&id, found))
            .transpose()
    }

    fn takes_source(&self, source: &ContentSource) -> bool {
        NfsSource::of(source).is_some()
    }

    async fn create_from(
        self: Arc<Self>,
        request: NewVolume,
        source: ContentSource,
    ) -> Result<Volume> {
        let source = NfsSource::of(&source).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "NFS volumes cannot be created from {source}: it lives on the other backend"
            ))
        })?;
        self.create_with(&request, Some(&source)).await
    }
}

impl NfsBackend {
    /// Unavailable unless the server's name resolves, within the mount
    /// deadline ([`client::resolve`], the controller's check too).
    fn resolve_for_mount(&self, id: &NfsVolumeId) -> Result<()> {
        let label = Self::mount_source(id);
        let lookup = client::resolve(&label, &id.server, id.port);
        match self
            .runtime
            .block_on(tokio::time::timeout(self.mount_timeout, lookup))
        {
            Ok(resolved) => resolved,
            Err(_) => Err(Error::Unavailable(format!(
                "resolving NFS server {} took over {:?}",
                id.server.as_str(),
                self.mount_timeout
            ))),
        }
    }

    /// FailedPrecondition when another volume's directory lies inside
    /// `dir` (made by an earlier version, which let volumes nest):
    /// removing or moving `dir` would take that volume with it. It stays
    /// until the inner volume is deleted; the provisioner retries.
    async fn refuse_inner(share: &Share, dir: &str) -> Result<()> {
        let holds = |what: String| {
            Error::FailedPrecondition(format!(
                "NFS directory {dir} holds {what}; it is left as it is until that volume is deleted"
            ))
        };
        if let Some(inner) = records::old_volume_inside(share, dir).await? {
            return Err(holds(format!("directory {inner} of another volume")));
        }
        Ok(())
    }

    /// Clears what a CreateVolume that never finished made for `record`:
    /// the directory only when it is empty (never handed out, never
    /// written) or marked by the restore as this volume's.
    async fn clear_unfinished(
        &self,
        share: &Share,
        id: &NfsVolumeId,
        record: &Record,
    ) -> Result<()> {
        let dir = id.subdir.as_str();
        if !share.exists(dir).await? {
            return Ok(());
        }
        let ours = share.is_empty_dir(dir).await?
            || snapshot::restore_marker(share, id).await?.as_deref()
                == Some(record.name.as_bytes());
        if ours {
            share.remove_tree(dir).await?;
        } else {
            tracing::warn!(
                dir,
                "NFS directory left in place: a CreateVolume never finished there, \
                 and what is in it is not that volume's"
            );
        }
        Ok(())
    }

    /// NodeExpandVolume: nothing to do on the node (the size is recorded
    /// on the export, not enforced); checks that `path` is a mount without
    /// asking the server, and reports the capacity as unknown here (0).
    fn node_expand_volume(&self, id: &VolumeId, path: &Path) -> Result<u64> {
        nfs_id(id)?;
        let mounted = match mount::inspect(path) {
            Ok(state) => state.is_some_and(|s| s.is_mount_root),
            // A stale mount still is this volume's mount.
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => true,
            Err(e) => return Err(Error::io("inspect", path)(e)),
        };
        if !mounted {
            return Err(Error::NotFound(format!(
                "volume {id} is not staged or published at {}",
                path.display()
            )));
        }
        Ok(0)
    }
}

/// Whether mount.nfs failed because the server could not be reached. The
/// helper exits 32 for every failure and says why only in words, so its
/// words are all there is to go on; these are its messages (nfs-utils) for
/// a refused connection, a name that does not resolve and an unreachable
/// or silent host. (Names are resolved before mount.nfs runs as well.)
fn server_unreachable(message: &str) -> bool {
    [
        "Connection refused",
        "Failed to resolve server",
        // How a lookup that cannot be made (no DNS) comes back in some setups.
        "Resource temporarily unavailable",
        "No route to host",
        "Network is unreachable",
        "Connection timed out",
        "timed out",
    ]
    .iter()
    .any(|words| message.contains(words))
}

/// Why a bounded statvfs gave no numbers.
#[derive(Debug)]
enum StatError {
    /// ESTALE: the mounted directory no longer exists on the server.
    Stale,
    /// No answer within the deadline (or one still pending from before).
    NotResponding,
    Failed(String),
}

impl std::fmt::Display for StatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatError::Stale => {
                f.write_str("stale NFS file handle: the directory is gone on the server")
            }
            StatError::NotResponding => f.write_str("the NFS server is not responding"),
            StatError::Failed(why) => f.write_str(why),
        }
    }
}

/// statvfs on a thread of its own, waited for at most `deadline`: on a
/// hard NFS mount whose server is gone it never returns, and the caller
/// must not hang with it. At most one such thread waits per path.
fn statvfs_with_deadline(
    path: &Path,
    deadline: Duration,
    waiting: &Arc<Mutex<HashSet<PathBuf>>>,
) -> Result<rustix::fs::StatVfs, StatError> {
    {
        let mut set = waiting.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(path.to_path_buf()) {
            return Err(StatError::NotResponding);
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    let waiting_for_thread = Arc::clone(waiting);
    let spawned = std::thread::Builder::new()
        .name("nfs-statvfs".into())
        .spawn(move || {
            let result = mount::usage(&owned);
            waiting_for_thread
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&owned);
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
        return Err(StatError::Failed(format!("cannot start a thread: {e}")));
    }
    match rx.recv_timeout(deadline) {
        Ok(Ok(st)) => Ok(st),
        Ok(Err(e)) if e.raw_os_error() == Some(libc::ESTALE) => Err(StatError::Stale),
        Ok(Err(e)) => Err(StatError::Failed(format!(
            "statvfs {}: {e}",
            path.display()
        ))),
        Err(_) => Err(StatError::NotResponding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_nfs_failures_of_reach_are_told_apart() {
        for reach in [
            "mount.nfs: Connection refused",
            "mount.nfs: Failed to resolve server nonexistent.invalid: Name or service not known",
            "mount.nfs: No route to host",
            "mount.nfs: Connection timed out",
            "mount.nfs: Resource temporarily unavailable",
        ] {
            assert!(server_unreachable(reach), "{reach}");
        }
        for other in [
            "mount.nfs: access denied by server while mounting 10.0.0.5:/x",
            "mount.nfs: No such device",
            "mount.nfs: an incorrect mount option was specified",
        ] {
            assert!(!server_unreachable(other), "{other}");
        }
    }

    #[test]
    fn the_planned_id_is_the_one_create_gives_and_takes_delete_s_lock() {
        let request = NewVolume {
            name: crate::ids::VolumeName::parse("pvc-1").unwrap(),
            capacity: Range {
                required: 0,
                limit: None,
            },
            parameters: [
                ("server".to_string(), "10.0.0.5".to_string()),
                ("share".to_string(), "/exports".to_string()),
                (
                    "subDir".to_string(),
                    "team/${pvc.metadata.name}".to_string(),
                ),
                (
                    "csi.storage.k8s.io/pvc/name".to_string(),
                    "data".to_string(),
                ),
                (
                    "csi.storage.k8s.io/pvc/namespace".to_string(),
                    "ns".to_string(),
                ),
            ]
            .into_iter()
            .collect(),
            mount_flags: vec!["port=2050".to_string()],
            access: crate::capability::AccessKind::Mount,
        };
        let (_, planned) = NfsBackend::planned(&request).unwrap();
        let id = VolumeId::Nfs(planned);
        assert_eq!(id.to_string(), "nfs:d:2050:10.0.0.5#/exports#team/data");
        let parsed = VolumeId::parse(&id.to_string()).unwrap();
        assert_eq!(parsed.lock_key(), id.lock_key());
    }

    #[test]
    fn mount_sources_bracket_ipv6() {
        let id = |raw: &str| match VolumeId::parse(raw).unwrap() {
            VolumeId::Nfs(n) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            NfsBackend::mount_source(&id("nfs:d:2049:10.0.0.5#/exports#pvc-1")),
            "10.0.0.5:/exports/pvc-1"
        );
        assert_eq!(
            NfsBackend::mount_source(&id("nfs:d:2049:fd00::5#/#a/b")),
            "[fd00::5]:/a/b"
        );
    }
}
