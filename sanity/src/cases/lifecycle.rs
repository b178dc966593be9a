//! Whole lifecycles in the order the kubelet drives them.

use std::path::Path;

use super::prelude::*;

pub fn cases() -> Vec<Case> {
    vec![
        case!("Lifecycle/create-stage-publish-unpublish-unstage-delete", "RPC interactions: NodeStage before NodePublish, all NodeUnpublish before NodeUnstage, then DeleteVolume; every step 0 OK", full),
        case!("Lifecycle/restage-after-unstage", "NodeStageVolume: MAY be called again for the first time since a NodeUnstageVolume returned success", restage),
        case!("Lifecycle/volumes-isolated", "Volume: volume_id identifies one piece of storage; a file written to one volume does not appear in another", isolated),
        case!("Lifecycle/deleted-after-use", "DeleteVolume: after the node has let go, DeleteVolume succeeds and the volume is gone", deleted_after_use),
    ]
}

async fn unpublish(cx: &Ctx, volume_id: &str, target: &str) -> CaseResult {
    check::ok(
        cx.node_unpublish_volume(v1::NodeUnpublishVolumeRequest {
            volume_id: volume_id.to_string(),
            target_path: target.to_string(),
        })
        .await,
        "NodeUnpublishVolume",
    )
    .map(drop)
}

async fn unstage(cx: &Ctx, volume_id: &str, staging: &str) -> CaseResult {
    if staging.is_empty() {
        return Ok(());
    }
    check::ok(
        cx.node_unstage_volume(v1::NodeUnstageVolumeRequest {
            volume_id: volume_id.to_string(),
            staging_target_path: staging.to_string(),
        })
        .await,
        "NodeUnstageVolume",
    )
    .map(drop)
}

async fn delete(cx: &Ctx, volume_id: &str) -> CaseResult {
    check::ok(
        cx.delete_volume(v1::DeleteVolumeRequest {
            volume_id: volume_id.to_string(),
            ..Default::default()
        })
        .await,
        "DeleteVolume",
    )
    .map(drop)
}

async fn full(cx: Ctx) -> CaseResult {
    let (volume, staging, target) = cx.published_volume().await?;
    if cx.caps().has_node(NodeCap::GetVolumeStats) {
        check::ok(
            cx.node_get_volume_stats(v1::NodeGetVolumeStatsRequest {
                volume_id: volume.volume_id.clone(),
                volume_path: target.clone(),
                staging_target_path: staging.clone(),
            })
            .await,
            "NodeGetVolumeStats",
        )?;
    }
    unpublish(&cx, &volume.volume_id, &target).await?;
    unstage(&cx, &volume.volume_id, &staging).await?;
    delete(&cx, &volume.volume_id).await
}

async fn restage(cx: Ctx) -> CaseResult {
    let (volume, staging, target) = cx.published_volume().await?;
    unpublish(&cx, &volume.volume_id, &target).await?;
    unstage(&cx, &volume.volume_id, &staging).await?;
    let staging = cx.stage(&volume).await?;
    cx.publish(&volume, &staging, 1, false).await.map(drop)
}

async fn isolated(cx: Ctx) -> CaseResult {
    let (_, _, first) = cx.published_volume().await?;
    let other = cx.new_volume().await?;
    std::fs::write(Path::new(&first).join("sanity-only-in-first"), b"1")
        .map_err(|e| fail(format!("cannot write through {first}: {e}")))?;
    // The second volume gets its own staging dir (1) and target (1).
    let staging = if cx.caps().has_node(NodeCap::StageUnstageVolume) {
        let dir = cx.staging_dir(1)?;
        check::ok(
            cx.node_stage_volume(v1::NodeStageVolumeRequest {
                volume_id: other.volume_id.clone(),
                staging_target_path: dir.clone(),
                volume_capability: Some(fixtures::single_writer()),
                volume_context: other.volume_context.clone(),
                ..Default::default()
            })
            .await,
            "NodeStageVolume",
        )?;
        cx.defer(crate::cleanup::Cleanup::NodeUnstage {
            volume_id: other.volume_id.clone(),
            staging_path: dir.clone(),
        });
        dir
    } else {
        String::new()
    };
    let second = cx.publish(&other, &staging, 1, false).await?;
    ensure!(
        !Path::new(&second).join("sanity-only-in-first").exists(),
        "a file written to one volume shows up in another"
    );
    Ok(())
}

async fn deleted_after_use(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::ListVolumes)?;
    let (volume, staging, target) = cx.published_volume().await?;
    unpublish(&cx, &volume.volume_id, &target).await?;
    unstage(&cx, &volume.volume_id, &staging).await?;
    delete(&cx, &volume.volume_id).await?;
    let listed = check::ok(
        cx.list_volumes(v1::ListVolumesRequest::default()).await,
        "ListVolumes",
    )?;
    ensure!(
        !listed.entries.iter().any(|e| e
            .volume
            .as_ref()
            .is_some_and(|v| v.volume_id == volume.volume_id)),
        "deleted volume still listed"
    );
    Ok(())
}
