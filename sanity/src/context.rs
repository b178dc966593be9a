//! What a case works with: the driver's clients (every call recorded so a
//! failure can show it), its capabilities, unique names, per-case paths and
//! the cleanup stack run after the case whatever its outcome.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cairn_proto::v1::controller_client::ControllerClient;
use cairn_proto::v1::identity_client::IdentityClient;
use cairn_proto::v1::node_client::NodeClient;
use cairn_proto::v1::{self, volume_content_source, Volume, VolumeCapability, VolumeContentSource};
use tonic::transport::Channel;
use tonic::Status;

use crate::caps::{Capabilities, ControllerCap, NodeCap, PluginService};
use crate::check::{describe, fail, Stop};
use crate::cleanup::{self, Cleanup};
use crate::config::Config;
use crate::fixtures;
use crate::report::Exchange;

/// How long one RPC may take before the suite gives up on it.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(60);

/// The gRPC clients. Controller may be on its own endpoint, which then
/// serves its own Identity too.
#[derive(Clone)]
pub struct Clients {
    pub identity: IdentityClient<Channel>,
    /// Identity on the controller endpoint (the same as `identity` when
    /// there is one endpoint).
    pub controller_identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl Clients {
    pub fn new(main: Channel, controller: Channel) -> Self {
        Self {
            identity: IdentityClient::new(main.clone()),
            controller_identity: IdentityClient::new(controller.clone()),
            controller: ControllerClient::new(controller),
            node: NodeClient::new(main),
        }
    }
}

/// State shared by every case of a run.
pub struct Shared {
    pub clients: Clients,
    pub caps: Capabilities,
    pub config: Config,
    pub staging_base: PathBuf,
    pub target_base: PathBuf,
    /// Makes this run's volume and snapshot names unique.
    pub run_id: String,
    /// From NodeGetInfo, when the node service answered it.
    pub node_id: Option<String>,
}

struct CaseState {
    index: usize,
    slug: String,
    names: AtomicU32,
    cleanup: Mutex<Vec<Cleanup>>,
    last: Mutex<Option<Exchange>>,
}

/// One case's view of the run. Cheap to clone; clones share the cleanup
/// stack.
#[derive(Clone)]
pub struct Ctx {
    shared: Arc<Shared>,
    case: Arc<CaseState>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a case panicked; its data is still usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A case name made safe for a directory name.
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

macro_rules! rpcs {
    ($($client:ident . $method:ident ( $req:ident ) -> $resp:ident as $wire:literal;)*) => {
        impl Ctx {
            $(
                #[doc = concat!("Calls ", $wire, " and records the exchange.")]
                pub async fn $method(&self, req: v1::$req) -> Result<v1::$resp, Status> {
                    let shown = format!("{req:#?}");
                    let mut client = self.shared.clients.$client.clone();
                    let result = match tokio::time::timeout(RPC_TIMEOUT, client.$method(req)).await {
                        Ok(answer) => answer.map(tonic::Response::into_inner),
                        Err(_) => Err(Status::deadline_exceeded(format!(
                            "cairn-sanity: no answer within {RPC_TIMEOUT:?}"
                        ))),
                    };
                    let response = match &result {
                        Ok(resp) => format!("0 OK {resp:#?}"),
                        Err(status) => describe(status),
                    };
                    *lock(&self.case.last) = Some(Exchange {
                        rpc: $wire.to_string(),
                        request: shown,
                        response,
                    });
                    result
                }
            )*
        }
    };
}

rpcs! {
    identity.get_plugin_info(GetPluginInfoRequest) -> GetPluginInfoResponse as "GetPluginInfo";
    identity.get_plugin_capabilities(GetPluginCapabilitiesRequest) -> GetPluginCapabilitiesResponse as "GetPluginCapabilities";
    identity.probe(ProbeRequest) -> ProbeResponse as "Probe";
    controller.create_volume(CreateVolumeRequest) -> CreateVolumeResponse as "CreateVolume";
    controller.delete_volume(DeleteVolumeRequest) -> DeleteVolumeResponse as "DeleteVolume";
    controller.controller_publish_volume(ControllerPublishVolumeRequest) -> ControllerPublishVolumeResponse as "ControllerPublishVolume";
    controller.controller_unpublish_volume(ControllerUnpublishVolumeRequest) -> ControllerUnpublishVolumeResponse as "ControllerUnpublishVolume";
    controller.validate_volume_capabilities(ValidateVolumeCapabilitiesRequest) -> ValidateVolumeCapabilitiesResponse as "ValidateVolumeCapabilities";
    controller.list_volumes(ListVolumesRequest) -> ListVolumesResponse as "ListVolumes";
    controller.get_capacity(GetCapacityRequest) -> GetCapacityResponse as "GetCapacity";
    controller.controller_get_capabilities(ControllerGetCapabilitiesRequest) -> ControllerGetCapabilitiesResponse as "ControllerGetCapabilities";
    controller.create_snapshot(CreateSnapshotRequest) -> CreateSnapshotResponse as "CreateSnapshot";
    controller.delete_snapshot(DeleteSnapshotRequest) -> DeleteSnapshotResponse as "DeleteSnapshot";
    controller.list_snapshots(ListSnapshotsRequest) -> ListSnapshotsResponse as "ListSnapshots";
    controller.get_snapshot(GetSnapshotRequest) -> GetSnapshotResponse as "GetSnapshot";
    controller.controller_expand_volume(ControllerExpandVolumeRequest) -> ControllerExpandVolumeResponse as "ControllerExpandVolume";
    controller.controller_get_volume(ControllerGetVolumeRequest) -> ControllerGetVolumeResponse as "ControllerGetVolume";
    node.node_stage_volume(NodeStageVolumeRequest) -> NodeStageVolumeResponse as "NodeStageVolume";
    node.node_unstage_volume(NodeUnstageVolumeRequest) -> NodeUnstageVolumeResponse as "NodeUnstageVolume";
    node.node_publish_volume(NodePublishVolumeRequest) -> NodePublishVolumeResponse as "NodePublishVolume";
    node.node_unpublish_volume(NodeUnpublishVolumeRequest) -> NodeUnpublishVolumeResponse as "NodeUnpublishVolume";
    node.node_get_volume_stats(NodeGetVolumeStatsRequest) -> NodeGetVolumeStatsResponse as "NodeGetVolumeStats";
    node.node_expand_volume(NodeExpandVolumeRequest) -> NodeExpandVolumeResponse as "NodeExpandVolume";
    node.node_get_capabilities(NodeGetCapabilitiesRequest) -> NodeGetCapabilitiesResponse as "NodeGetCapabilities";
    node.node_get_info(NodeGetInfoRequest) -> NodeGetInfoResponse as "NodeGetInfo";
}

impl Ctx {
    /// Whether Controller is served on an endpoint of its own.
    pub fn split_endpoints(&self) -> bool {
        self.config()
            .controller_endpoint
            .as_ref()
            .is_some_and(|c| *c != self.config().endpoint)
    }

    /// GetPluginInfo on the controller endpoint, recorded like other calls.
    pub async fn controller_plugin_info(&self) -> Result<v1::GetPluginInfoResponse, Status> {
        let mut client = self.shared.clients.controller_identity.clone();
        let result = match tokio::time::timeout(
            RPC_TIMEOUT,
            client.get_plugin_info(v1::GetPluginInfoRequest {}),
        )
        .await
        {
            Ok(answer) => answer.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded("cairn-sanity: no answer")),
        };
        *lock(&self.case.last) = Some(Exchange {
            rpc: "GetPluginInfo (controller endpoint)".to_string(),
            request: "GetPluginInfoRequest".to_string(),
            response: match &result {
                Ok(resp) => format!("0 OK {resp:#?}"),
                Err(status) => describe(status),
            },
        });
        result
    }

    pub fn new(shared: Arc<Shared>, index: usize, name: &str) -> Self {
        Self {
            shared,
            case: Arc::new(CaseState {
                index,
                slug: slug(name),
                names: AtomicU32::new(0),
                cleanup: Mutex::new(Vec::new()),
                last: Mutex::new(None),
            }),
        }
    }

    pub fn caps(&self) -> &Capabilities {
        &self.shared.caps
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The last RPC this case made.
    pub fn last_exchange(&self) -> Option<Exchange> {
        lock(&self.case.last).clone()
    }

    // ---- capability gates: a missing capability skips the case ----

    pub fn need_controller(&self, cap: ControllerCap) -> Result<(), Stop> {
        match &self.caps().controller {
            None => Err(Stop::Skip(self.why_no_controller())),
            Some(caps) if caps.contains(&cap) => Ok(()),
            Some(_) => Err(Stop::Skip(format!(
                "controller does not advertise {}",
                cap.as_str_name()
            ))),
        }
    }

    pub fn need_controller_service(&self) -> Result<(), Stop> {
        match self.caps().controller {
            Some(_) => Ok(()),
            None => Err(Stop::Skip(self.why_no_controller())),
        }
    }

    fn why_no_controller(&self) -> String {
        if self.caps().has_plugin(PluginService::ControllerService) {
            "controller capabilities unknown (ControllerGetCapabilities failed)".to_string()
        } else {
            "plugin does not advertise CONTROLLER_SERVICE".to_string()
        }
    }

    pub fn need_node_service(&self) -> Result<(), Stop> {
        match self.caps().node {
            Some(_) => Ok(()),
            None => Err(Stop::Skip(
                "node service unavailable (NodeGetCapabilities failed)".to_string(),
            )),
        }
    }

    pub fn need_node(&self, cap: NodeCap) -> Result<(), Stop> {
        self.need_node_service()?;
        if self.caps().has_node(cap) {
            Ok(())
        } else {
            Err(Stop::Skip(format!(
                "node does not advertise {}",
                cap.as_str_name()
            )))
        }
    }

    pub fn need_plugin(&self, service: PluginService) -> Result<(), Stop> {
        if self.caps().has_plugin(service) {
            Ok(())
        } else {
            Err(Stop::Skip(format!(
                "plugin does not advertise {}",
                service.as_str_name()
            )))
        }
    }

    /// Node cases need a volume to work on, and the suite can only get one
    /// by creating it.
    pub fn need_node_volume(&self) -> Result<(), Stop> {
        self.need_node_service()?;
        self.need_controller(ControllerCap::CreateDeleteVolume)
            .map_err(|_| Stop::Skip("node cases need CREATE_DELETE_VOLUME to get a volume".into()))
    }

    // ---- names and parameters ----

    /// A name no other case or run uses: `sanity-<run>-<case>-<n>`.
    pub fn unique_name(&self) -> String {
        let n = self.case.names.fetch_add(1, Ordering::Relaxed);
        format!("sanity-{}-{}-{n}", self.shared.run_id, self.case.index)
    }

    pub fn params(&self) -> HashMap<String, String> {
        self.config().params.clone().into_iter().collect()
    }

    pub fn snapshot_params(&self) -> HashMap<String, String> {
        self.config().snapshot_params.clone().into_iter().collect()
    }

    pub fn size(&self) -> i64 {
        fixtures::bytes(self.config().volume_size)
    }

    pub fn node_id(&self) -> Option<&str> {
        self.shared.node_id.as_deref()
    }

    /// The request the external-provisioner sends for a ReadWriteOnce PVC.
    pub fn volume_request(&self, name: &str) -> v1::CreateVolumeRequest {
        v1::CreateVolumeRequest {
            name: name.to_string(),
            capacity_range: fixtures::range(self.size(), 0),
            volume_capabilities: vec![fixtures::single_writer()],
            parameters: self.params(),
            ..Default::default()
        }
    }

    // ---- cleanup ----

    pub fn defer(&self, item: Cleanup) {
        lock(&self.case.cleanup).push(item);
    }

    /// Undoes everything the case registered, newest first; returns what
    /// could not be undone.
    pub async fn run_cleanup(&self) -> Vec<String> {
        let items: Vec<Cleanup> = std::mem::take(&mut *lock(&self.case.cleanup));
        let mut leftovers = Vec::new();
        for item in items.into_iter().rev() {
            if let Err(problem) = self.undo(&item).await {
                leftovers.push(problem);
            }
        }
        leftovers
    }

    async fn undo(&self, item: &Cleanup) -> Result<(), String> {
        let result = match item {
            Cleanup::DeleteVolume(id) => self
                .delete_volume(v1::DeleteVolumeRequest {
                    volume_id: id.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Cleanup::DeleteSnapshot(id) => self
                .delete_snapshot(v1::DeleteSnapshotRequest {
                    snapshot_id: id.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Cleanup::ControllerUnpublish { volume_id, node_id } => self
                .controller_unpublish_volume(v1::ControllerUnpublishVolumeRequest {
                    volume_id: volume_id.clone(),
                    node_id: node_id.clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Cleanup::NodeUnstage {
                volume_id,
                staging_path,
            } => self
                .node_unstage_volume(v1::NodeUnstageVolumeRequest {
                    volume_id: volume_id.clone(),
                    staging_target_path: staging_path.clone(),
                })
                .await
                .map(drop),
            Cleanup::NodeUnpublish {
                volume_id,
                target_path,
            } => self
                .node_unpublish_volume(v1::NodeUnpublishVolumeRequest {
                    volume_id: volume_id.clone(),
                    target_path: target_path.clone(),
                })
                .await
                .map(drop),
            Cleanup::RemoveDir(dir) => return cleanup::remove_dir(dir),
        };
        result.map_err(|status| format!("{item:?}: {}", describe(&status)))
    }

    // ---- volumes and snapshots the case owns ----

    /// CreateVolume whose volume, if created, is deleted after the case.
    pub async fn try_create_volume(
        &self,
        req: v1::CreateVolumeRequest,
    ) -> Result<v1::CreateVolumeResponse, Status> {
        let resp = self.create_volume(req).await?;
        if let Some(volume) = &resp.volume {
            self.defer(Cleanup::DeleteVolume(volume.volume_id.clone()));
        }
        Ok(resp)
    }

    /// A fresh volume with the default request; a failure here is a setup
    /// failure of the case.
    pub async fn new_volume(&self) -> Result<Volume, Stop> {
        self.need_controller(ControllerCap::CreateDeleteVolume)?;
        let name = self.unique_name();
        let req = self.volume_request(&name);
        self.volume_from(req).await
    }

    /// Creates the volume `req` describes and insists it comes back.
    pub async fn volume_from(&self, req: v1::CreateVolumeRequest) -> Result<Volume, Stop> {
        let resp = self
            .try_create_volume(req)
            .await
            .map_err(|s| fail(format!("setup: CreateVolume failed: {}", describe(&s))))?;
        let volume = resp.volume.ok_or_else(|| {
            fail("CreateVolume returned OK without a volume (volume is REQUIRED)")
        })?;
        if volume.volume_id.is_empty() {
            return Err(fail("CreateVolume returned an empty volume_id (REQUIRED)"));
        }
        Ok(volume)
    }

    /// The id of a volume that existed and was deleted: well-formed for this
    /// driver, and certainly unknown to it.
    pub async fn deleted_volume_id(&self) -> Result<String, Stop> {
        let volume = self.new_volume().await?;
        self.delete_volume(v1::DeleteVolumeRequest {
            volume_id: volume.volume_id.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| fail(format!("setup: DeleteVolume failed: {}", describe(&s))))?;
        Ok(volume.volume_id)
    }

    /// Ids the plugin never issued, so they name nothing: a plain one and a
    /// 128-byte one full of path and shell characters (unique, so even a
    /// driver that used it as a path would find nothing there).
    pub fn never_issued_ids(&self) -> Vec<String> {
        let unique = self.unique_name();
        let plain = format!("cairn-sanity-never-issued-{unique}");
        let mut odd = format!("../../cairn-sanity never/issued\\{unique}:%2e%2e;*?$(x)\u{e9}-");
        while odd.len() < 128 {
            odd.push('x');
        }
        while odd.len() > 128 {
            odd.pop();
        }
        vec![plain, odd]
    }

    /// A snapshot of `source_volume_id`, deleted after the case.
    pub async fn new_snapshot(&self, source_volume_id: &str) -> Result<v1::Snapshot, Stop> {
        self.need_controller(ControllerCap::CreateDeleteSnapshot)?;
        let name = self.unique_name();
        let resp = self
            .try_create_snapshot(v1::CreateSnapshotRequest {
                source_volume_id: source_volume_id.to_string(),
                name,
                parameters: self.snapshot_params(),
                ..Default::default()
            })
            .await
            .map_err(|s| fail(format!("setup: CreateSnapshot failed: {}", describe(&s))))?;
        resp.snapshot
            .ok_or_else(|| fail("CreateSnapshot returned OK without a snapshot (REQUIRED)"))
    }

    /// CreateSnapshot whose snapshot, if created, is deleted after the case.
    pub async fn try_create_snapshot(
        &self,
        req: v1::CreateSnapshotRequest,
    ) -> Result<v1::CreateSnapshotResponse, Status> {
        let resp = self.create_snapshot(req).await?;
        if let Some(snap) = &resp.snapshot {
            self.defer(Cleanup::DeleteSnapshot(snap.snapshot_id.clone()));
        }
        Ok(resp)
    }

    // ---- node paths, laid out the way the kubelet lays them out ----

    fn case_dir(&self, base: &Path, n: u32) -> PathBuf {
        match n {
            0 => base.join(&self.case.slug),
            n => base.join(format!("{}-{n}", self.case.slug)),
        }
    }

    /// `<staging-base>/<case>/globalmount`, created like the kubelet does.
    pub fn staging_dir(&self, n: u32) -> Result<String, Stop> {
        let parent = self.case_dir(&self.shared.staging_base, n);
        let dir = parent.join("globalmount");
        self.make_dir(&parent, &dir)?;
        Ok(dir.display().to_string())
    }

    /// `<target-base>/<case>/mount`: the suite creates the parent and leaves
    /// `mount` to the driver, as the kubelet does.
    pub fn target_path(&self, n: u32) -> Result<String, Stop> {
        let parent = self.case_dir(&self.shared.target_base, n);
        self.make_dir(&parent, &parent)?;
        Ok(parent.join("mount").display().to_string())
    }

    fn make_dir(&self, owned: &Path, dir: &Path) -> Result<(), Stop> {
        self.defer(Cleanup::RemoveDir(owned.to_path_buf()));
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("setup: cannot create {}: {e}", dir.display())))
    }

    /// Stages `volume` at a fresh staging dir when the node wants staging
    /// (after ControllerPublish when the controller wants that); returns the
    /// staging path, empty when the driver does not stage.
    pub async fn stage(&self, volume: &Volume) -> Result<String, Stop> {
        self.stage_with(volume, 0, fixtures::single_writer()).await
    }

    /// `stage` at staging dir `n` with capability `cap` (ControllerPublish
    /// too), so one case can stage several volumes or other access modes.
    pub async fn stage_with(
        &self,
        volume: &Volume,
        n: u32,
        cap: VolumeCapability,
    ) -> Result<String, Stop> {
        let publish_context = self.controller_publish(volume, &cap).await?;
        if !self.caps().has_node(NodeCap::StageUnstageVolume) {
            return Ok(String::new());
        }
        let staging = self.staging_dir(n)?;
        self.node_stage_volume(v1::NodeStageVolumeRequest {
            volume_id: volume.volume_id.clone(),
            publish_context,
            staging_target_path: staging.clone(),
            volume_capability: Some(cap),
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| fail(format!("setup: NodeStageVolume failed: {}", describe(&s))))?;
        self.defer(Cleanup::NodeUnstage {
            volume_id: volume.volume_id.clone(),
            staging_path: staging.clone(),
        });
        Ok(staging)
    }

    async fn controller_publish(
        &self,
        volume: &Volume,
        cap: &VolumeCapability,
    ) -> Result<HashMap<String, String>, Stop> {
        if !self
            .caps()
            .has_controller(ControllerCap::PublishUnpublishVolume)
        {
            return Ok(HashMap::new());
        }
        let node_id = self
            .node_id()
            .ok_or_else(|| {
                fail("setup: ControllerPublishVolume needs a node id and NodeGetInfo gave none")
            })?
            .to_string();
        let resp = self
            .controller_publish_volume(v1::ControllerPublishVolumeRequest {
                volume_id: volume.volume_id.clone(),
                node_id: node_id.clone(),
                volume_capability: Some(cap.clone()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| {
                fail(format!(
                    "setup: ControllerPublishVolume failed: {}",
                    describe(&s)
                ))
            })?;
        self.defer(Cleanup::ControllerUnpublish {
            volume_id: volume.volume_id.clone(),
            node_id,
        });
        Ok(resp.publish_context)
    }

    /// The publish request the kubelet sends for `volume`.
    pub fn publish_request(
        &self,
        volume: &Volume,
        staging: &str,
        target: &str,
        readonly: bool,
    ) -> v1::NodePublishVolumeRequest {
        v1::NodePublishVolumeRequest {
            volume_id: volume.volume_id.clone(),
            staging_target_path: staging.to_string(),
            target_path: target.to_string(),
            volume_capability: Some(fixtures::single_writer()),
            readonly,
            volume_context: volume.volume_context.clone(),
            ..Default::default()
        }
    }

    /// NodePublishVolume at target `n`; unpublished after the case.
    pub async fn publish(
        &self,
        volume: &Volume,
        staging: &str,
        n: u32,
        readonly: bool,
    ) -> Result<String, Stop> {
        let target = self.target_path(n)?;
        let req = self.publish_request(volume, staging, &target, readonly);
        self.try_publish(req)
            .await
            .map_err(|s| fail(format!("setup: NodePublishVolume failed: {}", describe(&s))))?;
        Ok(target)
    }

    /// NodePublishVolume whose target, if published, is unpublished after
    /// the case.
    pub async fn try_publish(&self, req: v1::NodePublishVolumeRequest) -> Result<(), Status> {
        let volume_id = req.volume_id.clone();
        let target_path = req.target_path.clone();
        self.node_publish_volume(req).await?;
        self.defer(Cleanup::NodeUnpublish {
            volume_id,
            target_path,
        });
        Ok(())
    }

    /// A new volume, staged and published read-write: what a running pod has.
    pub async fn published_volume(&self) -> Result<(Volume, String, String), Stop> {
        self.need_node_volume()?;
        let volume = self.new_volume().await?;
        let staging = self.stage(&volume).await?;
        let target = self.publish(&volume, &staging, 0, false).await?;
        Ok((volume, staging, target))
    }
}

/// A content source naming a snapshot.
pub fn snapshot_source(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: id.to_string(),
            },
        )),
    })
}

/// A content source naming a volume.
pub fn volume_source(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: id.to_string(),
            },
        )),
    })
}

/// The one capability a case asks about, for requests that take a list.
pub fn caps_list(cap: VolumeCapability) -> Vec<VolumeCapability> {
    vec![cap]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_path_safe() {
        assert_eq!(
            slug("NodePublishVolume/read-only EROFS"),
            "nodepublishvolume_read-only_erofs"
        );
        assert_eq!(slug("../x"), "___x");
    }
}
