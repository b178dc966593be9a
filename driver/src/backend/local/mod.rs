//! Local volumes: directories under `--local-root` on this node.
//!
//! Layout (all state lives with the data; there is no central table):
//! ```text
//! <root>/volumes/<key>/meta.json   what CreateVolume recorded
//! <root>/volumes/<key>/data/       what pods see (a mount volume)
//! <root>/volumes/<key>/block       the device's bytes (a block volume, see block.rs)
//! <root>/snapshots/<key>/          snapshots (see `snapshot`)
//! <root>/tmp/                      volumes and snapshots being made (removed at startup)
//! <root>/trash/                    volumes and snapshots being deleted (finished at startup)
//! ```
//! A volume is created complete in `tmp/` and renamed into `volumes/`, and
//! deleted by renaming it into `trash/` first: a crash at any point leaves
//! either a whole volume or none, and a restart clears the leftovers.
//!
//! Sizes are enforced with project quotas where the root's filesystem has
//! them ([`enforce`]); what volumes were promised is summed in memory
//! ([`ledger`]); expansion and per-volume usage live in [`sizing`].

mod enforce;
mod in_use;
mod janitor;
mod ledger;
mod sizing;
mod supports;

pub use enforce::UnenforcedCapacity;

mod block;
pub mod id;

pub use block::Recovery;
mod jobs;
mod snapshot;

pub use jobs::Job;
pub use snapshot::{RestorePlan, RestoreState, SnapshotPlan, SnapshotState, GRACE};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use cairn_proto::v1::VolumeCapability;

use super::{
    Backend, BackendKind, Capacity, Census, Expanded, Health, Listed, NewVolume, Page, Snapshot,
    SnapshotPage, Stats, Usage, Volume,
};
use crate::capability::{self, AccessKind, Unsupported};
use crate::capacity::Range;
use crate::cli::ServeArgs;
use crate::durable;
use crate::error::{Error, Result};
use crate::ids::{ContentSource, NodeId, SnapshotId, VolumeId, VolumeKey, VolumeName};
use crate::json_record;
use crate::mount::{self, BindFlags, MountCounts, PathState};
use crate::page_token;
use crate::rpc::blocking;
use id::LocalVolumeId;
use snapshot::Copies;

const META_FILE: &str = "meta.json";
const DATA_DIR: &str = "data";
/// Pods run as any user; with no fsGroup they still need to write
/// (local-path-provisioner and hostpath do the same).
const DATA_MODE: u32 = 0o777;

/// Parameters a local StorageClass may carry.
const KNOWN_PARAMETERS: &[&str] = &[];
/// Keys external-provisioner adds with `--extra-create-metadata`.
const PROVISIONER_PREFIX: &str = "csi.storage.k8s.io/";

/// The on-disk record of a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    name: String,
    capacity_bytes: u64,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    /// Records from before block volumes are mount volumes.
    #[serde(default)]
    access_type: AccessKind,
    /// What the volume was filled from, when it was restored or cloned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<snapshot::RecordedSource>,
    /// The project quota that enforces `capacity_bytes` (absent: not
    /// enforced, or a record from before enforcement existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    project_id: Option<u32>,
}

/// How the local backend treats sizes (the `serve` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalOptions {
    /// What to do where the root cannot enforce sizes.
    pub unenforced: UnenforcedCapacity,
    /// Whether volumes may together be promised more than the filesystem holds.
    pub overcommit: bool,
}

impl Default for LocalOptions {
    /// What `cairn-csi serve` does without flags: refuse volumes whose size
    /// cannot be enforced, allow overcommit.
    fn default() -> Self {
        Self {
            unenforced: UnenforcedCapacity::Refuse,
            overcommit: true,
        }
    }
}

impl LocalOptions {
    /// Sizes recorded even where they cannot be enforced: for tests on
    /// filesystems without project quotas, never the default.
    pub const PERMISSIVE: Self = Self {
        unenforced: UnenforcedCapacity::Allow,
        overcommit: true,
    };
}

/// Puts a new volume's initial content in place: into its (empty) `data/`
/// directory, or for a block volume the `block` file into the scratch
/// directory it is given.
type Fill<'a> = &'a dyn Fn(&Path) -> Result<()>;

#[derive(Debug)]
pub struct LocalBackend {
    node: NodeId,
    root: PathBuf,
    default_size: u64,
    unique: AtomicU64,
    /// Snapshot and restore copies running in this process.
    copies: Copies,
    enforcement: enforce::Enforcement,
    ledger: ledger::Ledger,
    /// Flushes of `volumes/`, shared by concurrent creates and deletes.
    volumes_sync: durable::GroupSync,
    /// Removes what deletes moved to `trash/`, off their path.
    janitor: janitor::Janitor,
}

/// Checks StorageClass parameters for a local volume; unknown keys are
/// refused by name so a typo does not silently change behaviour.
fn check_parameters(parameters: &BTreeMap<String, String>) -> Result<()> {
    let unknown =
        crate::parameters::unknown(parameters.keys(), KNOWN_PARAMETERS, PROVISIONER_PREFIX);
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "unknown parameters for a local volume: {}",
        unknown.join(", ")
    )))
}

/// The keys named in `dir` (volumes/ or snapshots/), sorted; entries that
/// are not keys (scratch, foreign files) are not ours to report.
fn keys_in(dir: &Path) -> Result<Vec<VolumeKey>> {
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(Error::io("read", dir))? {
        let entry = entry.map_err(Error::io("read", dir))?;
        if let Some(key) = entry
            .file_name()
            .to_str()
            .and_then(|n| VolumeKey::parse(n).ok())
        {
            keys.push(key);
        }
    }
    keys.sort();
    Ok(keys)
}

impl LocalBackend {
    /// [`Self::open_with`] with [`LocalOptions::PERMISSIVE`], for tests.
    pub fn open(node: NodeId, root: &Path, default_size: u64) -> Result<Self> {
        Self::open_with(node, root, default_size, LocalOptions::PERMISSIVE)
    }

    /// Opens the backend `cairn-csi serve` asked for, failing with what to fix.
    pub fn from_args(args: &ServeArgs, node: Option<&NodeId>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let node = node.cloned().ok_or_else(|| {
            anyhow::anyhow!("--node-id (or NODE_ID) is required to serve local volumes")
        })?;
        let options = LocalOptions {
            unenforced: args.unenforced_capacity,
            overcommit: args.overcommit,
        };
        let root = &args.local_root;
        Self::open_with(node, root, args.default_volume_size, options).with_context(|| {
            format!(
                "--local-root {}: create the directory, point the flag at one, \
                     or leave local out of --backends",
                root.display()
            )
        })
    }

    /// Opens the root, creating its layout, clears what a crash left half
    /// made or half deleted, probes whether sizes can be enforced and sums
    /// what the existing volumes were promised.
    pub fn open_with(
        node: NodeId,
        root: &Path,
        default_size: u64,
        options: LocalOptions,
    ) -> Result<Self> {
        let meta = std::fs::metadata(root).map_err(Error::io("open local root", root))?;
        if !meta.is_dir() {
            return Err(Error::FailedPrecondition(format!(
                "local root {} is not a directory",
                root.display()
            )));
        }
        // Its real path: mounts resolve paths under it refusing every
        // symlink (`mount.rs`), so a root given through one is resolved once here.
        let root = &root
            .canonicalize()
            .map_err(Error::io("resolve local root", root))?;
        let backend = Self {
            node,
            root: root.to_path_buf(),
            default_size,
            unique: AtomicU64::new(0),
            copies: Copies::default(),
            enforcement: enforce::Enforcement::probe(root, options.unenforced)?,
            ledger: ledger::Ledger::new(options.overcommit, 0),
            volumes_sync: durable::GroupSync::new(root.join("volumes")),
            janitor: janitor::Janitor::default(),
        };
        for dir in [
            backend.volumes_dir(),
            backend.tmp_dir(),
            backend.trash_dir(),
            backend.snapshots_dir(),
        ] {
            match std::fs::create_dir(&dir) {
                Ok(()) => durable::sync_dir(root)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create", &dir)(e)),
            }
        }
        for dir in [backend.tmp_dir(), backend.trash_dir()] {
            let removed = clear_dir(&dir)?;
            if removed > 0 {
                tracing::info!(dir = %dir.display(), removed, "removed leftovers of interrupted operations");
            }
        }
        let (volumes, promised) = backend.scan_volumes()?;
        backend.ledger.record_existing(promised);
        tracing::info!(
            volumes,
            promised_bytes = promised,
            overcommit = options.overcommit,
            "local volumes found"
        );
        Ok(backend)
    }

    fn volumes_dir(&self) -> PathBuf {
        self.volumes_sync.dir().to_path_buf()
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    fn volume_dir(&self, key: &VolumeKey) -> PathBuf {
        self.volumes_dir().join(key.as_str())
    }

    /// A name for a scratch entry that no other call uses.
    fn scratch_name(&self, key: &VolumeKey) -> String {
        let n = self.unique.fetch_add(1, Ordering::Relaxed);
        format!("{key}.{}.{n}", std::process::id())
    }

    /// The local part of `id`, if this node owns it.
    fn owned<'a>(&self, id: &'a VolumeId) -> Result<&'a LocalVolumeId> {
        match id {
            VolumeId::Local(local) if local.node == self.node => Ok(local),
            VolumeId::Local(local) => Err(Error::NotFound(format!(
                "volume {id} lives on node {}, not on {}",
                local.node, self.node
            ))),
            VolumeId::Nfs(_) => Err(Error::Internal(format!("{id} is not a local volume"))),
        }
    }

    fn read_meta(&self, key: &VolumeKey) -> Result<Option<Meta>> {
        json_record::read_file(&self.volume_dir(key).join(META_FILE), "volume record")
    }

    fn to_volume(&self, key: VolumeKey, meta: Meta) -> Volume {
        Volume {
            id: VolumeId::local(self.node.clone(), key),
            capacity_bytes: meta.capacity_bytes,
            parameters: meta.parameters,
            node: Some(self.node.clone()),
        }
    }

    /// Builds the volume in a scratch directory and renames it in. A mount
    /// volume's `data/` gets its project quota first, so that `fill` (a
    /// restore or clone, which also makes its content durable) writes into
    /// the project. A block volume is bounded by its file's size and needs
    /// no quota.
    fn make(&self, key: &VolumeKey, meta: &mut Meta, fill: Option<Fill<'_>>) -> Result<()> {
        let scratch = self.tmp_dir().join(self.scratch_name(key));
        let result = (|| {
            std::fs::create_dir(&scratch).map_err(Error::io("create", &scratch))?;
            if meta.access_type == AccessKind::Block {
                match fill {
                    // A restore or clone: the fill places the `block` file.
                    Some(fill) => {
                        fill(&scratch)?;
                        block::finish_payload(&scratch, meta.capacity_bytes)?;
                    }
                    None => block::make_payload(&scratch, meta.capacity_bytes)?,
                }
            } else {
                let data = scratch.join(DATA_DIR);
                std::fs::create_dir(&data).map_err(Error::io("create", &data))?;
                // Explicitly, so the process umask does not narrow it.
                std::fs::set_permissions(
                    &data,
                    std::os::unix::fs::PermissionsExt::from_mode(DATA_MODE),
                )
                .map_err(Error::io("chmod", &data))?;
                meta.project_id = self
                    .enforcement
                    .assign_new(&data, key, meta.capacity_bytes)?
                    .map(|id| id.get());
                if let Some(fill) = fill {
                    fill(&data)?;
                }
            }
            let record = json_record::encode(meta, "volume record")?;
            // The crash argument, two flushes: the record's bytes, then the
            // rename. No flush of `scratch` itself: its entries (data/ or
            // block, meta.json) were created before the record was
            // flushed, and a journaling filesystem (ext4, XFS: the
            // filesystems quotas need) commits metadata in order, so the
            // record's flush commits them too. The rename is committed by
            // the flush of `volumes/`, shared with concurrent calls. Until
            // it returns, nothing was acknowledged; a crash before leaves
            // the volume in tmp/ (cleared at start) or whole in volumes/.
            durable::write_new_file(&scratch.join(META_FILE), &record)?;
            self.volumes_sync.rename(&scratch, &self.volume_dir(key))
        })();
        if result.is_err() {
            // Best effort; anything left is cleared at the next start.
            let _ = std::fs::remove_dir_all(&scratch);
        }
        result
    }

    fn statvfs(&self) -> Result<rustix::fs::StatVfs> {
        crate::mount::usage(&self.root).map_err(Error::io("statvfs", &self.root))
    }
}

/// Refuses a repeated CreateVolume that asks for something other than the
/// existing volume `existing` (spec: ALREADY_EXISTS): another name (digest
/// collision), a capacity outside the range, other parameters, or another
/// content source (none included).
fn check_compatible(
    request: &NewVolume,
    existing: &Meta,
    source: Option<&snapshot::RecordedSource>,
) -> Result<()> {
    let conflict = |why: String| {
        Error::AlreadyExists(format!(
            "volume {:?} already exists with {why}",
            request.name.as_str()
        ))
    };
    if existing.name != request.name.as_str() {
        return Err(conflict(format!("another name ({:?})", existing.name)));
    }
    if !request.capacity.admits(existing.capacity_bytes) {
        return Err(conflict(format!(
            "capacity {} bytes, outside the requested range",
            existing.capacity_bytes
        )));
    }
    if existing.parameters != request.parameters {
        return Err(conflict("other parameters".into()));
    }
    if existing.access_type != request.access {
        return Err(conflict(format!(
            "access type {}",
            existing.access_type.as_str()
        )));
    }
    if existing.source.as_ref() != source {
        return Err(conflict(match &existing.source {
            Some(s) => format!("content from {s}"),
            None => "no content source".into(),
        }));
    }
    Ok(())
}

/// A volume's health from the lookup of its directory.
fn health_of(data: &Result<(PathBuf, PathState)>) -> Health {
    match data {
        Ok(_) => Health::Ok,
        Err(e) => Health::Abnormal(format!("backing directory unusable: {e}")),
    }
}

/// Removes every entry of `dir`; returns how many there were.
fn clear_dir(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).map_err(Error::io("read", dir))? {
        let path = entry.map_err(Error::io("read", dir))?.path();
        std::fs::remove_dir_all(&path).map_err(Error::io("remove", &path))?;
        removed += 1;
    }
    Ok(removed)
}

impl LocalBackend {
    /// Waits until what deletes moved to trash/ is removed, at most
    /// `limit`; returns whether it was.
    pub fn settle_deletes(&self, limit: std::time::Duration) -> bool {
        self.janitor.settle(limit)
    }

    /// Volumes in key order, starting after `after`, at most `max` (0: all).
    fn list_volumes(
        &self,
        after: Option<&VolumeKey>,
        max: usize,
    ) -> Result<(Vec<Volume>, Option<VolumeKey>)> {
        let mut keys = keys_in(&self.volumes_dir())?;
        keys.retain(|key| after.is_none_or(|a| key > a));
        let next = page_token::take_page(&mut keys, max, |key| key);
        let mut volumes = Vec::with_capacity(keys.len());
        for key in keys {
            // Deleted since the directory was read: skip it.
            if let Some(meta) = self.read_meta(&key)? {
                volumes.push(self.to_volume(key, meta));
            }
        }
        Ok((volumes, next))
    }

    /// Largest volume that could ever be provisioned here.
    pub fn max_volume_bytes(&self) -> Result<u64> {
        let st = self.statvfs()?;
        Ok(st.f_blocks.saturating_mul(st.f_frsize))
    }

    /// Cheap readiness check for Probe: one stat of the volumes directory.
    fn root_is_usable(&self) -> Result<()> {
        let dir = self.volumes_dir();
        let meta = std::fs::metadata(&dir).map_err(Error::io("stat", &dir))?;
        if !meta.is_dir() {
            return Err(Error::FailedPrecondition(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        Ok(())
    }

    /// How many volumes exist (for metrics; reads one directory).
    pub fn count(&self) -> Result<usize> {
        let dir = self.volumes_dir();
        Ok(std::fs::read_dir(&dir)
            .map_err(Error::io("read", &dir))?
            .filter(|e| e.is_ok())
            .count())
    }

    /// Local volume mounts under the kubelet dir (for metrics).
    pub fn count_mounts(&self, kubelet: &Path) -> Result<MountCounts> {
        let dir = self.volumes_dir();
        let dev = mount::inspect(&dir)
            .map_err(Error::io("inspect", &dir))?
            .ok_or_else(|| Error::NotFound(format!("{} is gone", dir.display())))?
            .dev;
        mount::count_volume_mounts(dev, kubelet).map_err(Error::io("read", "/proc/self/mountinfo"))
    }

    /// The directory a volume's pods see, with what one statx of it says
    /// (its inode identifies the volume's mounts); NotFound when it is gone.
    fn data_dir(&self, id: &VolumeId) -> Result<(PathBuf, PathState)> {
        let local = self.owned(id)?;
        let dir = self.volume_dir(&local.key);
        let data = dir.join(DATA_DIR);
        match mount::inspect(&data).map_err(Error::io("inspect", &data))? {
            Some(state) if state.is_dir => Ok((data, state)),
            // Spec: "exceeds capabilities" for mount access to a block volume.
            _ if block::is_block(&dir)? => Err(Error::FailedPrecondition(format!(
                "volume {id} is a raw block volume; use access type block"
            ))),
            _ => Err(Error::NotFound(format!("volume {id} does not exist"))),
        }
    }

    /// The directory of block volume `id`; FailedPrecondition for a mount
    /// volume, NotFound when there is none.
    fn block_dir(&self, id: &VolumeId) -> Result<PathBuf> {
        let local = self.owned(id)?;
        let dir = self.volume_dir(&local.key);
        if block::is_block(&dir)? {
            return Ok(dir);
        }
        if mount::inspect(&dir.join(DATA_DIR))
            .map_err(Error::io("inspect", &dir))?
            .is_some_and(|s| s.is_dir)
        {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is a mount volume; use access type mount"
            )));
        }
        Err(Error::NotFound(format!("volume {id} does not exist")))
    }

    /// Startup, node side: detaches loop devices of this root that nothing
    /// stages any more (see block.rs). The controller never runs it: only
    /// the node plugin attaches devices.
    pub fn recover_block_devices(&self) -> Result<Recovery> {
        block::recover(&self.root)
    }

    /// Expansion of a block volume, step one: grows its file to at least
    /// `bytes` (whole 4 KiB blocks; never shrinks). Returns the new size.
    /// The recorded capacity (meta.json) is the caller's to update.
    pub fn grow_block_file(&self, id: &VolumeId, bytes: u64) -> Result<u64> {
        block::grow(&self.block_dir(id)?, id, bytes)
    }

    /// Expansion of a block volume, step two (node side): every loop device
    /// attached for it takes the file's new size. Returns how many.
    pub fn refresh_block_devices(&self, id: &VolumeId) -> Result<usize> {
        block::refresh_devices(&self.block_dir(id)?, id)
    }
}

/// The controller side, synchronous: the trait's async methods run these
/// on the blocking pool.
impl LocalBackend {
    /// CreateVolume: the existing volume of that name when `request` is
    /// compatible with it, a new one otherwise.
    pub fn create_volume(&self, request: &NewVolume) -> Result<Volume> {
        check_parameters(&request.parameters)?;
        let key = request.name.key();
        if let Some(existing) = self.read_meta(&key)? {
            check_compatible(request, &existing, None)?;
            return Ok(self.to_volume(key, existing));
        }
        let space = self.space_for(request.access)?;
        let mut capacity = request.capacity.choose(self.default_size, space.size)?;
        if request.access == AccessKind::Block {
            capacity = block::capacity(capacity, &request.capacity)?;
        }
        let meta = Meta {
            name: request.name.as_str().to_string(),
            capacity_bytes: capacity,
            parameters: request.parameters.clone(),
            access_type: request.access,
            source: None,
            project_id: None,
        };
        self.provision(&key, meta, space, None)
    }

    /// The space a new volume is provisioned from, after refusing one
    /// whose size could not be enforced (a block volume's file is its own
    /// limit: no quota involved).
    fn space_for(&self, access: AccessKind) -> Result<ledger::Space> {
        if access != AccessKind::Block {
            self.enforcement.check_create()?;
        }
        Ok(ledger::Space::of(&self.statvfs()?))
    }

    /// What every new volume goes through, created, restored or cloned:
    /// its size reserved, the volume made whole ([`Self::make`], filled by
    /// `fill`), the reservation given back if that fails.
    fn provision(
        &self,
        key: &VolumeKey,
        mut meta: Meta,
        space: ledger::Space,
        fill: Option<Fill>,
    ) -> Result<Volume> {
        let capacity = meta.capacity_bytes;
        self.ledger
            .reserve(capacity, space, &format!("volume {:?}", meta.name))?;
        if let Err(e) = self.make(key, &mut meta, fill) {
            self.ledger.release(capacity);
            return Err(e);
        }
        if meta.access_type != AccessKind::Block {
            self.enforcement.warn_unenforced(key, capacity);
        }
        Ok(self.to_volume(key.clone(), meta))
    }

    /// DeleteVolume: refused while staged; the tree goes to the janitor.
    pub fn delete_volume(&self, id: &VolumeId) -> Result<()> {
        let local = match self.owned(id) {
            Ok(local) => local,
            Err(Error::NotFound(why)) => {
                return Err(Error::FailedPrecondition(format!(
                    "{why}; delete it from there"
                )))
            }
            Err(e) => return Err(e),
        };
        let dir = self.volume_dir(&local.key);
        block::check_unused(&dir, id)?;
        if let Ok((_, data)) = self.data_dir(id) {
            in_use::check_unused(&dir, &data, id)?;
        }
        // What it was promised and its project, to give back once it is gone.
        let recorded = self.read_meta(&local.key).unwrap_or_else(|e| {
            tracing::warn!(volume = %id, error = %e, "deleting a volume with an unreadable record");
            None
        });
        let doomed = self.trash_dir().join(self.scratch_name(&local.key));
        // Gone for every reader once this rename is durable; a crash after
        // it leaves trash, cleared at the next start.
        match self.volumes_sync.rename(&dir, &doomed) {
            Ok(()) => {}
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(())
            }
            Err(e) => return Err(e),
        }
        if let Some(meta) = &recorded {
            self.ledger.release(meta.capacity_bytes);
            if let Some(project) = meta.project() {
                self.enforcement.forget(&doomed.join(DATA_DIR), project);
            }
        }
        self.janitor.remove(doomed);
        Ok(())
    }

    /// The volume `id`, if it exists here.
    pub fn volume(&self, id: &VolumeId) -> Result<Option<Volume>> {
        let Ok(local) = self.owned(id) else {
            return Ok(None);
        };
        Ok(self
            .read_meta(&local.key)?
            .map(|meta| self.to_volume(local.key.clone(), meta)))
    }

    /// GetCapacity's `available_capacity`.
    fn available_bytes(&self, parameters: &BTreeMap<String, String>) -> Result<u64> {
        check_parameters(parameters)?;
        // Capacity CreateVolume would refuse is no capacity.
        if self.enforcement.check_create().is_err() {
            return Ok(0);
        }
        Ok(self.ledger.available(ledger::Space::of(&self.statvfs()?)))
    }

    /// GetCapacity's `maximum_volume_size`: 0 when no volume could be
    /// created (sizes unenforceable and refused, or all promised).
    fn maximum_volume_bytes(&self, parameters: &BTreeMap<String, String>) -> Result<u64> {
        check_parameters(parameters)?;
        if self.enforcement.check_create().is_err() {
            return Ok(0);
        }
        let space = ledger::Space::of(&self.statvfs()?);
        Ok(if self.ledger.overcommits() {
            space.size
        } else {
            self.ledger.available(space)
        })
    }

    /// Whether the volume's storage is usable.
    pub fn volume_health(&self, id: &VolumeId) -> Health {
        let data = self.data_dir(id);
        if data.is_err() {
            if let Ok(dir) = self.block_dir(id) {
                return block::health(&dir, id);
            }
        }
        health_of(&data)
    }

    /// Why the existing volume `id` cannot serve one of `caps` (its access
    /// type included), if it cannot.
    fn volume_supports(
        &self,
        id: &VolumeId,
        caps: &[VolumeCapability],
    ) -> Result<Option<Unsupported>> {
        let local = self.owned(id)?;
        let meta = self
            .read_meta(&local.key)?
            .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))?;
        Ok(caps.iter().find_map(|cap| {
            if let Err(unsupported) = supports::supports(cap) {
                return Some(unsupported);
            }
            let asked = capability::access_kind(cap);
            if asked != meta.access_type {
                return Some(Unsupported(format!(
                    "volume {id} is a {} volume; access type {} is not supported for it",
                    meta.access_type.as_str(),
                    asked.as_str()
                )));
            }
            None
        }))
    }
}

#[tonic::async_trait]
impl Backend for LocalBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn node(&self) -> Option<&NodeId> {
        Some(&self.node)
    }

    fn node_work_is_local(&self) -> bool {
        true
    }

    fn check_parameters(&self, parameters: &BTreeMap<String, String>) -> Result<()> {
        check_parameters(parameters)
    }

    fn supports(&self, capability: &VolumeCapability) -> Result<(), Unsupported> {
        supports::supports(capability)
    }

    fn volume_id_for(&self, request: &NewVolume) -> Result<VolumeId> {
        Ok(VolumeId::local(self.node.clone(), request.name.key()))
    }

    async fn create(self: Arc<Self>, request: NewVolume) -> Result<Volume> {
        blocking(move || self.create_volume(&request)).await
    }

    async fn delete(self: Arc<Self>, id: VolumeId) -> Result<()> {
        blocking(move || self.delete_volume(&id)).await
    }

    async fn get(self: Arc<Self>, id: VolumeId) -> Result<Option<Volume>> {
        blocking(move || self.volume(&id)).await
    }

    async fn health(self: Arc<Self>, id: VolumeId) -> Health {
        blocking(move || Ok(self.volume_health(&id)))
            .await
            .unwrap_or_else(|e| Health::Abnormal(e.to_string()))
    }

    async fn capacity(
        self: Arc<Self>,
        parameters: BTreeMap<String, String>,
        _mount_flags: Vec<String>,
    ) -> Result<Capacity> {
        blocking(move || {
            Ok(Capacity {
                available_bytes: self.available_bytes(&parameters)?,
                maximum_volume_bytes: Some(self.maximum_volume_bytes(&parameters)?),
            })
        })
        .await
    }

    async fn supports_volume(
        self: Arc<Self>,
        id: VolumeId,
        caps: Vec<VolumeCapability>,
    ) -> Result<Option<Unsupported>> {
        blocking(move || self.volume_supports(&id, &caps)).await
    }

    async fn expand(self: Arc<Self>, id: VolumeId, capacity: Range) -> Result<Expanded> {
        blocking(move || self.expand_volume(&id, &capacity)).await
    }

    async fn list(self: Arc<Self>, after: Option<VolumeKey>, max: usize) -> Result<Page> {
        blocking(move || {
            let (volumes, next) = self.list_volumes(after.as_ref(), max)?;
            let entries = volumes
                .into_iter()
                .map(|volume| Listed {
                    health: self.volume_health(&volume.id),
                    volume,
                })
                .collect();
            Ok(Page { entries, next })
        })
        .await
    }

    fn node_expand(
        &self,
        id: &VolumeId,
        path: &Path,
        capability: Option<&VolumeCapability>,
        capacity: &Range,
    ) -> Result<u64> {
        self.node_expand_volume(id, path, capability, capacity)
    }

    fn stage(&self, id: &VolumeId, staging: &Path, capability: &VolumeCapability) -> Result<()> {
        if capability::access_kind(capability) == AccessKind::Block {
            return block::stage(&self.block_dir(id)?, id, staging);
        }
        let (data, source) = self.data_dir(id)?;
        // Recorded first (and again on a repeat): DeleteVolume refuses
        // from the moment the mount can exist.
        let local = self.owned(id)?;
        in_use::record(&self.volume_dir(&local.key), staging)?;
        if let Some(state) = mount::inspect(staging).map_err(Error::io("inspect", staging))? {
            if state.is_mount_root {
                if source.same_inode(&state) {
                    return Ok(());
                }
                return Err(Error::AlreadyExists(format!(
                    "{} already has another mount; volume {id} cannot be staged there",
                    staging.display()
                )));
            }
        }
        // Read-only and mount flags are applied per publish, not here.
        mount::bind(&data, staging, BindFlags::default())
            .map_err(Error::io("bind-mount volume at", staging))
    }

    fn publish_flags(&self, capability: &VolumeCapability) -> Result<BindFlags> {
        BindFlags::parse(capability::mount_flags(capability)).map_err(Error::InvalidArgument)
    }

    fn staged(&self, id: &VolumeId, staging: &Path) -> Result<Option<PathState>> {
        let (_, source) = self.data_dir(id)?;
        let staged = mount::inspect(staging).map_err(Error::io("inspect", staging))?;
        Ok(staged.filter(|s| s.is_mount_root && s.same_inode(&source)))
    }

    fn stats(&self, id: &VolumeId, path: &Path) -> Result<Stats> {
        let not_found = || {
            Error::NotFound(format!(
                "volume {id} is not published at {}",
                path.display()
            ))
        };
        let state = mount::inspect(path)
            .map_err(Error::io("inspect", path))?
            .ok_or_else(not_found)?;
        // A block volume's publish target is a file (the device node).
        if !state.is_dir {
            return match self.block_dir(id) {
                Ok(dir) => block::stats_at_target(&dir, id, path, &state),
                // A mount volume is never published on a file.
                Err(Error::FailedPrecondition(_)) => Err(not_found()),
                Err(e) => Err(e),
            };
        }
        if !state.is_mount_root {
            if let Ok(dir) = self.block_dir(id) {
                return block::stats_at_staging(&dir, id, path);
            }
        }
        let data = self.data_dir(id);
        let health = health_of(&data);
        if !state.is_mount_root {
            if self.volume(id)?.is_none() {
                return Err(not_found());
            }
            return Ok(Stats {
                usage: None,
                health: Health::Abnormal(format!("nothing is mounted at {}", path.display())),
            });
        }
        // A mount of something else is not this volume. When the volume's
        // directory is gone the mount cannot be compared; report it abnormal.
        if let Ok((_, source)) = &data {
            if !source.same_inode(&state) {
                return Err(not_found());
            }
        }
        // An enforced volume reports its own usage and limit, from its quota.
        let mut health = health;
        if data.is_ok() {
            match self.quota_usage(id, path) {
                Ok(Some((usage, quota_health))) => {
                    return Ok(Stats {
                        usage: Some(usage),
                        health: quota_health,
                    })
                }
                Ok(None) => {}
                Err(e) => health = Health::Abnormal(format!("cannot read the volume's quota: {e}")),
            }
        }
        let st = mount::usage(path).map_err(Error::io("statvfs", path))?;
        Ok(Stats {
            usage: Some(Usage::from_statvfs(&st)),
            health,
        })
    }

    fn unstage(&self, id: &VolumeId, staging: &Path) -> Result<()> {
        // Another node's volume was never staged here.
        let Ok(local) = self.owned(id) else {
            return Ok(());
        };
        let dir = self.volume_dir(&local.key);
        in_use::forget(&dir, staging)?;
        block::unstage(&dir, id, staging)
    }

    fn block_device(&self, id: &VolumeId, staging: &Path, read_only: bool) -> Result<PathBuf> {
        block::device(&self.block_dir(id)?, id, staging, read_only)
    }

    fn can_list(&self) -> bool {
        true
    }

    fn ready(&self) -> Result<()> {
        self.root_is_usable()
    }

    fn accepts_new_volumes(&self) -> Result<(), String> {
        // The same `maximum_volume_size` GetCapacity reports (and the
        // scheduler sees through CSIStorageCapacity).
        let maximum = self
            .maximum_volume_bytes(&BTreeMap::new())
            .map_err(|e| e.to_string())?;
        if maximum == 0 {
            return Err(
                "this node accepts no new local volume (GetCapacity reports 0): its local root \
                 cannot enforce volume sizes and --unenforced-capacity=refuse is set (the startup \
                 log line \"cannot enforce volume sizes\" or \"does not enforce them\" says why), \
                 or with --overcommit=false everything is already promised"
                    .to_string(),
            );
        }
        Ok(())
    }

    fn census(&self, kubelet: Option<&Path>) -> Result<Option<Census>> {
        Ok(Some(Census {
            volumes: self.count()?,
            mounts: match kubelet {
                Some(kubelet) => self.count_mounts(kubelet)?,
                None => MountCounts::default(),
            },
            maximum_volume_bytes: Some(self.maximum_volume_bytes(&BTreeMap::new())?),
        }))
    }

    /// Loop devices are the node plugin's: only it clears what a crash left
    /// attached (a controller-only process would race its stages).
    fn recover_node(&self) -> Result<()> {
        let recovered = self.recover_block_devices()?;
        tracing::info!(
            kept = recovered.kept,
            detached = recovered.detached,
            "loop devices of block volumes checked"
        );
        Ok(())
    }

    /// Copies still running (a long full-copy snapshot) would hold up the
    /// exit; their scratch is removed now or at the next start.
    fn shut_down(&self) {
        self.cancel_copies();
    }

    fn hosts_inline_volumes(&self) -> bool {
        true
    }

    fn inline_volume_id(&self, name: &VolumeName) -> Option<VolumeId> {
        Some(VolumeId::local(self.node.clone(), name.key()))
    }

    fn unstaged_source(&self, id: &VolumeId) -> Result<(PathBuf, PathState)> {
        self.data_dir(id)
    }

    fn snapshot_id_for(&self, _source: &VolumeId, name: &VolumeName) -> Result<SnapshotId> {
        Ok(self.snapshot_id(name.key()))
    }

    async fn create_snapshot(
        self: Arc<Self>,
        name: VolumeName,
        source: VolumeId,
    ) -> Result<Snapshot> {
        self.take_snapshot(name, source).await
    }

    async fn delete_snapshot(self: Arc<Self>, id: SnapshotId) -> Result<()> {
        self.drop_snapshot(id).await
    }

    async fn snapshot(self: Arc<Self>, id: SnapshotId) -> Result<Option<Snapshot>> {
        crate::rpc::blocking(move || self.find_snapshot(&id)).await
    }

    async fn list_snapshots(
        self: Arc<Self>,
        after: Option<VolumeKey>,
        max: usize,
        source: Option<VolumeId>,
    ) -> Result<SnapshotPage> {
        crate::rpc::blocking(move || self.snapshot_page(after.as_ref(), max, source.as_ref())).await
    }

    /// Local snapshots and volumes: a copy never crosses backends.
    fn takes_source(&self, source: &ContentSource) -> bool {
        match source {
            ContentSource::Snapshot(id) => id.kind() == BackendKind::Local,
            ContentSource::Volume(id) => id.kind() == BackendKind::Local,
        }
    }

    async fn create_from(
        self: Arc<Self>,
        request: NewVolume,
        source: ContentSource,
    ) -> Result<Volume> {
        self.fill_from(request, source).await
    }

    async fn stop_restore(self: Arc<Self>, id: VolumeId) {
        self.cancel_restore(&id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::Range;
    use crate::ids::VolumeName;

    /// A backend on `root` for node-a (shared with the snapshot tests).
    pub(in crate::backend::local) fn backend(root: &Path) -> LocalBackend {
        LocalBackend::open(NodeId::parse("node-a").unwrap(), root, 1 << 20).unwrap()
    }

    /// A mount volume of `required` bytes named `name`.
    pub(in crate::backend::local) fn request(name: &str, required: u64) -> NewVolume {
        NewVolume {
            name: VolumeName::parse(name).unwrap(),
            capacity: Range {
                required,
                limit: None,
            },
            parameters: BTreeMap::new(),
            mount_flags: Vec::new(),
            access: AccessKind::Mount,
        }
    }

    #[test]
    fn a_node_that_takes_no_new_volume_is_not_ready_and_says_why() {
        let root = tempfile::tempdir().unwrap();
        let node = NodeId::parse("node-a").unwrap();
        let permissive = backend(root.path());
        assert_eq!(permissive.accepts_new_volumes(), Ok(()));
        // The serve default: refuse sizes that cannot be enforced.
        let strict =
            LocalBackend::open_with(node, root.path(), 1 << 20, LocalOptions::default()).unwrap();
        match strict.enforcement.check_create() {
            Ok(()) => assert_eq!(strict.accepts_new_volumes(), Ok(())),
            Err(_) => {
                let why = strict.accepts_new_volumes().unwrap_err();
                assert!(why.contains("--unenforced-capacity=refuse"), "{why}");
                assert!(why.contains("cannot enforce volume sizes"), "{why}");
            }
        }
    }

    #[test]
    fn create_is_idempotent_and_conflicts_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let b = backend(root.path());
        let v = b.create_volume(&request("pvc-1", 4096)).unwrap();
        assert_eq!(v.capacity_bytes, 4096);
        // The controller locks on this id before creating.
        assert_eq!(b.volume_id_for(&request("pvc-1", 4096)).unwrap(), v.id);
        assert_eq!(b.create_volume(&request("pvc-1", 4096)).unwrap(), v);
        assert!(matches!(
            b.create_volume(&request("pvc-1", 8192)),
            Err(Error::AlreadyExists(_))
        ));
        assert!(root.path().join("volumes/pvc-1/data").is_dir());
        assert!(std::fs::read_dir(root.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
    }

    #[test]
    fn delete_is_idempotent_and_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let b = backend(root.path());
        let v = b.create_volume(&request("pvc-1", 0)).unwrap();
        std::fs::write(root.path().join("volumes/pvc-1/data/file"), b"x").unwrap();
        b.delete_volume(&v.id).unwrap();
        b.delete_volume(&v.id).unwrap();
        assert!(!root.path().join("volumes/pvc-1").exists());
        assert!(b.settle_deletes(std::time::Duration::from_secs(30)));
        assert!(std::fs::read_dir(root.path().join("trash"))
            .unwrap()
            .next()
            .is_none());
        assert_eq!(b.volume(&v.id).unwrap(), None);
    }

    #[test]
    fn restart_clears_half_made_and_half_deleted_volumes() {
        let root = tempfile::tempdir().unwrap();
        let b = backend(root.path());
        b.create_volume(&request("kept", 0)).unwrap();
        std::fs::create_dir_all(root.path().join("tmp/half.1.0/data")).unwrap();
        std::fs::create_dir_all(root.path().join("trash/gone.1.0/data")).unwrap();
        let b = backend(root.path());
        assert!(std::fs::read_dir(root.path().join("tmp"))
            .unwrap()
            .next()
            .is_none());
        assert!(std::fs::read_dir(root.path().join("trash"))
            .unwrap()
            .next()
            .is_none());
        assert_eq!(b.list_volumes(None, 0).unwrap().0.len(), 1);
    }

    #[test]
    fn list_pages_visit_every_volume_once() {
        let root = tempfile::tempdir().unwrap();
        let b = backend(root.path());
        for i in 0..7 {
            b.create_volume(&request(&format!("v{i}"), 0)).unwrap();
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (volumes, next) = b.list_volumes(after.as_ref(), 3).unwrap();
            seen.extend(volumes.into_iter().map(|v| v.id.to_string()));
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(
            seen,
            (0..7)
                .map(|i| format!("local:node-a:v{i}"))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn unknown_parameters_are_named() {
        let mut p = BTreeMap::new();
        p.insert("csi.storage.k8s.io/pvc/name".into(), "x".into());
        assert!(check_parameters(&p).is_ok());
        p.insert("sizee".into(), "1".into());
        let err = check_parameters(&p).unwrap_err().to_string();
        assert!(err.contains("sizee"), "{err}");
    }

    #[test]
    fn other_nodes_volumes_are_not_touched() {
        let root = tempfile::tempdir().unwrap();
        let b = backend(root.path());
        b.create_volume(&request("pvc-1", 0)).unwrap();
        let foreign = VolumeId::parse("local:node-b:pvc-1").unwrap();
        assert!(b.volume(&foreign).unwrap().is_none());
        assert!(matches!(
            b.delete_volume(&foreign),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(root.path().join("volumes/pvc-1").exists());
    }
}
