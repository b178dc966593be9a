//! The CSI Node service: stage binds the volume's directory at the staging
//! path, publish binds the staged mount into the pod's target path. A raw
//! block volume (access type block) is staged as a loop device and
//! published as that device node bind-mounted on a target file
//! (`block_target.rs`).
//!
//! Idempotency comes from looking at the path itself (one `statx`): a mount
//! root showing the volume's inode is this volume, already in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_proto::v1::node_server::Node;
use cairn_proto::v1::node_service_capability::{rpc::Type as RpcType, Rpc, Type};
use cairn_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::backend::{Backend, NewVolume, Stats};
use crate::capability::{access_kind, check_one_well_formed, AccessKind};
use crate::capacity::Range;
use crate::controller::volume_condition;
use crate::driver::Driver;
use crate::ephemeral;
use crate::error::{missing, Error, Result};
use crate::ids::VolumeId;
use crate::mount::{self, PathState};
use crate::paths::{KubeletDir, KubeletPath};
use crate::published::{Publication, PublishedRecords};
use crate::rpc::{blocking, node_work, observe, observe_to_completion};
use crate::staged::StagedRecords;
use crate::topology;

pub struct NodeService(pub Arc<Driver>);

impl NodeService {
    /// The same service, owned, for a call that runs to completion.
    fn detached(&self) -> Self {
        Self(self.0.clone())
    }
}

const CAPABILITIES: &[RpcType] = &[
    RpcType::StageUnstageVolume,
    RpcType::GetVolumeStats,
    RpcType::VolumeCondition,
    RpcType::SingleNodeMultiWriter,
    RpcType::ExpandVolume,
];

/// Mode of the target directories the driver creates.
const TARGET_DIR_MODE: u32 = 0o750;

/// Validates a node-side capability: malformed is InvalidArgument, one the
/// volume cannot serve is FailedPrecondition (spec: "Exceeds capabilities").
fn check_capability<'a>(
    backend: &dyn Backend,
    cap: Option<&'a VolumeCapability>,
) -> Result<&'a VolumeCapability> {
    let cap = cap.ok_or_else(|| missing("volume_capability"))?;
    check_one_well_formed(cap, "volume_capability")?;
    backend
        .supports(cap)
        .map_err(|u| Error::FailedPrecondition(u.0))?;
    Ok(cap)
}

/// A required string field: missing is InvalidArgument, checked before
/// anything else so that a request missing a field is told so even when
/// its other fields name nothing that exists.
fn require(value: &str, field: &str) -> Result<()> {
    if value.is_empty() {
        return Err(missing(field));
    }
    Ok(())
}

fn require_capability(cap: Option<&VolumeCapability>) -> Result<()> {
    cap.map(|_| ()).ok_or_else(|| missing("volume_capability"))
}

fn inspect(path: &Path) -> Result<Option<PathState>> {
    mount::inspect(path).map_err(Error::io("inspect", path))
}

/// Makes sure `path` is a directory to mount on, creating it if missing.
fn mount_point_dir(path: &Path) -> Result<Option<PathState>> {
    match inspect(path)? {
        Some(state) if state.is_mount_root || state.is_dir => Ok(Some(state)),
        Some(_) => Err(Error::FailedPrecondition(format!(
            "{} exists and is not a directory",
            path.display()
        ))),
        // Made through its opened parent: a parent swapped for a symlink
        // meanwhile is refused, never followed out of the kubelet dir.
        None => mount::create_dir_at(path, TARGET_DIR_MODE)
            .map(|_| None)
            .map_err(Error::io("create", path)),
    }
}

/// Resolves a path whose parents may be gone (after a reboot): `None` then.
fn resolve_existing(kubelet: &KubeletDir, path: &KubeletPath) -> Result<Option<PathBuf>> {
    match kubelet.resolve(path, false) {
        Ok(real) => Ok(Some(real)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn usage_to_wire(stats: &Stats) -> Vec<VolumeUsage> {
    let Some(u) = stats.usage else {
        return Vec::new();
    };
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let mut usage = vec![VolumeUsage {
        available: n(u.bytes_available),
        total: n(u.bytes_total),
        used: n(u.bytes_used),
        unit: volume_usage::Unit::Bytes as i32,
    }];
    // Spec: inode information MAY be omitted when unavailable (a block
    // volume has none).
    if u.inodes_total > 0 || u.inodes_used > 0 {
        usage.push(VolumeUsage {
            available: n(u.inodes_available),
            total: n(u.inodes_total),
            used: n(u.inodes_used),
            unit: volume_usage::Unit::Inodes as i32,
        });
    }
    usage
}

impl NodeService {
    fn staged(&self) -> Result<StagedRecords> {
        self.0
            .staged
            .clone()
            .ok_or_else(|| Error::Internal("node service without staged records".into()))
    }

    fn published(&self) -> Result<PublishedRecords> {
        self.0
            .published
            .clone()
            .ok_or_else(|| Error::Internal("node service without publication records".into()))
    }

    fn kubelet(&self) -> Result<&KubeletDir> {
        self.0
            .kubelet
            .as_ref()
            .ok_or_else(|| Error::Internal("node service without a kubelet dir".into()))
    }

    async fn stage(&self, req: NodeStageVolumeRequest) -> Result<NodeStageVolumeResponse> {
        require(&req.volume_id, "volume_id")?;
        let kubelet = self.kubelet()?.clone();
        let staging = kubelet.check(&req.staging_target_path, "staging_target_path")?;
        require_capability(req.volume_capability.as_ref())?;
        let id = VolumeId::parse(&req.volume_id)?;
        let backend = self.0.backends.for_id(&id)?;
        let cap = check_capability(&*backend, req.volume_capability.as_ref())?.clone();
        let records = self.staged()?;
        let published = self.published()?;
        // Attaching a loop device can wait on the kernel (udev, a busy
        // device): block volumes stage on the pool.
        let local_work = backend.node_work_is_local() && access_kind(&cap) != AccessKind::Block;
        let _guard = self.0.locks.lock(&id.lock_key()).await;
        node_work(local_work, move || {
            let staging = kubelet.resolve(&staging, true)?;
            if let Some(there) = published.at(&staging)? {
                if is_live(&there)? {
                    return Err(Error::AlreadyExists(format!(
                        "{} is where volume {} is published; volume {id} cannot be staged there",
                        staging.display(),
                        there.volume_id
                    )));
                }
            }
            let state = mount_point_dir(&staging)?;
            if let Some(other) = records.lookup(&staging)? {
                if other != id.to_string() && state.is_some_and(|s| s.is_mount_root) {
                    return Err(Error::AlreadyExists(format!(
                        "{} already holds volume {other}; volume {id} cannot be staged there",
                        staging.display()
                    )));
                }
            }
            backend.stage(&id, &staging, &cap)?;
            records.record(&staging, &id)?;
            Ok(NodeStageVolumeResponse {})
        })
        .await
    }

    async fn unstage(&self, req: NodeUnstageVolumeRequest) -> Result<NodeUnstageVolumeResponse> {
        require(&req.volume_id, "volume_id")?;
        let kubelet = self.kubelet()?.clone();
        let staging = kubelet.check(&req.staging_target_path, "staging_target_path")?;
        let id = VolumeId::parse(&req.volume_id)?;
        let records = self.staged()?;
        // A volume of a backend this process does not serve was never staged here.
        let backend = self.0.backends.for_id(&id).ok();
        let _guard = self.0.locks.lock(&id.lock_key()).await;
        node_work(
            backend.as_ref().is_some_and(|b| b.node_work_is_local()),
            move || {
                // The kubelet owns the staging directory and removes it itself.
                if let Some(staging) = resolve_existing(&kubelet, &staging)? {
                    if let Some(other) = records.lookup(&staging)? {
                        let mounted = inspect(&staging)?.is_some_and(|s| s.is_mount_root);
                        if other != id.to_string() && mounted {
                            return Err(Error::FailedPrecondition(format!(
                                "{} holds volume {other}, not {id}; left as it is",
                                staging.display()
                            )));
                        }
                    }
                    mount::unmount_all(&staging).map_err(Error::io("unmount", &staging))?;
                }
                // Loop devices of a block volume go even when the path is gone.
                let lexical = kubelet.lexical(&staging);
                if let Some(backend) = backend {
                    backend.unstage(&id, &lexical)?;
                }
                records.forget(&lexical)?;
                Ok(NodeUnstageVolumeResponse {})
            },
        )
        .await
    }

    async fn publish(&self, req: NodePublishVolumeRequest) -> Result<NodePublishVolumeResponse> {
        if ephemeral::is_ephemeral(&req.volume_context) {
            return self.publish_inline(req).await;
        }
        require(&req.volume_id, "volume_id")?;
        let kubelet = self.kubelet()?.clone();
        let target = kubelet.check(&req.target_path, "target_path")?;
        require_capability(req.volume_capability.as_ref())?;
        let id = VolumeId::parse(&req.volume_id)?;
        let backend = self.0.backends.for_id(&id)?;
        let cap = check_capability(&*backend, req.volume_capability.as_ref())?;
        if req.staging_target_path.is_empty() {
            return Err(Error::FailedPrecondition(
                "staging_target_path is required: this driver stages volumes (STAGE_UNSTAGE_VOLUME)"
                    .into(),
            ));
        }
        let staging = kubelet.check(&req.staging_target_path, "staging_target_path")?;
        let block = access_kind(cap) == AccessKind::Block;
        let mut flags = backend.publish_flags(cap)?;
        if req.readonly || crate::capability::is_read_only_mode(cap) {
            flags = flags.read_only();
        }
        let records = self.staged()?;
        let published = self.published()?;
        let mode = cap.access_mode.as_ref().map_or(0, |m| m.mode);
        let local_work = backend.node_work_is_local() && !block;
        let _guard = self.0.locks.lock(&id.lock_key()).await;
        node_work(local_work, move || {
            let staging = kubelet
                .resolve(&staging, false)
                .map_err(|e| not_staged(&id, e))?;
            if let Some(other) = records.lookup(&staging)? {
                if other != id.to_string() {
                    return Err(Error::NotFound(format!(
                        "volume {id} is not staged at {}: volume {other} is",
                        staging.display()
                    )));
                }
            }
            let target = kubelet.resolve(&target, true)?;
            if target == staging || records.lookup(&target)?.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "target_path {} is a staging path; volumes are published elsewhere",
                    target.display()
                )));
            }
            let wanted = Publication {
                volume_id: id.to_string(),
                target: target.clone(),
                read_only: flags.is_read_only(),
                mode,
                block,
            };
            check_publications(&published, &wanted)?;
            // Recorded before the mount: a crash in between leaves a record
            // without a mount (stale, dropped when next looked at), never a
            // mount nobody knows the access mode of.
            published.record(&wanted)?;
            let mounted = if block {
                // The target first: a hostile one is refused before a
                // read-only device is attached for it.
                crate::block_target::check(&target).and_then(|found| {
                    let device = backend.block_device(&id, &staging, flags.is_read_only())?;
                    crate::block_target::publish(&id, &device, &target, found, flags)
                })
            } else {
                publish_bind(&*backend, &id, &staging, &target, flags)
            };
            if mounted.is_err() && !inspect(&target)?.is_some_and(|s| s.is_mount_root) {
                published.forget(&wanted.volume_id, &target)?;
            }
            mounted.map(|()| NodePublishVolumeResponse {})
        })
        .await
    }

    async fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse> {
        require(&req.volume_id, "volume_id")?;
        require(&req.target_path, "target_path")?;
        let id = ephemeral::parse_node_volume_id(&req.volume_id, self.0.node.as_ref())?;
        // An inline volume is deleted with its pod, after its last mount.
        let inline = self
            .0
            .node
            .as_ref()
            .and_then(|node| ephemeral::volume_id(&req.volume_id, node))
            .and(self.0.backends.inline_host().ok());
        let kubelet = self.kubelet()?.clone();
        let target = kubelet.check(&req.target_path, "target_path")?;
        // One key per volume, the controller's too: an unpublish never
        // interleaves with a DeleteVolume or an inline volume's creation.
        let records = self.staged()?;
        let published = self.published()?;
        // An inline volume is deleted here, which flushes: off this thread.
        let local_work = inline.is_none()
            && self
                .0
                .backends
                .for_id(&id)
                .is_ok_and(|b| b.node_work_is_local());
        let _guard = self.0.locks.lock(&id.lock_key()).await;
        node_work(local_work, move || {
            // Gone already (a retry, or after a reboot): nothing to unmount.
            if let Some(target) = resolve_existing(&kubelet, &target)? {
                check_own_target(&records, &published, &id, &target)?;
                mount::unmount_all(&target).map_err(Error::io("unmount", &target))?;
                remove_target(&id, &target)?;
            }
            published.forget(&id.to_string(), &kubelet.lexical(&target))?;
            // Also on a retry whose earlier attempt unmounted and then died.
            if let Some(local) = inline {
                if local
                    .get(&id)?
                    .is_some_and(|v| ephemeral::is_inline_volume(&v.parameters))
                {
                    local.delete(&id)?;
                }
            }
            Ok(NodeUnpublishVolumeResponse {})
        })
        .await
    }

    /// NodePublishVolume of an inline ephemeral volume: create the local
    /// volume (idempotent on the kubelet's handle) and bind it to the target.
    async fn publish_inline(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse> {
        let node = self
            .0
            .node
            .as_ref()
            .ok_or_else(|| Error::Internal("the node service runs without a node id".into()))?;
        let (name, id) = ephemeral::volume_id(&req.volume_id, node).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "inline ephemeral volume_id {:?} is not a kubelet inline handle (csi-<sha256>)",
                req.volume_id
            ))
        })?;
        let local = self.0.backends.inline_host()?;
        let kubelet = self.kubelet()?.clone();
        let target = kubelet.check(&req.target_path, "target_path")?;
        let cap = check_capability(&*local, req.volume_capability.as_ref())?;
        if access_kind(cap) == AccessKind::Block {
            return Err(Error::InvalidArgument(
                "inline ephemeral volumes are filesystems; access type block is not supported"
                    .into(),
            ));
        }
        let inline = ephemeral::inline_request(&req.volume_context)?;
        let mut flags = local.publish_flags(cap)?;
        if req.readonly || crate::capability::is_read_only_mode(cap) {
            flags = flags.read_only();
        }
        let _guard = self.0.locks.lock(&id.lock_key()).await;
        blocking(move || {
            local.create(&NewVolume {
                name,
                capacity: inline.capacity,
                parameters: inline.parameters,
                mount_flags: Vec::new(),
                access: AccessKind::Mount,
            })?;
            let target = kubelet.resolve(&target, true)?;
            let (source, volume) = local.unstaged_source(&id)?;
            if let Some(state) = mount_point_dir(&target)? {
                if state.is_mount_root {
                    return already_published(&id, &target, &state, &volume, flags);
                }
            }
            mount::bind(&source, &target, flags)
                .map_err(Error::io("bind-mount volume at", &target))?;
            Ok(NodePublishVolumeResponse {})
        })
        .await
    }

    async fn stats(&self, req: NodeGetVolumeStatsRequest) -> Result<NodeGetVolumeStatsResponse> {
        require(&req.volume_id, "volume_id")?;
        require(&req.volume_path, "volume_path")?;
        let id = ephemeral::parse_node_volume_id(&req.volume_id, self.0.node.as_ref())?;
        let kubelet = self.kubelet()?.clone();
        // No volume is published at a path outside the kubelet dir (spec:
        // NOT_FOUND, "volume does not exist on the specified volume_path").
        let path = kubelet
            .check(&req.volume_path, "volume_path")
            .map_err(|e| Error::NotFound(format!("volume {id} is not published there: {e}")))?;
        let backend = self.0.backends.for_id(&id)?;
        node_work(backend.node_work_is_local(), move || {
            let path = resolve_existing(&kubelet, &path)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "volume {id} is not published at {}",
                    req.volume_path
                ))
            })?;
            let stats = backend.stats(&id, &path)?;
            Ok(NodeGetVolumeStatsResponse {
                usage: usage_to_wire(&stats),
                volume_condition: Some(volume_condition(stats.health)),
            })
        })
        .await
    }
}

impl NodeService {
    async fn expand(&self, req: NodeExpandVolumeRequest) -> Result<NodeExpandVolumeResponse> {
        require(&req.volume_id, "volume_id")?;
        require(&req.volume_path, "volume_path")?;
        let id = VolumeId::parse(&req.volume_id)?;
        let kubelet = self.kubelet()?.clone();
        let path = kubelet
            .check(&req.volume_path, "volume_path")
            .map_err(|e| Error::NotFound(format!("volume {id} is not published there: {e}")))?;
        if !req.staging_target_path.is_empty() {
            kubelet.check(&req.staging_target_path, "staging_target_path")?;
        }
        let capacity = Range::parse(req.capacity_range.as_ref())?;
        let backend = self.0.backends.for_id(&id)?;
        // Optional here; when given, INVALID_ARGUMENT if the volume cannot
        // serve it (spec: "Exceeds capabilities").
        let cap = match req.volume_capability {
            Some(cap) => {
                check_one_well_formed(&cap, "volume_capability")?;
                backend
                    .supports(&cap)
                    .map_err(|u| Error::InvalidArgument(u.0))?;
                Some(cap)
            }
            None => None,
        };
        let _guard = self.0.locks.lock(&id.lock_key()).await;
        node_work(backend.node_work_is_local(), move || {
            let path = resolve_existing(&kubelet, &path)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "volume {id} is not staged or published at {}",
                    req.volume_path
                ))
            })?;
            let bytes = backend.node_expand(&id, &path, cap.as_ref(), &capacity)?;
            Ok(NodeExpandVolumeResponse {
                capacity_bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
            })
        })
        .await
    }
}

/// Binds the staged volume at the target; a mount already there is this
/// publish repeated or a conflict.
fn publish_bind(
    backend: &dyn Backend,
    id: &VolumeId,
    staging: &Path,
    target: &Path,
    flags: mount::BindFlags,
) -> Result<()> {
    let staged = backend.staged(id, staging)?.ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "volume {id} is not staged at {}; call NodeStageVolume first",
            staging.display()
        ))
    })?;
    if let Some(state) = mount_point_dir(target)? {
        if state.is_mount_root {
            return already_published(id, target, &state, &staged, flags).map(|_| ());
        }
    }
    mount::bind(staging, target, flags).map_err(Error::io("bind-mount volume at", target))
}

/// NodeUnpublishVolume touches only its own volume: a target that is a
/// staging path, or where another volume is published, is refused and
/// left alone.
fn check_own_target(
    records: &StagedRecords,
    published: &PublishedRecords,
    id: &VolumeId,
    target: &Path,
) -> Result<()> {
    if records.lookup(target)?.is_some() {
        return Err(Error::FailedPrecondition(format!(
            "{} is a staging path, not a publish target; left as it is \
             (NodeUnstageVolume unstages)",
            target.display()
        )));
    }
    if let Some(there) = published.at(target)? {
        if there.volume_id != id.to_string() && is_live(&there)? {
            return Err(Error::FailedPrecondition(format!(
                "{} holds volume {}, not {id}; left as it is",
                target.display(),
                there.volume_id
            )));
        }
    }
    Ok(())
}

/// Removes the target directory or file the publish created. One that
/// holds files Cairn did not put there (written while nothing was mounted)
/// is not ours to delete: it is left, and logged, and the unpublish
/// succeeds — failing would have the kubelet retry forever.
fn remove_target(id: &VolumeId, target: &Path) -> Result<()> {
    match crate::block_target::remove(target) {
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

/// Whether a recorded publication's mount is still there (after a reboot
/// or an unmount by hand it is not, and the record is stale).
fn is_live(publication: &Publication) -> Result<bool> {
    Ok(inspect(&publication.target)?.is_some_and(|s| s.is_mount_root))
}

/// The rules that tie a publish to the publications already made (spec,
/// NodePublishVolume errors): a target holding another volume, or this
/// one with another capability or read-only flag, is ALREADY_EXISTS; a
/// SINGLE_NODE_SINGLE_WRITER volume is published at one target only
/// (FAILED_PRECONDITION). Stale records met on the way are dropped. Reads
/// this volume's own records only.
fn check_publications(published: &PublishedRecords, wanted: &Publication) -> Result<()> {
    use volume_capability::access_mode::Mode;
    let id = &wanted.volume_id;
    if let Some(there) = published.at(&wanted.target)? {
        if !is_live(&there)? {
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
        }
    }
    let single_writer = Mode::SingleNodeSingleWriter as i32;
    for other in published.of_volume(id)? {
        if other.target == wanted.target {
            continue;
        }
        if !is_live(&other)? {
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
    Ok(())
}

fn not_staged(id: &VolumeId, err: Error) -> Error {
    match err {
        Error::NotFound(_) => Error::FailedPrecondition(format!(
            "volume {id} is not staged: {err}; call NodeStageVolume first"
        )),
        other => other,
    }
}

/// A mount is already at the target: the staged volume with the same
/// read-only flag is success, anything else a conflict.
fn already_published(
    id: &VolumeId,
    target: &Path,
    state: &PathState,
    staged: &PathState,
    flags: mount::BindFlags,
) -> Result<NodePublishVolumeResponse> {
    if !state.same_inode(staged) {
        return Err(Error::AlreadyExists(format!(
            "{} already has another mount; volume {id} cannot be published there",
            target.display()
        )));
    }
    let read_only = mount::is_read_only(target).map_err(Error::io("statvfs", target))?;
    if read_only != flags.is_read_only() {
        return Err(Error::AlreadyExists(format!(
            "volume {id} is already published at {} {}",
            target.display(),
            if read_only { "read-only" } else { "read-write" }
        )));
    }
    Ok(NodePublishVolumeResponse {})
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        let this = self.detached();
        observe_to_completion("NodeStageVolume", req.volume_id.clone(), async move {
            this.stage(req).await
        })
        .await
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        let this = self.detached();
        observe_to_completion("NodeUnstageVolume", req.volume_id.clone(), async move {
            this.unstage(req).await
        })
        .await
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let this = self.detached();
        observe_to_completion("NodePublishVolume", req.volume_id.clone(), async move {
            this.publish(req).await
        })
        .await
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let this = self.detached();
        observe_to_completion("NodeUnpublishVolume", req.volume_id.clone(), async move {
            this.unpublish(req).await
        })
        .await
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        observe(
            "NodeGetVolumeStats",
            &req.volume_id.clone(),
            self.stats(req),
        )
        .await
    }

    async fn node_expand_volume(
        &self,
        request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let this = self.detached();
        observe_to_completion("NodeExpandVolume", req.volume_id.clone(), async move {
            this.expand(req).await
        })
        .await
    }

    async fn node_get_capabilities(
        &self,
        _request: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        observe("NodeGetCapabilities", "", async {
            Ok(NodeGetCapabilitiesResponse {
                capabilities: CAPABILITIES
                    .iter()
                    .map(|t| NodeServiceCapability {
                        r#type: Some(Type::Rpc(Rpc { r#type: *t as i32 })),
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn node_get_info(
        &self,
        _request: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        observe("NodeGetInfo", "", async {
            let node =
                self.0.node.as_ref().ok_or_else(|| {
                    Error::Internal("the node service runs without a node id".into())
                })?;
            Ok(NodeGetInfoResponse {
                node_id: node.to_string(),
                max_volumes_per_node: self.0.max_volumes_per_node,
                // Only volumes of backends bound to nodes have topology.
                accessible_topology: self
                    .0
                    .backends
                    .binds_to_nodes()
                    .then(|| topology::of_node(node)),
            })
        })
        .await
    }
}
