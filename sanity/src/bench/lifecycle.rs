//! One volume's life as a cluster drives it, timed RPC by RPC.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::v1::{self, volume_capability::access_mode::Mode};
use tonic::Status;

use super::stats::{Samples, Stats};
use crate::caps::{Capabilities, NodeCap};
use crate::context::{Clients, RPC_TIMEOUT};
use crate::fixtures;

/// Shared by every worker of one measurement.
pub struct Driver {
    pub clients: Clients,
    pub caps: Capabilities,
    pub params: HashMap<String, String>,
    pub size: i64,
    pub staging_base: PathBuf,
    pub target_base: PathBuf,
    pub samples: Mutex<HashMap<&'static str, Samples>>,
    pub lifecycles: Mutex<Samples>,
}

/// What a published volume needs to be taken down again.
pub struct Published {
    volume_id: String,
    staging: String,
    target: String,
    dirs: Vec<PathBuf>,
}

async fn timed<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(RPC_TIMEOUT, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("no answer")),
    }
}

macro_rules! measured {
    ($self:ident, $rpc:literal, $call:expr) => {{
        let started = Instant::now();
        let result = timed($call).await;
        $self.record($rpc, started.elapsed(), result.is_ok());
        result
    }};
}

impl Driver {
    fn record(&self, rpc: &'static str, took: Duration, ok: bool) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.entry(rpc).or_default().record(took, ok);
    }

    /// Forgets every sample: preloading is not part of a measurement.
    pub fn reset(&self) {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        *self.lifecycles.lock().unwrap_or_else(|p| p.into_inner()) = Samples::default();
    }

    /// The whole lifecycle's and each RPC's summary of the samples so far.
    pub fn summaries(&self) -> (Stats, BTreeMap<String, Stats>) {
        let lifecycle = self
            .lifecycles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .summary();
        let rpcs = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(rpc, s)| (rpc.to_string(), s.summary()))
            .collect();
        (lifecycle, rpcs)
    }

    fn stages(&self) -> bool {
        self.caps.has_node(NodeCap::StageUnstageVolume)
    }

    /// Create, stage, publish: a pod is running on the volume.
    pub async fn bring_up(self: &Arc<Self>, name: &str) -> Result<Published, Status> {
        let cap = fixtures::mount(Mode::SingleNodeWriter);
        let mut controller = self.clients.controller.clone();
        let mut node = self.clients.node.clone();
        let created = measured!(
            self,
            "CreateVolume",
            controller.create_volume(v1::CreateVolumeRequest {
                name: name.to_string(),
                capacity_range: fixtures::range(self.size, 0),
                volume_capabilities: vec![cap.clone()],
                parameters: self.params.clone(),
                ..Default::default()
            })
        )?;
        let volume = created.volume.unwrap_or_default();
        let mut up = Published {
            volume_id: volume.volume_id.clone(),
            staging: String::new(),
            target: String::new(),
            dirs: Vec::new(),
        };
        let result = self.mount(&mut node, &mut up, &volume, cap).await;
        match result {
            Ok(()) => Ok(up),
            Err(status) => {
                self.tear_down(up).await;
                Err(status)
            }
        }
    }

    async fn mount(
        &self,
        node: &mut cairn_proto::v1::node_client::NodeClient<tonic::transport::Channel>,
        up: &mut Published,
        volume: &v1::Volume,
        cap: v1::VolumeCapability,
    ) -> Result<(), Status> {
        if self.stages() {
            let parent = self.staging_base.join(volume_dir(&up.volume_id));
            let staging = parent.join("globalmount");
            make_dir(&staging)?;
            up.dirs.push(parent);
            up.dirs.push(staging.clone());
            measured!(
                self,
                "NodeStageVolume",
                node.node_stage_volume(v1::NodeStageVolumeRequest {
                    volume_id: up.volume_id.clone(),
                    staging_target_path: staging.display().to_string(),
                    volume_capability: Some(cap.clone()),
                    volume_context: volume.volume_context.clone(),
                    ..Default::default()
                })
            )?;
            up.staging = staging.display().to_string();
        }
        let parent = self.target_base.join(volume_dir(&up.volume_id));
        make_dir(&parent)?;
        up.dirs.push(parent.clone());
        // The driver removes `mount` itself; this only catches leftovers.
        up.dirs.push(parent.join("mount"));
        let target = parent.join("mount").display().to_string();
        measured!(
            self,
            "NodePublishVolume",
            node.node_publish_volume(v1::NodePublishVolumeRequest {
                volume_id: up.volume_id.clone(),
                staging_target_path: up.staging.clone(),
                target_path: target.clone(),
                volume_capability: Some(cap),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            })
        )?;
        up.target = target;
        Ok(())
    }

    /// The kubelet's periodic stats call on a published volume.
    pub async fn stats(&self, up: &Published) -> Result<(), Status> {
        if !self.caps.has_node(NodeCap::GetVolumeStats) {
            return Ok(());
        }
        let mut node = self.clients.node.clone();
        measured!(
            self,
            "NodeGetVolumeStats",
            node.node_get_volume_stats(v1::NodeGetVolumeStatsRequest {
                volume_id: up.volume_id.clone(),
                volume_path: up.target.clone(),
                staging_target_path: up.staging.clone(),
            })
        )
        .map(drop)
    }

    /// Unpublish, unstage, delete, remove dirs (deepest first); returns
    /// whether all of it worked (steps after a failure still run, to leave
    /// nothing behind).
    pub async fn tear_down(&self, up: Published) -> bool {
        let mut node = self.clients.node.clone();
        let mut controller = self.clients.controller.clone();
        let mut ok = true;
        if !up.target.is_empty() {
            ok &= measured!(
                self,
                "NodeUnpublishVolume",
                node.node_unpublish_volume(v1::NodeUnpublishVolumeRequest {
                    volume_id: up.volume_id.clone(),
                    target_path: up.target.clone(),
                })
            )
            .is_ok();
        }
        if !up.staging.is_empty() {
            ok &= measured!(
                self,
                "NodeUnstageVolume",
                node.node_unstage_volume(v1::NodeUnstageVolumeRequest {
                    volume_id: up.volume_id.clone(),
                    staging_target_path: up.staging.clone(),
                })
            )
            .is_ok();
        }
        if !up.volume_id.is_empty() {
            ok &= measured!(
                self,
                "DeleteVolume",
                controller.delete_volume(v1::DeleteVolumeRequest {
                    volume_id: up.volume_id.clone(),
                    ..Default::default()
                })
            )
            .is_ok();
        }
        for dir in up.dirs.iter().rev() {
            ok &= remove_empty_dir(dir);
        }
        ok
    }

    /// `calls` Probes one after another: what one round trip to this driver
    /// costs with no work behind it. Kept apart from the lifecycle samples.
    pub async fn round_trip(&self, calls: usize) -> Samples {
        let mut identity = self.clients.identity.clone();
        let mut samples = Samples::default();
        for _ in 0..calls {
            let started = Instant::now();
            let answer = timed(identity.probe(v1::ProbeRequest {})).await;
            samples.record(started.elapsed(), answer.is_ok());
        }
        samples
    }

    /// The whole lifecycle once; its wall time is one lifecycle sample.
    pub async fn lifecycle(self: &Arc<Self>, name: &str) {
        let started = Instant::now();
        let ok = match self.bring_up(name).await {
            Ok(up) => {
                let stats = self.stats(&up).await.is_ok();
                self.tear_down(up).await && stats
            }
            Err(_) => false,
        };
        let mut lifecycles = self.lifecycles.lock().unwrap_or_else(|p| p.into_inner());
        lifecycles.record(started.elapsed(), ok);
    }
}

/// Volume ids may hold `:` or `/`; directory names may not hold `/`.
fn volume_dir(volume_id: &str) -> String {
    volume_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// rmdir, as the kubelet does: it refuses non-empty dirs and mount points,
/// so it can never delete a volume's data, and it costs one syscall (unlike
/// scanning the mount table, which would grow with K and skew the timing).
fn remove_empty_dir(path: &Path) -> bool {
    match std::fs::remove_dir(path) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn make_dir(path: &Path) -> Result<(), Status> {
    std::fs::create_dir_all(path)
        .map_err(|e| Status::internal(format!("cairn-bench: mkdir {}: {e}", path.display())))
}
