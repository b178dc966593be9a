//! NodePublishVolume / NodeUnpublishVolume: the per-pod mount.

use std::io::ErrorKind;
use std::path::Path;

use super::prelude::*;
use crate::cleanup::is_mount_point;

pub fn cases() -> Vec<Case> {
    vec![
        case!("NodePublishVolume/no-volume-id", "NodePublishVolume: volume_id is REQUIRED → 3 INVALID_ARGUMENT", no_volume_id),
        case!("NodePublishVolume/no-target-path", "NodePublishVolume: target_path is REQUIRED → 3 INVALID_ARGUMENT", no_target_path),
        case!("NodePublishVolume/no-capability", "NodePublishVolume: volume_capability is REQUIRED → 3 INVALID_ARGUMENT", no_capability),
        case!("NodePublishVolume/relative-target-path", "NodePublishVolume: target_path MUST be an absolute path; a relative one is invalid → 3 INVALID_ARGUMENT", relative_target),
        case!("NodePublishVolume/no-staging-path", "NodePublishVolume: STAGE_UNSTAGE_VOLUME is set but no staging_target_path → 9 FAILED_PRECONDITION", no_staging_path),
        case!("NodePublishVolume/unknown-volume", "NodePublishVolume: volume does not exist → 5 NOT_FOUND", unknown_volume),
        case!("NodePublishVolume/never-issued-volume", "NodePublishVolume: an id the plugin never issued names no volume → 5 NOT_FOUND", never_issued),
        case!("NodePublishVolume/ok", "NodePublishVolume: the SP creates target_path and places the mounted directory there", publish_ok),
        case!("NodePublishVolume/target-is-mount-point", "NodePublishVolume: for access type mount the SP SHALL place the mounted directory at target_path", target_mounted),
        case!("NodePublishVolume/twice", "NodePublishVolume: MUST be idempotent; published and compatible → 0 OK", publish_twice),
        case!("NodePublishVolume/incompatible-readonly", "NodePublishVolume: already published at target_path but incompatible readonly flag → 6 ALREADY_EXISTS", incompatible_readonly),
        case!("NodePublishVolume/incompatible-access-mode", "NodePublishVolume: already published at target_path but incompatible volume_capability (another access mode) → 6 ALREADY_EXISTS", incompatible_access_mode),
        case!("NodePublishVolume/readonly-refuses-writes", "NodePublishVolume: readonly publishes the volume read-only; a write through the target fails with EROFS", readonly_refuses_writes),
        case!("NodePublishVolume/reader-only-mode-refuses-writes", "AccessMode: SINGLE_NODE_READER_ONLY publishes read-only even without readonly set; a write through the target fails with EROFS", reader_only_mode),
        case!("NodePublishVolume/single-writer-second-target", "AccessMode: SINGLE_NODE_SINGLE_WRITER is published read/write at a single workload; a second read/write target → 9 FAILED_PRECONDITION", single_writer_second_target),
        case!("NodePublishVolume/target-is-staging-path", "NodePublishVolume: target_path is the workload's own path, not the volume's staging_target_path; a publish onto the staging path is refused and the staging mount stays", target_is_staging_path),
        case!("NodePublishVolume/second-publish-sees-data", "NodePublishVolume: a second (read-only) publish of the same volume on the node shows the same data", second_publish_sees_data),
        case!("NodePublishVolume/single-node-multi-writer", "NodePublishVolume: with SINGLE_NODE_MULTI_WRITER a volume MAY be published read/write at several targets on one node", multi_writer),
        case!("NodeUnpublishVolume/no-volume-id", "NodeUnpublishVolume: volume_id is REQUIRED → 3 INVALID_ARGUMENT", unpublish_no_volume_id),
        case!("NodeUnpublishVolume/no-target-path", "NodeUnpublishVolume: target_path is REQUIRED → 3 INVALID_ARGUMENT", unpublish_no_target),
        case!("NodeUnpublishVolume/never-published", "NodeUnpublishVolume: MUST be idempotent; a target never published → 0 OK", never_published),
        case!("NodeUnpublishVolume/twice", "NodeUnpublishVolume: MUST be idempotent; a repeated call replies 0 OK", unpublish_twice),
        case!("NodeUnpublishVolume/other-volumes-target", "NodeUnpublishVolume: undoes the publish of the volume named by volume_id only; with volume A's id at volume B's target, B stays mounted with its data", other_volumes_target),
        case!("NodeUnpublishVolume/undoes-mount", "NodeUnpublishVolume: MUST undo the work of NodePublishVolume; target_path is no longer a mount point", undoes_mount),
        case!("NodeUnpublishVolume/removes-target", "NodeUnpublishVolume: MUST undo NodePublishVolume, which created target_path; the kubelet expects it gone", removes_target),
        case!("NodeUnpublishVolume/data-survives", "NodeUnpublishVolume: undoes the publish, not the volume; data written survives a republish", data_survives),
    ]
}

/// A volume staged (when the driver stages) and a target not yet published.
async fn setup(cx: &Ctx) -> Result<(v1::Volume, String, String), Stop> {
    cx.need_node_volume()?;
    let volume = cx.new_volume().await?;
    let staging = cx.stage(&volume).await?;
    let target = cx.target_path(0)?;
    Ok((volume, staging, target))
}

fn unpublish_req(volume_id: &str, target: &str) -> v1::NodeUnpublishVolumeRequest {
    v1::NodeUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        target_path: target.to_string(),
    }
}

fn mounted(path: &str) -> Result<bool, Stop> {
    is_mount_point(Path::new(path)).map_err(|e| fail(format!("reading mounts: {e}")))
}

async fn no_volume_id(cx: Ctx) -> CaseResult {
    let (volume, staging, target) = setup(&cx).await?;
    let mut req = cx.publish_request(&volume, &staging, &target, false);
    req.volume_id.clear();
    check::invalid_argument(cx.try_publish(req).await)
}

async fn no_target_path(cx: Ctx) -> CaseResult {
    let (volume, staging, _) = setup(&cx).await?;
    let req = cx.publish_request(&volume, &staging, "", false);
    check::invalid_argument(cx.try_publish(req).await)
}

async fn no_capability(cx: Ctx) -> CaseResult {
    let (volume, staging, target) = setup(&cx).await?;
    let mut req = cx.publish_request(&volume, &staging, &target, false);
    req.volume_capability = None;
    check::invalid_argument(cx.try_publish(req).await)
}

async fn relative_target(cx: Ctx) -> CaseResult {
    let (volume, staging, _) = setup(&cx).await?;
    let req = cx.publish_request(&volume, &staging, "sanity-relative/mount", false);
    check::invalid_argument(cx.try_publish(req).await)
}

async fn no_staging_path(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::StageUnstageVolume)?;
    let (volume, _, target) = setup(&cx).await?;
    let req = cx.publish_request(&volume, "", &target, false);
    check::code(cx.try_publish(req).await, &[Code::FailedPrecondition]).map(drop)
}

async fn unknown_volume(cx: Ctx) -> CaseResult {
    let (_, staging, target) = setup(&cx).await?;
    let gone = cx.deleted_volume_id().await?;
    let req = cx.publish_request(
        &v1::Volume {
            volume_id: gone,
            ..Default::default()
        },
        &staging,
        &target,
        false,
    );
    check::not_found(cx.try_publish(req).await)
}

async fn publish_ok(cx: Ctx) -> CaseResult {
    let (_, _, target) = cx.published_volume().await?;
    ensure!(
        Path::new(&target).is_dir(),
        "{target} is not a directory after NodePublishVolume"
    );
    Ok(())
}

async fn target_mounted(cx: Ctx) -> CaseResult {
    let (_, _, target) = cx.published_volume().await?;
    ensure!(
        mounted(&target)?,
        "{target} is not a mount point after NodePublishVolume"
    );
    Ok(())
}

async fn publish_twice(cx: Ctx) -> CaseResult {
    let (volume, staging, target) = cx.published_volume().await?;
    let req = cx.publish_request(&volume, &staging, &target, false);
    check::ok(cx.try_publish(req).await, "second NodePublishVolume").map(drop)
}

async fn incompatible_readonly(cx: Ctx) -> CaseResult {
    let (volume, staging, target) = cx.published_volume().await?;
    let req = cx.publish_request(&volume, &staging, &target, true);
    check::code(cx.try_publish(req).await, &[Code::AlreadyExists]).map(drop)
}

async fn readonly_refuses_writes(cx: Ctx) -> CaseResult {
    cx.need_node_volume()?;
    let volume = cx.new_volume().await?;
    let staging = cx.stage(&volume).await?;
    let target = cx.publish(&volume, &staging, 0, true).await?;
    refuses_writes(&target)
}

/// A write through `target` must fail with EROFS.
fn refuses_writes(target: &str) -> CaseResult {
    let probe = Path::new(target).join("sanity-readonly-probe");
    match std::fs::write(&probe, b"x") {
        Err(e) if e.kind() == ErrorKind::ReadOnlyFilesystem => Ok(()),
        Err(e) => Err(fail(format!(
            "write through the read-only target failed with {e}, not EROFS"
        ))),
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Err(fail(format!(
                "wrote {} through a read-only publish",
                probe.display()
            )))
        }
    }
}

async fn second_publish_sees_data(cx: Ctx) -> CaseResult {
    let (volume, staging, target) = cx.published_volume().await?;
    let written = Path::new(&target).join("sanity-shared-file");
    std::fs::write(&written, b"hello from the first target")
        .map_err(|e| fail(format!("cannot write {}: {e}", written.display())))?;
    let second = cx.publish(&volume, &staging, 1, true).await?;
    let read = std::fs::read(Path::new(&second).join("sanity-shared-file"));
    ensure!(
        read.as_deref().ok() == Some(b"hello from the first target".as_slice()),
        "the second target does not show the file: {read:?}"
    );
    Ok(())
}

async fn multi_writer(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::SingleNodeMultiWriter)?;
    cx.need_node_volume()?;
    let cap = fixtures::mount(Mode::SingleNodeMultiWriter);
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_capabilities = vec![cap.clone()];
    let volume = cx.volume_from(req).await?;
    let staging = if cx.caps().has_node(NodeCap::StageUnstageVolume) {
        let staging = cx.staging_dir(0)?;
        check::ok(
            cx.node_stage_volume(v1::NodeStageVolumeRequest {
                volume_id: volume.volume_id.clone(),
                staging_target_path: staging.clone(),
                volume_capability: Some(cap.clone()),
                volume_context: volume.volume_context.clone(),
                ..Default::default()
            })
            .await,
            "NodeStageVolume",
        )?;
        cx.defer(crate::cleanup::Cleanup::NodeUnstage {
            volume_id: volume.volume_id.clone(),
            staging_path: staging.clone(),
        });
        staging
    } else {
        String::new()
    };
    let mut targets = Vec::new();
    for n in 0..2 {
        let target = cx.target_path(n)?;
        let mut req = cx.publish_request(&volume, &staging, &target, false);
        req.volume_capability = Some(cap.clone());
        check::ok(cx.try_publish(req).await, "NodePublishVolume read/write")?;
        targets.push(target);
    }
    std::fs::write(Path::new(&targets[1]).join("from-second"), b"2")
        .map_err(|e| fail(format!("cannot write through the second target: {e}")))?;
    ensure!(
        Path::new(&targets[0]).join("from-second").exists(),
        "a write through one target is not visible through the other"
    );
    Ok(())
}

async fn unpublish_no_volume_id(cx: Ctx) -> CaseResult {
    let (_, _, target) = cx.published_volume().await?;
    check::invalid_argument(cx.node_unpublish_volume(unpublish_req("", &target)).await)
}

async fn unpublish_no_target(cx: Ctx) -> CaseResult {
    let (volume, _, _) = cx.published_volume().await?;
    check::invalid_argument(
        cx.node_unpublish_volume(unpublish_req(&volume.volume_id, ""))
            .await,
    )
}

async fn never_published(cx: Ctx) -> CaseResult {
    let (volume, _, target) = setup(&cx).await?;
    check::ok(
        cx.node_unpublish_volume(unpublish_req(&volume.volume_id, &target))
            .await,
        "NodeUnpublishVolume of a target never published",
    )
    .map(drop)
}

async fn unpublish_twice(cx: Ctx) -> CaseResult {
    let (volume, _, target) = cx.published_volume().await?;
    for which in ["first NodeUnpublishVolume", "second NodeUnpublishVolume"] {
        check::ok(
            cx.node_unpublish_volume(unpublish_req(&volume.volume_id, &target))
                .await,
            which,
        )?;
    }
    Ok(())
}

async fn undoes_mount(cx: Ctx) -> CaseResult {
    let (volume, _, target) = cx.published_volume().await?;
    check::ok(
        cx.node_unpublish_volume(unpublish_req(&volume.volume_id, &target))
            .await,
        "NodeUnpublishVolume",
    )?;
    ensure!(!mounted(&target)?, "{target} is still a mount point");
    Ok(())
}

async fn removes_target(cx: Ctx) -> CaseResult {
    let (volume, _, target) = cx.published_volume().await?;
    check::ok(
        cx.node_unpublish_volume(unpublish_req(&volume.volume_id, &target))
            .await,
        "NodeUnpublishVolume",
    )?;
    ensure!(
        !Path::new(&target).exists(),
        "{target} still exists after NodeUnpublishVolume"
    );
    Ok(())
}

async fn data_survives(cx: Ctx) -> CaseResult {
    let (volume, staging, target) = cx.published_volume().await?;
    std::fs::write(Path::new(&target).join("sanity-survivor"), b"still here")
        .map_err(|e| fail(format!("cannot write through the target: {e}")))?;
    check::ok(
        cx.node_unpublish_volume(unpublish_req(&volume.volume_id, &target))
            .await,
        "NodeUnpublishVolume",
    )?;
    let again = cx.publish(&volume, &staging, 1, false).await?;
    let read = std::fs::read(Path::new(&again).join("sanity-survivor"));
    ensure!(
        read.as_deref().ok() == Some(b"still here".as_slice()),
        "after republish the file is gone or changed: {read:?}"
    );
    Ok(())
}

fn with_mode(mut req: v1::NodePublishVolumeRequest, mode: Mode) -> v1::NodePublishVolumeRequest {
    req.volume_capability = Some(fixtures::mount(mode));
    req
}

/// What an answer was, for failure text.
fn answered<T>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "0 OK".to_string(),
        Err(status) => check::describe(status),
    }
}

async fn never_issued(cx: Ctx) -> CaseResult {
    // A real volume's staging path, so only the id is wrong.
    let (_, staging, _) = setup(&cx).await?;
    for (n, id) in (0..).zip(cx.never_issued_ids()) {
        let target = cx.target_path(n)?;
        let volume = v1::Volume {
            volume_id: id.clone(),
            ..Default::default()
        };
        let req = cx.publish_request(&volume, &staging, &target, false);
        check::not_found(cx.try_publish(req).await)
            .map_err(|stop| check::about(stop, format!("volume_id {id:?}")))?;
    }
    Ok(())
}

async fn incompatible_access_mode(cx: Ctx) -> CaseResult {
    let (volume, staging, target) = cx.published_volume().await?;
    let req = cx.publish_request(&volume, &staging, &target, false);
    let req = with_mode(req, Mode::SingleNodeReaderOnly);
    check::code(cx.try_publish(req).await, &[Code::AlreadyExists]).map(drop)
}

async fn reader_only_mode(cx: Ctx) -> CaseResult {
    let (volume, staging, target) = setup(&cx).await?;
    let req = cx.publish_request(&volume, &staging, &target, false);
    let req = with_mode(req, Mode::SingleNodeReaderOnly);
    match cx.try_publish(req).await {
        Ok(()) => refuses_writes(&target),
        // "Exceeds capabilities": no mount at all, so nothing to write to.
        Err(status) if status.code() == Code::FailedPrecondition => Err(Stop::Skip(format!(
            "the volume is not publishable SINGLE_NODE_READER_ONLY: {}",
            check::describe(&status)
        ))),
        Err(status) => Err(fail(format!(
            "NodePublishVolume SINGLE_NODE_READER_ONLY: expected 0 OK (or 9 \
             FAILED_PRECONDITION), got {}",
            check::describe(&status)
        ))),
    }
}

async fn single_writer_second_target(cx: Ctx) -> CaseResult {
    // A node that knows SINGLE_NODE_MULTI_WRITER is the one for which
    // SINGLE_NODE_SINGLE_WRITER means something.
    cx.need_node(NodeCap::SingleNodeMultiWriter)?;
    cx.need_node_volume()?;
    let cap = fixtures::mount(Mode::SingleNodeSingleWriter);
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_capabilities = vec![cap.clone()];
    let volume = match cx.try_create_volume(req).await {
        Ok(resp) => resp
            .volume
            .ok_or_else(|| fail("CreateVolume returned OK without a volume (REQUIRED)"))?,
        Err(status) if status.code() == Code::InvalidArgument => {
            return Err(Stop::Skip(format!(
                "CreateVolume does not support SINGLE_NODE_SINGLE_WRITER: {}",
                check::describe(&status)
            )))
        }
        Err(status) => {
            return Err(fail(format!(
                "setup: CreateVolume SINGLE_NODE_SINGLE_WRITER failed: {}",
                check::describe(&status)
            )))
        }
    };
    let staging = cx.stage_with(&volume, 0, cap).await?;
    let first = cx.target_path(0)?;
    let req = cx.publish_request(&volume, &staging, &first, false);
    check::ok(
        cx.try_publish(with_mode(req, Mode::SingleNodeSingleWriter))
            .await,
        "first NodePublishVolume read/write",
    )?;
    let second = cx.target_path(1)?;
    let req = cx.publish_request(&volume, &staging, &second, false);
    check::code(
        cx.try_publish(with_mode(req, Mode::SingleNodeSingleWriter))
            .await,
        &[Code::FailedPrecondition],
    )
    .map_err(|stop| check::about(stop, "second read/write NodePublishVolume"))?;
    Ok(())
}

async fn target_is_staging_path(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::StageUnstageVolume)?;
    let (volume, staging, _) = setup(&cx).await?;
    let req = cx.publish_request(&volume, &staging, &staging, false);
    let result = cx.try_publish(req).await;
    ensure!(
        result.is_err(),
        "NodePublishVolume with target_path = staging_target_path answered 0 OK"
    );
    ensure!(
        mounted(&staging)?,
        "after the publish onto it ({}), {staging} is no longer a mount point",
        answered(&result)
    );
    // And the volume still publishes where it should.
    cx.publish(&volume, &staging, 1, false).await?;
    Ok(())
}

async fn other_volumes_target(cx: Ctx) -> CaseResult {
    cx.need_node_volume()?;
    let a = cx.new_volume().await?;
    let a_staging = cx.stage_with(&a, 0, fixtures::single_writer()).await?;
    cx.publish(&a, &a_staging, 0, false).await?;
    let b = cx.new_volume().await?;
    let b_staging = cx.stage_with(&b, 1, fixtures::single_writer()).await?;
    let b_target = cx.publish(&b, &b_staging, 1, false).await?;
    let data = b"volume B's data".as_slice();
    std::fs::write(Path::new(&b_target).join("sanity-b"), data)
        .map_err(|e| fail(format!("cannot write through B's target: {e}")))?;
    // Any answer will do (an error, or OK without touching B); what
    // counts is what happens to B.
    let result = cx
        .node_unpublish_volume(unpublish_req(&a.volume_id, &b_target))
        .await;
    let answer = answered(&result);
    ensure!(
        mounted(&b_target)?,
        "NodeUnpublishVolume with A's id at B's target ({answer}) unmounted B: {b_target} \
         is no longer a mount point"
    );
    let read = std::fs::read(Path::new(&b_target).join("sanity-b"));
    ensure!(
        read.as_deref().ok() == Some(data),
        "after NodeUnpublishVolume with A's id at B's target ({answer}), B's target no \
         longer shows its data: {read:?}"
    );
    Ok(())
}
