//! Which volume the node plugin published at which target, and how.
//!
//! The publish rules need what `statx` cannot say: which volume an NFS
//! mount at a target is, with which access mode and read-only flag it was
//! published, and where else the same volume is published (a
//! SINGLE_NODE_SINGLE_WRITER volume may be published once). So publish
//! records each publication in the node plugin's own directory:
//!
//! - `targets/<digest of target>`: the publication at that target (JSON),
//!   the truth about it;
//! - `volumes/<digest of volume id>`: the targets the volume was published
//!   at (a JSON list), so a volume's publications are one small file and a
//!   lookup each, never a walk of every publication on the node. It is an
//!   index, rewritten whole, only under the volume's own lock: it may still
//!   name a target that a crash or another volume's publish left it behind
//!   on, and every entry is checked against its target's record when read.
//!
//! One file per volume rather than a directory of them: a directory made
//! and removed on every publish costs a mkdir and an rmdir, and rmdir is
//! the dearest call of a lifecycle on a filesystem mounted with `discard`.
//!
//! Records are written whole (rename) before the mount is made and
//! removed after the unmount, and never flushed: bind mounts do not
//! survive a power loss either, and a record whose mount is gone is
//! recognised as stale (its target is no mount root) and dropped.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::VolumeId;
use crate::json_record;
use crate::record_dir::{name_of, name_of_path, RecordDir};

/// One publication of a volume at a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    pub volume_id: VolumeId,
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

    /// The publication at each target.
    fn targets(&self) -> RecordDir {
        RecordDir::at(self.dir.join("targets"))
    }

    /// Each volume's list of targets.
    fn volumes(&self) -> RecordDir {
        RecordDir::at(self.dir.join("volumes"))
    }

    /// The targets `volume_id` was recorded at, stale ones included.
    fn index_of(&self, volume_id: &VolumeId) -> Result<Vec<PathBuf>> {
        Ok(self
            .volumes()
            .read(&name_of(volume_id.to_string()))?
            .and_then(|bytes| {
                json_record::decode(&bytes, "publication index", volume_id)
                    .inspect_err(
                        |e| tracing::warn!(error = %e, "unreadable publication index ignored"),
                    )
                    .ok()
            })
            .unwrap_or_default())
    }

    fn write_index(&self, volume_id: &VolumeId, targets: &[PathBuf]) -> Result<()> {
        let name = name_of(volume_id.to_string());
        if targets.is_empty() {
            return self.volumes().remove(&name);
        }
        let json = json_record::encode(&targets, "publication index")?;
        self.volumes().write(&name, &json)
    }

    /// Records a publication (replacing whatever was at its target). The
    /// caller holds the volume's lock.
    pub fn record(&self, publication: &Publication) -> Result<()> {
        let json = json_record::encode(publication, "publication record")?;
        let mut index = self.index_of(&publication.volume_id)?;
        if !index.contains(&publication.target) {
            index.push(publication.target.clone());
            self.write_index(&publication.volume_id, &index)?;
        }
        self.targets()
            .write(&name_of_path(&publication.target), &json)
    }

    /// The publication recorded at `target`, if any.
    pub fn at(&self, target: &Path) -> Result<Option<Publication>> {
        Ok(self
            .targets()
            .read(&name_of_path(target))?
            .and_then(|b| decode(&b))
            .filter(|p| p.target == target))
    }

    /// Every publication recorded for the volume `volume_id`: its index,
    /// and one record per target in it that still names this volume.
    pub fn of_volume(&self, volume_id: &VolumeId) -> Result<Vec<Publication>> {
        let mut found = Vec::new();
        for target in self.index_of(volume_id)? {
            if let Some(publication) = self.at(&target)?.filter(|p| p.volume_id == *volume_id) {
                found.push(publication);
            }
        }
        Ok(found)
    }

    /// Forgets the publication of `volume_id` at `target`. The target's
    /// record goes only if it still names this volume. The caller holds
    /// the volume's lock.
    pub fn forget(&self, volume_id: &VolumeId, target: &Path) -> Result<()> {
        self.forget_read(volume_id, target, self.at(target)?)
    }

    /// [`Self::forget`] with the target's record already read (`there`,
    /// from [`Self::at`] under the same lock): not read a second time.
    pub fn forget_read(
        &self,
        volume_id: &VolumeId,
        target: &Path,
        there: Option<Publication>,
    ) -> Result<()> {
        if there.is_some_and(|p| p.volume_id == *volume_id) {
            self.targets().remove(&name_of_path(target))?;
        }
        let mut index = self.index_of(volume_id)?;
        let before = index.len();
        index.retain(|t| t != target);
        if index.len() != before {
            self.write_index(volume_id, &index)?;
        }
        Ok(())
    }

    /// Drops a stale record at `target`, whichever volume it names, without
    /// taking that volume's lock: its index keeps the entry, which no
    /// longer matches the target's record and is ignored when read.
    pub fn drop_at(&self, target: &Path) -> Result<()> {
        self.targets().remove(&name_of_path(target))
    }
}

/// A record's publication; a torn or foreign file records nothing (it is
/// replaced or removed with its publication).
fn decode(bytes: &[u8]) -> Option<Publication> {
    json_record::decode(bytes, "publication record", "in targets/")
        .inspect_err(|e| tracing::warn!(error = %e, "unreadable publication record ignored"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> VolumeId {
        VolumeId::parse(text).unwrap()
    }

    fn publication(volume_id: &str, target: &str) -> Publication {
        Publication {
            volume_id: id(volume_id),
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
        let volume = id("local:n:pvc-1");
        let a = publication("local:n:pvc-1", "/k/pods/a/mount");
        let b = publication("local:n:pvc-1", "/k/pods/b/mount");
        assert_eq!(records.at(&a.target).unwrap(), None);
        records.record(&a).unwrap();
        records.record(&a).unwrap();
        records.record(&b).unwrap();
        assert_eq!(records.at(&a.target).unwrap(), Some(a.clone()));
        let mut listed = records.of_volume(&volume).unwrap();
        listed.sort_by(|x, y| x.target.cmp(&y.target));
        assert_eq!(listed, vec![a.clone(), b.clone()]);
        records.forget(&a.volume_id, &a.target).unwrap();
        records.forget(&a.volume_id, &a.target).unwrap();
        assert_eq!(records.at(&a.target).unwrap(), None);
        assert_eq!(records.of_volume(&volume).unwrap(), vec![b.clone()]);
        records.forget(&b.volume_id, &b.target).unwrap();
        assert!(records.of_volume(&volume).unwrap().is_empty());
    }

    #[test]
    fn a_target_taken_by_another_volume_leaves_the_first_volumes_list() {
        let dir = tempfile::tempdir().unwrap();
        let records = PublishedRecords::open(dir.path().join("published")).unwrap();
        let a = publication("local:n:a", "/k/pods/x/mount");
        let b = publication("local:n:b", "/k/pods/x/mount");
        records.record(&a).unwrap();
        // a's publication went stale (no mount) and b took the target.
        records.drop_at(&a.target).unwrap();
        records.record(&b).unwrap();
        assert!(records.of_volume(&id("local:n:a")).unwrap().is_empty());
        assert_eq!(
            records.of_volume(&id("local:n:b")).unwrap(),
            vec![b.clone()]
        );
        // Forgetting a there neither removes b's record nor fails.
        records.forget(&id("local:n:a"), &a.target).unwrap();
        assert_eq!(records.at(&b.target).unwrap(), Some(b));
        let index = std::fs::read_dir(dir.path().join("published/volumes"))
            .unwrap()
            .count();
        assert_eq!(index, 1, "only b's list is left");
    }

    #[test]
    fn forgetting_another_volume_leaves_the_target_entry() {
        let dir = tempfile::tempdir().unwrap();
        let records = PublishedRecords::open(dir.path().join("published")).unwrap();
        let a = publication("local:n:a", "/k/pods/x/mount");
        records.record(&a).unwrap();
        records.forget(&id("local:n:b"), &a.target).unwrap();
        assert_eq!(records.at(&a.target).unwrap(), Some(a));
    }

    #[test]
    fn same_as_compares_what_a_repeat_must_match() {
        let a = publication("local:n:v", "/t");
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
            volume_id: id("local:n:w"),
            ..a.clone()
        }));
    }
}
