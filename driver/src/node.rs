//! The CSI Node service: stage binds the volume's directory at the staging
//! path, publish binds the staged mount into the pod's target path.
//!
//! Idempotency comes from looking at the path itself (one `statx`): a mount
//! root showing the volume's inode is this volume, already in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_proto::v1::node_server::Node;
use cairn_proto::v1::node_service_capability::{rpc::Type as RpcType, Rpc, Type};
use cairn_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::backend::Health;
use crate::capability::{self, check_one_well_formed};
use crate::controller::volume_condition;
use crate::driver::Driver;
use crate::error::{missing, Error, Result};
use crate::ids::VolumeId;
use crate::mount::{self, BindFlags, PathState};
use crate::paths::{KubeletDir, KubeletPath};
use crate::rpc::{blocking, observe};
use crate::topology;

pub struct NodeService(pub Arc<Driver>);

const CAPABILITIES: &[RpcType] = &[
    RpcType::StageUnstageVolume,
    RpcType::GetVolumeStats,
    RpcType::VolumeCondition,
    RpcType::SingleNodeMultiWriter,
];

/// Mode of the target directories the driver creates.
const TARGET_DIR_MODE: u32 = 0o750;

/// Validates a node-side capability: malformed is InvalidArgument, one the
/// volume cannot serve is FailedPrecondition (spec: "Exceeds capabilities").
fn check_capability(cap: Option<&VolumeCapability>) -> Result<&VolumeCapability> {
    let cap = cap.ok_or_else(|| missing("volume_capability"))?;
    check_one_well_formed(cap, "volume_capability")?;
    capability::local_supports(cap).map_err(|u| Error::FailedPrecondition(u.0))?;
    Ok(cap)
}

fn inspect(path: &Path) -> Result<Option<PathState>> {
    mount::inspect(path).map_err(Error::io("inspect", path))
}

fn create_target_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .mode(TARGET_DIR_MODE)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("create", path)(e)),
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

impl NodeService {
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
        check_capability(req.volume_capability.as_ref())?;
        let _guard = self.0.locks.lock(&req.volume_id).await;
        let backend = self.0.backend.clone();
        blocking(move || {
            let data = backend.data_dir(&id)?;
            let staging = kubelet.resolve(&staging, true)?;
            match inspect(&staging)? {
                Some(state) if state.is_mount_root => {
                    let source = inspect(&data)?;
                    if source.is_some_and(|s| s.same_inode(&state)) {
                        return Ok(NodeStageVolumeResponse {});
                    }
                    return Err(Error::AlreadyExists(format!(
                        "{} already has another mount; volume {id} cannot be staged there",
                        staging.display()
                    )));
                }
                Some(state) if !state.is_dir => {
                    return Err(Error::FailedPrecondition(format!(
                        "{} is not a directory",
                        staging.display()
                    )))
                }
                Some(_) => {}
                None => create_target_dir(&staging)?,
            }
            mount::bind(&data, &staging, BindFlags::default())
                .map_err(Error::io("bind-mount volume at", &staging))?;
            Ok(NodeStageVolumeResponse {})
        })
        .await
    }

    async fn unstage(&self, req: NodeUnstageVolumeRequest) -> Result<NodeUnstageVolumeResponse> {
        VolumeId::parse(&req.volume_id)?;
        let kubelet = self.kubelet()?.clone();
        let staging = kubelet.check(&req.staging_target_path, "staging_target_path")?;
        let _guard = self.0.locks.lock(&req.volume_id).await;
        blocking(move || {
            // The kubelet owns the staging directory and removes it itself.
            if let Some(staging) = resolve_existing(&kubelet, &staging)? {
                mount::unmount_all(&staging).map_err(Error::io("unmount", &staging))?;
            }
            Ok(NodeUnstageVolumeResponse {})
        })
        .await
    }

    async fn publish(&self, req: NodePublishVolumeRequest) -> Result<NodePublishVolumeResponse> {
        let id = VolumeId::parse(&req.volume_id)?;
        let kubelet = self.kubelet()?.clone();
        let target = kubelet.check(&req.target_path, "target_path")?;
        let cap = check_capability(req.volume_capability.as_ref())?;
        if req.staging_target_path.is_empty() {
            return Err(Error::FailedPrecondition(
                "staging_target_path is required: this driver stages volumes (STAGE_UNSTAGE_VOLUME)"
                    .into(),
            ));
        }
        let staging = kubelet.check(&req.staging_target_path, "staging_target_path")?;
        if req
            .volume_context
            .get("csi.storage.k8s.io/ephemeral")
            .is_some_and(|v| v == "true")
        {
            return Err(Error::InvalidArgument(
                "inline ephemeral volumes are not supported by this driver yet".into(),
            ));
        }
        let mut flags =
            BindFlags::parse(capability::mount_flags(cap)).map_err(Error::InvalidArgument)?;
        if req.readonly || capability::is_read_only_mode(cap) {
            flags = flags.read_only();
        }
        let _guard = self.0.locks.lock(&req.volume_id).await;
        let backend = self.0.backend.clone();
        blocking(move || {
            let data = backend.data_dir(&id)?;
            let source = inspect(&data)?
                .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))?;
            let staging = kubelet
                .resolve(&staging, false)
                .map_err(|e| not_staged(&id, e))?;
            match inspect(&staging)? {
                Some(state) if state.is_mount_root && state.same_inode(&source) => {}
                _ => {
                    return Err(Error::FailedPrecondition(format!(
                        "volume {id} is not staged at {}; call NodeStageVolume first",
                        staging.display()
                    )))
                }
            }
            let target = kubelet.resolve(&target, true)?;
            match inspect(&target)? {
                Some(state) if state.is_mount_root => {
                    return already_published(&id, &target, &state, &source, flags);
                }
                Some(state) if !state.is_dir => {
                    return Err(Error::FailedPrecondition(format!(
                        "{} exists and is not a directory",
                        target.display()
                    )))
                }
                Some(_) => {}
                None => create_target_dir(&target)?,
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
        VolumeId::parse(&req.volume_id)?;
        let kubelet = self.kubelet()?.clone();
        let target = kubelet.check(&req.target_path, "target_path")?;
        let _guard = self.0.locks.lock(&req.volume_id).await;
        blocking(move || {
            // Gone already (a retry, or after a reboot): nothing to undo.
            let Some(target) = resolve_existing(&kubelet, &target)? else {
                return Ok(NodeUnpublishVolumeResponse {});
            };
            mount::unmount_all(&target).map_err(Error::io("unmount", &target))?;
            match std::fs::remove_dir(&target) {
                Ok(()) => Ok(NodeUnpublishVolumeResponse {}),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(NodeUnpublishVolumeResponse {})
                }
                Err(e) => Err(Error::io("remove target directory", &target)(e)),
            }
        })
        .await
    }

    async fn stats(&self, req: NodeGetVolumeStatsRequest) -> Result<NodeGetVolumeStatsResponse> {
        let id = VolumeId::parse(&req.volume_id)?;
        let kubelet = self.kubelet()?.clone();
        let path = kubelet.check(&req.volume_path, "volume_path")?;
        let backend = self.0.backend.clone();
        blocking(move || {
            let not_found = || {
                Error::NotFound(format!(
                    "volume {id} is not published at {}",
                    req.volume_path
                ))
            };
            let path = resolve_existing(&kubelet, &path)?.ok_or_else(not_found)?;
            let state = inspect(&path)?.ok_or_else(not_found)?;
            let health = backend.health(&id);
            if state.is_mount_root {
                if let Ok(data) = backend.data_dir(&id) {
                    if !inspect(&data)?.is_some_and(|s| s.same_inode(&state)) {
                        return Err(not_found());
                    }
                }
            } else if backend.get(&id)?.is_none() {
                return Err(not_found());
            }
            let condition = match (state.is_mount_root, health) {
                (false, _) => Health::Abnormal(format!("nothing is mounted at {}", path.display())),
                (true, health) => health,
            };
            let usage = if state.is_mount_root {
                usage_of(&path)?
            } else {
                Vec::new()
            };
            Ok(NodeGetVolumeStatsResponse {
                usage,
                volume_condition: Some(volume_condition(condition)),
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

/// A mount is already at the target: the same volume with the same
/// read-only flag is success, anything else a conflict.
fn already_published(
    id: &VolumeId,
    target: &Path,
    state: &PathState,
    source: &PathState,
    flags: BindFlags,
) -> Result<NodePublishVolumeResponse> {
    if !state.same_inode(source) {
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

fn usage_of(path: &Path) -> Result<Vec<VolumeUsage>> {
    let st = mount::usage(path).map_err(Error::io("statvfs", path))?;
    let bytes = |blocks: u64| i64::try_from(blocks.saturating_mul(st.f_frsize)).unwrap_or(i64::MAX);
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    Ok(vec![
        VolumeUsage {
            available: bytes(st.f_bavail),
            total: bytes(st.f_blocks),
            used: bytes(st.f_blocks.saturating_sub(st.f_bfree)),
            unit: volume_usage::Unit::Bytes as i32,
        },
        VolumeUsage {
            available: count(st.f_favail),
            total: count(st.f_files),
            used: count(st.f_files.saturating_sub(st.f_ffree)),
            unit: volume_usage::Unit::Inodes as i32,
        },
    ])
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        observe("NodeStageVolume", &req.volume_id.clone(), self.stage(req)).await
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        observe(
            "NodeUnstageVolume",
            &req.volume_id.clone(),
            self.unstage(req),
        )
        .await
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        observe(
            "NodePublishVolume",
            &req.volume_id.clone(),
            self.publish(req),
        )
        .await
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        observe(
            "NodeUnpublishVolume",
            &req.volume_id.clone(),
            self.unpublish(req),
        )
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
        _request: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "NodeExpandVolume is not supported by this driver",
        ))
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
            Ok(NodeGetInfoResponse {
                node_id: self.0.node.to_string(),
                max_volumes_per_node: self.0.max_volumes_per_node,
                accessible_topology: Some(topology::of_node(&self.0.node)),
            })
        })
        .await
    }
}
