//! What a volume *is*: the [`Backend`] trait and its implementations, and
//! [`Backends`], which picks one by volume id or StorageClass parameters.
//! The gRPC adapters validate requests and call these; they never touch
//! storage themselves. All methods may block on I/O: call them off the
//! async runtime (see `rpc::blocking`).

pub mod local;
pub mod nfs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_proto::v1::VolumeCapability;

use crate::capability::{AccessKind, Unsupported};
use crate::capacity::Range;
use crate::error::{Error, Result};
use crate::ids::{NodeId, VolumeId, VolumeName};
use crate::mount::{BindFlags, PathState};

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

pub trait Backend: Send + Sync + 'static {
    /// Short name for logs and metrics.
    fn kind(&self) -> &'static str;
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
    /// Creates the volume, or returns the existing one with that name when
    /// `request` is compatible with it (AlreadyExists otherwise).
    /// The id CreateVolume would give the volume `request` asks for,
    /// without touching storage: the controller locks on it before
    /// creating, the key every later call on the volume takes.
    fn volume_id_for(&self, request: &NewVolume) -> Result<VolumeId>;
    fn create(&self, request: &NewVolume) -> Result<Volume>;
    /// Deletes the volume; an unknown volume is already deleted.
    fn delete(&self, id: &VolumeId) -> Result<()>;
    fn get(&self, id: &VolumeId) -> Result<Option<Volume>>;
    /// Bytes that can still be provisioned with these parameters and the
    /// capabilities' mount flags.
    fn available_bytes(
        &self,
        parameters: &BTreeMap<String, String>,
        mount_flags: &[String],
    ) -> Result<u64>;
    /// Controller-side health of a volume.
    fn health(&self, id: &VolumeId) -> Health;
    /// The largest volume these parameters can get (GetCapacity's
    /// `maximum_volume_size`); `None`: no particular maximum.
    fn maximum_volume_bytes(
        &self,
        _parameters: &BTreeMap<String, String>,
        _mount_flags: &[String],
    ) -> Result<Option<u64>> {
        Ok(None)
    }
    /// Grows the volume to what `capacity` asks (ControllerExpandVolume);
    /// a volume already that large is left as it is. NotFound when it does
    /// not exist, OutOfRange when the range would shrink it.
    fn expand(&self, id: &VolumeId, capacity: &Range) -> Result<Expanded>;

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

    /// Whether the existing volume `id` can serve every one of `caps` (its
    /// access type included), for ValidateVolumeCapabilities: `Ok(Err(_))`
    /// says why not.
    fn supports_volume(
        &self,
        _id: &VolumeId,
        caps: &[VolumeCapability],
    ) -> Result<Result<(), Unsupported>> {
        Ok(caps.iter().try_for_each(|cap| self.supports(cap)))
    }

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
}

/// The backends this process serves, by kind.
#[derive(Clone, Default)]
pub struct Backends {
    pub local: Option<Arc<local::LocalBackend>>,
    pub nfs: Option<Arc<nfs::NfsBackend>>,
}

fn not_served(kind: &str) -> Error {
    Error::FailedPrecondition(format!(
        "this cairn-csi does not serve {kind} volumes (see --backends)"
    ))
}

impl Backends {
    /// The backend that owns `id`.
    pub fn for_id(&self, id: &VolumeId) -> Result<Arc<dyn Backend>> {
        match id {
            VolumeId::Local(_) => self
                .local
                .clone()
                .map(|b| b as Arc<dyn Backend>)
                .ok_or_else(|| not_served("local")),
            VolumeId::Nfs(_) => self
                .nfs
                .clone()
                .map(|b| b as Arc<dyn Backend>)
                .ok_or_else(|| not_served("NFS")),
        }
    }

    /// The backend a StorageClass asks for: NFS when it names a `server`,
    /// local otherwise.
    pub fn for_parameters(
        &self,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Arc<dyn Backend>> {
        if parameters.contains_key(nfs::SERVER_PARAMETER) {
            self.nfs
                .clone()
                .map(|b| b as Arc<dyn Backend>)
                .ok_or_else(|| not_served("NFS"))
        } else {
            self.local
                .clone()
                .map(|b| b as Arc<dyn Backend>)
                .ok_or_else(|| not_served("local"))
        }
    }

    /// The local backend, for what only it has (listing, topology).
    pub fn local(&self) -> Result<&Arc<local::LocalBackend>> {
        self.local.as_ref().ok_or_else(|| not_served("local"))
    }
}
