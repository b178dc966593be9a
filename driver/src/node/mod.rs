//! The CSI Node service: stage binds the volume's directory at the staging
//! path, publish binds the staged mount into the pod's target path. A raw
//! block volume (access type block) is staged as a loop device and
//! published as that device node bind-mounted on a target file
//! (`block_target.rs`).
//!
//! This file is the tonic adapter: it validates a request, picks the
//! backend, takes the volume's lock and hands the work to the node rules
//! in `flow.rs`, which make every mount through a [`crate::mounter::Mounter`].

mod flow;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use cairn_proto::v1::node_server::Node;
use cairn_proto::v1::node_service_capability::{rpc::Type as RpcType, Rpc, Type};
use cairn_proto::v1::*;
use tonic::{Request, Response, Status};

pub use flow::NodeContext;
use flow::{publish_flags, Publish};

use crate::backend::{Backend, NewVolume, Stats};
use crate::capability::{access_kind, check_one_well_formed, AccessKind};
use crate::capacity::Range;
use crate::controller::volume_condition;
use crate::driver::Driver;
use crate::ephemeral;
use crate::error::{missing, Error, Result};
use crate::ids::VolumeId;
use crate::rpc::{blocking, node_work, observe, observe_to_completion};
use crate::topology;

/// The Node service: the driver's backends and locks, and the node
/// context, which exists only where this process serves the node service.
pub struct NodeService {
    driver: Arc<Driver>,
    node: Arc<NodeContext>,
}

impl NodeService {
    pub fn new(driver: Arc<Driver>, node: Arc<NodeContext>) -> Self {
        Self { driver, node }
    }

    /// The same service, owned, for a call that runs to completion.
    fn detached(&self) -> Self {
        Self::new(self.driver.clone(), self.node.clone())
    }
}

const CAPABILITIES: &[RpcType] = &[
    RpcType::StageUnstageVolume,
    RpcType::GetVolumeStats,
    RpcType::VolumeCondition,
    RpcType::SingleNodeMultiWriter,
    RpcType::ExpandVolume,
];

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
    async fn stage(&self, req: NodeStageVolumeRequest) -> Result<NodeStageVolumeResponse> {
        require(&req.volume_id, "volume_id")?;
        let staging = (self.node.kubelet).check(&req.staging_target_path, "staging_target_path")?;
        require_capability(req.volume_capability.as_ref())?;
        let id = VolumeId::parse(&req.volume_id)?;
        let backend = self.driver.backends.for_id(&id)?;
        let cap = check_capability(&*backend, req.volume_capability.as_ref())?.clone();
        // Attaching a loop device can wait on the kernel (udev, a busy
        // device): block volumes stage on the pool.
        let local_work = backend.node_work_is_local() && access_kind(&cap) != AccessKind::Block;
        let node = self.node.clone();
        let _guard = self.driver.locks.lock(&id.lock_key()).await;
        node_work(local_work, move || {
            node.stage(&*backend, &id, &staging, &cap)?;
            Ok(NodeStageVolumeResponse {})
        })
        .await
    }

    async fn unstage(&self, req: NodeUnstageVolumeRequest) -> Result<NodeUnstageVolumeResponse> {
        require(&req.volume_id, "volume_id")?;
        let staging = (self.node.kubelet).check(&req.staging_target_path, "staging_target_path")?;
        let id = VolumeId::parse(&req.volume_id)?;
        // A volume of a backend this process does not serve was never staged here.
        let backend = self.driver.backends.for_id(&id).ok();
        let node = self.node.clone();
        let _guard = self.driver.locks.lock(&id.lock_key()).await;
        node_work(
            backend.as_ref().is_some_and(|b| b.node_work_is_local()),
            move || {
                node.unstage(backend.as_deref(), &id, &staging)?;
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
        let kubelet = &self.node.kubelet;
        let target = kubelet.check(&req.target_path, "target_path")?;
        require_capability(req.volume_capability.as_ref())?;
        let id = VolumeId::parse(&req.volume_id)?;
        let backend = self.driver.backends.for_id(&id)?;
        let cap = check_capability(&*backend, req.volume_capability.as_ref())?;
        if req.staging_target_path.is_empty() {
            return Err(Error::FailedPrecondition(
                "staging_target_path is required: this driver stages volumes (STAGE_UNSTAGE_VOLUME)"
                    .into(),
            ));
        }
        let staging = kubelet.check(&req.staging_target_path, "staging_target_path")?;
        let block = access_kind(cap) == AccessKind::Block;
        let flags = publish_flags(&*backend, cap, req.readonly)?;
        let mode = cap.access_mode.as_ref().map_or(0, |m| m.mode);
        let local_work = backend.node_work_is_local() && !block;
        let lock_key = id.lock_key();
        let request = Publish {
            id,
            staging,
            target,
            flags,
            mode,
            block,
        };
        let node = self.node.clone();
        let _guard = self.driver.locks.lock(&lock_key).await;
        node_work(local_work, move || {
            node.publish(&*backend, &request)?;
            Ok(NodePublishVolumeResponse {})
        })
        .await
    }

    async fn unpublish(
        &self,
        req: NodeUnpublishVolumeRequest,
    ) -> Result<NodeUnpublishVolumeResponse> {
        require(&req.volume_id, "volume_id")?;
        require(&req.target_path, "target_path")?;
        let host = self.driver.backends.inline_host().ok();
        let id = ephemeral::parse_node_volume_id(&req.volume_id, host.as_deref())?;
        // An inline volume is deleted with its pod, after its last mount.
        let inline = host.filter(|host| ephemeral::volume_id(&req.volume_id, &**host).is_some());
        let target = (self.node.kubelet).check(&req.target_path, "target_path")?;
        // An inline volume is deleted here, which flushes: off this thread.
        let local_work = inline.is_none()
            && self
                .driver
                .backends
                .for_id(&id)
                .is_ok_and(|b| b.node_work_is_local());
        let node = self.node.clone();
        // One key per volume, the controller's too: an unpublish never
        // interleaves with a DeleteVolume or an inline volume's creation.
        let _guard = self.driver.locks.lock(&id.lock_key()).await;
        {
            let id = id.clone();
            node_work(local_work, move || node.unpublish(&id, &target)).await?;
        }
        // Also on a retry whose earlier attempt unmounted and then died.
        if let Some(host) = inline {
            let volume = host.clone().get(id.clone()).await?;
            if volume.is_some_and(|v| ephemeral::is_inline_volume(&v.parameters)) {
                host.delete(id).await?;
            }
        }
        Ok(NodeUnpublishVolumeResponse {})
    }

    /// NodePublishVolume of an inline ephemeral volume: create the local
    /// volume (idempotent on the kubelet's handle) and bind it to the target.
    async fn publish_inline(
        &self,
        req: NodePublishVolumeRequest,
    ) -> Result<NodePublishVolumeResponse> {
        let local = self.driver.backends.inline_host()?;
        let (name, id) = ephemeral::volume_id(&req.volume_id, &*local).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "inline ephemeral volume_id {:?} is not a kubelet inline handle (csi-<sha256>)",
                req.volume_id
            ))
        })?;
        let target = (self.node.kubelet).check(&req.target_path, "target_path")?;
        let cap = check_capability(&*local, req.volume_capability.as_ref())?;
        if access_kind(cap) == AccessKind::Block {
            return Err(Error::InvalidArgument(
                "inline ephemeral volumes are filesystems; access type block is not supported"
                    .into(),
            ));
        }
        let inline = ephemeral::inline_request(&req.volume_context)?;
        let flags = publish_flags(&*local, cap, req.readonly)?;
        let node = self.node.clone();
        let _guard = self.driver.locks.lock(&id.lock_key()).await;
        let request = NewVolume {
            name,
            capacity: inline.capacity,
            parameters: inline.parameters,
            mount_flags: Vec::new(),
            access: AccessKind::Mount,
        };
        local.clone().create(request).await?;
        blocking(move || {
            node.publish_inline(&id, &target, flags, &*local)?;
            Ok(NodePublishVolumeResponse {})
        })
        .await
    }

    async fn stats(&self, req: NodeGetVolumeStatsRequest) -> Result<NodeGetVolumeStatsResponse> {
        require(&req.volume_id, "volume_id")?;
        require(&req.volume_path, "volume_path")?;
        let host = self.driver.backends.inline_host().ok();
        let id = ephemeral::parse_node_volume_id(&req.volume_id, host.as_deref())?;
        // No volume is published at a path outside the kubelet dir (spec:
        // NOT_FOUND, "volume does not exist on the specified volume_path").
        let path = (self.node.kubelet)
            .check(&req.volume_path, "volume_path")
            .map_err(|e| Error::NotFound(format!("volume {id} is not published there: {e}")))?;
        let backend = self.driver.backends.for_id(&id)?;
        let node = self.node.clone();
        node_work(backend.node_work_is_local(), move || {
            let path = node.resolve_existing(&path)?.ok_or_else(|| {
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

    async fn expand(&self, req: NodeExpandVolumeRequest) -> Result<NodeExpandVolumeResponse> {
        require(&req.volume_id, "volume_id")?;
        require(&req.volume_path, "volume_path")?;
        let id = VolumeId::parse(&req.volume_id)?;
        let kubelet = &self.node.kubelet;
        let path = kubelet
            .check(&req.volume_path, "volume_path")
            .map_err(|e| Error::NotFound(format!("volume {id} is not published there: {e}")))?;
        if !req.staging_target_path.is_empty() {
            kubelet.check(&req.staging_target_path, "staging_target_path")?;
        }
        let capacity = Range::parse(req.capacity_range.as_ref())?;
        let backend = self.driver.backends.for_id(&id)?;
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
        let node = self.node.clone();
        let _guard = self.driver.locks.lock(&id.lock_key()).await;
        node_work(backend.node_work_is_local(), move || {
            let path = node.resolve_existing(&path)?.ok_or_else(|| {
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
            let node = &self.node.node;
            Ok(NodeGetInfoResponse {
                node_id: node.to_string(),
                max_volumes_per_node: self.driver.max_volumes_per_node,
                // Only volumes of backends bound to nodes have topology.
                accessible_topology: self
                    .driver
                    .backends
                    .binds_to_nodes()
                    .then(|| topology::of_node(node)),
            })
        })
        .await
    }
}
