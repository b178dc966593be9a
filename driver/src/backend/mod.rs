//! What a volume *is*: the [`Backend`] trait and its implementations, and
//! [`Backends`], the registry that picks one by kind, volume or snapshot
//! id, or StorageClass parameters. The gRPC adapters validate requests and
//! call these; they never touch storage themselves and never ask which
//! backend they hold. The trait is the only way in.
//!
//! Controller calls are `async`: they may wait on a server (NFS awaits
//! its userspace client on the runtime) or on a copy that outlives its
//! call, and a backend whose work is blocking filesystem calls runs it on
//! the pool itself (`rpc::blocking`).
//! Node calls are synchronous syscalls the node adapter runs through
//! `rpc::node_work`; the cheap questions (`kind`, `supports`, ids) never
//! block.

pub mod ids;
pub mod local;
pub mod nfs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::SystemTime;

use cairn_proto::v1::VolumeCapability;

use crate::capability::{AccessKind, Unsupported};
use crate::capacity::Range;
use crate::cli::ServeArgs;
use crate::error::{Error, Result};
use crate::ids::{ContentSource, NodeId, SnapshotId, VolumeId, VolumeKey, VolumeName};
use crate::mount::{BindFlags, MountCounts, PathState};

/// The kinds of backend Cairn has. Each owns its id formats; the registry
/// holds at most one backend of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum BackendKind {
    Local,
    Nfs,
}

impl BackendKind {
    /// Short name for logs, metrics and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Nfs => "nfs",
        }
    }

    /// The kind a StorageClass asks for: NFS when it names a `server`,
    /// local otherwise.
    pub fn for_parameters(parameters: &BTreeMap<String, String>) -> Self {
        if parameters.contains_key(nfs::SERVER_PARAMETER) {
            BackendKind::Nfs
        } else {
            BackendKind::Local
        }
    }

    /// Whether a StorageClass with these parameters names its backend
    /// rather than falling to the default one.
    pub fn is_named_by(parameters: &BTreeMap<String, String>) -> bool {
        parameters.contains_key(nfs::SERVER_PARAMETER)
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CreateVolume request after validation.
#[derive(Debug, Clone)]
pub struct NewVolume {
    pub name: VolumeName,
    pub capacity: Range,
    /// StorageClass parameters plus provisioner metadata (`csi.storage.k8s.io/...`).
    pub parameters: BTreeMap<String, String>,
    /// Mount flags of the requested capabilities (StorageClass `mountOptions`).
    pub mount_flags: Vec<String>,
    /// Filesystem or raw block device (all requested capabilities agree).
    pub access: AccessKind,
}

/// A volume as its backend records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: VolumeId,
    pub capacity_bytes: u64,
    pub parameters: BTreeMap<String, String>,
    /// The one node the volume can be used on; `None`: any node.
    pub node: Option<NodeId>,
}

/// A volume in a listing, with its condition.
#[derive(Debug, Clone)]
pub struct Listed {
    pub volume: Volume,
    pub health: Health,
}

/// One page of a volume listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub entries: Vec<Listed>,
    /// Where the next page starts, if there is one.
    pub next: Option<VolumeKey>,
}

/// What GetCapacity reports for some parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Bytes that can still be provisioned.
    pub available_bytes: u64,
    /// The largest volume these parameters can get; `None`: no particular
    /// maximum.
    pub maximum_volume_bytes: Option<u64>,
}

/// A snapshot as its backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: SnapshotId,
    pub source: VolumeId,
    pub size_bytes: u64,
    pub created: SystemTime,
    /// False while its copy is still running.
    pub ready: bool,
}

/// One page of a snapshot listing.
#[derive(Debug, Clone)]
pub struct SnapshotPage {
    pub snapshots: Vec<Snapshot>,
    /// Where the next page starts, if there is one.
    pub next: Option<VolumeKey>,
}

/// What `/metrics` shows of a backend that keeps count of its volumes.
#[derive(Debug, Clone, Default)]
pub struct Census {
    pub volumes: usize,
    /// Staging and publish mounts of its volumes under the kubelet dir.
    pub mounts: MountCounts,
    /// The largest volume it could create now (GetCapacity's maximum).
    pub maximum_volume_bytes: Option<u64>,
}

/// Whether a volume's storage is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    Abnormal(String),
}

/// Filesystem usage of a published volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub bytes_total: u64,
    pub bytes_available: u64,
    pub bytes_used: u64,
    pub inodes_total: u64,
    pub inodes_available: u64,
    pub inodes_used: u64,
}

impl Usage {
    pub fn from_statvfs(st: &rustix::fs::StatVfs) -> Self {
        let bytes = |blocks: u64| blocks.saturating_mul(st.f_frsize);
        Self {
            bytes_total: bytes(st.f_blocks),
            bytes_available: bytes(st.f_bavail),
            bytes_used: bytes(st.f_blocks.saturating_sub(st.f_bfree)),
            inodes_total: st.f_files,
            inodes_available: st.f_favail,
            inodes_used: st.f_files.saturating_sub(st.f_ffree),
        }
    }
}

/// What ControllerExpandVolume did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expanded {
    pub capacity_bytes: u64,
    /// Whether the CO must call NodeExpandVolume on the volume's node.
    pub node_expansion_required: bool,
}

/// NodeGetVolumeStats' answer: usage when it could be read, and health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    pub usage: Option<Usage>,
    pub health: Health,
}

#[tonic::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Which backend this is (logs, metrics, the registry's key).
    fn kind(&self) -> BackendKind;
    /// The node this backend's volumes are bound to, if any (topology).
    fn node(&self) -> Option<&NodeId>;
    /// Whether node calls on this backend's volumes touch only this node's
    /// own disks and kernel, never a remote server: they may then run on
    /// the runtime's thread ([`crate::rpc::node_work`]).
    fn node_work_is_local(&self) -> bool {
        false
    }
    /// Refuses StorageClass parameters this backend does not understand.
    fn check_parameters(&self, parameters: &BTreeMap<String, String>) -> Result<()>;
    /// Whether a volume of this backend can serve `capability`.
    fn supports(&self, capability: &VolumeCapability) -> Result<(), Unsupported>;
    /// The id CreateVolume would give the volume `request` asks for,
    /// without touching storage: the controller locks on it before
    /// creating, the key every later call on the volume takes.
    fn volume_id_for(&self, request: &NewVolume) -> Result<VolumeId>;

    // ---- Controller calls: async, they may wait on a server ----

    /// Creates the volume, or returns the existing one with that name when
    /// `request` is compatible with it (AlreadyExists otherwise).
    async fn create(self: Arc<Self>, request: NewVolume) -> Result<Volume>;
    /// Deletes the volume; an unknown volume is already deleted.
    async fn delete(self: Arc<Self>, id: VolumeId) -> Result<()>;
    /// The volume, if it exists.
    async fn get(self: Arc<Self>, id: VolumeId) -> Result<Option<Volume>>;
    /// Controller-side health of a volume.
    async fn health(self: Arc<Self>, id: VolumeId) -> Health;
    /// What can still be provisioned with these parameters and the
    /// capabilities' mount flags.
    async fn capacity(
        self: Arc<Self>,
        parameters: BTreeMap<String, String>,
        mount_flags: Vec<String>,
    ) -> Result<Capacity>;
    /// Grows the volume to what `capacity` asks (ControllerExpandVolume);
    /// a volume already that large is left as it is. NotFound when it does
    /// not exist, OutOfRange when the range would shrink it.
    async fn expand(self: Arc<Self>, id: VolumeId, capacity: Range) -> Result<Expanded>;
    /// Why the existing volume `id` cannot serve one of `caps` (its access
    /// type included), if it cannot (ValidateVolumeCapabilities).
    async fn supports_volume(
        self: Arc<Self>,
        _id: VolumeId,
        caps: Vec<VolumeCapability>,
    ) -> Result<Option<Unsupported>> {
        Ok(caps.iter().find_map(|cap| self.supports(cap).err()))
    }
    /// One page of volumes after `after`, at most `max` (0: no limit), each
    /// with its health. Only when [`Backend::can_list`].
    async fn list(self: Arc<Self>, _after: Option<VolumeKey>, _max: usize) -> Result<Page> {
        Err(Error::Unimplemented(format!(
            "{} volumes cannot be listed",
            self.kind()
        )))
    }

    // ---- Node calls: synchronous syscalls, run by `rpc::node_work` ----

    /// Makes the volume available at `staging` (an existing directory under
    /// the kubelet dir). Succeeds without change when it already is.
    fn stage(&self, id: &VolumeId, staging: &Path, capability: &VolumeCapability) -> Result<()>;
    /// Flags of the bind mount NodePublishVolume makes (read-only is added
    /// by the caller when asked for).
    fn publish_flags(&self, capability: &VolumeCapability) -> Result<BindFlags>;
    /// The staging mount, when `staging` holds this volume staged (and
    /// usable); `None` otherwise.
    fn staged(&self, id: &VolumeId, staging: &Path) -> Result<Option<PathState>>;
    /// Usage and health of the volume as mounted at `path`. NotFound when
    /// `path` does not hold this volume.
    fn stats(&self, id: &VolumeId, path: &Path) -> Result<Stats>;

    /// Undoes what `stage` did besides the staging mount, which the caller
    /// unmounts (a block volume's loop devices). `staging` may be gone
    /// already; it names the staging, nothing is read from it.
    fn unstage(&self, _id: &VolumeId, _staging: &Path) -> Result<()> {
        Ok(())
    }

    /// For a raw block volume staged at `staging`: the device node to place
    /// at a publish target, a read-only device when `read_only`.
    fn block_device(&self, id: &VolumeId, _staging: &Path, _read_only: bool) -> Result<PathBuf> {
        Err(Error::FailedPrecondition(format!(
            "volume {id}: {} volumes have no raw block access",
            self.kind()
        )))
    }

    /// NodeExpandVolume for the volume staged or published at `path`:
    /// whatever the node must do after ControllerExpandVolume. Returns the
    /// capacity in bytes (0: unknown here). NotFound when `path` does not
    /// hold the volume.
    fn node_expand(
        &self,
        id: &VolumeId,
        path: &Path,
        capability: Option<&VolumeCapability>,
        capacity: &Range,
    ) -> Result<u64>;

    // ---- Listing, readiness and lifecycle of the process ----

    /// Whether this backend can enumerate its volumes and snapshots
    /// (ListVolumes, ListSnapshots). One whose volumes live wherever
    /// StorageClasses point cannot.
    fn can_list(&self) -> bool {
        false
    }
    /// Whether the backend can serve calls now (Probe, `/healthz`): a
    /// cheap check that never waits on a remote server.
    fn ready(&self) -> Result<()> {
        Ok(())
    }
    /// Whether the backend could take a new volume now (`/readyz`); the
    /// refusal says what an operator should look for.
    fn accepts_new_volumes(&self) -> Result<(), String> {
        Ok(())
    }
    /// Counts for `/metrics`; `None` when the backend keeps none.
    /// `kubelet` is the real kubelet dir when the node service runs.
    fn census(&self, _kubelet: Option<&Path>) -> Result<Option<Census>> {
        Ok(None)
    }
    /// Whatever a node plugin must put right after a crash before serving
    /// (loop devices left attached). Failing is logged, not fatal.
    fn recover_node(&self) -> Result<()> {
        Ok(())
    }
    /// The process is stopping: stop work that would hold up the exit.
    fn shut_down(&self) {}

    // ---- Inline ephemeral volumes (CSI ephemeral, in the pod spec) ----

    /// Whether this backend hosts the kubelet's inline ephemeral volumes.
    fn hosts_inline_volumes(&self) -> bool {
        false
    }
    /// The id of the inline volume named `name` (after the kubelet's
    /// handle), when this backend hosts them.
    fn inline_volume_id(&self, _name: &VolumeName) -> Option<VolumeId> {
        None
    }
    /// For a volume published without staging (inline ephemeral): the
    /// directory to bind at the target, with what one statx of it says
    /// (to recognise it in a mount found there).
    fn unstaged_source(&self, id: &VolumeId) -> Result<(PathBuf, PathState)> {
        Err(Error::FailedPrecondition(format!(
            "volume {id}: {} volumes are published from their staging path only",
            self.kind()
        )))
    }

    // ---- Snapshots, restores and clones ----

    /// The id CreateSnapshot gives snapshot `name` of `source`, without
    /// touching storage (the key the call locks).
    fn snapshot_id_for(&self, source: &VolumeId, _name: &VolumeName) -> Result<SnapshotId> {
        Err(Error::InvalidArgument(format!(
            "volume {source}: {} volumes have no snapshots",
            self.kind()
        )))
    }
    /// CreateSnapshot of `source`, idempotent on `name`. May answer a
    /// snapshot not yet ready while its copy goes on; a repeat joins it.
    async fn create_snapshot(
        self: Arc<Self>,
        name: VolumeName,
        source: VolumeId,
    ) -> Result<Snapshot> {
        Err(Error::InvalidArgument(format!(
            "volume {source} ({}): {} volumes have no snapshots",
            name.as_str(),
            self.kind()
        )))
    }
    /// DeleteSnapshot; a copy still running for it is stopped first. An
    /// unknown snapshot is already deleted.
    async fn delete_snapshot(self: Arc<Self>, _id: SnapshotId) -> Result<()> {
        Ok(())
    }
    /// The snapshot with this id, if it exists.
    async fn snapshot(self: Arc<Self>, _id: SnapshotId) -> Result<Option<Snapshot>> {
        Ok(None)
    }
    /// One page of snapshots after `after` (at most `max`, 0: no limit),
    /// of `source` only when given. Only when [`Backend::can_list`].
    async fn list_snapshots(
        self: Arc<Self>,
        _after: Option<VolumeKey>,
        _max: usize,
        _source: Option<VolumeId>,
    ) -> Result<SnapshotPage> {
        Err(Error::Unimplemented(format!(
            "{} snapshots cannot be listed",
            self.kind()
        )))
    }
    /// Whether volumes of this backend can be made from `source`: copies
    /// stay on their backend.
    fn takes_source(&self, _source: &ContentSource) -> bool {
        false
    }
    /// CreateVolume from a snapshot (restore) or a volume (clone): waits
    /// for the copy, joining one a previous call (whose caller gave up)
    /// started. The caller holds the volume's lock.
    async fn create_from(
        self: Arc<Self>,
        request: NewVolume,
        source: ContentSource,
    ) -> Result<Volume> {
        Err(Error::InvalidArgument(format!(
            "{} volumes cannot be created from {source} ({})",
            self.kind(),
            request.name.as_str()
        )))
    }
    /// Stops a restore still running for `id` (DeleteVolume of a volume
    /// whose CreateVolume was given up on), so it cannot appear after the
    /// delete.
    async fn stop_restore(self: Arc<Self>, _id: VolumeId) {}
}

/// The backends this process serves, by kind: the one registry the
/// adapters ask. A new backend registers here ([`Backends::open`]) and
/// nowhere else.
#[derive(Clone, Default)]
pub struct Backends {
    served: BTreeMap<BackendKind, Arc<dyn Backend>>,
}

fn not_served(kind: BackendKind) -> Error {
    Error::FailedPrecondition(format!(
        "this cairn-csi does not serve {kind} volumes (see --backends)"
    ))
}

impl Backends {
    /// Opens the backends `--backends` names, each from its own flags;
    /// `node` is this node, when given.
    pub fn open(args: &ServeArgs, node: Option<&NodeId>) -> Result<Self, anyhow::Error> {
        let mut backends = Backends::default();
        if args.backends.contains(&BackendKind::Local) {
            backends.register(Arc::new(local::LocalBackend::from_args(args, node)?));
        }
        if args.backends.contains(&BackendKind::Nfs) {
            backends.register(Arc::new(nfs::NfsBackend::from_args(args)));
        }
        Ok(backends)
    }

    /// Serves `backend`'s kind with it (replacing one of that kind).
    pub fn register(&mut self, backend: Arc<dyn Backend>) {
        self.served.insert(backend.kind(), backend);
    }

    pub fn is_empty(&self) -> bool {
        self.served.is_empty()
    }

    /// Every backend served, in kind order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Backend>> {
        self.served.values()
    }

    /// The backend of this kind.
    pub fn get(&self, kind: BackendKind) -> Result<Arc<dyn Backend>> {
        self.served
            .get(&kind)
            .cloned()
            .ok_or_else(|| not_served(kind))
    }

    /// The backend that owns `id`.
    pub fn for_id(&self, id: &VolumeId) -> Result<Arc<dyn Backend>> {
        self.get(id.kind())
    }

    /// The backend that owns snapshot `id`.
    pub fn for_snapshot(&self, id: &SnapshotId) -> Result<Arc<dyn Backend>> {
        self.get(id.kind())
    }

    /// The backend GetCapacity reports on for these parameters; `None`
    /// when they name no backend and the default one is not served (an
    /// NFS-only driver owns no storage until a StorageClass names a
    /// server).
    pub fn for_capacity(
        &self,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Option<Arc<dyn Backend>>> {
        let kind = BackendKind::for_parameters(parameters);
        match self.get(kind) {
            Err(_) if !BackendKind::is_named_by(parameters) => Ok(None),
            found => found.map(Some),
        }
    }

    /// The backend a StorageClass asks for.
    pub fn for_parameters(
        &self,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn Backend>> {
        self.get(BackendKind::for_parameters(parameters))
    }

    /// Whether every backend can serve calls now ([`Backend::ready`]).
    pub fn ready(&self) -> Result<()> {
        self.iter().try_for_each(|b| b.ready())
    }

    /// Whether some volumes served here are bound to a node (topology).
    pub fn binds_to_nodes(&self) -> bool {
        self.iter().any(|b| b.node().is_some())
    }

    /// The backend whose volumes ListVolumes and ListSnapshots enumerate.
    pub fn lister(&self) -> Option<Arc<dyn Backend>> {
        self.iter().find(|b| b.can_list()).cloned()
    }

    /// The backend hosting inline ephemeral volumes.
    pub fn inline_host(&self) -> Result<Arc<dyn Backend>> {
        self.iter()
            .find(|b| b.hosts_inline_volumes())
            .cloned()
            .ok_or_else(|| {
                Error::FailedPrecondition(
                    "inline ephemeral volumes are local volumes, which this cairn-csi does not \
                     serve (see --backends)"
                        .into(),
                )
            })
    }
}
