//! What a volume *is*: the [`Backend`] trait and its implementations.
//! The gRPC adapters validate requests and call these; they never touch
//! storage themselves. All methods block on I/O: call them off the runtime.

pub mod local;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::capacity::Range;
use crate::error::Result;
use crate::ids::{VolumeId, VolumeKey, VolumeName};
use crate::mount::MountCounts;

/// A CreateVolume request after validation.
#[derive(Debug, Clone)]
pub struct NewVolume {
    pub name: VolumeName,
    pub capacity: Range,
    /// StorageClass parameters the backend understood, plus provisioner
    /// metadata (`csi.storage.k8s.io/...`).
    pub parameters: BTreeMap<String, String>,
}

/// A volume as recorded on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: VolumeId,
    pub name: String,
    pub capacity_bytes: u64,
    pub parameters: BTreeMap<String, String>,
}

/// One page of a volume listing.
#[derive(Debug, Clone)]
pub struct Page {
    pub volumes: Vec<Volume>,
    /// Where the next page starts, if there is one.
    pub next: Option<VolumeKey>,
}

/// Whether a volume's backing storage is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    Abnormal(String),
}

pub trait Backend: Send + Sync + 'static {
    /// Creates the volume, or returns the existing one with that name when
    /// `request` is compatible with it (AlreadyExists otherwise).
    fn create(&self, request: &NewVolume) -> Result<Volume>;
    /// Deletes the volume; an unknown volume is already deleted.
    fn delete(&self, id: &VolumeId) -> Result<()>;
    fn get(&self, id: &VolumeId) -> Result<Option<Volume>>;
    /// Volumes in key order, starting after `after`, at most `max` (0: all).
    fn list(&self, after: Option<&VolumeKey>, max: usize) -> Result<Page>;
    /// Bytes that can still be provisioned.
    fn available_bytes(&self) -> Result<u64>;
    /// Largest volume that could ever be provisioned.
    fn max_volume_bytes(&self) -> Result<u64>;
    /// Cheap readiness check for Probe.
    fn ready(&self) -> Result<()>;
    /// The directory NodeStageVolume binds at the staging path.
    fn data_dir(&self, id: &VolumeId) -> Result<PathBuf>;
    fn health(&self, id: &VolumeId) -> Health;
    /// How many volumes exist (for metrics; reads one directory).
    fn count(&self) -> Result<usize>;
    /// This backend's volume mounts under the kubelet dir (for metrics).
    fn count_mounts(&self, kubelet: &Path) -> Result<MountCounts>;
}
