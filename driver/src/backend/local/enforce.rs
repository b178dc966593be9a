//! Enforcing local volumes' sizes with project quotas (see [`crate::quota`]).
//!
//! Each volume's `data/` directory gets a project id of its own and a hard
//! block limit equal to its capacity. The id is chosen when the volume is
//! made, in `tmp/`, before the rename that publishes it:
//!
//! - first choice: the `data/` directory's inode number. Inode numbers are
//!   unique among the live inodes of a filesystem, so live volumes never
//!   collide, and nothing has to remember which ids are taken;
//! - when the inode number does not fit a project id (XFS `inode64` on a
//!   large filesystem) or its project is already in use (a project someone
//!   else made on the same filesystem), a probe sequence derived from the
//!   volume's key.
//!
//! An id counts as taken when the filesystem charges anything to it, which
//! is read from the quota itself: every live volume's `data/` directory is
//! one inode of its project. Choosing and assigning happen under one lock,
//! so two creates never take the same id. The filesystem's own accounting
//! is the table: there is none of ours to drift, and ids survive restarts
//! in the directories' attributes. The id is also recorded in `meta.json`,
//! and every use checks that the directory still carries it.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;

use crate::backend::{Health, Usage};
use crate::error::{Error, Result};
use crate::ids::VolumeKey;
use crate::quota::{self, ProjectId, Support};

/// What CreateVolume does on a local root that cannot enforce sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnenforcedCapacity {
    /// Refuse to create volumes (their size would be a promise nobody keeps).
    Refuse,
    /// Create them anyway, recording the size, and warn for each.
    Allow,
}

#[derive(Debug)]
pub(super) struct Enforcement {
    support: Support,
    /// The root's filesystem, for messages.
    fs: String,
    policy: UnenforcedCapacity,
    /// Held while a project id is chosen and given to a directory (and
    /// while a freed id's limit is cleared), so no id is handed out twice.
    assign: Mutex<()>,
}

fn open(path: &Path) -> Result<OwnedFd> {
    quota::open_dir(path).map_err(Error::io("open", path))
}

impl Enforcement {
    /// Probes the local root and says at startup what it can enforce.
    pub(super) fn probe(root: &Path, policy: UnenforcedCapacity) -> Result<Self> {
        let fd = open(root)?;
        let fs = quota::filesystem_name(fd.as_fd());
        let support = quota::probe(fd.as_fd());
        let this = Self {
            support,
            fs,
            policy,
            assign: Mutex::new(()),
        };
        this.announce(root);
        Ok(this)
    }

    fn announce(&self, root: &Path) {
        let root = root.display();
        let consequence = match self.policy {
            UnenforcedCapacity::Refuse => {
                "CreateVolume refuses local volumes (--unenforced-capacity=refuse); \
                 pass --unenforced-capacity=allow to provision them unenforced"
            }
            UnenforcedCapacity::Allow => {
                "local volumes are provisioned with their size recorded but NOT enforced \
                 (--unenforced-capacity=allow)"
            }
        };
        match &self.support {
            Support::Enforced => tracing::info!(
                root = %root, filesystem = %self.fs,
                "local volume sizes are enforced with project quotas"
            ),
            Support::AccountingOnly => tracing::warn!(
                root = %root, filesystem = %self.fs,
                "local root {root} ({}) accounts project quotas but does not enforce them \
                 (mounted with pqnoenforce, or ext4 without the prjquota option): remount it \
                 with prjquota to enforce volume sizes; until then {consequence}",
                self.fs
            ),
            Support::Unsupported(why) => tracing::warn!(
                root = %root, filesystem = %self.fs,
                "local root {root} cannot enforce volume sizes: {why}; {consequence}"
            ),
        }
    }

    /// Whether volumes here get project ids (usage is then per volume).
    pub(super) fn accounts(&self) -> bool {
        self.support.accounts()
    }

    /// Whether the root enforces volume sizes.
    pub(super) fn enforced(&self) -> bool {
        self.support == Support::Enforced
    }

    /// Whether CreateVolume may make a volume here; the refusal says why and
    /// what to do. ResourceExhausted (spec: "Unable to provision in
    /// accessible_topology"): this node cannot provision such a volume,
    /// external-provisioner then lets the scheduler pick another node for a
    /// WaitForFirstConsumer claim, and GetCapacity reports 0 here.
    pub(super) fn check_create(&self) -> Result<()> {
        if self.enforced() || self.policy == UnenforcedCapacity::Allow {
            return Ok(());
        }
        let why = match &self.support {
            Support::Unsupported(why) => why.clone(),
            _ => format!(
                "project quotas on this {} filesystem are accounted but not enforced; remount it with prjquota",
                self.fs
            ),
        };
        Err(Error::ResourceExhausted(format!(
            "local volumes on this node would not be held to their size: {why}. \
             The driver runs with --unenforced-capacity=refuse; an operator may pass \
             --unenforced-capacity=allow to provision unenforced volumes"
        )))
    }

    /// Logged for each volume made where sizes are not enforced (with
    /// accounting only, the volume still gets a project: its usage is its
    /// own, and its limit holds once the root is remounted with prjquota).
    pub(super) fn warn_unenforced(&self, key: &VolumeKey, bytes: u64) {
        if !self.enforced() {
            tracing::warn!(
                volume = %key, capacity_bytes = bytes, filesystem = %self.fs,
                "volume created with its size recorded but NOT enforced (--unenforced-capacity=allow)"
            );
        }
    }

    /// Gives a new volume's `data` directory a project of its own with a
    /// hard limit of `bytes`; `None` where the root keeps no project quotas.
    pub(super) fn assign_new(
        &self,
        data: &Path,
        key: &VolumeKey,
        bytes: u64,
    ) -> Result<Option<ProjectId>> {
        if !self.support.accounts() {
            return Ok(None);
        }
        let dir = open(data)?;
        let ino = rustix::fs::fstat(&dir)
            .map_err(|e| Error::io("stat", data)(e.into()))?
            .st_ino;
        let _held = self.assign.lock().unwrap_or_else(|p| p.into_inner());
        for id in ProjectId::candidates(ino, key.as_str()) {
            let usage = quota::usage(dir.as_fd(), id).map_err(Error::io("read quota of", data))?;
            if !usage.is_unused() {
                tracing::debug!(volume = %key, project = %id, "project id in use, trying the next");
                continue;
            }
            // Limit first: the directory never sits in a project without one.
            quota::set_limit(dir.as_fd(), id, bytes).map_err(Error::io("set quota on", data))?;
            quota::assign(dir.as_fd(), id).map_err(Error::io("set project id of", data))?;
            verify(&dir, data, id)?;
            return Ok(Some(id));
        }
        Err(Error::Internal(format!(
            "no free project id for volume {key} among {} candidates",
            quota::FALLBACK_PROBES + 1
        )))
    }

    /// Raises (or sets) the limit of an existing volume's project, after
    /// checking that its directory still carries the recorded id.
    pub(super) fn set_limit(&self, data: &Path, id: ProjectId, bytes: u64) -> Result<()> {
        let dir = open(data)?;
        verify(&dir, data, id)?;
        quota::set_limit(dir.as_fd(), id, bytes).map_err(Error::io("set quota on", data))
    }

    /// Clears the limit of a volume being deleted, whose `data` directory
    /// (already moved to `trash/`) still carries `id`. Done before the tree
    /// is removed: while it exists, the id is charged and no new volume can
    /// take it, so the clear never hits a new owner's limit (after removal,
    /// XFS frees inodes in the background, so "unused" could not be told
    /// apart from "taken again"). Best effort: a stale limit on an unused
    /// id is harmless, its next owner sets its own.
    pub(super) fn forget(&self, data: &Path, id: ProjectId) {
        let result = (|| {
            let dir = open(data)?;
            verify(&dir, data, id)?;
            quota::set_limit(dir.as_fd(), id, 0).map_err(Error::io("clear quota on", data))
        })();
        if let Err(e) = result {
            tracing::warn!(project = %id, error = %e, "could not clear a deleted volume's quota limit");
        }
    }

    /// A volume's usage from its project quota, for NodeGetVolumeStats:
    /// one fsxattr read, one quotactl and one statvfs on the mounted
    /// `path`, whatever the volume holds. `capacity` is the recorded size,
    /// reported if the project lost its limit.
    pub(super) fn usage(
        &self,
        path: &Path,
        id: ProjectId,
        capacity: u64,
    ) -> Result<(Usage, Health)> {
        let dir = open(path)?;
        let st = rustix::fs::fstatvfs(&dir).map_err(|e| Error::io("statvfs", path)(e.into()))?;
        let attr = quota::project_of(dir.as_fd()).map_err(Error::io("read project id of", path))?;
        if attr.id != id.get() {
            return Ok((
                Usage::from_statvfs(&st),
                Health::Abnormal(format!(
                    "the volume's directory is in project {} but its record says {id}: its size is not enforced",
                    attr.id
                )),
            ));
        }
        let q = quota::usage(dir.as_fd(), id).map_err(Error::io("read quota of", path))?;
        let (total, health) = if q.bytes_limit == 0 {
            (
                capacity,
                Health::Abnormal(format!(
                    "project {id} has no quota limit: the volume's size is not enforced"
                )),
            )
        } else {
            (q.bytes_limit, Health::Ok)
        };
        let fs_free = st.f_bavail.saturating_mul(st.f_frsize);
        Ok((
            Usage {
                bytes_total: total,
                bytes_used: q.bytes_used,
                bytes_available: total.saturating_sub(q.bytes_used).min(fs_free),
                inodes_total: q.inodes_used.saturating_add(st.f_favail),
                inodes_available: st.f_favail,
                inodes_used: q.inodes_used,
            },
            health,
        ))
    }

    /// At startup: a volume's directory still carries its recorded id, and
    /// its limit is not below its recorded capacity (an interrupted
    /// expansion leaves it above, never below; raising it repairs a limit
    /// someone lowered by hand). Problems are logged, not fatal.
    pub(super) fn check_existing(&self, data: &Path, id: ProjectId, capacity: u64) {
        let result = (|| {
            let dir = open(data)?;
            verify(&dir, data, id)?;
            let q = quota::usage(dir.as_fd(), id).map_err(Error::io("read quota of", data))?;
            if self.support.accounts() && (q.bytes_limit == 0 || q.bytes_limit < capacity) {
                tracing::warn!(
                    path = %data.display(), project = %id, limit = q.bytes_limit, capacity,
                    "quota limit below the recorded capacity; raising it"
                );
                quota::set_limit(dir.as_fd(), id, capacity)
                    .map_err(Error::io("set quota on", data))?;
            }
            Ok::<_, Error>(())
        })();
        if let Err(e) = result {
            tracing::warn!(path = %data.display(), project = %id, error = %e, "volume's quota is not as recorded");
        }
    }
}

/// The directory carries project `id` and passes it on.
fn verify(dir: &OwnedFd, path: &Path, id: ProjectId) -> Result<()> {
    let attr = quota::project_of(dir.as_fd()).map_err(Error::io("read project id of", path))?;
    if attr.id != id.get() || !attr.inherit {
        return Err(Error::FailedPrecondition(format!(
            "{} is in project {} (inherit: {}), but the volume's record says project {id}",
            path.display(),
            attr.id,
            attr.inherit
        )));
    }
    Ok(())
}
