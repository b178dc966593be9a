//! Which volume the node plugin staged at which staging path.
//!
//! For a local volume a `statx` of the staging path tells which volume is
//! mounted there (same inode as its directory); for an NFS volume it does
//! not, and reading the mount table per call is not an option. So stage
//! records the volume id in the node plugin's own directory (kept across
//! restarts), publish checks it, unstage forgets it. One small file per
//! staged volume, named by a digest of the staging path.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::ids::VolumeId;
use crate::record_dir::{name_of_path, RecordDir};

#[derive(Debug, Clone)]
pub struct StagedRecords {
    records: RecordDir,
}

impl StagedRecords {
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            records: RecordDir::at(dir),
        })
    }

    /// Records that `id` is staged at `staging`. Not flushed: a record lost
    /// in a crash only means publish falls back to the backend's own check,
    /// so it is not worth two fsyncs on every NodeStageVolume.
    pub fn record(&self, staging: &Path, id: &VolumeId) -> Result<()> {
        self.records
            .write(&name_of_path(staging), id.to_string().as_bytes())
    }

    /// The volume recorded at `staging`, if any. A record naming no
    /// volume id was not written by Cairn whole: Internal.
    pub fn lookup(&self, staging: &Path) -> Result<Option<VolumeId>> {
        let Some(bytes) = self.records.read(&name_of_path(staging))? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        VolumeId::parse(&text).map(Some).map_err(|e| {
            Error::Internal(format!(
                "the staging record of {} is corrupt: {e}",
                staging.display()
            ))
        })
    }

    pub fn forget(&self, staging: &Path) -> Result<()> {
        self.records.remove(&name_of_path(staging))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lookup_forget() {
        let dir = tempfile::tempdir().unwrap();
        let records = StagedRecords::open(dir.path().join("staged")).unwrap();
        let staging = Path::new("/var/lib/kubelet/plugins/x/globalmount");
        let id = VolumeId::parse("nfs:d:2049:h#/e#pvc-1").unwrap();
        assert_eq!(records.lookup(staging).unwrap(), None);
        records.record(staging, &id).unwrap();
        records.record(staging, &id).unwrap();
        assert_eq!(records.lookup(staging).unwrap(), Some(id));
        records.forget(staging).unwrap();
        records.forget(staging).unwrap();
        assert_eq!(records.lookup(staging).unwrap(), None);
    }
}
