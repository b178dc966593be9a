//! The CSI Identity service.

use std::sync::Arc;

use cairn_proto::v1::identity_server::Identity;
use cairn_proto::v1::plugin_capability::{
    service::Type as ServiceType, volume_expansion, Service, Type, VolumeExpansion,
};
use cairn_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::driver::Driver;
use crate::rpc::{node_work, observe};

pub struct IdentityService(pub Arc<Driver>);

fn service(kind: ServiceType) -> PluginCapability {
    PluginCapability {
        r#type: Some(Type::Service(Service {
            r#type: kind as i32,
        })),
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _request: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        observe("GetPluginInfo", "", async {
            Ok(GetPluginInfoResponse {
                name: self.0.name.clone(),
                vendor_version: env!("CARGO_PKG_VERSION").to_string(),
                manifest: Default::default(),
            })
        })
        .await
    }

    async fn get_plugin_capabilities(
        &self,
        _request: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        observe("GetPluginCapabilities", "", async {
            let mut capabilities = Vec::new();
            if self.0.mode.serves_controller() {
                capabilities.push(service(ServiceType::ControllerService));
            }
            // Volumes bound to a node (local ones) are reachable from it only.
            if self.0.backends.binds_to_nodes() {
                capabilities.push(service(ServiceType::VolumeAccessibilityConstraints));
            }
            // Volumes grow while in use: a local volume's quota limit and an
            // NFS volume's recorded size change under a mounted volume.
            capabilities.push(PluginCapability {
                r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32,
                })),
            });
            Ok(GetPluginCapabilitiesResponse { capabilities })
        })
        .await
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let backends = self.0.backends.clone();
        observe("Probe", "", async move {
            // Each backend's own cheap check (one stat of the local root),
            // on the runtime's thread when nothing else is in flight, like
            // other short local work (`node_work`). NFS servers are not
            // probed: a slow server must not make the kubelet restart the
            // driver.
            let ready = node_work(true, move || Ok(backends.ready())).await?;
            if let Err(e) = &ready {
                tracing::warn!(error = %e, "not ready");
            }
            Ok(ProbeResponse {
                ready: Some(ready.is_ok()),
            })
        })
        .await
    }
}
