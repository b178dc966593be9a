//! The CSI Controller service: unpack, validate, call the backend, answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_proto::v1::controller_server::Controller;
use cairn_proto::v1::controller_service_capability::{rpc::Type as RpcType, Rpc, Type};
use cairn_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::backend::{self, Backend, Health, NewVolume};
use crate::capability::{access_kind_of, check_one_well_formed, check_well_formed};
use crate::capacity::Range;
use crate::driver::Driver;
use crate::error::{missing, Error, Result};
use crate::ids::{VolumeId, VolumeName};
use crate::page_token;
use crate::rpc::{observe, observe_to_completion};
use crate::topology;

pub struct ControllerService(pub Arc<Driver>);

impl ControllerService {
    /// The same service, owned, for a call that runs to completion.
    fn detached(&self) -> Self {
        Self(self.0.clone())
    }
}

/// What the controller offers. ListVolumes only when some backend can
/// enumerate its volumes: NFS volumes live on whatever exports
/// StorageClasses name, which the driver cannot.
fn capabilities(driver: &Driver) -> Vec<RpcType> {
    let mut rpcs = vec![
        RpcType::CreateDeleteVolume,
        RpcType::GetCapacity,
        RpcType::GetVolume,
        RpcType::VolumeCondition,
        RpcType::SingleNodeMultiWriter,
        RpcType::ExpandVolume,
    ];
    if driver.backends.lister().is_some() {
        rpcs.push(RpcType::ListVolumes);
    }
    rpcs.extend(crate::snapshots::capabilities(driver));
    rpcs
}

fn unsupported(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not supported by this driver"))
}

/// Refuses capabilities the backend's volumes cannot serve (CreateVolume).
fn check_supported(backend: &dyn Backend, caps: &[VolumeCapability]) -> Result<()> {
    caps.iter().try_for_each(|cap| {
        backend
            .supports(cap)
            .map_err(|u| Error::InvalidArgument(u.0))
    })
}

fn to_wire(volume: backend::Volume) -> Volume {
    Volume {
        capacity_bytes: i64::try_from(volume.capacity_bytes).unwrap_or(i64::MAX),
        volume_id: volume.id.to_string(),
        volume_context: Default::default(),
        content_source: None,
        accessible_topology: volume.node.iter().map(topology::of_node).collect(),
    }
}

/// The wire form of a volume's health.
pub(crate) fn volume_condition(health: Health) -> VolumeCondition {
    match health {
        Health::Ok => VolumeCondition {
            abnormal: false,
            message: "volume is healthy".into(),
        },
        Health::Abnormal(message) => VolumeCondition {
            abnormal: true,
            message,
        },
    }
}

/// The mount flags (StorageClass `mountOptions`) the capabilities carry,
/// each once, in order.
fn mount_flags_of(caps: &[VolumeCapability]) -> Vec<String> {
    let mut flags: Vec<String> = Vec::new();
    for flag in caps.iter().flat_map(crate::capability::mount_flags) {
        if !flags.contains(flag) {
            flags.push(flag.clone());
        }
    }
    flags
}

fn sorted(parameters: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl ControllerService {
    async fn create(&self, req: CreateVolumeRequest) -> Result<CreateVolumeResponse> {
        let name = VolumeName::parse(&req.name)?;
        check_well_formed(&req.volume_capabilities, "volume_capabilities")?;
        let access = access_kind_of(&req.volume_capabilities, "volume_capabilities")?;
        let parameters = sorted(&req.parameters);
        let backend = self.0.backends.for_parameters(&parameters)?;
        check_supported(&*backend, &req.volume_capabilities)?;
        let capacity = Range::parse(req.capacity_range.as_ref())?;
        let source =
            crate::snapshots::content_source(req.volume_content_source.as_ref(), &*backend)?;
        if !req.mutable_parameters.is_empty() {
            return Err(Error::InvalidArgument(
                "mutable_parameters are not supported (no MODIFY_VOLUME capability)".into(),
            ));
        }
        backend.check_parameters(&parameters)?;
        if let Some(node) = backend.node() {
            if !topology::admits(req.accessibility_requirements.as_ref(), node) {
                return Err(Error::ResourceExhausted(format!(
                    "{} volumes are created on the node serving the call ({node}), which the requested topology excludes",
                    backend.kind()
                )));
            }
        }
        let mount_flags = mount_flags_of(&req.volume_capabilities);
        let request = NewVolume {
            name,
            capacity,
            parameters,
            mount_flags,
            access,
        };
        // The key of the volume this call makes, the one DeleteVolume and
        // every node call on it take: a create never interleaves with them.
        let lock_key = backend.volume_id_for(&request)?.lock_key();
        let _guard = self.0.locks.lock(&lock_key).await;
        let volume = match &source {
            None => backend.create(request).await?,
            Some(source) => backend.create_from(request, source.clone()).await?,
        };
        let mut volume = to_wire(volume);
        volume.content_source = source.as_ref().map(crate::snapshots::source_to_wire);
        Ok(CreateVolumeResponse {
            volume: Some(volume),
        })
    }

    async fn delete(&self, req: DeleteVolumeRequest) -> Result<DeleteVolumeResponse> {
        let id = match VolumeId::parse(&req.volume_id) {
            Ok(id) => id,
            // An id Cairn never issued: that volume does not exist, which
            // is what DeleteVolume is asked to bring about (spec: OK).
            Err(Error::NotFound(_)) => return Ok(DeleteVolumeResponse {}),
            Err(e) => return Err(e),
        };
        let backend = self.0.backends.for_id(&id)?;
        let _guard = self.0.locks.lock(&id.lock_key()).await;
        backend.clone().stop_restore(id.clone()).await;
        backend.delete(id).await?;
        Ok(DeleteVolumeResponse {})
    }

    async fn get(&self, id: VolumeId) -> Result<(backend::Volume, Health)> {
        let backend = self.0.backends.for_id(&id)?;
        let volume = backend
            .clone()
            .get(id.clone())
            .await?
            .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))?;
        let health = backend.health(id).await;
        Ok((volume, health))
    }

    async fn validate(
        &self,
        req: ValidateVolumeCapabilitiesRequest,
    ) -> Result<ValidateVolumeCapabilitiesResponse> {
        let id = VolumeId::parse(&req.volume_id)?;
        check_well_formed(&req.volume_capabilities, "volume_capabilities")?;
        let backend = self.0.backends.for_id(&id)?;
        // The volume's record only: its health is not asked for here, and
        // for NFS it costs another trip to the server.
        let volume = backend
            .clone()
            .get(id.clone())
            .await?
            .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))?;
        let caps = req.volume_capabilities.clone();
        let unsupported = backend.supports_volume(id, caps).await?;
        let mismatch = if let Some(unsupported) = unsupported {
            Some(unsupported.0)
        } else if !req.parameters.is_empty() && sorted(&req.parameters) != volume.parameters {
            Some("parameters differ from those the volume was created with".into())
        } else if !req.mutable_parameters.is_empty() {
            Some("mutable_parameters are not supported".into())
        } else {
            None
        };
        Ok(match mismatch {
            Some(message) => ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            },
            None => ValidateVolumeCapabilitiesResponse {
                confirmed: Some(validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: Default::default(),
                }),
                message: String::new(),
            },
        })
    }

    /// Lists the volumes of the backend that can enumerate them (this
    /// node's local volumes). NFS volumes are not listed: the driver cannot
    /// know every export a StorageClass might name.
    async fn list(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse> {
        let max = usize::try_from(req.max_entries)
            .map_err(|_| Error::InvalidArgument("max_entries must not be negative".into()))?;
        let after = page_token::parse("volumes", &req.starting_token)?;
        let Some(lister) = self.0.backends.lister() else {
            return Err(Error::Unimplemented(
                "ListVolumes lists local volumes, which this cairn-csi does not serve".into(),
            ));
        };
        let page = lister.list(after, max).await?;
        let entries = page
            .entries
            .into_iter()
            .map(|listed| list_volumes_response::Entry {
                volume: Some(to_wire(listed.volume)),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: Vec::new(),
                    volume_condition: Some(volume_condition(listed.health)),
                }),
            })
            .collect();
        Ok(ListVolumesResponse {
            entries,
            next_token: page
                .next
                .map(|k| page_token::issue("volumes", &k))
                .unwrap_or_default(),
        })
    }

    async fn capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse> {
        if !req.volume_capabilities.is_empty() {
            check_well_formed(&req.volume_capabilities, "volume_capabilities")?;
        }
        let parameters = sorted(&req.parameters);
        let Some(backend) = self.0.backends.for_capacity(&parameters)? else {
            return Ok(GetCapacityResponse::default());
        };
        backend.check_parameters(&parameters)?;
        let here = match backend.node() {
            Some(node) => req
                .accessible_topology
                .as_ref()
                .is_none_or(|t| t.segments.is_empty() || topology::is_node(t, node)),
            None => true,
        };
        // Capacity a caller cannot use is no capacity (spec: report as if
        // provisioning with these capabilities and topology).
        if !here || check_supported(&*backend, &req.volume_capabilities).is_err() {
            return Ok(GetCapacityResponse::default());
        }
        let mount_flags = mount_flags_of(&req.volume_capabilities);
        let capacity = backend.capacity(parameters, mount_flags).await?;
        let wire = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
        Ok(GetCapacityResponse {
            available_capacity: wire(capacity.available_bytes),
            maximum_volume_size: capacity.maximum_volume_bytes.map(wire),
            minimum_volume_size: None,
        })
    }

    async fn expand(
        &self,
        req: ControllerExpandVolumeRequest,
    ) -> Result<ControllerExpandVolumeResponse> {
        let id = VolumeId::parse(&req.volume_id)?;
        let range = req
            .capacity_range
            .as_ref()
            .ok_or_else(|| missing("capacity_range"))?;
        let capacity = Range::parse(Some(range))?;
        let backend = self.0.backends.for_id(&id)?;
        // Optional; when given, the volume must be able to serve it
        // (spec: "Exceeds capabilities" is INVALID_ARGUMENT).
        let cap = req.volume_capability;
        if let Some(cap) = &cap {
            check_one_well_formed(cap, "volume_capability")?;
        }
        let _guard = self.0.locks.lock(&id.lock_key()).await;
        // Checked against the volume itself: a block capability for a
        // filesystem volume is as wrong as an unsupported one.
        if let Some(cap) = cap {
            let why_not = backend
                .clone()
                .supports_volume(id.clone(), vec![cap])
                .await?;
            if let Some(unsupported) = why_not {
                return Err(Error::InvalidArgument(unsupported.0));
            }
        }
        let expanded = backend.expand(id, capacity).await?;
        Ok(ControllerExpandVolumeResponse {
            capacity_bytes: i64::try_from(expanded.capacity_bytes).unwrap_or(i64::MAX),
            node_expansion_required: expanded.node_expansion_required,
        })
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let req = request.into_inner();
        let name = req.name.clone();
        let this = self.detached();
        observe_to_completion("CreateVolume", name, async move { this.create(req).await }).await
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        let this = self.detached();
        observe_to_completion("DeleteVolume", id, async move { this.delete(req).await }).await
    }

    async fn controller_publish_volume(
        &self,
        _request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        Err(unsupported("ControllerPublishVolume"))
    }

    async fn controller_unpublish_volume(
        &self,
        _request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(unsupported("ControllerUnpublishVolume"))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        observe("ValidateVolumeCapabilities", &id, self.validate(req)).await
    }

    async fn list_volumes(
        &self,
        request: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        observe("ListVolumes", "", self.list(request.into_inner())).await
    }

    async fn get_capacity(
        &self,
        request: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        observe("GetCapacity", "", self.capacity(request.into_inner())).await
    }

    async fn controller_get_capabilities(
        &self,
        _request: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        observe("ControllerGetCapabilities", "", async {
            Ok(ControllerGetCapabilitiesResponse {
                capabilities: capabilities(&self.0)
                    .iter()
                    .map(|t| ControllerServiceCapability {
                        r#type: Some(Type::Rpc(Rpc { r#type: *t as i32 })),
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn create_snapshot(
        &self,
        request: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let req = request.into_inner();
        let name = req.name.clone();
        let driver = self.0.clone();
        observe_to_completion("CreateSnapshot", name, async move {
            crate::snapshots::create(&driver, req).await
        })
        .await
    }

    async fn delete_snapshot(
        &self,
        request: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let req = request.into_inner();
        let id = req.snapshot_id.clone();
        let driver = self.0.clone();
        observe_to_completion("DeleteSnapshot", id, async move {
            crate::snapshots::delete(&driver, req).await
        })
        .await
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let req = request.into_inner();
        observe("ListSnapshots", "", crate::snapshots::list(&self.0, req)).await
    }

    async fn get_snapshot(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        let req = request.into_inner();
        let id = req.snapshot_id.clone();
        observe("GetSnapshot", &id, crate::snapshots::get(&self.0, req)).await
    }

    async fn controller_expand_volume(
        &self,
        request: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let id = req.volume_id.clone();
        let this = self.detached();
        observe_to_completion("ControllerExpandVolume", id, async move {
            this.expand(req).await
        })
        .await
    }

    async fn controller_get_volume(
        &self,
        request: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let req = request.into_inner();
        observe("ControllerGetVolume", &req.volume_id.clone(), async {
            let id = VolumeId::parse(&req.volume_id)?;
            let (volume, health) = self.get(id).await?;
            Ok(ControllerGetVolumeResponse {
                volume: Some(to_wire(volume)),
                status: Some(controller_get_volume_response::VolumeStatus {
                    published_node_ids: Vec::new(),
                    volume_condition: Some(volume_condition(health)),
                }),
            })
        })
        .await
    }

    async fn controller_modify_volume(
        &self,
        _request: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        Err(unsupported("ControllerModifyVolume"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::v1::volume_capability::{AccessType, MountVolume};

    #[test]
    fn mount_flags_are_collected_once_each() {
        let cap = |flags: &[&str]| VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                mount_flags: flags.iter().map(|f| f.to_string()).collect(),
                ..Default::default()
            })),
            access_mode: None,
        };
        let caps = [
            cap(&["hard", "nfsvers=4.1"]),
            cap(&["hard", "nfsvers=4.1", "noatime"]),
        ];
        assert_eq!(mount_flags_of(&caps), ["hard", "nfsvers=4.1", "noatime"]);
    }
}
