//! The CSI snapshot calls — CreateSnapshot, DeleteSnapshot, ListSnapshots,
//! GetSnapshot — and CreateVolume's `volume_content_source`: validation,
//! conversion to and from the wire, and waiting on copies. The controller's
//! handlers call these; what a snapshot is on disk lives in
//! `backend::local::snapshot`. Only local volumes have snapshots.
//!
//! `ready_to_use` is honest: CreateSnapshot waits up to [`GRACE`] for the
//! copy (a reflink copy finishes in milliseconds) and otherwise answers
//! `ready_to_use: false` while the copy goes on; the external-snapshotter
//! repeats the call, which joins the running copy, until it is ready.
//!
//! How that reads against the spec: a local snapshot is "cut" when
//! CreateSnapshot first answers with its id, and the copy still running is
//! its "post-processing" (spec: `ready_to_use` false until processed), so
//! ListSnapshots and GetSnapshot show it, not ready. A file-by-file copy is
//! no point-in-time image in any case: an application that needs one must
//! hold its writes until the snapshot is ready, not only until the call
//! returns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use cairn_proto::v1::controller_service_capability::rpc::Type as RpcType;
use cairn_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use cairn_proto::v1::*;

use crate::backend::local::{LocalBackend, RestoreState, SnapshotState};
use crate::backend::{self, Backend, NewVolume};
use crate::driver::Driver;
use crate::error::{missing, Error, Result};
use crate::ids::{ContentSource, SnapshotId, VolumeId, VolumeKey, VolumeName};
use crate::rpc::blocking;

/// How long CreateSnapshot waits for its copy before answering
/// `ready_to_use: false`.
pub const GRACE: Duration = Duration::from_secs(1);

/// Keys external-snapshotter adds with `--extra-create-metadata`.
const SNAPSHOTTER_PREFIX: &str = "csi.storage.k8s.io/";
/// VolumeSnapshotClass parameters a local snapshot understands: none yet.
const KNOWN_PARAMETERS: &[&str] = &[];

/// `Backend::kind` of the local backend, the one with snapshots.
const LOCAL: &str = "local";

/// Controller capabilities a driver serving local volumes adds.
pub const CAPABILITIES: &[RpcType] = &[
    RpcType::CreateDeleteSnapshot,
    RpcType::ListSnapshots,
    RpcType::GetSnapshot,
    RpcType::CloneVolume,
];

/// The local backend; snapshot calls are not offered without it.
fn local(driver: &Driver) -> Result<Arc<LocalBackend>> {
    driver.backends.local.clone().ok_or_else(|| {
        Error::Unimplemented(
            "snapshots are taken of local volumes, which this cairn-csi does not serve".into(),
        )
    })
}

fn to_wire(snapshot: backend::local::Snapshot) -> Snapshot {
    let since = snapshot
        .created
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Snapshot {
        size_bytes: i64::try_from(snapshot.size_bytes).unwrap_or(i64::MAX),
        snapshot_id: snapshot.id.to_string(),
        source_volume_id: snapshot.source.to_string(),
        creation_time: Some(prost_types::Timestamp {
            seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
        }),
        ready_to_use: snapshot.ready,
        group_snapshot_id: String::new(),
    }
}

/// Refuses VolumeSnapshotClass parameters by name (a typo must not pass
/// silently); the snapshotter's own metadata keys are accepted.
fn check_parameters(parameters: &HashMap<String, String>) -> Result<()> {
    let mut unknown: Vec<&str> = parameters
        .keys()
        .map(String::as_str)
        .filter(|k| !k.starts_with(SNAPSHOTTER_PREFIX) && !KNOWN_PARAMETERS.contains(k))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    Err(Error::InvalidArgument(format!(
        "unknown parameters for a local snapshot: {}",
        unknown.join(", ")
    )))
}

/// CreateSnapshot. Secrets are ignored: local snapshots need none.
pub async fn create(driver: &Driver, req: CreateSnapshotRequest) -> Result<CreateSnapshotResponse> {
    let name = VolumeName::parse(&req.name)?;
    if req.source_volume_id.is_empty() {
        return Err(missing("source_volume_id"));
    }
    let source = VolumeId::parse(&req.source_volume_id)?;
    check_parameters(&req.parameters)?;
    let local = local(driver)?;
    if let VolumeId::Nfs(_) = source {
        return Err(Error::InvalidArgument(format!(
            "volume {source} is an NFS volume; only local volumes can be snapshotted"
        )));
    }
    let id = local.snapshot_id(name.key());
    let _guard = driver.locks.lock(&id.lock_key()).await;
    let state = {
        let local = local.clone();
        blocking(move || local.snapshot_state(&name, &source)).await?
    };
    let job = match state {
        SnapshotState::Ready(snapshot) => {
            return Ok(CreateSnapshotResponse {
                snapshot: Some(to_wire(snapshot)),
            })
        }
        SnapshotState::Running(job) => job,
        SnapshotState::New(plan) => local.start_snapshot(plan),
    };
    let snapshot = match tokio::time::timeout(GRACE, job.wait()).await {
        Ok(done) => done?,
        // Still copying: not ready; the next call joins this copy.
        Err(_) => job.plan.pending.clone(),
    };
    Ok(CreateSnapshotResponse {
        snapshot: Some(to_wire(snapshot)),
    })
}

/// DeleteSnapshot: a copy still running for the snapshot is stopped first.
pub async fn delete(driver: &Driver, req: DeleteSnapshotRequest) -> Result<DeleteSnapshotResponse> {
    if req.snapshot_id.is_empty() {
        return Err(missing("snapshot_id"));
    }
    let id = SnapshotId::parse(&req.snapshot_id)?;
    let local = local(driver)?;
    let _guard = driver.locks.lock(&id.lock_key()).await;
    if let Some(job) = local.snapshot_job(&id) {
        job.cancel();
        // Cancelled, failed or (having raced the cancel) finished: what is
        // on disk now is deleted below.
        let _ = job.wait().await;
    }
    blocking(move || local.delete_snapshot(&id)).await?;
    Ok(DeleteSnapshotResponse {})
}

/// GetSnapshot: NotFound for a snapshot that does not exist (here).
pub async fn get(driver: &Driver, req: GetSnapshotRequest) -> Result<GetSnapshotResponse> {
    if req.snapshot_id.is_empty() {
        return Err(missing("snapshot_id"));
    }
    let id = SnapshotId::parse(&req.snapshot_id)?;
    let local = local(driver)?;
    let snapshot = blocking(move || {
        local
            .snapshot(&id)?
            .ok_or_else(|| Error::NotFound(format!("snapshot {id} does not exist")))
    })
    .await?;
    Ok(GetSnapshotResponse {
        snapshot: Some(to_wire(snapshot)),
    })
}

/// ListSnapshots with pagination (the token is the last key returned) and
/// the snapshot_id / source_volume_id filters. A filter naming something
/// that does not exist here — malformed, another node's, deleted — lists
/// nothing (spec: not an error).
pub async fn list(driver: &Driver, req: ListSnapshotsRequest) -> Result<ListSnapshotsResponse> {
    let max = usize::try_from(req.max_entries)
        .map_err(|_| Error::InvalidArgument("max_entries must not be negative".into()))?;
    let after = if req.starting_token.is_empty() {
        None
    } else {
        Some(VolumeKey::parse(&req.starting_token).map_err(|_| {
            Error::Aborted(format!(
                "starting_token {:?} is not a token this driver issued",
                req.starting_token
            ))
        })?)
    };
    let local = local(driver)?;
    let source = if req.source_volume_id.is_empty() {
        None
    } else {
        match VolumeId::parse(&req.source_volume_id) {
            Ok(id) => Some(id),
            Err(_) => return Ok(ListSnapshotsResponse::default()),
        }
    };
    let entry = |snapshot| list_snapshots_response::Entry {
        snapshot: Some(to_wire(snapshot)),
    };
    if !req.snapshot_id.is_empty() {
        let Ok(id) = SnapshotId::parse(&req.snapshot_id) else {
            return Ok(ListSnapshotsResponse::default());
        };
        let found = blocking(move || local.snapshot(&id)).await?;
        return Ok(ListSnapshotsResponse {
            entries: found
                .filter(|s| source.as_ref().is_none_or(|src| &s.source == src))
                .map(entry)
                .into_iter()
                .collect(),
            next_token: String::new(),
        });
    }
    let page = blocking(move || local.list_snapshots(after.as_ref(), max, source.as_ref())).await?;
    Ok(ListSnapshotsResponse {
        entries: page.snapshots.into_iter().map(entry).collect(),
        next_token: page.next.map(|k| k.to_string()).unwrap_or_default(),
    })
}

/// CreateVolume's `volume_content_source`, validated for a volume of
/// `backend`. Only local volumes can be made from a source: for any other
/// the source is unsupported (INVALID_ARGUMENT, as the spec asks of a plugin
/// that cannot create from it). A source id this driver could never have
/// issued names nothing that exists: NotFound, as for a deleted one.
pub fn content_source(
    wire: Option<&VolumeContentSource>,
    backend: &dyn Backend,
) -> Result<Option<ContentSource>> {
    let Some(wire) = wire else {
        return Ok(None);
    };
    if backend.kind() != LOCAL {
        return Err(Error::InvalidArgument(format!(
            "{} volumes cannot be created from a snapshot or another volume",
            backend.kind()
        )));
    }
    let unknown = |what: &str, id: &str, e: Error| {
        Error::NotFound(format!("{what} {id:?} does not exist: {e}"))
    };
    match &wire.r#type {
        None => Err(Error::InvalidArgument(
            "volume_content_source names neither a snapshot nor a volume".into(),
        )),
        Some(SourceType::Snapshot(SnapshotSource { snapshot_id })) => {
            if snapshot_id.is_empty() {
                return Err(missing("volume_content_source.snapshot.snapshot_id"));
            }
            SnapshotId::parse(snapshot_id)
                .map(|id| Some(ContentSource::Snapshot(id)))
                .map_err(|e| unknown("snapshot", snapshot_id, e))
        }
        Some(SourceType::Volume(VolumeSource { volume_id })) => {
            if volume_id.is_empty() {
                return Err(missing("volume_content_source.volume.volume_id"));
            }
            VolumeId::parse(volume_id)
                .map(|id| Some(ContentSource::Volume(id)))
                .map_err(|e| unknown("volume", volume_id, e))
        }
    }
}

/// The wire form of a content source, for CreateVolume's answer.
pub fn source_to_wire(source: &ContentSource) -> VolumeContentSource {
    VolumeContentSource {
        r#type: Some(match source {
            ContentSource::Snapshot(id) => SourceType::Snapshot(SnapshotSource {
                snapshot_id: id.to_string(),
            }),
            ContentSource::Volume(id) => SourceType::Volume(VolumeSource {
                volume_id: id.to_string(),
            }),
        }),
    }
}

/// CreateVolume of a local volume from a snapshot (restore) or a volume
/// (clone), `source` from [`content_source`]: waits for the copy, joining
/// one that a previous call (whose caller gave up) started. The caller
/// holds the volume's lock.
pub async fn create_volume_from(
    driver: &Driver,
    request: NewVolume,
    source: &ContentSource,
) -> Result<backend::Volume> {
    let local = local(driver)?;
    let state = {
        let (local, source) = (local.clone(), source.clone());
        blocking(move || local.restore_state(&request, &source)).await?
    };
    let job = match state {
        RestoreState::Existing(volume) => return Ok(volume),
        RestoreState::Running(job) => job,
        RestoreState::New(plan) => local.start_restore(plan),
    };
    job.wait().await
}

/// Stops a restore still running for `id` (DeleteVolume of a volume whose
/// CreateVolume was given up on), so it cannot appear after the delete.
pub async fn stop_restore(driver: &Driver, id: &VolumeId) {
    let Some(job) = driver
        .backends
        .local
        .as_ref()
        .and_then(|local| local.restore_job(id))
    else {
        return;
    };
    job.cancel();
    let _ = job.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_source_for_an_nfs_volume_is_unsupported_whatever_its_id() {
        let nfs = crate::backend::nfs::NfsBackend::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            1 << 20,
            tokio::runtime::Handle::current(),
        );
        for id in ["sanity-no-such-snapshot", "snap:node-a:s1"] {
            let wire = VolumeContentSource {
                r#type: Some(SourceType::Snapshot(SnapshotSource {
                    snapshot_id: id.into(),
                })),
            };
            let err = content_source(Some(&wire), &nfs).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{id}: {err}");
        }
    }

    #[test]
    fn unknown_parameters_are_named_and_snapshotter_metadata_passes() {
        let mut p = HashMap::new();
        p.insert(
            "csi.storage.k8s.io/volumesnapshot/name".to_string(),
            "s".to_string(),
        );
        assert!(check_parameters(&p).is_ok());
        p.insert("speed".into(), "fast".into());
        let err = check_parameters(&p).unwrap_err().to_string();
        assert!(err.contains("speed"), "{err}");
    }

    fn local_backend(root: &std::path::Path) -> LocalBackend {
        LocalBackend::open(crate::ids::NodeId::parse("node-a").unwrap(), root, 1 << 20).unwrap()
    }

    #[test]
    fn content_sources_are_validated() {
        let root = tempfile::tempdir().unwrap();
        let local = local_backend(root.path());
        let parse = |wire: Option<VolumeContentSource>| content_source(wire.as_ref(), &local);
        let snap = |id: &str| VolumeContentSource {
            r#type: Some(SourceType::Snapshot(SnapshotSource {
                snapshot_id: id.into(),
            })),
        };
        assert_eq!(parse(None).unwrap(), None);
        let ok = parse(Some(snap("snap:node-a:s1"))).unwrap().unwrap();
        assert_eq!(source_to_wire(&ok), snap("snap:node-a:s1"));
        let code = |wire| parse(Some(wire)).unwrap_err().code();
        assert_eq!(code(snap("")), tonic::Code::InvalidArgument);
        for hostile in ["../../etc", "snap:node-a:../x", "local:node-a:v"] {
            assert_eq!(code(snap(hostile)), tonic::Code::NotFound, "{hostile}");
        }
        assert_eq!(
            code(VolumeContentSource { r#type: None }),
            tonic::Code::InvalidArgument
        );
    }
}
