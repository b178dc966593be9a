//! Local volumes' sizes after creation: the startup scan that sums what is
//! promised, expansion (ControllerExpandVolume, NodeExpandVolume) and the
//! per-volume usage NodeGetVolumeStats reports.

use std::path::Path;

use cairn_proto::v1::VolumeCapability;

use super::ledger::Space;
use super::{LocalBackend, Meta, DATA_DIR, META_FILE};
use crate::backend::{Expanded, Health, Usage};
use crate::capability::AccessKind;
use crate::capacity::Range;
use crate::durable;
use crate::error::{Error, Result};
use crate::ids::{VolumeId, VolumeKey};
use crate::mount;
use crate::quota::ProjectId;

/// Where an expansion writes the volume's next record before renaming it
/// over `meta.json` (a leftover from a crash is removed by the next write).
const META_TEMP: &str = ".meta.json.tmp";

impl Meta {
    /// The project the volume's size is enforced with, if any.
    pub(super) fn project(&self) -> Option<ProjectId> {
        self.project_id.and_then(ProjectId::new)
    }
}

impl LocalBackend {
    /// Sums the capacities of the volumes on disk (for the ledger), and
    /// checks each enforced volume's project id and limit. Once, at startup.
    pub(super) fn scan_volumes(&self) -> Result<(usize, u64)> {
        let mut count = 0;
        let mut promised = 0u64;
        for volume in self.list_volumes(None, 0)?.0 {
            let VolumeId::Local(local) = &volume.id else {
                continue;
            };
            count += 1;
            promised = promised.saturating_add(volume.capacity_bytes);
            if !self.enforcement.accounts() {
                continue;
            }
            if let Some(meta) = self.read_meta(&local.key)? {
                if let Some(id) = meta.project() {
                    let data = self.volume_dir(&local.key).join(DATA_DIR);
                    self.enforcement
                        .check_existing(&data, id, meta.capacity_bytes);
                }
            }
        }
        Ok((count, promised))
    }

    /// Replaces a volume's record whole (tmp + fsync + rename + fsync).
    fn rewrite_meta(&self, key: &VolumeKey, meta: &Meta) -> Result<()> {
        let dir = self.volume_dir(key);
        let record = crate::json_record::encode(meta, "volume record")?;
        durable::replace_file(&dir.join(META_FILE), &dir.join(META_TEMP), &record)
    }

    /// ControllerExpandVolume. The caller holds the volume's lock.
    pub(super) fn expand_volume(&self, id: &VolumeId, range: &Range) -> Result<Expanded> {
        let local = match self.owned(id) {
            Ok(local) => local,
            // Every node runs a resizer beside its controller (the local
            // overlay) and each sees every claim: a non-final code lets the
            // others retry quietly while the volume's own node expands it.
            Err(Error::NotFound(why)) => {
                return Err(Error::Unavailable(format!(
                    "{why}: that node's controller expands it"
                )))
            }
            Err(e) => return Err(e),
        };
        let mut meta = self
            .read_meta(&local.key)?
            .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))?;
        let old = meta.capacity_bytes;
        let block = meta.access_type == AccessKind::Block;
        let mut new = range.grow(old)?;
        if block && new > old {
            // A block volume's file grows in whole 4 KiB blocks.
            new = new.div_ceil(4096).saturating_mul(4096);
        }
        if new == old {
            return Ok(Expanded {
                capacity_bytes: old,
                node_expansion_required: false,
            });
        }
        let space = Space::of(&self.statvfs()?);
        if new > space.size {
            return Err(Error::OutOfRange(format!(
                "{new} bytes requested; at most {} can be provisioned here",
                space.size
            )));
        }
        let growth = new - old;
        self.ledger.reserve(
            growth,
            space,
            &format!("growing volume {id} to {new} bytes"),
        )?;
        let result = (|| {
            // The limit is raised before the record: a crash in between
            // leaves a limit above the recorded capacity (the retry then
            // records it), never a volume recorded larger than it may grow.
            // (A root remounted without quotas enforces nothing to raise.)
            if let Some(project) = meta.project().filter(|_| self.enforcement.accounts()) {
                let data = self.volume_dir(&local.key).join(DATA_DIR);
                self.enforcement.set_limit(&data, project, new)?;
            }
            // Likewise a block volume's file grows before the record does.
            if block {
                self.grow_block_file(id, new)?;
            }
            meta.capacity_bytes = new;
            self.rewrite_meta(&local.key, &meta)?;
            // Online: loop devices attached on this node take the new size
            // now (local volumes' controller runs on their node); a retry of
            // NodeExpandVolume does it again.
            if block {
                self.refresh_block_devices(id)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.ledger.release(growth);
            return Err(e);
        }
        tracing::info!(volume = %id, from = old, to = new, enforced = meta.project().is_some(), "volume expanded");
        Ok(Expanded {
            capacity_bytes: new,
            node_expansion_required: false,
        })
    }

    /// NodeExpandVolume: a mount volume needs nothing on the node (its
    /// limit was raised by ControllerExpandVolume); this checks that `path`
    /// holds the volume and reports its recorded capacity.
    pub(super) fn node_expand_volume(
        &self,
        id: &VolumeId,
        path: &Path,
        _capability: Option<&VolumeCapability>,
        range: &Range,
    ) -> Result<u64> {
        let not_here = || {
            Error::NotFound(format!(
                "volume {id} is not staged or published at {}",
                path.display()
            ))
        };
        let local = self.owned(id)?;
        let meta = self
            .read_meta(&local.key)?
            .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))?;
        if meta.access_type == AccessKind::Block {
            // The loop devices attached for it re-read their file's size.
            self.refresh_block_devices(id)?;
            return Ok(meta.capacity_bytes);
        }
        let (_, source) = self.data_dir(id)?;
        let state = mount::inspect(path)
            .map_err(Error::io("inspect", path))?
            .ok_or_else(not_here)?;
        if !state.is_mount_root || !source.same_inode(&state) {
            return Err(not_here());
        }
        if range.required > 0 || range.limit.is_some() {
            let wanted = range.grow(meta.capacity_bytes)?;
            if wanted > meta.capacity_bytes {
                // Asked to grow past its recorded size: the CO expands on
                // the node only (as Kubernetes does for a controller it
                // finds without EXPAND_VOLUME, or a split deployment whose
                // node process answers for identity). This node holds the
                // volume, so it grows it here, as ControllerExpandVolume
                // would: the same limit raise and record write.
                return Ok(self.expand_volume(id, range)?.capacity_bytes);
            }
        }
        Ok(meta.capacity_bytes)
    }

    /// The usage of an enforced volume mounted at `path`, from its project
    /// quota; `None` for an unenforced one (the caller reports statvfs).
    pub(super) fn quota_usage(
        &self,
        id: &VolumeId,
        path: &Path,
    ) -> Result<Option<(Usage, Health)>> {
        let local = self.owned(id)?;
        let Some(meta) = self.read_meta(&local.key)? else {
            return Ok(None);
        };
        let Some(project) = meta.project() else {
            return Ok(None);
        };
        self.enforcement
            .usage(path, project, meta.capacity_bytes)
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_before_enforcement_read_as_unenforced() {
        let old: Meta =
            serde_json::from_str(r#"{"name":"pvc-1","capacity_bytes":1024,"parameters":{}}"#)
                .unwrap();
        assert_eq!(old.project(), None);
        let unenforced = serde_json::to_string(&old).unwrap();
        assert!(!unenforced.contains("project_id"), "{unenforced}");
        let enforced: Meta = serde_json::from_str(
            r#"{"name":"pvc-1","capacity_bytes":1024,"parameters":{},"project_id":133}"#,
        )
        .unwrap();
        assert_eq!(enforced.project().map(ProjectId::get), Some(133));
        // An id no volume can own is no enforcement.
        let zero: Meta = serde_json::from_str(
            r#"{"name":"pvc-1","capacity_bytes":1024,"parameters":{},"project_id":0}"#,
        )
        .unwrap();
        assert_eq!(zero.project(), None);
    }

    #[test]
    fn expansion_on_an_unenforced_root_rewrites_the_record() {
        let root = tempfile::tempdir().unwrap();
        let node = crate::ids::NodeId::parse("node-a").unwrap();
        let b = LocalBackend::open(node, root.path(), 1 << 20).unwrap();
        let v = b
            .create_volume(&crate::backend::NewVolume {
                name: crate::ids::VolumeName::parse("pvc-1").unwrap(),
                capacity: Range {
                    required: 4096,
                    limit: None,
                },
                parameters: Default::default(),
                mount_flags: Vec::new(),
                access: crate::backend::AccessKind::Mount,
            })
            .unwrap();
        let grow = |required| Range {
            required,
            limit: None,
        };
        let e = b.expand_volume(&v.id, &grow(8192)).unwrap();
        assert_eq!((e.capacity_bytes, e.node_expansion_required), (8192, false));
        assert_eq!(b.ledger.promised(), 8192);
        let meta = b
            .read_meta(&VolumeKey::parse("pvc-1").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(meta.capacity_bytes, 8192);
        assert_eq!(
            b.expand_volume(&v.id, &grow(4096)).unwrap().capacity_bytes,
            8192
        );
        assert_eq!(b.ledger.promised(), 8192);
        b.delete_volume(&v.id).unwrap();
        assert_eq!(b.ledger.promised(), 0);
    }
}
