//! The CSI Identity service.

use std::sync::Arc;

use cairn_proto::v1::identity_server::Identity;
use cairn_proto::v1::plugin_capability::{service::Type as ServiceType, Service, Type};
use cairn_proto::v1::*;
use tonic::{Request, Response, Status};

use crate::driver::Driver;
use crate::rpc::{blocking, observe};

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
            let mut capabilities = vec![service(ServiceType::VolumeAccessibilityConstraints)];
            if self.0.mode.serves_controller() {
                capabilities.insert(0, service(ServiceType::ControllerService));
            }
            Ok(GetPluginCapabilitiesResponse { capabilities })
        })
        .await
    }

    async fn probe(
        &self,
        _request: Request<ProbeRequest>,
    ) -> Result<Response<ProbeResponse>, Status> {
        let backend = self.0.backend.clone();
        observe("Probe", "", async move {
            // One stat of the local root: cheap, and never blocks the runtime.
            let ready = blocking(move || Ok(backend.ready())).await?;
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
