//! ControllerPublishVolume / ControllerUnpublishVolume (attach, detach).

use super::prelude::*;

pub fn cases() -> Vec<Case> {
    vec![
        case!(
            "ControllerPublishVolume/no-volume-id",
            "ControllerPublishVolume: volume_id is REQUIRED → 3 INVALID_ARGUMENT",
            no_volume_id
        ),
        case!(
            "ControllerPublishVolume/no-node-id",
            "ControllerPublishVolume: node_id is REQUIRED → 3 INVALID_ARGUMENT",
            no_node_id
        ),
        case!(
            "ControllerPublishVolume/no-capability",
            "ControllerPublishVolume: volume_capability is REQUIRED → 3 INVALID_ARGUMENT",
            no_capability
        ),
        case!(
            "ControllerPublishVolume/unknown-volume",
            "ControllerPublishVolume: volume does not exist → 5 NOT_FOUND",
            unknown_volume
        ),
        case!(
            "ControllerPublishVolume/unknown-node",
            "ControllerPublishVolume: node does not exist → 5 NOT_FOUND",
            unknown_node
        ),
        case!(
            "ControllerPublishVolume/twice",
            "ControllerPublishVolume: MUST be idempotent; published and compatible → 0 OK",
            publish_twice
        ),
        case!(
            "ControllerUnpublishVolume/no-volume-id",
            "ControllerUnpublishVolume: volume_id is REQUIRED → 3 INVALID_ARGUMENT",
            unpublish_no_volume_id
        ),
        case!(
            "ControllerUnpublishVolume/twice",
            "ControllerUnpublishVolume: MUST be idempotent; not published → 0 OK",
            unpublish_twice
        ),
    ]
}

async fn setup(cx: &Ctx) -> Result<(v1::Volume, String), Stop> {
    cx.need_controller(ControllerCap::PublishUnpublishVolume)?;
    let node_id = cx
        .node_id()
        .ok_or_else(|| Stop::Skip("no node id from NodeGetInfo to publish to".into()))?
        .to_string();
    Ok((cx.new_volume().await?, node_id))
}

fn publish_req(volume_id: &str, node_id: &str) -> v1::ControllerPublishVolumeRequest {
    v1::ControllerPublishVolumeRequest {
        volume_id: volume_id.to_string(),
        node_id: node_id.to_string(),
        volume_capability: Some(fixtures::single_writer()),
        ..Default::default()
    }
}

fn unpublish_req(volume_id: &str, node_id: &str) -> v1::ControllerUnpublishVolumeRequest {
    v1::ControllerUnpublishVolumeRequest {
        volume_id: volume_id.to_string(),
        node_id: node_id.to_string(),
        ..Default::default()
    }
}

/// Publishes, registering the unpublish, and returns the raw result.
async fn publish(
    cx: &Ctx,
    req: v1::ControllerPublishVolumeRequest,
) -> Result<v1::ControllerPublishVolumeResponse, tonic::Status> {
    let (volume_id, node_id) = (req.volume_id.clone(), req.node_id.clone());
    let resp = cx.controller_publish_volume(req).await?;
    cx.defer(crate::cleanup::Cleanup::ControllerUnpublish { volume_id, node_id });
    Ok(resp)
}

async fn no_volume_id(cx: Ctx) -> CaseResult {
    let (_, node) = setup(&cx).await?;
    check::invalid_argument(publish(&cx, publish_req("", &node)).await)
}

async fn no_node_id(cx: Ctx) -> CaseResult {
    let (volume, _) = setup(&cx).await?;
    check::invalid_argument(publish(&cx, publish_req(&volume.volume_id, "")).await)
}

async fn no_capability(cx: Ctx) -> CaseResult {
    let (volume, node) = setup(&cx).await?;
    let mut req = publish_req(&volume.volume_id, &node);
    req.volume_capability = None;
    check::invalid_argument(publish(&cx, req).await)
}

async fn unknown_volume(cx: Ctx) -> CaseResult {
    let (_, node) = setup(&cx).await?;
    let gone = cx.deleted_volume_id().await?;
    check::not_found(publish(&cx, publish_req(&gone, &node)).await)
}

async fn unknown_node(cx: Ctx) -> CaseResult {
    let (volume, _) = setup(&cx).await?;
    check::not_found(publish(&cx, publish_req(&volume.volume_id, "sanity-no-such-node")).await)
}

async fn publish_twice(cx: Ctx) -> CaseResult {
    let (volume, node) = setup(&cx).await?;
    check::ok(
        publish(&cx, publish_req(&volume.volume_id, &node)).await,
        "first publish",
    )?;
    check::ok(
        publish(&cx, publish_req(&volume.volume_id, &node)).await,
        "second publish",
    )
    .map(drop)
}

async fn unpublish_no_volume_id(cx: Ctx) -> CaseResult {
    let (_, node) = setup(&cx).await?;
    check::invalid_argument(
        cx.controller_unpublish_volume(unpublish_req("", &node))
            .await,
    )
}

async fn unpublish_twice(cx: Ctx) -> CaseResult {
    let (volume, node) = setup(&cx).await?;
    check::ok(
        publish(&cx, publish_req(&volume.volume_id, &node)).await,
        "publish",
    )?;
    for which in ["first unpublish", "second unpublish"] {
        check::ok(
            cx.controller_unpublish_volume(unpublish_req(&volume.volume_id, &node))
                .await,
            which,
        )?;
    }
    Ok(())
}
