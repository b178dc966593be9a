//! NodeGetVolumeStats: the kubelet's hottest call.

use super::prelude::*;
use cairn_proto::v1::volume_usage::Unit;

pub fn cases() -> Vec<Case> {
    vec![
        case!("NodeGetVolumeStats/no-volume-id", "NodeGetVolumeStats: volume_id is REQUIRED → 3 INVALID_ARGUMENT", no_volume_id),
        case!("NodeGetVolumeStats/no-volume-path", "NodeGetVolumeStats: volume_path is REQUIRED → 3 INVALID_ARGUMENT", no_volume_path),
        case!("NodeGetVolumeStats/published", "NodeGetVolumeStats: with GET_VOLUME_STATS a published volume reports usage (BYTES for a mounted filesystem)", published),
        case!("NodeGetVolumeStats/usage-consistent", "VolumeUsage: every entry has a unit, values are not negative, and used and available do not exceed a non-zero total", usage_consistent),
        case!("NodeGetVolumeStats/with-staging-path", "NodeGetVolumeStats: staging_target_path is OPTIONAL and the CO SHOULD supply it; giving it does not change the answer", with_staging_path),
        case!("NodeGetVolumeStats/unknown-path", "NodeGetVolumeStats: the volume does not exist on the specified volume_path → 5 NOT_FOUND", unknown_path),
        case!("NodeGetVolumeStats/unknown-volume", "NodeGetVolumeStats: a volume that does not exist → 5 NOT_FOUND", unknown_volume),
        case!("NodeGetVolumeStats/never-issued-volume", "NodeGetVolumeStats: an id the plugin never issued names no volume, even at another volume's path → 5 NOT_FOUND", never_issued),
        case!("NodeGetVolumeStats/volume-condition", "NodeGetVolumeStats: with node VOLUME_CONDITION the response reports volume_condition; a healthy volume is not abnormal", volume_condition),
    ]
}

fn need(cx: &Ctx) -> CaseResult {
    let stats = cx.need_node(NodeCap::GetVolumeStats);
    let condition = cx.need_node(NodeCap::VolumeCondition);
    // The RPC exists if either capability is advertised.
    stats.or(condition)
}

fn stats_req(volume_id: &str, path: &str) -> v1::NodeGetVolumeStatsRequest {
    v1::NodeGetVolumeStatsRequest {
        volume_id: volume_id.to_string(),
        volume_path: path.to_string(),
        staging_target_path: String::new(),
    }
}

async fn no_volume_id(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let (_, _, target) = cx.published_volume().await?;
    check::invalid_argument(cx.node_get_volume_stats(stats_req("", &target)).await)
}

async fn no_volume_path(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let (volume, _, _) = cx.published_volume().await?;
    check::invalid_argument(
        cx.node_get_volume_stats(stats_req(&volume.volume_id, ""))
            .await,
    )
}

async fn published_stats(cx: &Ctx) -> Result<v1::NodeGetVolumeStatsResponse, Stop> {
    cx.need_node(NodeCap::GetVolumeStats)?;
    let (volume, _, target) = cx.published_volume().await?;
    check::ok(
        cx.node_get_volume_stats(stats_req(&volume.volume_id, &target))
            .await,
        "NodeGetVolumeStats",
    )
}

async fn published(cx: Ctx) -> CaseResult {
    let resp = published_stats(&cx).await?;
    ensure!(!resp.usage.is_empty(), "no usage for a published volume");
    ensure!(
        resp.usage.iter().any(|u| u.unit() == Unit::Bytes),
        "no BYTES usage entry for a mounted filesystem"
    );
    Ok(())
}

async fn usage_consistent(cx: Ctx) -> CaseResult {
    let resp = published_stats(&cx).await?;
    for u in &resp.usage {
        ensure!(
            u.unit() != Unit::Unknown,
            "usage entry with unit UNKNOWN: {u:?}"
        );
        ensure!(
            u.total >= 0 && u.used >= 0 && u.available >= 0,
            "negative value in {u:?}"
        );
        if u.total > 0 {
            ensure!(
                u.used <= u.total && u.available <= u.total,
                "used/available exceed total in {u:?}"
            );
        }
    }
    Ok(())
}

async fn with_staging_path(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::GetVolumeStats)?;
    let (volume, staging, target) = cx.published_volume().await?;
    let mut req = stats_req(&volume.volume_id, &target);
    req.staging_target_path = staging;
    check::ok(cx.node_get_volume_stats(req).await, "NodeGetVolumeStats").map(drop)
}

async fn unknown_path(cx: Ctx) -> CaseResult {
    need(&cx)?;
    let (volume, _, _) = cx.published_volume().await?;
    let elsewhere = cx.target_path(1)?;
    check::not_found(
        cx.node_get_volume_stats(stats_req(&volume.volume_id, &elsewhere))
            .await,
    )
}

async fn unknown_volume(cx: Ctx) -> CaseResult {
    need(&cx)?;
    cx.need_node_volume()?;
    let gone = cx.deleted_volume_id().await?;
    let target = cx.target_path(0)?;
    check::not_found(cx.node_get_volume_stats(stats_req(&gone, &target)).await)
}

async fn volume_condition(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::VolumeCondition)?;
    let (volume, _, target) = cx.published_volume().await?;
    let resp = check::ok(
        cx.node_get_volume_stats(stats_req(&volume.volume_id, &target))
            .await,
        "NodeGetVolumeStats",
    )?;
    let condition = resp
        .volume_condition
        .ok_or_else(|| fail("VOLUME_CONDITION advertised but no volume_condition returned"))?;
    ensure!(
        !condition.abnormal,
        "a fresh volume is abnormal: {:?}",
        condition.message
    );
    Ok(())
}

async fn never_issued(cx: Ctx) -> CaseResult {
    need(&cx)?;
    // A real volume's target: the bogus id must not borrow its stats.
    let (_, _, target) = cx.published_volume().await?;
    for id in cx.never_issued_ids() {
        check::not_found(cx.node_get_volume_stats(stats_req(&id, &target)).await)
            .map_err(|stop| check::about(stop, format!("volume_id {id:?}")))?;
    }
    Ok(())
}
