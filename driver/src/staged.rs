//! Which volume the node plugin staged at which staging path.
//!
//! For a local volume a `statx` of the staging path tells which volume is
//! mounted there (same inode as its directory); for an NFS volume it does
//! not, and reading the mount table per call is not an option. So stage
//! records the volume id in the node plugin's own directory (kept across
//! restarts), publish checks it, unstage forgets it. One small file per
//! staged volume, named by a digest of the staging path.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ids::VolumeId;

#[derive(Debug, Clone)]
pub struct StagedRecords {
    dir: PathBuf,
}

impl StagedRecords {
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn file(&self, staging: &Path) -> PathBuf {
        let digest = Sha256::digest(staging.as_os_str().as_encoded_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(hex)
    }

    /// Records that `id` is staged at `staging`. Written whole (a rename)
    /// but not flushed: a record lost in a crash only means publish falls
    /// back to the backend's own check, so it is not worth two fsyncs on
    /// every NodeStageVolume.
    pub fn record(&self, staging: &Path, id: &VolumeId) -> Result<()> {
        let file = self.file(staging);
        let temp = file.with_extension("tmp");
        std::fs::write(&temp, id.to_string()).map_err(Error::io("write", &temp))?;
        std::fs::rename(&temp, &file).map_err(Error::io("rename", &temp))
    }

    /// The volume id recorded for `staging`, if any.
    pub fn lookup(&self, staging: &Path) -> Result<Option<String>> {
        let file = self.file(staging);
        match std::fs::read_to_string(&file) {
            Ok(id) => Ok(Some(id)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &file)(e)),
        }
    }

    pub fn forget(&self, staging: &Path) -> Result<()> {
        let file = self.file(staging);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &file)(e)),
        }
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
        assert_eq!(
            records.lookup(staging).unwrap().as_deref(),
            Some("nfs:d:2049:h#/e#pvc-1")
        );
        records.forget(staging).unwrap();
        records.forget(staging).unwrap();
        assert_eq!(records.lookup(staging).unwrap(), None);
    }
}
