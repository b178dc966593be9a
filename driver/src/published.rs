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
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::ids::VolumeId;

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

fn digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

fn remove_optional(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes).map_err(Error::io("write", &temp))?;
    std::fs::rename(&temp, path).map_err(Error::io("rename", &temp))
}

impl PublishedRecords {
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("targets"))?;
        std::fs::create_dir_all(dir.join("volumes"))?;
        Ok(Self { dir })
    }

    fn target_file(&self, target: &Path) -> PathBuf {
        self.dir
            .join("targets")
            .join(digest(target.as_os_str().as_encoded_bytes()))
    }

    fn volume_dir(&self, volume_id: &str) -> PathBuf {
        self.dir.join("volumes").join(digest(volume_id.as_bytes()))
    }

    fn publication_file(&self, volume_id: &str, target: &Path) -> PathBuf {
        self.volume_dir(volume_id)
            .join(digest(target.as_os_str().as_encoded_bytes()))
    }

    /// Records a publication (replacing one at the same target).
    pub fn record(&self, publication: &Publication) -> Result<()> {
        let dir = self.volume_dir(&publication.volume_id);
        std::fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let json = serde_json::to_vec(publication)
            .map_err(|e| Error::Internal(format!("encode publication record: {e}")))?;
        write_whole(
            &self.publication_file(&publication.volume_id, &publication.target),
            &json,
        )?;
        write_whole(
            &self.target_file(&publication.target),
            publication.volume_id.as_bytes(),
        )
    }

    /// The publication recorded at `target`, if any.
    pub fn at(&self, target: &Path) -> Result<Option<Publication>> {
        let Some(volume_id) = read_optional(&self.target_file(target))? else {
            return Ok(None);
        };
        let volume_id = String::from_utf8_lossy(&volume_id).into_owned();
        self.read(&self.publication_file(&volume_id, target))
    }

    fn read(&self, file: &Path) -> Result<Option<Publication>> {
        let Some(bytes) = read_optional(file)? else {
            return Ok(None);
        };
        match serde_json::from_slice(&bytes) {
            Ok(publication) => Ok(Some(publication)),
            // A torn or foreign file records nothing; it is replaced or
            // removed with its publication.
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "unreadable publication record ignored");
                Ok(None)
            }
        }
    }

    /// Every publication recorded for `id`: one directory of this volume's
    /// own records.
    pub fn of_volume(&self, id: &VolumeId) -> Result<Vec<Publication>> {
        let dir = self.volume_dir(&id.to_string());
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &dir)(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io("list", &dir))?;
            let path = entry.path();
            if path.extension().is_some() {
                continue; // a temp file of an interrupted write
            }
            if let Some(publication) = self.read(&path)? {
                found.push(publication);
            }
        }
        Ok(found)
    }

    /// Forgets the publication of `volume_id` at `target`. The target's
    /// entry goes only if it still names this volume.
    pub fn forget(&self, volume_id: &str, target: &Path) -> Result<()> {
        let target_file = self.target_file(target);
        if read_optional(&target_file)?.as_deref() == Some(volume_id.as_bytes()) {
            remove_optional(&target_file)?;
        }
        remove_optional(&self.publication_file(volume_id, target))?;
        // Empty once the volume's last publication is gone; a concurrent
        // record for it (another target) keeps it, and that is fine.
        let _ = std::fs::remove_dir(self.volume_dir(volume_id));
        Ok(())
    }
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
        let id = VolumeId::parse("local:n:pvc-1").unwrap();
        let a = publication("local:n:pvc-1", "/k/pods/a/mount");
        let b = publication("local:n:pvc-1", "/k/pods/b/mount");
        assert_eq!(records.at(&a.target).unwrap(), None);
        records.record(&a).unwrap();
        records.record(&a).unwrap();
        records.record(&b).unwrap();
        assert_eq!(records.at(&a.target).unwrap(), Some(a.clone()));
        let mut listed = records.of_volume(&id).unwrap();
        listed.sort_by(|x, y| x.target.cmp(&y.target));
        assert_eq!(listed, vec![a.clone(), b.clone()]);
        records.forget(&a.volume_id, &a.target).unwrap();
        records.forget(&a.volume_id, &a.target).unwrap();
        assert_eq!(records.at(&a.target).unwrap(), None);
        assert_eq!(records.of_volume(&id).unwrap(), vec![b.clone()]);
        records.forget(&b.volume_id, &b.target).unwrap();
        assert!(records.of_volume(&id).unwrap().is_empty());
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
