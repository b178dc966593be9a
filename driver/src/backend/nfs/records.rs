//! Where NFS volumes are recorded, and the ownership rules that rest on it:
//! the controller only ever deletes, archives or fills a directory it
//! created and recorded, and no volume's directory lies inside another's.
//!
//! Layout on the share (names starting with '.' are never a volume's
//! directory, so none of these can collide with one):
//! ```text
//! .cairn-volumes/<subDir>     a volume's record: a file at the path of the
//!                             volume's directory, mirrored (subDir team/data
//!                             -> .cairn-volumes/team/data); the directories
//!                             above it exist while records lie beneath them
//! <parent>/.<leaf>.cairn.json the old layout: the record beside the
//!                             directory, as earlier versions wrote it; read
//!                             and honoured by every check, never written anew
//! ```
//! Why a mirror: two volumes nest exactly when one's record would be a
//! file where the other's needs a directory. The server's filesystem then
//! refuses the second claim by itself (LINK or MKDIR finds the name taken),
//! atomically, whichever comes first and whatever the number of volumes:
//! no listing, and no lookup that a server's cache may answer from before a
//! concurrent change. (Checking for each other after writing flat records
//! was not enough: nfs-ganesha's directory cache let two racing creates of
//! `a` and `a/b` both miss the other, twice in 60 runs.)
//!
//! A record is written before the directory exists, as a claim (`pending`):
//! of two CreateVolume calls for one directory only one links its claim.
//! Old-layout volumes are not in the mirror; they are safe anyway: a new
//! volume inside one is refused by a lookup per ancestor ([`old_ancestor`]),
//! a new volume around one is refused as a directory that exists without a
//! record, and DeleteVolume and archive look for old records inside the
//! tree before they touch it ([`old_volume_inside`]).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::beside;
use super::client::{Kind, Share};
use crate::error::{Error, Result};

/// The directory at the share's root that mirrors every volume's record.
pub(super) const VOLUMES_DIR: &str = ".cairn-volumes";
/// The old layout's record, beside the volume's directory.
const OLD_SUFFIX: &str = ".cairn.json";
/// Claims retried when a directory of records vanished under this one
/// (the last record beneath it deleted at that moment).
const CLAIM_ATTEMPTS: usize = 8;

/// The request CreateVolume recorded for a volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub name: String,
    pub capacity_bytes: u64,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The snapshot or volume it was filled from (restore, clone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Claimed by a CreateVolume that has not finished: the directory may
    /// be missing or half made, and the volume does not exist yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// Where a record was found; it is rewritten where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    Mirror,
    Old,
}

/// The record file of the volume whose directory is `dir`.
pub(super) fn path(dir: &str) -> String {
    format!("{VOLUMES_DIR}/{dir}")
}

fn old_path(dir: &str) -> String {
    beside(dir, OLD_SUFFIX)
}

fn record_path(dir: &str, layout: Layout) -> String {
    match layout {
        Layout::Mirror => path(dir),
        Layout::Old => old_path(dir),
    }
}

/// The record of the volume (or claim) whose directory is `dir`.
pub(super) async fn read(share: &Share, dir: &str) -> Result<Option<(Record, Layout)>> {
    if let Some(record) = share.read_json(&path(dir)).await? {
        return Ok(Some((record, Layout::Mirror)));
    }
    Ok(share
        .read_json(&old_path(dir))
        .await?
        .map(|r| (r, Layout::Old)))
}

/// The directories that contain `dir`, outermost first: `a/b/c` gives
/// `a`, then `a/b`.
fn ancestors(dir: &str) -> impl Iterator<Item = &str> {
    dir.match_indices('/').map(|(at, _)| &dir[..at])
}

/// What claiming a directory found.
#[derive(Debug)]
pub(super) enum Claim {
    /// The claim is written: this call owns the directory's record.
    Made,
    /// A record is there already: a volume, or another call's claim.
    Taken,
    /// The directory would lie inside this volume's directory.
    Inside(Neighbour),
    /// The directory would contain this volume's directory.
    Contains(Neighbour),
}

/// Writes a pending record for `dir` unless a record is there or `dir`
/// would nest with another recorded volume.
pub(super) async fn claim(share: &Share, dir: &str, record: &Record) -> Result<Claim> {
    for _ in 0..CLAIM_ATTEMPTS {
        if let Some(claim) = try_claim(share, dir, record).await? {
            return Ok(claim);
        }
    }
    Err(Error::Aborted(format!(
        "the records around NFS directory {dir} kept changing while it was claimed; retry"
    )))
}

/// One attempt; `None` when something it stood on vanished meanwhile.
async fn try_claim(share: &Share, dir: &str, record: &Record) -> Result<Option<Claim>> {
    share.mkdir(VOLUMES_DIR, 0o700).await?;
    for above in ancestors(dir) {
        let at = path(above);
        if share.mkdir(&at, 0o700).await? {
            continue;
        }
        match share.kind(&at).await? {
            Some(Kind::Directory) => {}
            Some(Kind::File) => {
                return Ok(read(share, above)
                    .await?
                    .map(|(outer, _)| Claim::Inside(Neighbour::new(outer, above))));
            }
            Some(Kind::Other) => return Err(not_a_record(&at)),
            None => return Ok(None),
        }
    }
    let at = path(dir);
    match share.write_json_new(&at, record).await {
        Ok(true) => return Ok(Some(Claim::Made)),
        Ok(false) => {}
        // A directory above was removed between its MKDIR and our LINK.
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    }
    match share.kind(&at).await? {
        Some(Kind::File) => Ok(Some(Claim::Taken)),
        Some(Kind::Directory) => match record_beneath(share, dir).await? {
            Some(inner) => Ok(Some(Claim::Contains(inner))),
            None => {
                // Only what a crash left (empty directories, temporary
                // files): cleared, then claimed again.
                prune(share, &at).await?;
                Ok(None)
            }
        },
        Some(Kind::Other) => Err(not_a_record(&at)),
        None => Ok(None),
    }
}

fn not_a_record(at: &str) -> Error {
    Error::Internal(format!(
        "{at} on the NFS share is neither a Cairn record nor a directory of them; remove it"
    ))
}

/// Rewrites the record of `dir` where it was found.
pub(super) async fn write(share: &Share, dir: &str, layout: Layout, record: &Record) -> Result<()> {
    share.write_json(&record_path(dir, layout), record).await
}

/// Removes the record of `dir`, in either layout, and the directories of
/// the mirror above it that no other record needs.
pub(super) async fn remove(share: &Share, dir: &str) -> Result<()> {
    share.remove_file(&path(dir)).await?;
    share.remove_file(&old_path(dir)).await?;
    let mut below = dir;
    while let Some((above, _)) = below.rsplit_once('/') {
        // Tidying only: a directory left here is cleared by the next claim
        // that needs its name.
        match share.remove_empty_dir(&path(above)).await {
            Ok(true) => below = above,
            Ok(false) => break,
            Err(e) => {
                tracing::debug!(error = %e, dir = above, "NFS record directory left in place");
                break;
            }
        }
    }
    Ok(())
}

/// Another volume (or a claim for one) that a directory would overlap.
#[derive(Debug)]
pub(super) struct Neighbour {
    pub name: String,
    pub dir: String,
    pub pending: bool,
}

impl Neighbour {
    fn new(record: Record, dir: &str) -> Self {
        Self {
            name: record.name,
            dir: dir.to_string(),
            pending: record.pending,
        }
    }
}

impl std::fmt::Display for Neighbour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.pending {
            "being created for"
        } else {
            "of"
        };
        write!(f, "directory {} {what} volume {:?}", self.dir, self.name)
    }
}

/// A recorded volume whose directory lies inside `dir`: a walk of the
/// mirror beneath it, only ever taken when a claim found a directory
/// there, to name the volume in the refusal.
async fn record_beneath(share: &Share, dir: &str) -> Result<Option<Neighbour>> {
    // An explicit stack: a deep tree cannot overflow ours.
    let mut pending = vec![dir.to_string()];
    while let Some(current) = pending.pop() {
        let entries = match share.entries(&path(&current)).await {
            Ok(entries) => entries,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        for entry in entries.iter().filter(|e| !e.name.starts_with('.')) {
            let inner = format!("{current}/{}", entry.name);
            if entry.is_dir() {
                pending.push(inner);
            } else if let Some((record, _)) = read(share, &inner).await? {
                return Ok(Some(Neighbour::new(record, &inner)));
            }
        }
    }
    Ok(None)
}

/// Clears the mirror directory `at` of what a crash can leave in it:
/// temporary files (names starting with '.') and empty directories.
/// Anything else stays, and so does every directory that holds it: RMDIR
/// is refused on the server when a record was linked in meanwhile.
async fn prune(share: &Share, at: &str) -> Result<()> {
    let mut dirs = Vec::new();
    let mut pending = vec![at.to_string()];
    while let Some(current) = pending.pop() {
        let entries = match share.entries(&current).await {
            Ok(entries) => entries,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        for entry in &entries {
            let inner = format!("{current}/{}", entry.name);
            if entry.is_dir() {
                pending.push(inner);
            } else if entry.name.starts_with('.') && entry.is_file() {
                share.remove_file(&inner).await?;
            }
        }
        dirs.push(current);
    }
    // Deepest first: a parent comes before its children in `dirs`.
    for dir in dirs.iter().rev() {
        share.remove_empty_dir(dir).await?;
    }
    Ok(())
}

/// The old-layout volume whose directory contains `dir`, if any: one
/// lookup per ancestor.
pub(super) async fn old_ancestor(share: &Share, dir: &str) -> Result<Option<Neighbour>> {
    for above in ancestors(dir) {
        if let Some(record) = share.read_json::<Record>(&old_path(above)).await? {
            return Ok(Some(Neighbour::new(record, above)));
        }
    }
    Ok(None)
}

/// An old-layout volume's directory inside `dir`, if any: a directory `x`
/// with `.x.cairn.json` beside it. Old records are not in the mirror, so
/// this walks the tree, as removing it does anyway; it is only asked
/// before a tree is removed or moved away.
pub(super) async fn old_volume_inside(share: &Share, dir: &str) -> Result<Option<String>> {
    // An explicit stack: a deep tree cannot overflow ours.
    let mut pending = vec![dir.to_string()];
    while let Some(current) = pending.pop() {
        let entries = match share.entries(&current).await {
            Ok(entries) => entries,
            Err(Error::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let dirs: HashSet<&str> = entries
            .iter()
            .filter(|e| e.is_dir())
            .map(|e| e.name.as_str())
            .collect();
        for entry in &entries {
            let inner = entry
                .name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(OLD_SUFFIX));
            if let Some(inner) = inner.filter(|n| !entry.is_dir() && dirs.contains(n)) {
                return Ok(Some(format!("{current}/{inner}")));
            }
        }
        pending.extend(dirs.iter().map(|d| format!("{current}/{d}")));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_mirror_the_subdir_and_old_ones_sit_beside_it() {
        assert_eq!(path("pvc-1"), ".cairn-volumes/pvc-1");
        assert_eq!(path("team/pvc-1"), ".cairn-volumes/team/pvc-1");
        assert_eq!(old_path("pvc-1"), ".pvc-1.cairn.json");
        assert_eq!(old_path("team/pvc-1"), "team/.pvc-1.cairn.json");
    }

    #[test]
    fn ancestors_are_every_proper_prefix_outermost_first() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(ancestors("a").count(), 0);
    }

    #[test]
    fn pending_is_left_out_of_finished_records_and_old_records_read() {
        let old = r#"{"name":"pvc-1","capacity_bytes":5,"parameters":{}}"#;
        let record: Record = serde_json::from_str(old).unwrap();
        assert!(!record.pending);
        let text = serde_json::to_string(&record).unwrap();
        assert!(!text.contains("pending"), "{text}");
    }
}
