//! CreateVolume: arguments, idempotency on name, capacity ranges and
//! content sources.

use super::prelude::*;

pub fn cases() -> Vec<Case> {
    vec![
        case!("CreateVolume/no-name", "CreateVolume: name is REQUIRED; a missing required field MUST give 3 INVALID_ARGUMENT", no_name),
        case!("CreateVolume/no-capabilities", "CreateVolume: volume_capabilities is REQUIRED (at least one element); missing MUST give 3 INVALID_ARGUMENT", no_capabilities),
        case!("CreateVolume/capability-without-access-mode", "VolumeCapability: access_mode is REQUIRED; missing MUST give 3 INVALID_ARGUMENT", no_access_mode),
        case!("CreateVolume/capability-without-access-type", "VolumeCapability: one of block or mount MUST be specified; missing MUST give 3 INVALID_ARGUMENT", no_access_type),
        case!("CreateVolume/unknown-access-mode", "VolumeCapability: access mode UNKNOWN is not a mode; an invalid field MUST give 3 INVALID_ARGUMENT", unknown_access_mode),
        case!("CreateVolume/ok", "CreateVolume: with CREATE_DELETE_VOLUME a valid request provisions a volume and returns its REQUIRED volume_id", create_ok),
        case!("CreateVolume/capacity-at-least-required", "CapacityRange: the volume MUST be at least required_bytes (capacity_bytes 0 means unknown)", capacity_at_least_required),
        case!("CreateVolume/volume-id-length", "Volume: volume_id is a string and SHALL NOT exceed the 128-byte size limit", volume_id_length),
        case!("CreateVolume/max-length-name", "CreateVolume: a name at the 128-byte string size limit is valid and MUST be accepted", max_length_name),
        case!("CreateVolume/same-name-same-capacity", "CreateVolume: MUST be idempotent; the same name with compatible arguments MUST reply 0 OK with the same volume", idempotent),
        case!("CreateVolume/same-name-same-context", "Volume: a volume identified by volume_id SHALL always report the same volume_context", same_context),
        case!("CreateVolume/same-name-different-capacity", "CreateVolume: a volume with this name exists but is incompatible with capacity_range → 6 ALREADY_EXISTS", incompatible_capacity),
        case!("CreateVolume/distinct-names-distinct-ids", "Volume: volume_id MUST uniquely identify this volume vs all other volumes of the plugin", distinct_ids),
        case!("CreateVolume/name-reusable-after-delete", "CreateVolume/DeleteVolume: after DeleteVolume the name no longer refers to a volume, so creating it again provisions a new one", reuse_name),
        case!("CreateVolume/concurrent-same-name", "CreateVolume: the plugin SHOULD ensure calls for the same name do not provision more than one volume (racing calls get OK or 10 ABORTED)", concurrent_same_name),
        case!("CreateVolume/limit-below-required", "CapacityRange: limit_bytes below required_bytes is an invalid range → 3 INVALID_ARGUMENT (or 11 OUT_OF_RANGE)", limit_below_required),
        case!("CreateVolume/negative-required", "CapacityRange: required_bytes MUST NOT be negative → 3 INVALID_ARGUMENT (or 11 OUT_OF_RANGE)", negative_required),
        case!("CreateVolume/negative-limit", "CapacityRange: limit_bytes MUST NOT be negative → 3 INVALID_ARGUMENT (or 11 OUT_OF_RANGE)", negative_limit),
        case!("CreateVolume/only-limit", "CapacityRange: with only limit_bytes the volume MUST NOT be bigger than the limit", only_limit),
        case!("CreateVolume/exact-size", "CapacityRange: required_bytes == limit_bytes asks for exactly that size", exact_size),
        case!("CreateVolume/no-capacity-range", "CreateVolume: capacity_range is OPTIONAL; without it the plugin MAY choose the size", no_capacity_range),
        case!("CreateVolume/block-supported-or-refused", "CreateVolume: an access type the plugin does not support MUST be refused with 3 INVALID_ARGUMENT, never another error", block_or_refused),
        case!("CreateVolume/multi-writer-supported-or-refused", "CreateVolume: an access mode the plugin does not support MUST be refused with 3 INVALID_ARGUMENT, never another error", multi_writer_or_refused),
        case!("CreateVolume/snapshot-source-unsupported", "CreateVolume: a plugin that cannot create from the requested SnapshotSource MUST return 3 INVALID_ARGUMENT", snapshot_source_unsupported),
        case!("CreateVolume/volume-source-unsupported", "CreateVolume: a plugin that cannot create from the requested VolumeSource MUST return 3 INVALID_ARGUMENT", volume_source_unsupported),
        case!("CreateVolume/snapshot-source-not-found", "CreateVolume: the specified source snapshot does not exist → 5 NOT_FOUND", snapshot_source_not_found),
        case!("CreateVolume/volume-source-not-found", "CreateVolume: the specified source volume does not exist → 5 NOT_FOUND", volume_source_not_found),
        case!("CreateVolume/from-snapshot", "CreateVolume: with CREATE_DELETE_SNAPSHOT a volume can be created from an existing snapshot", from_snapshot),
        case!("CreateVolume/from-volume", "CreateVolume: with CLONE_VOLUME a volume can be created from an existing volume", from_volume),
    ]
}

fn need_create(cx: &Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::CreateDeleteVolume)
}

async fn no_name(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let req = cx.volume_request("");
    check::invalid_argument(cx.try_create_volume(req).await)
}

async fn no_capabilities(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_capabilities.clear();
    check::invalid_argument(cx.try_create_volume(req).await)
}

async fn no_access_mode(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_capabilities = vec![fixtures::without_access_mode()];
    check::invalid_argument(cx.try_create_volume(req).await)
}

async fn no_access_type(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_capabilities = vec![fixtures::without_access_type()];
    check::invalid_argument(cx.try_create_volume(req).await)
}

async fn unknown_access_mode(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_capabilities = vec![fixtures::mount(Mode::Unknown)];
    check::invalid_argument(cx.try_create_volume(req).await)
}

async fn create_ok(cx: Ctx) -> CaseResult {
    cx.new_volume().await.map(drop)
}

async fn capacity_at_least_required(cx: Ctx) -> CaseResult {
    let volume = cx.new_volume().await?;
    ensure!(
        volume.capacity_bytes == 0 || volume.capacity_bytes >= cx.size(),
        "asked for at least {} bytes, got capacity_bytes {}",
        cx.size(),
        volume.capacity_bytes
    );
    Ok(())
}

async fn volume_id_length(cx: Ctx) -> CaseResult {
    let volume = cx.new_volume().await?;
    ensure!(
        volume.volume_id.len() <= 128,
        "volume_id is {} bytes",
        volume.volume_id.len()
    );
    Ok(())
}

/// A unique name padded to exactly `len` bytes.
fn name_of_length(cx: &Ctx, len: usize) -> String {
    let mut name = cx.unique_name();
    while name.len() < len {
        name.push('x');
    }
    name.truncate(len);
    name
}

async fn max_length_name(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let name = name_of_length(&cx, 128);
    let req = cx.volume_request(&name);
    check::ok(
        cx.try_create_volume(req).await,
        "CreateVolume with a 128-byte name",
    )
    .map(drop)
}

async fn idempotent(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let name = cx.unique_name();
    let first = cx.volume_from(cx.volume_request(&name)).await?;
    let second = cx.volume_from(cx.volume_request(&name)).await?;
    ensure!(
        first.volume_id == second.volume_id,
        "same name gave two volumes: {:?} then {:?}",
        first.volume_id,
        second.volume_id
    );
    ensure!(
        first.capacity_bytes == second.capacity_bytes,
        "same volume reported capacity {} then {}",
        first.capacity_bytes,
        second.capacity_bytes
    );
    Ok(())
}

async fn same_context(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let name = cx.unique_name();
    let first = cx.volume_from(cx.volume_request(&name)).await?;
    let second = cx.volume_from(cx.volume_request(&name)).await?;
    ensure!(
        first.volume_context == second.volume_context,
        "volume_context {:?} then {:?}",
        first.volume_context,
        second.volume_context
    );
    Ok(())
}

async fn incompatible_capacity(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let name = cx.unique_name();
    let first = cx.volume_from(cx.volume_request(&name)).await?;
    let existing = first.capacity_bytes.max(cx.size());
    // Exactly twice the existing size: no volume can be both.
    let bigger = existing.saturating_mul(2);
    let mut req = cx.volume_request(&name);
    req.capacity_range = fixtures::range(bigger, bigger);
    check::code(cx.try_create_volume(req).await, &[Code::AlreadyExists]).map(drop)
}

async fn distinct_ids(cx: Ctx) -> CaseResult {
    let a = cx.new_volume().await?;
    let b = cx.new_volume().await?;
    ensure!(
        a.volume_id != b.volume_id,
        "two names share volume_id {:?}",
        a.volume_id
    );
    Ok(())
}

async fn reuse_name(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let name = cx.unique_name();
    let first = cx.volume_from(cx.volume_request(&name)).await?;
    check::ok(
        cx.delete_volume(v1::DeleteVolumeRequest {
            volume_id: first.volume_id.clone(),
            ..Default::default()
        })
        .await,
        "DeleteVolume",
    )?;
    let again = cx.try_create_volume(cx.volume_request(&name)).await;
    check::ok(again, "CreateVolume with the deleted volume's name").map(drop)
}

async fn concurrent_same_name(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let name = cx.unique_name();
    let (a, b, c) = tokio::join!(
        cx.try_create_volume(cx.volume_request(&name)),
        cx.try_create_volume(cx.volume_request(&name)),
        cx.try_create_volume(cx.volume_request(&name)),
    );
    let mut ids = Vec::new();
    for result in [a, b, c] {
        if let Some(resp) = check::ok_or_code(result, &[Code::Aborted])? {
            ids.push(resp.volume.map(|v| v.volume_id).unwrap_or_default());
        }
    }
    ids.sort();
    ids.dedup();
    ensure!(
        ids.len() <= 1,
        "racing calls for one name made volumes {ids:?}"
    );
    // Settle: once the races are over the name must resolve to one volume.
    let settled = cx.volume_from(cx.volume_request(&name)).await?;
    ensure!(
        ids.iter().all(|id| *id == settled.volume_id),
        "racing calls returned {ids:?}, a later call {:?}",
        settled.volume_id
    );
    Ok(())
}

async fn bad_range(cx: Ctx, required: i64, limit: i64) -> CaseResult {
    need_create(&cx)?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.capacity_range = fixtures::range(required, limit);
    check::code(
        cx.try_create_volume(req).await,
        &[Code::InvalidArgument, Code::OutOfRange],
    )
    .map(drop)
}

async fn limit_below_required(cx: Ctx) -> CaseResult {
    let size = cx.size();
    bad_range(cx, size, size / 2).await
}

async fn negative_required(cx: Ctx) -> CaseResult {
    bad_range(cx, -1, 0).await
}

async fn negative_limit(cx: Ctx) -> CaseResult {
    bad_range(cx, 0, -1).await
}

async fn only_limit(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.capacity_range = fixtures::range(0, cx.size());
    let volume = cx.volume_from(req).await?;
    ensure!(
        volume.capacity_bytes <= cx.size(),
        "limit was {} bytes, got capacity_bytes {}",
        cx.size(),
        volume.capacity_bytes
    );
    Ok(())
}

async fn exact_size(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.capacity_range = fixtures::range(cx.size(), cx.size());
    let volume = cx.volume_from(req).await?;
    ensure!(
        volume.capacity_bytes == 0 || volume.capacity_bytes == cx.size(),
        "asked for exactly {} bytes, got capacity_bytes {}",
        cx.size(),
        volume.capacity_bytes
    );
    Ok(())
}

async fn no_capacity_range(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.capacity_range = None;
    cx.volume_from(req).await.map(drop)
}

async fn supported_or_refused(cx: Ctx, cap: v1::VolumeCapability) -> CaseResult {
    need_create(&cx)?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_capabilities = vec![cap];
    check::ok_or_code(cx.try_create_volume(req).await, &[Code::InvalidArgument]).map(drop)
}

async fn block_or_refused(cx: Ctx) -> CaseResult {
    supported_or_refused(cx, fixtures::block(Mode::SingleNodeWriter)).await
}

async fn multi_writer_or_refused(cx: Ctx) -> CaseResult {
    supported_or_refused(cx, fixtures::mount(Mode::MultiNodeMultiWriter)).await
}

async fn snapshot_source_unsupported(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    if cx
        .caps()
        .has_controller(ControllerCap::CreateDeleteSnapshot)
    {
        return Err(Stop::Skip(
            "plugin supports snapshots; see from-snapshot".into(),
        ));
    }
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_content_source = snapshot_source("sanity-no-such-snapshot");
    check::invalid_argument(cx.try_create_volume(req).await)
}

async fn volume_source_unsupported(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    if cx.caps().has_controller(ControllerCap::CloneVolume) {
        return Err(Stop::Skip(
            "plugin supports cloning; see from-volume".into(),
        ));
    }
    let source = cx.new_volume().await?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_content_source = volume_source(&source.volume_id);
    check::invalid_argument(cx.try_create_volume(req).await)
}

async fn snapshot_source_not_found(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    cx.need_controller(ControllerCap::CreateDeleteSnapshot)?;
    let source = cx.new_volume().await?;
    let snap = cx.new_snapshot(&source.volume_id).await?;
    check::ok(
        cx.delete_snapshot(v1::DeleteSnapshotRequest {
            snapshot_id: snap.snapshot_id.clone(),
            ..Default::default()
        })
        .await,
        "setup: DeleteSnapshot",
    )?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_content_source = snapshot_source(&snap.snapshot_id);
    check::not_found(cx.try_create_volume(req).await)
}

async fn volume_source_not_found(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    cx.need_controller(ControllerCap::CloneVolume)?;
    let gone = cx.deleted_volume_id().await?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_content_source = volume_source(&gone);
    check::not_found(cx.try_create_volume(req).await)
}

async fn from_snapshot(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    cx.need_controller(ControllerCap::CreateDeleteSnapshot)?;
    let source = cx.new_volume().await?;
    let snap = cx.new_snapshot(&source.volume_id).await?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_content_source = snapshot_source(&snap.snapshot_id);
    let volume = cx.volume_from(req).await?;
    ensure!(
        volume.content_source.is_none()
            || volume.content_source == snapshot_source(&snap.snapshot_id),
        "content_source {:?} does not name snapshot {:?}",
        volume.content_source,
        snap.snapshot_id
    );
    Ok(())
}

async fn from_volume(cx: Ctx) -> CaseResult {
    need_create(&cx)?;
    cx.need_controller(ControllerCap::CloneVolume)?;
    let source = cx.new_volume().await?;
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_content_source = volume_source(&source.volume_id);
    let volume = cx.volume_from(req).await?;
    ensure!(
        volume.content_source.is_none()
            || volume.content_source == volume_source(&source.volume_id),
        "content_source {:?} does not name volume {:?}",
        volume.content_source,
        source.volume_id
    );
    Ok(())
}
