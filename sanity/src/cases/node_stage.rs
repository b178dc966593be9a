//! NodeStageVolume / NodeUnstageVolume: the per-node global mount.

use std::path::Path;

use super::prelude::*;
use crate::cleanup::{is_mount_point, Cleanup};

pub fn cases() -> Vec<Case> {
    vec![
        case!("NodeStageVolume/no-volume-id", "NodeStageVolume: volume_id is REQUIRED → 3 INVALID_ARGUMENT", no_volume_id),
        case!("NodeStageVolume/no-staging-path", "NodeStageVolume: staging_target_path is REQUIRED → 3 INVALID_ARGUMENT", no_staging_path),
        case!("NodeStageVolume/no-capability", "NodeStageVolume: volume_capability is REQUIRED → 3 INVALID_ARGUMENT", no_capability),
        case!("NodeStageVolume/relative-staging-path", "NodeStageVolume: staging_target_path MUST be an absolute path; a relative one is invalid → 3 INVALID_ARGUMENT", relative_path),
        case!("NodeStageVolume/unknown-volume", "NodeStageVolume: volume does not exist → 5 NOT_FOUND", unknown_volume),
        case!("NodeStageVolume/never-issued-volume", "NodeStageVolume: an id the plugin never issued names no volume → 5 NOT_FOUND", never_issued),
        case!("NodeStageVolume/unknown-access-mode", "NodeStageVolume: an UNKNOWN access mode is invalid → 3 INVALID_ARGUMENT (or 9 FAILED_PRECONDITION, exceeds capabilities)", unknown_access_mode),
        case!("NodeStageVolume/ok", "NodeStageVolume: with STAGE_UNSTAGE_VOLUME a created volume stages at the CO-created staging dir", stage_ok),
        case!("NodeStageVolume/twice", "NodeStageVolume: MUST be idempotent; already staged with an identical capability → 0 OK", stage_twice),
        case!("NodeStageVolume/incompatible-restage", "NodeStageVolume: staged as mount, restaged as block at the same path is incompatible → 6 ALREADY_EXISTS (or 9/3 if block is unsupported), never 0 OK", incompatible_restage),
        case!("NodeUnstageVolume/no-volume-id", "NodeUnstageVolume: volume_id is REQUIRED → 3 INVALID_ARGUMENT", unstage_no_volume_id),
        case!("NodeUnstageVolume/no-staging-path", "NodeUnstageVolume: staging_target_path is REQUIRED → 3 INVALID_ARGUMENT", unstage_no_path),
        case!("NodeUnstageVolume/never-staged", "NodeUnstageVolume: the volume is not staged at staging_target_path → 0 OK", never_staged),
        case!("NodeUnstageVolume/twice", "NodeUnstageVolume: MUST be idempotent; a repeated call replies 0 OK", unstage_twice),
        case!("NodeUnstageVolume/other-volumes-staging", "NodeUnstageVolume: undoes the staging of the volume named by volume_id only; with volume A's id at volume B's staging path, B stays staged, publishable, with its data", other_volumes_staging),
        case!("NodeUnstageVolume/undoes-mount", "NodeUnstageVolume: MUST undo the work of NodeStageVolume; a staging mount is gone afterwards", undoes_mount),
    ]
}

async fn setup(cx: &Ctx) -> Result<(v1::Volume, String), Stop> {
    cx.need_node(NodeCap::StageUnstageVolume)?;
    cx.need_node_volume()?;
    let volume = cx.new_volume().await?;
    let staging = cx.staging_dir(0)?;
    Ok((volume, staging))
}

fn stage_req(volume: &v1::Volume, staging: &str) -> v1::NodeStageVolumeRequest {
    v1::NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.to_string(),
        volume_capability: Some(fixtures::single_writer()),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

fn unstage_req(volume_id: &str, staging: &str) -> v1::NodeUnstageVolumeRequest {
    v1::NodeUnstageVolumeRequest {
        volume_id: volume_id.to_string(),
        staging_target_path: staging.to_string(),
    }
}

/// NodeStageVolume that registers its undo when it succeeds.
async fn stage(
    cx: &Ctx,
    req: v1::NodeStageVolumeRequest,
) -> Result<v1::NodeStageVolumeResponse, tonic::Status> {
    let (volume_id, staging_path) = (req.volume_id.clone(), req.staging_target_path.clone());
    let resp = cx.node_stage_volume(req).await?;
    cx.defer(Cleanup::NodeUnstage {
        volume_id,
        staging_path,
    });
    Ok(resp)
}

async fn no_volume_id(cx: Ctx) -> CaseResult {
    let (volume, staging) = setup(&cx).await?;
    let mut req = stage_req(&volume, &staging);
    req.volume_id.clear();
    check::invalid_argument(stage(&cx, req).await)
}

async fn no_staging_path(cx: Ctx) -> CaseResult {
    let (volume, _) = setup(&cx).await?;
    check::invalid_argument(stage(&cx, stage_req(&volume, "")).await)
}

async fn no_capability(cx: Ctx) -> CaseResult {
    let (volume, staging) = setup(&cx).await?;
    let mut req = stage_req(&volume, &staging);
    req.volume_capability = None;
    check::invalid_argument(stage(&cx, req).await)
}

async fn relative_path(cx: Ctx) -> CaseResult {
    let (volume, _) = setup(&cx).await?;
    check::invalid_argument(stage(&cx, stage_req(&volume, "sanity-relative/globalmount")).await)
}

async fn unknown_volume(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::StageUnstageVolume)?;
    cx.need_node_volume()?;
    let gone = cx.deleted_volume_id().await?;
    let staging = cx.staging_dir(0)?;
    let req = stage_req(
        &v1::Volume {
            volume_id: gone,
            ..Default::default()
        },
        &staging,
    );
    check::not_found(stage(&cx, req).await)
}

async fn unknown_access_mode(cx: Ctx) -> CaseResult {
    let (volume, staging) = setup(&cx).await?;
    let mut req = stage_req(&volume, &staging);
    req.volume_capability = Some(fixtures::mount(Mode::Unknown));
    check::code(
        stage(&cx, req).await,
        &[Code::InvalidArgument, Code::FailedPrecondition],
    )
    .map(drop)
}

async fn stage_ok(cx: Ctx) -> CaseResult {
    let (volume, staging) = setup(&cx).await?;
    check::ok(
        stage(&cx, stage_req(&volume, &staging)).await,
        "NodeStageVolume",
    )
    .map(drop)
}

async fn stage_twice(cx: Ctx) -> CaseResult {
    let (volume, staging) = setup(&cx).await?;
    for which in ["first NodeStageVolume", "second NodeStageVolume"] {
        check::ok(stage(&cx, stage_req(&volume, &staging)).await, which)?;
    }
    Ok(())
}

async fn incompatible_restage(cx: Ctx) -> CaseResult {
    let (volume, staging) = setup(&cx).await?;
    check::ok(
        stage(&cx, stage_req(&volume, &staging)).await,
        "NodeStageVolume",
    )?;
    let mut req = stage_req(&volume, &staging);
    req.volume_capability = Some(fixtures::block(Mode::SingleNodeWriter));
    check::code(
        stage(&cx, req).await,
        &[
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::InvalidArgument,
        ],
    )
    .map(drop)
}

async fn unstage_no_volume_id(cx: Ctx) -> CaseResult {
    let (_, staging) = setup(&cx).await?;
    check::invalid_argument(cx.node_unstage_volume(unstage_req("", &staging)).await)
}

async fn unstage_no_path(cx: Ctx) -> CaseResult {
    let (volume, _) = setup(&cx).await?;
    check::invalid_argument(
        cx.node_unstage_volume(unstage_req(&volume.volume_id, ""))
            .await,
    )
}

async fn never_staged(cx: Ctx) -> CaseResult {
    let (volume, staging) = setup(&cx).await?;
    check::ok(
        cx.node_unstage_volume(unstage_req(&volume.volume_id, &staging))
            .await,
        "NodeUnstageVolume of a volume never staged",
    )
    .map(drop)
}

async fn unstage_twice(cx: Ctx) -> CaseResult {
    let (volume, staging) = setup(&cx).await?;
    check::ok(
        stage(&cx, stage_req(&volume, &staging)).await,
        "NodeStageVolume",
    )?;
    for which in ["first NodeUnstageVolume", "second NodeUnstageVolume"] {
        check::ok(
            cx.node_unstage_volume(unstage_req(&volume.volume_id, &staging))
                .await,
            which,
        )?;
    }
    Ok(())
}

async fn undoes_mount(cx: Ctx) -> CaseResult {
    let (volume, staging) = setup(&cx).await?;
    check::ok(
        stage(&cx, stage_req(&volume, &staging)).await,
        "NodeStageVolume",
    )?;
    let path = Path::new(&staging);
    let mounted = is_mount_point(path).map_err(|e| fail(format!("reading mounts: {e}")))?;
    if !mounted {
        return Err(Stop::Skip(
            "the driver stages without a mount at the staging path".into(),
        ));
    }
    check::ok(
        cx.node_unstage_volume(unstage_req(&volume.volume_id, &staging))
            .await,
        "NodeUnstageVolume",
    )?;
    let still = is_mount_point(path).map_err(|e| fail(format!("reading mounts: {e}")))?;
    ensure!(
        !still,
        "{staging} is still a mount point after NodeUnstageVolume"
    );
    Ok(())
}

async fn never_issued(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::StageUnstageVolume)?;
    for (n, id) in (0..).zip(cx.never_issued_ids()) {
        let staging = cx.staging_dir(n)?;
        let req = stage_req(
            &v1::Volume {
                volume_id: id.clone(),
                ..Default::default()
            },
            &staging,
        );
        check::not_found(stage(&cx, req).await)
            .map_err(|stop| check::about(stop, format!("volume_id {id:?}")))?;
    }
    Ok(())
}

async fn other_volumes_staging(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::StageUnstageVolume)?;
    cx.need_node_volume()?;
    let a = cx.new_volume().await?;
    cx.stage_with(&a, 0, fixtures::single_writer()).await?;
    let b = cx.new_volume().await?;
    let b_staging = cx.stage_with(&b, 1, fixtures::single_writer()).await?;
    let b_target = cx.publish(&b, &b_staging, 0, false).await?;
    let data = b"volume B's data".as_slice();
    std::fs::write(Path::new(&b_target).join("sanity-b"), data)
        .map_err(|e| fail(format!("cannot write through B's target: {e}")))?;
    check::ok(
        cx.node_unpublish_volume(v1::NodeUnpublishVolumeRequest {
            volume_id: b.volume_id.clone(),
            target_path: b_target.clone(),
        })
        .await,
        "setup: NodeUnpublishVolume of B",
    )?;
    // Any answer will do (an error, or OK without touching B); what
    // counts is what happens to B.
    let answer = match cx
        .node_unstage_volume(unstage_req(&a.volume_id, &b_staging))
        .await
    {
        Ok(_) => "0 OK".to_string(),
        Err(status) => check::describe(&status),
    };
    let still =
        is_mount_point(Path::new(&b_staging)).map_err(|e| fail(format!("reading mounts: {e}")))?;
    ensure!(
        still,
        "NodeUnstageVolume with A's id at B's staging path ({answer}) unstaged B: \
         {b_staging} is no longer a mount point"
    );
    let again = cx.publish(&b, &b_staging, 1, false).await.map_err(|stop| {
        check::about(
            stop,
            format!("after NodeUnstageVolume with A's id at B's staging path ({answer})"),
        )
    })?;
    let read = std::fs::read(Path::new(&again).join("sanity-b"));
    ensure!(
        read.as_deref().ok() == Some(data),
        "after NodeUnstageVolume with A's id at B's staging path ({answer}), B no longer \
         shows its data: {read:?}"
    );
    Ok(())
}
