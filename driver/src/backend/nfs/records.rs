//! Where NFS volumes are recorded, and the ownership rules that rest on it:
//! the controller only ever deletes, archives or fills a directory it
//! created and recorded, and no volume's directory lies inside another's.
//!
//! Layout on the share (names starting with '.' are never a volume's
//! directory, so none of these can collide with one):
//! ```text
//! .cairn-volumes/<key>.json   a volume's record; <key> is its subDir with
//!                             '/' written ':' (team/data -> team:data.json;
//!                             ':' is never part of a subDir)
//! <parent>/.<leaf>.cairn.json the old layout: the record beside the
//!                             directory, as earlier versions wrote it; read
//!                             and honoured by every check, never written anew
//! ```
//! Why one flat directory: a new volume must neither lie inside another
//! volume's directory nor contain one. Its ancestors are a lookup each
//! (O(depth)), whatever the layout. Its descendants are one listing of
//! `.cairn-volumes/` and a prefix match on the names, instead of a walk of
//! a tree that may hold anything and be huge. A record beside each
//! directory would need that walk. (A marker file in every ancestor would
//! avoid the listing, but it is one more write per level to keep in step
//! and to clean up, and a crash between them leaves markers nobody owns.)
//! Old-layout volumes cannot be found by the listing; they are safe anyway:
//! a volume's directory exists, so a new volume around it is refused as a
//! directory that exists without a record, and DeleteVolume and archive
//! look for old records inside the tree before they touch it
//! ([`old_volume_inside`]).
//!
//! A record is written before the directory exists, as a claim (`pending`):
//! with the exclusive write ([`Share::write_json_new`]) of two CreateVolume
//! calls for one directory only one proceeds, and of two calls for nested
//! directories, each checks for the other after writing its own claim, so
//! at least one of them sees the other.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use super::beside;
use super::client::Share;
use crate::error::{Error, Result};

/// The directory at the share's root that holds every volume's record.
pub(super) const VOLUMES_DIR: &str = ".cairn-volumes";
const SUFFIX: &str = ".json";
/// The old layout's record, beside the volume's directory.
const OLD_SUFFIX: &str = ".cairn.json";

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
    Flat,
    Old,
}

/// The record file of the volume whose directory is `dir`.
pub(super) fn path(dir: &str) -> String {
    format!("{VOLUMES_DIR}/{}{SUFFIX}", dir.replace('/', ":"))
}

fn old_path(dir: &str) -> String {
    beside(dir, OLD_SUFFIX)
}

fn record_path(dir: &str, layout: Layout) -> String {
    match layout {
        Layout::Flat => path(dir),
        Layout::Old => old_path(dir),
    }
}

/// The record of the volume (or claim) whose directory is `dir`.
pub(super) async fn read(share: &Share, dir: &str) -> Result<Option<(Record, Layout)>> {
    if let Some(record) = share.read_json(&path(dir)).await? {
        return Ok(Some((record, Layout::Flat)));
    }
    Ok(share
        .read_json(&old_path(dir))
        .await?
        .map(|r| (r, Layout::Old)))
}

/// Writes a pending record for `dir` unless one (of any kind) is there.
pub(super) async fn claim(share: &Share, dir: &str, record: &Record) -> Result<bool> {
    share.mkdir_all(VOLUMES_DIR, 0o700).await?;
    share.write_json_new(&path(dir), record).await
}

/// Rewrites the record of `dir` where it was found.
pub(super) async fn write(share: &Share, dir: &str, layout: Layout, record: &Record) -> Result<()> {
    share.write_json(&record_path(dir, layout), record).await
}

/// Removes the record of `dir`, in either layout.
pub(super) async fn remove(share: &Share, dir: &str) -> Result<()> {
    share.remove_file(&path(dir)).await?;
    share.remove_file(&old_path(dir)).await
}

/// Another volume (or a claim for one) that a directory would overlap.
#[derive(Debug)]
pub(super) struct Neighbour {
    pub name: String,
    pub dir: String,
    pub pending: bool,
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

/// The volume whose directory contains `dir`, if any: one lookup per
/// ancestor in each layout.
pub(super) async fn ancestor(share: &Share, dir: &str) -> Result<Option<Neighbour>> {
    let mut prefix = String::new();
    let components: Vec<&str> = dir.split('/').collect();
    for component in &components[..components.len() - 1] {
        if !prefix.is_empty() {
            prefix.push('/');
        }
        prefix.push_str(component);
        if let Some((record, _)) = read(share, &prefix).await? {
            return Ok(Some(Neighbour {
                name: record.name,
                dir: prefix,
                pending: record.pending,
            }));
        }
    }
    Ok(None)
}

/// A volume (flat layout) whose directory lies inside `dir`, if any: one
/// listing of [`VOLUMES_DIR`], matched on the name's prefix.
pub(super) async fn descendant(share: &Share, dir: &str) -> Result<Option<Neighbour>> {
    let entries = match share.entries(VOLUMES_DIR).await {
        Ok(entries) => entries,
        Err(Error::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let prefix = format!("{}:", dir.replace('/', ":"));
    for entry in entries {
        let Some(key) = entry.name.strip_suffix(SUFFIX) else {
            continue; // a temporary name left by a crash
        };
        if !key.starts_with(&prefix) {
            continue;
        }
        let inner = key.replace(':', "/");
        // Gone since the listing: deleted, nothing inside any more.
        if let Some(record) = share
            .read_json::<Record>(&format!("{VOLUMES_DIR}/{}", entry.name))
            .await?
        {
            return Ok(Some(Neighbour {
                name: record.name,
                dir: inner,
                pending: record.pending,
            }));
        }
    }
    Ok(None)
}

/// An old-layout volume's directory inside `dir`, if any: a directory `x`
/// with `.x.cairn.json` beside it. Old records are not in the flat
/// directory, so this walks the tree, as removing it does anyway; it is
/// only asked before a tree is removed or moved away.
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
    fn records_are_keyed_by_subdir_in_one_directory() {
        assert_eq!(path("pvc-1"), ".cairn-volumes/pvc-1.json");
        assert_eq!(path("team/pvc-1"), ".cairn-volumes/team:pvc-1.json");
        assert_eq!(old_path("pvc-1"), ".pvc-1.cairn.json");
        assert_eq!(old_path("team/pvc-1"), "team/.pvc-1.cairn.json");
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
