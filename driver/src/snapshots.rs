//! The CSI snapshot calls — CreateSnapshot, DeleteSnapshot, ListSnapshots,
//! GetSnapshot — and CreateVolume's `volume_content_source`: validation,
//! locking, and conversion to and from the wire. What a snapshot is, and
//! how long a call waits for its copy, is the backend's
//! ([`Backend::create_snapshot`] and the methods beside it).

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use cairn_proto::v1::controller_service_capability::rpc::Type as RpcType;
use cairn_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use cairn_proto::v1::*;

use crate::backend::{self, Backend};
use crate::driver::Driver;
use crate::error::{missing, Error, Result};
use crate::ids::{ContentSource, SnapshotId, VolumeId, VolumeName};
use crate::page_token;

/// Keys external-snapshotter adds with `--extra-create-metadata`.
const SNAPSHOTTER_PREFIX: &str = "csi.storage.k8s.io/";
/// VolumeSnapshotClass parameters a snapshot understands: none yet.
const KNOWN_PARAMETERS: &[&str] = &[];

/// Controller capabilities for snapshots and clones. ListSnapshots only
/// when some backend can enumerate its snapshots (NFS snapshots live on
/// whatever exports StorageClasses name; the driver still finds one by id).
pub fn capabilities(driver: &Driver) -> Vec<RpcType> {
    let mut rpcs = vec![
        RpcType::CreateDeleteSnapshot,
        RpcType::GetSnapshot,
        RpcType::CloneVolume,
    ];
    if driver.backends.lister().is_some() {
        rpcs.push(RpcType::ListSnapshots);
    }
    rpcs
}

fn to_wire(snapshot: backend::Snapshot) -> Snapshot {
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
    let unknown =
        crate::parameters::unknown(parameters.keys(), KNOWN_PARAMETERS, SNAPSHOTTER_PREFIX);
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "unknown VolumeSnapshotClass parameters (Cairn snapshots take none): {}",
        unknown.join(", ")
    )))
}

/// CreateSnapshot. Secrets are ignored: snapshots need none.
pub async fn create(driver: &Driver, req: CreateSnapshotRequest) -> Result<CreateSnapshotResponse> {
    let name = VolumeName::parse(&req.name)?;
    if req.source_volume_id.is_empty() {
        return Err(missing("source_volume_id"));
    }
    let source = VolumeId::parse(&req.source_volume_id)?;
    check_parameters(&req.parameters)?;
    let backend = driver.backends.for_id(&source)?;
    let id = backend.snapshot_id_for(&source, &name)?;
    let _guard = driver.locks.lock(&id.lock_key()).await;
    let snapshot = backend.create_snapshot(name, source).await?;
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
    let backend = driver.backends.for_snapshot(&id)?;
    let _guard = driver.locks.lock(&id.lock_key()).await;
    backend.delete_snapshot(id).await?;
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
    let backend = driver.backends.for_snapshot(&id)?;
    Ok(backend.snapshot(id).await?.map(to_wire))
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
    let lister = driver.backends.lister().ok_or_else(|| {
        Error::Unimplemented(
            "ListSnapshots lists local snapshots, which this cairn-csi does not serve".into(),
        )
    })?;
    let page = lister.list_snapshots(after, max, source).await?;
    Ok(ListSnapshotsResponse {
        entries: page.snapshots.into_iter().map(entry).collect(),
        next_token: page
            .next
            .map(|k| page_token::issue("snapshots", &k))
            .unwrap_or_default(),
    })
}

/// CreateVolume's `volume_content_source`, validated for a volume of
/// `backend`. A source the backend cannot copy from (one on another
/// backend) is unsupported: INVALID_ARGUMENT, as the spec asks of a plugin
/// that cannot create from it. A source id this driver could never have
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
    if !backend.takes_source(&source) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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

    fn local_backend(root: &std::path::Path) -> crate::backend::local::LocalBackend {
        crate::backend::local::LocalBackend::open(
            crate::ids::NodeId::parse("node-a").unwrap(),
            root,
            1 << 20,
        )
        .unwrap()
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
