//! The CSI snapshot calls — CreateSnapshot, DeleteSnapshot, ListSnapshots,
//! GetSnapshot — and CreateVolume's `volume_content_source`: validation,
//! conversion to and from the wire, and waiting on copies. The controller's
//! handlers call these; what a snapshot is on disk lives in
//! `backend::local::snapshot` and `backend::nfs::snapshot`. An NFS
//! snapshot is a copy made on the export through the userspace client:
//! synchronous, ready when CreateSnapshot answers.
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
use crate::backend::nfs::snapshot::{NfsSnapshot, NfsSource};
use crate::backend::nfs::NfsBackend;
use crate::backend::{self, Backend, NewVolume};
use crate::driver::Driver;
use crate::error::{missing, Error, Result};
use crate::ids::{ContentSource, NfsSnapshotId, SnapshotId, VolumeId, VolumeName};
use crate::page_token;
use crate::rpc::blocking;

/// How long CreateSnapshot waits for its copy before answering
/// `ready_to_use: false`.
pub const GRACE: Duration = Duration::from_secs(1);

/// Keys external-snapshotter adds with `--extra-create-metadata`.
const SNAPSHOTTER_PREFIX: &str = "csi.storage.k8s.io/";
/// VolumeSnapshotClass parameters a snapshot understands: none yet.
const KNOWN_PARAMETERS: &[&str] = &[];

/// `Backend::kind` of the NFS backend.
const NFS: &str = "nfs";

/// Controller capabilities for snapshots and clones. ListSnapshots only
/// with local volumes: NFS snapshots live on whatever exports StorageClasses
/// name, which the driver cannot enumerate (it still finds one by id).
pub fn capabilities(driver: &Driver) -> Vec<RpcType> {
    let mut rpcs = vec![
        RpcType::CreateDeleteSnapshot,
        RpcType::GetSnapshot,
        RpcType::CloneVolume,
    ];
    if driver.backends.local.is_some() {
        rpcs.push(RpcType::ListSnapshots);
    }
    rpcs
}

/// The local backend, for local snapshots.
fn local(driver: &Driver) -> Result<Arc<LocalBackend>> {
    driver.backends.local.clone().ok_or_else(|| {
        Error::FailedPrecondition(
            "this cairn-csi does not serve local volumes or their snapshots (see --backends)"
                .into(),
        )
    })
}

/// The NFS backend, for NFS snapshots.
fn nfs(driver: &Driver) -> Result<Arc<NfsBackend>> {
    driver.backends.nfs.clone().ok_or_else(|| {
        Error::FailedPrecondition(
            "this cairn-csi does not serve NFS volumes or their snapshots (see --backends)".into(),
        )
    })
}

fn timestamp(seconds: u64, nanos: u32) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: i32::try_from(nanos).unwrap_or(0),
    }
}

fn nfs_to_wire(id: &NfsSnapshotId, snapshot: NfsSnapshot) -> Snapshot {
    Snapshot {
        size_bytes: i64::try_from(snapshot.size_bytes).unwrap_or(i64::MAX),
        snapshot_id: SnapshotId::Nfs(id.clone()).to_string(),
        source_volume_id: snapshot.source,
        creation_time: Some(timestamp(snapshot.created.0, snapshot.created.1)),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
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
        creation_time: Some(timestamp(since.as_secs(), since.subsec_nanos())),
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
        "unknown VolumeSnapshotClass parameters (Cairn snapshots take none): {}",
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
    if let VolumeId::Nfs(nfs_source) = &source {
        let nfs = nfs(driver)?;
        let id = NfsBackend::snapshot_id(nfs_source, &name)?;
        let _guard = driver
            .locks
            .lock(&SnapshotId::Nfs(id.clone()).lock_key())
            .await;
        let snapshot = {
            let id = id.clone();
            blocking(move || nfs.create_snapshot(&id, &source, &name)).await?
        };
        return Ok(CreateSnapshotResponse {
            snapshot: Some(nfs_to_wire(&id, snapshot)),
        });
    }
    let local = local(driver)?;
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
    let id = match SnapshotId::parse(&req.snapshot_id) {
        Ok(id) => id,
        // Never issued by Cairn: it does not exist, as asked (spec: OK).
        Err(Error::NotFound(_)) => return Ok(DeleteSnapshotResponse {}),
        Err(e) => return Err(e),
    };
    let _guard = driver.locks.lock(&id.lock_key()).await;
    if let SnapshotId::Nfs(nfs_id) = id {
        let nfs = nfs(driver)?;
        blocking(move || nfs.delete_snapshot(&nfs_id)).await?;
        return Ok(DeleteSnapshotResponse {});
    }
    let local = local(driver)?;
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
    let snapshot = find(driver, id.clone())
        .await?
        .ok_or_else(|| Error::NotFound(format!("snapshot {id} does not exist")))?;
    Ok(GetSnapshotResponse {
        snapshot: Some(snapshot),
    })
}

/// The snapshot with this id, in wire form, if it exists.
async fn find(driver: &Driver, id: SnapshotId) -> Result<Option<Snapshot>> {
    match id {
        SnapshotId::Nfs(nfs_id) => {
            let nfs = nfs(driver)?;
            let found = blocking(move || nfs.get_snapshot(&nfs_id).map(|s| (nfs_id, s))).await?;
            Ok(match found {
                (nfs_id, Some(snapshot)) => Some(nfs_to_wire(&nfs_id, snapshot)),
                (_, None) => None,
            })
        }
        SnapshotId::Local(_) => {
            let local = local(driver)?;
            Ok(blocking(move || local.snapshot(&id)).await?.map(to_wire))
        }
    }
}

/// ListSnapshots with pagination (the token is the last key returned) and
/// the snapshot_id / source_volume_id filters. A filter naming something
/// that does not exist here — malformed, another node's, deleted — lists
/// nothing (spec: not an error).
pub async fn list(driver: &Driver, req: ListSnapshotsRequest) -> Result<ListSnapshotsResponse> {
    let max = usize::try_from(req.max_entries)
        .map_err(|_| Error::InvalidArgument("max_entries must not be negative".into()))?;
    let after = page_token::parse("snapshots", &req.starting_token)?;
    let source = if req.source_volume_id.is_empty() {
        None
    } else {
        match VolumeId::parse(&req.source_volume_id) {
            Ok(id) => Some(id),
            Err(_) => return Ok(ListSnapshotsResponse::default()),
        }
    };
    if !req.snapshot_id.is_empty() {
        let Ok(id) = SnapshotId::parse(&req.snapshot_id) else {
            return Ok(ListSnapshotsResponse::default());
        };
        let found = match find(driver, id).await {
            Ok(found) => found,
            // A backend this process does not serve holds nothing here.
            Err(Error::FailedPrecondition(_)) => None,
            Err(e) => return Err(e),
        };
        return Ok(ListSnapshotsResponse {
            entries: found
                .filter(|s| {
                    source
                        .as_ref()
                        .is_none_or(|src| s.source_volume_id == src.to_string())
                })
                .map(|snapshot| list_snapshots_response::Entry {
                    snapshot: Some(snapshot),
                })
                .into_iter()
                .collect(),
            next_token: String::new(),
        });
    }
    let entry = |snapshot| list_snapshots_response::Entry {
        snapshot: Some(to_wire(snapshot)),
    };
    let local = local(driver)?;
    let page = blocking(move || local.list_snapshots(after.as_ref(), max, source.as_ref())).await?;
    Ok(ListSnapshotsResponse {
        entries: page.snapshots.into_iter().map(entry).collect(),
        next_token: page
            .next
            .map(|k| page_token::issue("snapshots", &k))
            .unwrap_or_default(),
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
    let unknown = |what: &str, id: &str, e: Error| {
        Error::NotFound(format!("{what} {id:?} does not exist: {e}"))
    };
    let source = match &wire.r#type {
        None => {
            return Err(Error::InvalidArgument(
                "volume_content_source names neither a snapshot nor a volume".into(),
            ))
        }
        Some(SourceType::Snapshot(SnapshotSource { snapshot_id })) => {
            if snapshot_id.is_empty() {
                return Err(missing("volume_content_source.snapshot.snapshot_id"));
            }
            SnapshotId::parse(snapshot_id)
                .map(ContentSource::Snapshot)
                .map_err(|e| unknown("snapshot", snapshot_id, e))?
        }
        Some(SourceType::Volume(VolumeSource { volume_id })) => {
            if volume_id.is_empty() {
                return Err(missing("volume_content_source.volume.volume_id"));
            }
            VolumeId::parse(volume_id)
                .map(ContentSource::Volume)
                .map_err(|e| unknown("volume", volume_id, e))?
        }
    };
    // Copies stay on their backend: a local snapshot cannot fill an export,
    // nor an NFS one a node's disk (the spec's "unsupported source").
    let source_is_nfs = nfs_source(&source).is_some();
    if source_is_nfs != (backend.kind() == NFS) {
        return Err(Error::InvalidArgument(format!(
            "{} volumes cannot be created from {source}: it lives on the other backend",
            backend.kind()
        )));
    }
    Ok(Some(source))
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
    if let Some(nfs_source) = nfs_source(source) {
        let nfs = nfs(driver)?;
        return blocking(move || nfs.create_with(&request, Some(&nfs_source))).await;
    }
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

/// The NFS form of a content source, when it names an NFS snapshot or volume.
fn nfs_source(source: &ContentSource) -> Option<NfsSource> {
    match source {
        ContentSource::Snapshot(SnapshotId::Nfs(id)) => Some(NfsSource::Snapshot(id.clone())),
        ContentSource::Volume(VolumeId::Nfs(id)) => Some(NfsSource::Volume(id.clone())),
        _ => None,
    }
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
    async fn an_nfs_volume_takes_only_nfs_sources() {
        let nfs = crate::backend::nfs::NfsBackend::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            1 << 20,
            tokio::runtime::Handle::current(),
        );
        let snap = |id: &str| VolumeContentSource {
            r#type: Some(SourceType::Snapshot(SnapshotSource {
                snapshot_id: id.into(),
            })),
        };
        let code = |id: &str| content_source(Some(&snap(id)), &nfs).unwrap_err().code();
        assert_eq!(code("sanity-no-such-snapshot"), tonic::Code::NotFound);
        assert_eq!(code("snap:node-a:s1"), tonic::Code::InvalidArgument);
        let ok = content_source(Some(&snap("nfs-snap:2049:127.0.0.1#/export#s1")), &nfs)
            .unwrap()
            .unwrap();
        assert_eq!(
            source_to_wire(&ok),
            snap("nfs-snap:2049:127.0.0.1#/export#s1")
        );
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
