//! The node rules, whatever the backend: where a volume may be staged and
//! published, when a call is the same call repeated (success, nothing
//! done), when it conflicts with what is already there, and what a retry
//! finds. The tonic adapter (`node/mod.rs`) validates the request and
//! takes the volume's lock; these functions decide and act, through the
//! [`Mounter`] for every mount and the [`Backend`] for what the volume is.
//!
//! Idempotency comes from looking at the path itself (one `statx`): a
//! mount root showing the volume's inode is this volume, already in
//! place. What a `statx` cannot say (which NFS volume, which access mode)
//! comes from the staged and published records.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_proto::v1::volume_capability;
use cairn_proto::v1::VolumeCapability;

use crate::backend::Backend;
use crate::block_target;
use crate::capability::is_read_only_mode;
use crate::error::{Error, Result};
use crate::ids::{NodeId, VolumeId};
use crate::mount::{BindFlags, PathState};
use crate::mounter::Mounter;
use crate::paths::{KubeletDir, KubeletPath};
use crate::published::{Publication, PublishedRecords};
use crate::staged::StagedRecords;

/// Mode of the target directories the driver creates.
const TARGET_DIR_MODE: u32 = 0o750;

/// What the node service needs besides the backends, all of it present:
/// built once when the node service is served, so no call finds a part
/// missing.
pub struct NodeContext {
    /// This node.
    pub node: NodeId,
    pub kubelet: KubeletDir,
    /// Which volume is staged where.
    pub staged: StagedRecords,
    /// Which volume is published where, and how.
    pub published: PublishedRecords,
    pub mounter: Arc<dyn Mounter>,
}

/// One NodePublishVolume of a staged volume, validated.
#[derive(Debug, Clone)]
pub struct Publish {
    pub id: VolumeId,
    pub staging: KubeletPath,
    pub target: KubeletPath,
    pub flags: BindFlags,
    /// The CSI access mode (`AccessMode.Mode` as a number).
    pub mode: i32,
    pub block: bool,
}

/// The flags of a publish bind: the backend's, read-only when the request
/// or the capability's access mode asks for it.
pub fn publish_flags(
    backend: &dyn Backend,
    cap: &VolumeCapability,
    readonly: bool,
) -> Result<BindFlags> {
    let flags = backend.publish_flags(cap)?;
    Ok(if readonly || is_read_only_mode(cap) {
        flags.read_only()
    } else {
        flags
    })
}

impl NodeContext {
    fn inspect(&self, path: &Path) -> Result<Option<PathState>> {
        self.mounter
            .inspect(path)
            .map_err(Error::io("inspect", path))
    }

    fn is_mount_root(&self, path: &Path) -> Result<bool> {
        Ok(self.inspect(path)?.is_some_and(|s| s.is_mount_root))
    }

    /// Makes sure `path` is a directory to mount on, creating it if missing.
    fn mount_point_dir(&self, path: &Path) -> Result<Option<PathState>> {
        match self.inspect(path)? {
            Some(state) if state.is_mount_root || state.is_dir => Ok(Some(state)),
            Some(_) => Err(Error::FailedPrecondition(format!(
                "{} exists and is not a directory",
                path.display()
            ))),
            // Made through its opened parent: a parent swapped for a symlink
            // meanwhile is refused, never followed out of the kubelet dir.
            None => self
                .mounter
                .create_dir(path, TARGET_DIR_MODE)
                .map(|_| None)
                .map_err(Error::io("create", path)),
        }
    }

    /// Resolves a path whose parents may be gone (after a reboot): `None` then.
    pub fn resolve_existing(&self, path: &KubeletPath) -> Result<Option<PathBuf>> {
        match self.kubelet.resolve(path, false) {
            Ok(real) => Ok(Some(real)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether a recorded publication's mount is still there (after a reboot
    /// or an unmount by hand it is not, and the record is stale).
    fn is_live(&self, publication: &Publication) -> Result<bool> {
        self.is_mount_root(&publication.target)
    }

    /// NodeStageVolume: the volume at `staging`, unless another volume is
    /// staged or published there.
    pub fn stage(
        &self,
        backend: &dyn Backend,
        id: &VolumeId,
        staging: &KubeletPath,
        cap: &VolumeCapability,
    ) -> Result<()> {
        let staging = self.kubelet.resolve(staging, true)?;
        if let Some(there) = self.published.at(&staging)? {
            if self.is_live(&there)? {
                return Err(Error::AlreadyExists(format!(
                    "{} is where volume {} is published; volume {id} cannot be staged there",
                    staging.display(),
                    there.volume_id
                )));
            }
        }
        let state = self.mount_point_dir(&staging)?;
        if let Some(other) = self.staged.lookup(&staging)? {
            if other != *id && state.is_some_and(|s| s.is_mount_root) {
                return Err(Error::AlreadyExists(format!(
                    "{} already holds volume {other}; volume {id} cannot be staged there",
                    staging.display()
                )));
            }
        }
        backend.stage(id, &staging, cap)?;
        self.staged.record(&staging, id)
    }

    /// NodeUnstageVolume: unmounts the staging path unless it holds another
    /// volume. `backend` is `None` for a volume of a backend this process
    /// does not serve (never staged here).
    pub fn unstage(
        &self,
        backend: Option<&dyn Backend>,
        id: &VolumeId,
        staging: &KubeletPath,
    ) -> Result<()> {
        // The kubelet owns the staging directory and removes it itself.
        if let Some(real) = self.resolve_existing(staging)? {
            if let Some(other) = self.staged.lookup(&real)? {
                let mounted = self.is_mount_root(&real)?;
                if other != *id && mounted {
                    return Err(Error::FailedPrecondition(format!(
                        "{} holds volume {other}, not {id}; left as it is",
                        real.display()
                    )));
                }
            }
            self.mounter
                .unmount_all(&real)
                .map_err(Error::io("unmount", &real))?;
        }
        // Loop devices of a block volume go even when the path is gone.
        let lexical = self.kubelet.lexical(staging);
        if let Some(backend) = backend {
            backend.unstage(id, &lexical)?;
        }
        self.staged.forget(&lexical)
    }

    /// NodePublishVolume of a staged volume.
    pub fn publish(&self, backend: &dyn Backend, request: &Publish) -> Result<()> {
        let Publish {
            id, flags, block, ..
        } = request;
        let staging = self
            .kubelet
            .resolve(&request.staging, false)
            .map_err(|e| not_staged(id, e))?;
        if let Some(other) = self.staged.lookup(&staging)? {
            if other != *id {
                return Err(Error::NotFound(format!(
                    "volume {id} is not staged at {}: volume {other} is",
                    staging.display()
                )));
            }
        }
        let target = self.kubelet.resolve(&request.target, true)?;
        if target == staging || self.staged.lookup(&target)?.is_some() {
            return Err(Error::InvalidArgument(format!(
                "target_path {} is a staging path; volumes are published elsewhere",
                target.display()
            )));
        }
        let wanted = Publication {
            volume_id: id.clone(),
            target: target.clone(),
            read_only: flags.is_read_only(),
            mode: request.mode,
            block: *block,
        };
        let recorded_before = self.check_publications(&wanted)?;
        // Recorded before the mount: a crash in between leaves a record
        // without a mount (stale, dropped when next looked at), never a
        // mount nobody knows the access mode of.
        if !recorded_before {
            self.published.record(&wanted)?;
        }
        let mounted = if *block {
            // The target first: a hostile one is refused before a
            // read-only device is attached for it.
            let m = &*self.mounter;
            block_target::check(m, &target).and_then(|found| {
                let device = backend.block_device(id, &staging, flags.is_read_only())?;
                block_target::publish(m, id, &device, &target, found, *flags)
            })
        } else {
            self.publish_bind(backend, id, &staging, &target, *flags)
        };
        // A failed mount call leaves nothing mounted, and a refusal found
        // something else at the target: this call's record describes no
        // mount. Kept, it would let an unpublish of this volume unmount
        // whatever is there.
        if mounted.is_err() && !recorded_before {
            self.published.forget(&wanted.volume_id, &target)?;
        }
        mounted
    }

    /// The mount part of NodePublishVolume of an inline ephemeral volume,
    /// once it exists: `data` tells what the volume's directory is (to
    /// recognise it at the target), `bind` binds it there.
    pub fn publish_inline(
        &self,
        id: &VolumeId,
        target: &KubeletPath,
        flags: BindFlags,
        backend: &dyn Backend,
    ) -> Result<()> {
        let target = self.kubelet.resolve(target, true)?;
        let (source, volume) = backend.unstaged_source(id)?;
        if let Some(state) = self.mount_point_dir(&target)? {
            if state.is_mount_root {
                return self.already_published(id, &target, &state, &volume, flags);
            }
        }
        self.mounter
            .bind(&source, &target, flags)
            .map_err(Error::io("bind-mount volume at", &target))
    }

    /// NodeUnpublishVolume: unmounts and removes the target, unless it is
    /// not this volume's to touch.
    pub fn unpublish(&self, id: &VolumeId, target: &KubeletPath) -> Result<()> {
        let lexical = self.kubelet.lexical(target);
        // Gone already (a retry, or after a reboot): nothing to unmount.
        let Some(real) = self.resolve_existing(target)? else {
            return self.published.forget(id, &lexical);
        };
        let there = self.check_own_target(id, &real)?;
        self.mounter
            .unmount_all(&real)
            .map_err(Error::io("unmount", &real))?;
        self.remove_target(id, &real)?;
        // `real` is `lexical`: resolving refuses every symlink.
        self.published.forget_read(id, &lexical, there)
    }

    /// Binds the staged volume at the target; a mount already there is this
    /// publish repeated or a conflict.
    fn publish_bind(
        &self,
        backend: &dyn Backend,
        id: &VolumeId,
        staging: &Path,
        target: &Path,
        flags: BindFlags,
    ) -> Result<()> {
        let staged = backend.staged(id, staging)?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "volume {id} is not staged at {}; call NodeStageVolume first",
                staging.display()
            ))
        })?;
        if let Some(state) = self.mount_point_dir(target)? {
            if state.is_mount_root {
                return self.already_published(id, target, &state, &staged, flags);
            }
        }
        self.mounter
            .bind(staging, target, flags)
            .map_err(Error::io("bind-mount volume at", target))
    }

    /// A mount is already at the target: the staged volume with the same
    /// read-only flag is success, anything else a conflict.
    fn already_published(
        &self,
        id: &VolumeId,
        target: &Path,
        state: &PathState,
        staged: &PathState,
        flags: BindFlags,
    ) -> Result<()> {
        if !state.same_inode(staged) {
            return Err(Error::AlreadyExists(format!(
                "{} already has another mount; volume {id} cannot be published there",
                target.display()
            )));
        }
        let read_only = self
            .mounter
            .is_read_only(target)
            .map_err(Error::io("statvfs", target))?;
        if read_only != flags.is_read_only() {
            return Err(Error::AlreadyExists(format!(
                "volume {id} is already published at {} {}",
                target.display(),
                if read_only { "read-only" } else { "read-write" }
            )));
        }
        Ok(())
    }

    /// NodeUnpublishVolume touches only its own volume: a target that is a
    /// staging path, or where another volume is published, is refused and
    /// left alone. Returns the publication recorded at the target.
    fn check_own_target(&self, id: &VolumeId, target: &Path) -> Result<Option<Publication>> {
        if self.staged.lookup(target)?.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "{} is a staging path, not a publish target; left as it is \
                 (NodeUnstageVolume unstages)",
                target.display()
            )));
        }
        let there = self.published.at(target)?;
        if let Some(other) = &there {
            if other.volume_id != *id && self.is_live(other)? {
                return Err(Error::FailedPrecondition(format!(
                    "{} holds volume {}, not {id}; left as it is",
                    target.display(),
                    other.volume_id
                )));
            }
        }
        Ok(there)
    }

    /// Removes the target directory or file the publish created. One that
    /// holds files Cairn did not put there (written while nothing was mounted)
    /// is not ours to delete: it is left, and logged, and the unpublish
    /// succeeds — failing would have the kubelet retry forever.
    fn remove_target(&self, id: &VolumeId, target: &Path) -> Result<()> {
        match block_target::remove(&*self.mounter, target) {
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOTEMPTY) => {
                tracing::warn!(
                    volume = %id,
                    target = %target.display(),
                    "target directory holds files Cairn did not create; left in place"
                );
                Ok(())
            }
            other => other,
        }
    }

    /// The rules that tie a publish to the publications already made (spec,
    /// NodePublishVolume errors): a target holding another volume, or this
    /// one with another capability or read-only flag, is ALREADY_EXISTS; a
    /// SINGLE_NODE_SINGLE_WRITER volume is published at one target only
    /// (FAILED_PRECONDITION). Stale records met on the way are dropped. Reads
    /// this volume's own records only. Returns whether `wanted` is recorded
    /// already, with its mount in place (a repeated publish).
    fn check_publications(&self, wanted: &Publication) -> Result<bool> {
        use volume_capability::access_mode::Mode;
        let published = &self.published;
        let id = &wanted.volume_id;
        let mut recorded = false;
        if let Some(there) = published.at(&wanted.target)? {
            if !self.is_live(&there)? {
                // Another volume's lock is not ours to take: its index keeps
                // an entry that no longer matches, ignored when read.
                if there.volume_id == *id {
                    published.forget(id, &there.target)?;
                } else {
                    published.drop_at(&there.target)?;
                }
            } else if there.volume_id != *id {
                return Err(Error::AlreadyExists(format!(
                    "{} already holds volume {}; volume {id} cannot be published there",
                    wanted.target.display(),
                    there.volume_id
                )));
            } else if !there.same_as(wanted) {
                return Err(Error::AlreadyExists(format!(
                    "volume {id} is already published at {} with another access mode or \
                     read-only flag (read_only={}, mode={})",
                    wanted.target.display(),
                    there.read_only,
                    there.mode
                )));
            } else {
                recorded = true;
            }
        }
        let single_writer = Mode::SingleNodeSingleWriter as i32;
        for other in published.of_volume(id)? {
            if other.target == wanted.target {
                continue;
            }
            if !self.is_live(&other)? {
                published.forget(&other.volume_id, &other.target)?;
                continue;
            }
            if wanted.mode == single_writer || other.mode == single_writer {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id} uses SINGLE_NODE_SINGLE_WRITER access mode and is already \
                     published at {}; it cannot be published at a second target",
                    other.target.display()
                )));
            }
        }
        Ok(recorded)
    }
}

fn not_staged(id: &VolumeId, err: Error) -> Error {
    match err {
        Error::NotFound(_) => Error::FailedPrecondition(format!(
            "volume {id} is not staged: {err}; call NodeStageVolume first"
        )),
        other => other,
    }
}
