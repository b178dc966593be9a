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
use crate::rpc::{blocking, observe, observe_to_completion};
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

fn inspect(path: &Path) -> Result<Option<PathState>> {
    mount::inspect(path).map_err(Error::io("inspect", path))
}

/// Makes sure `path` is a directory to mount on, creating it if missing.
fn mount_point_dir(path: &Path) -> Result<Option<PathState>> {
    use std::os::unix::fs::DirBuilderExt;
    match inspect(path)? {
        Some(state) if state.is_mount_root || state.is_dir => Ok(Some(state)),
        Some(_) => Err(Error::FailedPrecondition(format!(
            "{} exists and is not a directory",
            path.display()
        ))),
        None => match std::fs::DirBuilder::new()
            .mode(TARGET_DIR_MODE)
            .create(path)
        {
            Ok(()) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(Error::io("create", path)(e)),
        },
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

    fn kubelet(&self) -> Result<&KubeletDir> {
        self.0
            .kubelet
            .as_ref()
            .ok_or_else(|| Error::Internal("node service without a kubelet dir".into()))
    }

    async fn stage(&self, req: NodeStageVolumeRequest) -> Result<NodeStageVolumeResponse> {
        let id = VolumeId::parse(&req.volume_id)?;
        let kubelet = self.kubelet()?.clone();
        let staging = kubelet.check(&req.staging_target_path, "staging_target_path")?;
        let backend = self.0.backends.for_id(&id)?;
        let cap = check_capability(&*backend, req.volume_capability.as_ref())?.clone();
        let records = self.staged()?;
        let _guard = self.0.locks.lock(&req.volume_id).await;
        blocking(move || {
            let staging = kubelet.resolve(&staging, true)?;
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
        let id = VolumeId::parse(&req.volume_id)?;
        let kubelet = self.kubelet()?.clone();
        let staging = kubelet.check(&req.staging_target_path, "staging_target_path")?;
        let records = self.staged()?;
        // A volume of a backend this process does not serve was never staged here.
        let backend = self.0.backends.for_id(&id).ok();
        let _guard = self.0.locks.lock(&req.volume_id).await;
        blocking(move || {
            // The kubelet owns the staging directory and removes it itself.
            if let Some(staging) = resolve_existing(&kubelet, &staging)? {
                mount::unmount_all(&staging).map_err(Error::io("unmount", &staging))?;
            }
            // Loop devices of a block volume go even when the path is gone.
            let lexical = kubelet.lexical(&staging);
            if let Some(backend) = backend {
                backend.unstage(&id, &lexical)?;
            }
            records.forget(&lexical)?;
            Ok(NodeUnstageVolumeResponse {})
        })
        .await
    }

    async fn publish(&self, req: NodePublishVolumeRequest) -> Result<NodePublishVolumeResponse> {
        if ephemeral::is_ephemeral(&req.volume_context) {
            return self.publish_inline(req).await;
        }
        let id = VolumeId::parse(&req.volume_id)?;
        let kubelet = self.kubelet()?.clone();
        let target = kubelet.check(&req.target_path, "target_path")?;
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
        let _guard = self.0.locks.lock(&req.volume_id).await;
        blocking(move || {
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
            if block {
                // The target first: a hostile one is refused before a
                // read-only device is attached for it.
                let target = kubelet.resolve(&target, true)?;
                let found = crate::block_target::check(&target)?;
                let device = backend.block_device(&id, &staging, flags.is_read_only())?;
                crate::block_target::publish(&id, &device, &target, found, flags)?;
                return Ok(NodePublishVolumeResponse {});
            }
            let staged = backend.staged(&id, &staging)?.ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "volume {id} is not staged at {}; call NodeStageVolume first",
                    staging.display()
                ))
            })?;
            let target = kubelet.resolve(&target, true)?;
            if let Some(state) = mount_point_dir(&target)? {
                if state.is_mount_root {
                    return already_published(&id, &target, &state, &staged, flags);
                }
            }
            mount::bind(&staging, &target, flags)
                .map_err(Error::io("bind-mount volume at", &target))?;
            Ok(NodePublishVolumeResponse {})
        })
        .await
    }

    async fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse> {
        let id = ephemeral::parse_node_volume_id(&req.volume_id, self.0.node.as_ref())?;
        // An inline volume is deleted with its pod, after its last mount.
        let inline = self
            .0
            .node
            .as_ref()
            .and_then(|node| ephemeral::volume_id(&req.volume_id, node))
            .and(self.0.backends.local.clone());
        let kubelet = self.kubelet()?.clone();
        let target = kubelet.check(&req.target_path, "target_path")?;
        // Inline volumes serialize with their creation (keyed like the controller).
        let lock_key = if inline.is_some() {
            id.lock_key()
        } else {
            req.volume_id.clone()
        };
        let _guard = self.0.locks.lock(&lock_key).await;
        blocking(move || {
            // Gone already (a retry, or after a reboot): nothing to unmount.
            if let Some(target) = resolve_existing(&kubelet, &target)? {
                mount::unmount_all(&target).map_err(Error::io("unmount", &target))?;
                crate::block_target::remove(&target)?;
            }
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
        let local = self.0.backends.local()?.clone();
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
            if let Some(state) = mount_point_dir(&target)? {
                if state.is_mount_root {
                    let volume = local.data_state(&id)?;
                    return already_published(&id, &target, &state, &volume, flags);
                }
            }
            local.bind_data(&id, &target, flags)?;
            Ok(NodePublishVolumeResponse {})
        })
        .await
    }

    async fn stats(&self, req: NodeGetVolumeStatsRequest) -> Result<NodeGetVolumeStatsResponse> {
        let id = ephemeral::parse_node_volume_id(&req.volume_id, self.0.node.as_ref())?;
        let kubelet = self.kubelet()?.clone();
        let path = kubelet.check(&req.volume_path, "volume_path")?;
        let backend = self.0.backends.for_id(&id)?;
        blocking(move || {
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
        let id = VolumeId::parse(&req.volume_id)?;
        let kubelet = self.kubelet()?.clone();
        let path = kubelet.check(&req.volume_path, "volume_path")?;
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
        let _guard = self.0.locks.lock(&req.volume_id).await;
        blocking(move || {
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
                // Only local volumes are bound to nodes.
                accessible_topology: self
                    .0
                    .backends
                    .local
                    .is_some()
                    .then(|| topology::of_node(node)),
            })
        })
        .await
    }
}
