//! Which volume the node plugin published at which target, and how.
//!
//! The publish rules need what `statx` cannot say: which volume an NFS
//! mount at a target is, with which access mode and read-only flag it was
//! published, and where else the same volume is published (a
//! SINGLE_NODE_SINGLE_WRITER volume may be published once). So publish
//! records each publication in the node plugin's own directory:
//!
//! - `volumes/<digest of volume id>/<digest of target>`: the publication
//!   (JSON), one file per target, so a volume's publications are one small
//!   directory read — never a walk of every publication on the node;
//! - `targets/<digest of target>`: the volume id published there.
//!
//! Records are written whole (rename) before the mount is made and
//! removed after the unmount, and never flushed: bind mounts do not
//! survive a power loss either, and a record whose mount is gone is
//! recognised as stale (its target is no mount root) and dropped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::record_dir::{name_of, name_of_path, RecordDir};

/// One publication of a volume at a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub volume_id: String,
    pub target: PathBuf,
    pub read_only: bool,
    /// The CSI access mode (`AccessMode.Mode` as a number).
    pub mode: i32,
    pub block: bool,
}

impl Publication {
    /// Whether a publish asking for `other` at the same target is the
    /// same publish repeated (spec: idempotent) rather than a conflict.
    pub fn same_as(&self, other: &Publication) -> bool {
        self.volume_id == other.volume_id
            && self.read_only == other.read_only
            && self.mode == other.mode
            && self.block == other.block
    }
}

#[derive(Debug, Clone)]
pub struct PublishedRecords {
    dir: PathBuf,
}

impl PublishedRecords {
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("targets"))?;
        std::fs::create_dir_all(dir.join("volumes"))?;
        Ok(Self { dir })
    }

    /// Which volume is published at each target.
    fn targets(&self) -> RecordDir {
        RecordDir::at(self.dir.join("targets"))
    }

    /// The publications of one volume.
    fn of(&self, volume_id: &str) -> RecordDir {
        RecordDir::at(self.dir.join("volumes").join(name_of(volume_id)))
    }

    /// Records a publication (replacing one at the same target).
    pub fn record(&self, publication: &Publication) -> Result<()> {
        let json = serde_json::to_vec(publication)
            .map_err(|e| Error::Internal(format!("encode publication record: {e}")))?;
        let name = name_of_path(&publication.target);
        self.of(&publication.volume_id).write(&name, &json)?;
        self.targets()
            .write(&name, publication.volume_id.as_bytes())
    }

    /// The publication recorded at `target`, if any.
    pub fn at(&self, target: &Path) -> Result<Option<Publication>> {
        let name = name_of_path(target);
        let Some(volume_id) = self.targets().read(&name)? else {
            return Ok(None);
        };
        let volume_id = String::from_utf8_lossy(&volume_id).into_owned();
        Ok(self.of(&volume_id).read(&name)?.and_then(|b| decode(&b)))
    }

    /// Every publication recorded for the volume `volume_id`: one directory
    /// of this volume's own records.
    pub fn of_volume(&self, volume_id: &str) -> Result<Vec<Publication>> {
        Ok(self
            .of(volume_id)
            .contents()?
            .iter()
            .filter_map(|b| decode(b))
            .collect())
    }

    /// Forgets the publication of `volume_id` at `target`. The target's
    /// entry goes only if it still names this volume.
    pub fn forget(&self, volume_id: &str, target: &Path) -> Result<()> {
        let name = name_of_path(target);
        if self.targets().read(&name)?.as_deref() == Some(volume_id.as_bytes()) {
            self.targets().remove(&name)?;
        }
        let publications = self.of(volume_id);
        publications.remove(&name)?;
        publications.remove_if_empty();
        Ok(())
    }
}

/// A record's publication; a torn or foreign file records nothing (it is
/// replaced or removed with its publication).
fn decode(bytes: &[u8]) -> Option<Publication> {
    serde_json::from_slice(bytes)
        .inspect_err(|e| tracing::warn!(error = %e, "unreadable publication record ignored"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(volume_id: &str, target: &str) -> Publication {
        Publication {
            volume_id: volume_id.into(),
            target: target.into(),
            read_only: false,
            mode: 7,
            block: false,
        }
    }

    #[test]
    fn record_lookup_list_forget() {
        let dir = tempfile::tempdir().unwrap();
        let records = PublishedRecords::open(dir.path().join("published")).unwrap();
        let id = "local:n:pvc-1";
        let a = publication("local:n:pvc-1", "/k/pods/a/mount");
        let b = publication("local:n:pvc-1", "/k/pods/b/mount");
        assert_eq!(records.at(&a.target).unwrap(), None);
        records.record(&a).unwrap();
        records.record(&a).unwrap();
        records.record(&b).unwrap();
        assert_eq!(records.at(&a.target).unwrap(), Some(a.clone()));
        let mut listed = records.of_volume(id).unwrap();
        listed.sort_by(|x, y| x.target.cmp(&y.target));
        assert_eq!(listed, vec![a.clone(), b.clone()]);
        records.forget(&a.volume_id, &a.target).unwrap();
        records.forget(&a.volume_id, &a.target).unwrap();
        assert_eq!(records.at(&a.target).unwrap(), None);
        assert_eq!(records.of_volume(id).unwrap(), vec![b.clone()]);
        records.forget(&b.volume_id, &b.target).unwrap();
        assert!(records.of_volume(id).unwrap().is_empty());
    }

    #[test]
    fn forgetting_another_volume_leaves_the_target_entry() {
        let dir = tempfile::tempdir().unwrap();
        let records = PublishedRecords::open(dir.path().join("published")).unwrap();
        let a = publication("local:n:a", "/k/pods/x/mount");
        records.record(&a).unwrap();
        records.forget("local:n:b", &a.target).unwrap();
        assert_eq!(records.at(&a.target).unwrap(), Some(a));
    }

    #[test]
    fn same_as_compares_what_a_repeat_must_match() {
        let a = publication("v", "/t");
        assert!(a.same_as(&a.clone()));
        assert!(!a.same_as(&Publication {
            read_only: true,
            ..a.clone()
        }));
        assert!(!a.same_as(&Publication {
            mode: 1,
            ..a.clone()
        }));
        assert!(!a.same_as(&Publication {
            volume_id: "w".into(),
            ..a.clone()
        }));
    }
}
