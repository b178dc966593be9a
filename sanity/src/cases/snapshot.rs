//! Snapshots: CreateSnapshot, DeleteSnapshot, ListSnapshots, GetSnapshot and
//! restoring a volume from one.

use std::collections::HashMap;

use super::prelude::*;

const MAX_PAGES: usize = 10_000;

pub fn cases() -> Vec<Case> {
    vec![
        case!("CreateSnapshot/no-name", "CreateSnapshot: name is REQUIRED → 3 INVALID_ARGUMENT", no_name),
        case!("CreateSnapshot/no-source", "CreateSnapshot: source_volume_id is REQUIRED → 3 INVALID_ARGUMENT", no_source),
        case!("CreateSnapshot/ok", "CreateSnapshot: snapshot_id, source_volume_id and creation_time are REQUIRED in the returned Snapshot", create_ok),
        case!("CreateSnapshot/same-name-same-source", "CreateSnapshot: MUST be idempotent; same name and source → 0 OK with the same snapshot", idempotent),
        case!("CreateSnapshot/same-name-different-source", "CreateSnapshot: a snapshot with this name exists for another volume → 6 ALREADY_EXISTS", name_conflict),
        case!("CreateSnapshot/max-length-name", "CreateSnapshot: a name at the 128-byte string size limit is valid and MUST be accepted", max_length_name),
        case!("CreateSnapshot/unknown-source", "CreateSnapshot: a source volume that does not exist cannot be snapshotted; the plugin MUST return a non-OK code", unknown_source),
        case!("DeleteSnapshot/no-id", "DeleteSnapshot: snapshot_id is REQUIRED → 3 INVALID_ARGUMENT", delete_no_id),
        case!("DeleteSnapshot/unknown-id", "DeleteSnapshot: if the snapshot does not exist the Plugin MUST reply 0 OK", delete_unknown),
        case!("DeleteSnapshot/never-issued-id", "DeleteSnapshot: an id the plugin never issued names no snapshot, and if the snapshot does not exist the Plugin MUST reply 0 OK", delete_never_issued),
        case!("DeleteSnapshot/twice", "DeleteSnapshot: MUST be idempotent; a repeated call replies 0 OK", delete_twice),
        case!("DeleteSnapshot/source-volume-deleted-first", "DeleteVolume: deleting a volume with snapshots either keeps the snapshots fully operational (0 OK) or fails with 9 FAILED_PRECONDITION", delete_source_first),
        case!("ListSnapshots/ok", "ListSnapshots: with LIST_SNAPSHOTS the plugin MUST implement this RPC", list_ok),
        case!("ListSnapshots/new-snapshot-listed", "ListSnapshots: the Plugin SHALL return all snapshots, including one just cut", new_listed),
        case!("ListSnapshots/deleted-snapshot-absent", "ListSnapshots: a deleted snapshot no longer exists and is not returned", deleted_absent),
        case!("ListSnapshots/by-id", "ListSnapshots: snapshot_id lists only that snapshot", by_id),
        case!("ListSnapshots/by-unknown-id", "ListSnapshots: snapshot_id of a snapshot that does not exist lists nothing", by_unknown_id),
        case!("ListSnapshots/by-source", "ListSnapshots: source_volume_id lists only that volume's snapshots", by_source),
        case!("ListSnapshots/by-unknown-source", "ListSnapshots: source_volume_id of a volume with no snapshots lists nothing", by_unknown_source),
        case!("ListSnapshots/pagination-visits-each-once", "ListSnapshots: MUST NOT return more than max_entries, MUST set next_token when more remain; paging visits each snapshot once", pagination),
        case!("ListSnapshots/invalid-token", "ListSnapshots: an invalid starting_token → 10 ABORTED", invalid_token),
        case!("ListSnapshots/never-issued-tokens", "ListSnapshots: a starting_token the plugin never issued (\"garbage\", \"-1\", \"999999\", a volume or snapshot name) is not valid → 10 ABORTED", never_issued_tokens),
        case!("ListSnapshots/negative-max-entries", "ListSnapshots: max_entries MUST NOT be negative → 3 INVALID_ARGUMENT", negative_max_entries),
        case!("GetSnapshot/no-id", "GetSnapshot: snapshot_id is REQUIRED → 3 INVALID_ARGUMENT", get_no_id),
        case!("GetSnapshot/unknown-id", "GetSnapshot: snapshot does not exist → 5 NOT_FOUND", get_unknown),
        case!("GetSnapshot/ok", "GetSnapshot: returns the REQUIRED snapshot asked for", get_ok),
        case!("Snapshot/restore-keeps-data", "CreateVolume from a SnapshotSource: the new volume is pre-populated with the snapshot's data", restore_keeps_data),
    ]
}

fn need(cx: &Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::CreateDeleteSnapshot)
}

fn need_list(cx: &Ctx) -> CaseResult {
    need(cx)?;
    cx.need_controller(ControllerCap::ListSnapshots)
}

fn snap_req(source: &str, name: &str) -> v1::CreateSnapshotRequest {
    v1::CreateSnapshotRequest {
        source_volume_id: source.to_string(),
        name: name.to_string(),
        ..Default::default()
    }
}

fn delete_req(id: &str) -> v1::DeleteSnapshotRequest {
    v1::DeleteSnapshotRequest {
        snapshot_id: id.to_string(),
        ..Default::default()
    }
}

async fn deleted_snapshot_id(cx: &Ctx) -> Result<String, Stop> {
    let source = cx.new_volume().await?;
    let snap = cx.new_snapshot(&source.volume_id).await?;
    check::ok(
        cx.delete_snapshot(delete_req(&snap.snapshot_id)).await,
        "setup: DeleteSnapshot",
    )?;
    Ok(snap.snapshot_id)
}

async fn no_name(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let source = cx.new_volume().await?;
    check::invalid_argument(
        cx.try_create_snapshot(snap_req(&source.volume_id, ""))
            .await,
    )
}

async fn no_source(cx: Ctx) -> CaseResult {
    need(&cx)?;
    check::invalid_argument(
        cx.try_create_snapshot(snap_req("", &cx.unique_name()))
            .await,
    )
}

async fn create_ok(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let source = cx.new_volume().await?;
    let snap = cx.new_snapshot(&source.volume_id).await?;
    ensure!(!snap.snapshot_id.is_empty(), "empty snapshot_id");
    ensure!(
        snap.source_volume_id == source.volume_id,
        "source_volume_id {:?}, expected {:?}",
        snap.source_volume_id,
        source.volume_id
    );
    ensure!(snap.creation_time.is_some(), "no creation_time");
    Ok(())
}

async fn idempotent(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let source = cx.new_volume().await?;
    let name = cx.unique_name();
    let mut ids = Vec::new();
    for which in ["first CreateSnapshot", "second CreateSnapshot"] {
        let resp = check::ok(
            cx.try_create_snapshot(snap_req(&source.volume_id, &name))
                .await,
            which,
        )?;
        ids.push(resp.snapshot.map(|s| s.snapshot_id).unwrap_or_default());
    }
    ensure!(
        ids[0] == ids[1],
        "same name gave snapshots {:?} and {:?}",
        ids[0],
        ids[1]
    );
    Ok(())
}

async fn name_conflict(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let a = cx.new_volume().await?;
    let b = cx.new_volume().await?;
    let name = cx.unique_name();
    check::ok(
        cx.try_create_snapshot(snap_req(&a.volume_id, &name)).await,
        "CreateSnapshot",
    )?;
    check::code(
        cx.try_create_snapshot(snap_req(&b.volume_id, &name)).await,
        &[Code::AlreadyExists],
    )
    .map(drop)
}

async fn max_length_name(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let source = cx.new_volume().await?;
    let mut name = cx.unique_name();
    while name.len() < 128 {
        name.push('x');
    }
    check::ok(
        cx.try_create_snapshot(snap_req(&source.volume_id, &name))
            .await,
        "CreateSnapshot",
    )
    .map(drop)
}

async fn unknown_source(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let gone = cx.deleted_volume_id().await?;
    let result = cx
        .try_create_snapshot(snap_req(&gone, &cx.unique_name()))
        .await;
    ensure!(result.is_err(), "snapshot of a deleted volume succeeded");
    Ok(())
}

async fn delete_no_id(cx: Ctx) -> CaseResult {
    need(&cx)?;
    check::invalid_argument(cx.delete_snapshot(delete_req("")).await)
}

async fn delete_unknown(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let gone = deleted_snapshot_id(&cx).await?;
    check::ok(
        cx.delete_snapshot(delete_req(&gone)).await,
        "DeleteSnapshot of a deleted snapshot",
    )
    .map(drop)
}

async fn delete_twice(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let source = cx.new_volume().await?;
    let snap = cx.new_snapshot(&source.volume_id).await?;
    for which in ["first DeleteSnapshot", "second DeleteSnapshot"] {
        check::ok(
            cx.delete_snapshot(delete_req(&snap.snapshot_id)).await,
            which,
        )?;
    }
    Ok(())
}

async fn delete_source_first(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let source = cx.new_volume().await?;
    let snap = cx.new_snapshot(&source.volume_id).await?;
    let deleted = check::ok_or_code(
        cx.delete_volume(v1::DeleteVolumeRequest {
            volume_id: source.volume_id.clone(),
            ..Default::default()
        })
        .await,
        &[Code::FailedPrecondition],
    )?;
    if deleted.is_some() && cx.caps().has_controller(ControllerCap::ListSnapshots) {
        let listed = list(
            &cx,
            v1::ListSnapshotsRequest {
                snapshot_id: snap.snapshot_id.clone(),
                ..Default::default()
            },
        )
        .await?;
        ensure!(
            listed.contains(&snap.snapshot_id),
            "snapshot vanished with its source volume"
        );
    }
    Ok(())
}

/// All snapshot ids over all pages of `req`.
async fn list(cx: &Ctx, req: v1::ListSnapshotsRequest) -> Result<Vec<String>, Stop> {
    let mut all = Vec::new();
    let mut req = req;
    for _ in 0..MAX_PAGES {
        let resp = check::ok(cx.list_snapshots(req.clone()).await, "ListSnapshots")?;
        if req.max_entries > 0 {
            ensure!(
                resp.entries.len() <= req.max_entries as usize,
                "asked for at most {} entries, got {}",
                req.max_entries,
                resp.entries.len()
            );
        }
        all.extend(
            resp.entries
                .iter()
                .filter_map(|e| e.snapshot.as_ref().map(|s| s.snapshot_id.clone())),
        );
        if resp.next_token.is_empty() {
            return Ok(all);
        }
        req.starting_token = resp.next_token;
    }
    Err(fail(format!(
        "still returning next_token after {MAX_PAGES} pages"
    )))
}

async fn list_ok(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    list(&cx, Default::default()).await.map(drop)
}

async fn new_listed(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let source = cx.new_volume().await?;
    let snap = cx.new_snapshot(&source.volume_id).await?;
    let all = list(&cx, Default::default()).await?;
    ensure!(
        all.contains(&snap.snapshot_id),
        "{:?} not listed",
        snap.snapshot_id
    );
    Ok(())
}

async fn deleted_absent(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let gone = deleted_snapshot_id(&cx).await?;
    let all = list(&cx, Default::default()).await?;
    ensure!(
        !all.contains(&gone),
        "deleted snapshot {gone:?} still listed"
    );
    Ok(())
}

async fn by_id(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let source = cx.new_volume().await?;
    let snap = cx.new_snapshot(&source.volume_id).await?;
    cx.new_snapshot(&source.volume_id).await?;
    let got = list(
        &cx,
        v1::ListSnapshotsRequest {
            snapshot_id: snap.snapshot_id.clone(),
            ..Default::default()
        },
    )
    .await?;
    ensure!(
        got == vec![snap.snapshot_id.clone()],
        "listing by id gave {got:?}"
    );
    Ok(())
}

async fn by_unknown_id(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let gone = deleted_snapshot_id(&cx).await?;
    let got = list(
        &cx,
        v1::ListSnapshotsRequest {
            snapshot_id: gone,
            ..Default::default()
        },
    )
    .await?;
    ensure!(
        got.is_empty(),
        "listing a deleted snapshot's id gave {got:?}"
    );
    Ok(())
}

async fn by_source(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let a = cx.new_volume().await?;
    let b = cx.new_volume().await?;
    let mine = cx.new_snapshot(&a.volume_id).await?;
    let other = cx.new_snapshot(&b.volume_id).await?;
    let got = list(
        &cx,
        v1::ListSnapshotsRequest {
            source_volume_id: a.volume_id.clone(),
            ..Default::default()
        },
    )
    .await?;
    ensure!(
        got.contains(&mine.snapshot_id),
        "the source's snapshot is missing: {got:?}"
    );
    ensure!(
        !got.contains(&other.snapshot_id),
        "another volume's snapshot is listed: {got:?}"
    );
    Ok(())
}

async fn by_unknown_source(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let volume = cx.new_volume().await?;
    let got = list(
        &cx,
        v1::ListSnapshotsRequest {
            source_volume_id: volume.volume_id,
            ..Default::default()
        },
    )
    .await?;
    ensure!(got.is_empty(), "a volume with no snapshots lists {got:?}");
    Ok(())
}

async fn pagination(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let source = cx.new_volume().await?;
    let mut made = Vec::new();
    for _ in 0..4 {
        made.push(cx.new_snapshot(&source.volume_id).await?.snapshot_id);
    }
    let all = list(
        &cx,
        v1::ListSnapshotsRequest {
            max_entries: 2,
            ..Default::default()
        },
    )
    .await?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in &all {
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    ensure!(twice.is_empty(), "listed more than once: {twice:?}");
    let missing: Vec<_> = made
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    ensure!(missing.is_empty(), "never listed: {missing:?}");
    Ok(())
}

async fn invalid_token(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let req = v1::ListSnapshotsRequest {
        starting_token: "sanity-not-a-token-\u{7f}!".to_string(),
        ..Default::default()
    };
    check::code(cx.list_snapshots(req).await, &[Code::Aborted]).map(drop)
}

async fn negative_max_entries(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let req = v1::ListSnapshotsRequest {
        max_entries: -1,
        ..Default::default()
    };
    check::invalid_argument(cx.list_snapshots(req).await)
}

fn need_get(cx: &Ctx) -> CaseResult {
    need(cx)?;
    cx.need_controller(ControllerCap::GetSnapshot)
}

fn get_req(id: &str) -> v1::GetSnapshotRequest {
    v1::GetSnapshotRequest {
        snapshot_id: id.to_string(),
        ..Default::default()
    }
}

async fn get_no_id(cx: Ctx) -> CaseResult {
    need_get(&cx)?;
    check::invalid_argument(cx.get_snapshot(get_req("")).await)
}

async fn get_unknown(cx: Ctx) -> CaseResult {
    need_get(&cx)?;
    let gone = deleted_snapshot_id(&cx).await?;
    check::not_found(cx.get_snapshot(get_req(&gone)).await)
}

async fn get_ok(cx: Ctx) -> CaseResult {
    need_get(&cx)?;
    let source = cx.new_volume().await?;
    let snap = cx.new_snapshot(&source.volume_id).await?;
    let resp = check::ok(
        cx.get_snapshot(get_req(&snap.snapshot_id)).await,
        "GetSnapshot",
    )?;
    let got = resp
        .snapshot
        .ok_or_else(|| fail("no snapshot in the response"))?;
    ensure!(
        got.snapshot_id == snap.snapshot_id,
        "asked for {:?}, got {:?}",
        snap.snapshot_id,
        got.snapshot_id
    );
    Ok(())
}

async fn restore_keeps_data(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let (source, _, target) = cx.published_volume().await?;
    let marker = std::path::Path::new(&target).join("sanity-snapshot-marker");
    std::fs::write(&marker, b"kept").map_err(|e| {
        fail(format!(
            "cannot write {} through the mount: {e}",
            marker.display()
        ))
    })?;
    let snap = cx.new_snapshot(&source.volume_id).await?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_content_source = snapshot_source(&snap.snapshot_id);
    let restored = cx.volume_from(req).await?;
    let restored_target = publish_again(&cx, &restored).await?;
    let read = std::fs::read(std::path::Path::new(&restored_target).join("sanity-snapshot-marker"));
    ensure!(
        read.as_deref().ok() == Some(b"kept".as_slice()),
        "the restored volume does not hold the file written before the snapshot: {read:?}"
    );
    Ok(())
}

/// Publishes a second volume in the same case at target 1 (its own
/// staging dir 1).
async fn publish_again(cx: &Ctx, volume: &v1::Volume) -> Result<String, Stop> {
    let staging = if cx.caps().has_node(NodeCap::StageUnstageVolume) {
        let staging = cx.staging_dir(1)?;
        check::ok(
            cx.node_stage_volume(v1::NodeStageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                staging_target_path: staging.clone(),
                volume_capability: Some(fixtures::single_writer()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            })
            .await,
            "NodeStageVolume of the restored volume",
        )?;
        cx.defer(crate::cleanup::Cleanup::NodeUnstage {
            volume_id: volume.volume_id.clone(),
            staging_path: staging.clone(),
        });
        staging
    } else {
        String::new()
    };
    cx.publish(volume, &staging, 1, false).await
}

async fn delete_never_issued(cx: Ctx) -> CaseResult {
    need(&cx)?;
    for id in cx.never_issued_ids() {
        check::ok(
            cx.delete_snapshot(delete_req(&id)).await,
            "DeleteSnapshot of an id never issued",
        )
        .map_err(|stop| check::about(stop, format!("snapshot_id {id:?}")))?;
    }
    Ok(())
}

/// Every next_token a full walk one entry at a time is given: strings the
/// plugin did issue, which a case must not present as never issued.
async fn issued_tokens(cx: &Ctx) -> Result<Vec<String>, Stop> {
    let mut issued = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let resp = check::ok(
            cx.list_snapshots(v1::ListSnapshotsRequest {
                max_entries: 1,
                starting_token: token.clone(),
                ..Default::default()
            })
            .await,
            "ListSnapshots",
        )?;
        if resp.next_token.is_empty() || issued.contains(&resp.next_token) {
            break;
        }
        token = resp.next_token.clone();
        issued.push(resp.next_token);
    }
    Ok(issued)
}

async fn never_issued_tokens(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::ListSnapshots)?;
    let mut tokens: Vec<String> = ["garbage", "-1", "999999"].map(String::from).into();
    if cx.caps().has_controller(ControllerCap::CreateDeleteVolume) {
        let name = cx.unique_name();
        let source = cx.volume_from(cx.volume_request(&name)).await?;
        tokens.push(name);
        if cx
            .caps()
            .has_controller(ControllerCap::CreateDeleteSnapshot)
        {
            let name = cx.unique_name();
            let mut req = snap_req(&source.volume_id, &name);
            req.parameters = cx.snapshot_params();
            check::ok(cx.try_create_snapshot(req).await, "setup: CreateSnapshot")?;
            tokens.push(name);
        }
    }
    let issued = issued_tokens(&cx).await?;
    for token in tokens.iter().filter(|t| !issued.contains(t)) {
        let req = v1::ListSnapshotsRequest {
            starting_token: token.clone(),
            ..Default::default()
        };
        check::code(cx.list_snapshots(req).await, &[Code::Aborted])
            .map_err(|stop| check::about(stop, format!("starting_token {token:?}")))?;
    }
    Ok(())
}
