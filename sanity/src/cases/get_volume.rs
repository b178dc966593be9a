//! ControllerGetVolume: one volume's current state.

use super::prelude::*;

pub fn cases() -> Vec<Case> {
    vec![
        case!("ControllerGetVolume/no-id", "ControllerGetVolume: volume_id is REQUIRED; missing MUST give 3 INVALID_ARGUMENT", no_id),
        case!("ControllerGetVolume/unknown-id", "ControllerGetVolume: volume does not exist → 5 NOT_FOUND", unknown_id),
        case!("ControllerGetVolume/never-issued-id", "ControllerGetVolume: an id the plugin never issued names no volume → 5 NOT_FOUND", never_issued),
        case!("ControllerGetVolume/ok", "ControllerGetVolume: volume and status are REQUIRED and describe the volume asked for", get_ok),
        case!("ControllerGetVolume/volume-condition", "ControllerGetVolume: VolumeStatus.volume_condition MUST be specified when VOLUME_CONDITION is advertised", volume_condition),
        case!("ControllerGetVolume/deleted", "ControllerGetVolume: after DeleteVolume the volume does not exist → 5 NOT_FOUND", deleted),
    ]
}

fn get(id: &str) -> v1::ControllerGetVolumeRequest {
    v1::ControllerGetVolumeRequest {
        volume_id: id.to_string(),
    }
}

async fn no_id(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::GetVolume)?;
    check::invalid_argument(cx.controller_get_volume(get("")).await)
}

async fn unknown_id(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::GetVolume)?;
    let gone = cx.deleted_volume_id().await?;
    check::not_found(cx.controller_get_volume(get(&gone)).await)
}

async fn deleted(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::GetVolume)?;
    let volume = cx.new_volume().await?;
    check::ok(
        cx.controller_get_volume(get(&volume.volume_id)).await,
        "ControllerGetVolume",
    )?;
    check::ok(
        cx.delete_volume(v1::DeleteVolumeRequest {
            volume_id: volume.volume_id.clone(),
            ..Default::default()
        })
        .await,
        "DeleteVolume",
    )?;
    check::not_found(cx.controller_get_volume(get(&volume.volume_id)).await)
}

async fn get_ok(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::GetVolume)?;
    let volume = cx.new_volume().await?;
    let resp = check::ok(
        cx.controller_get_volume(get(&volume.volume_id)).await,
        "ControllerGetVolume",
    )?;
    let got = resp
        .volume
        .ok_or_else(|| fail("no volume in the response (REQUIRED)"))?;
    ensure!(
        got.volume_id == volume.volume_id,
        "asked for {:?}, got {:?}",
        volume.volume_id,
        got.volume_id
    );
    ensure!(
        resp.status.is_some(),
        "no status in the response (REQUIRED)"
    );
    Ok(())
}

async fn volume_condition(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::GetVolume)?;
    cx.need_controller(ControllerCap::VolumeCondition)?;
    let volume = cx.new_volume().await?;
    let resp = check::ok(
        cx.controller_get_volume(get(&volume.volume_id)).await,
        "ControllerGetVolume",
    )?;
    ensure!(
        resp.status
            .as_ref()
            .is_some_and(|s| s.volume_condition.is_some()),
        "status {:?} has no volume_condition",
        resp.status
    );
    let condition = resp
        .status
        .and_then(|s| s.volume_condition)
        .unwrap_or_default();
    ensure!(
        !condition.abnormal,
        "a fresh volume is abnormal: {:?}",
        condition.message
    );
    Ok(())
}

async fn never_issued(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::GetVolume)?;
    for id in cx.never_issued_ids() {
        check::not_found(cx.controller_get_volume(get(&id)).await)
            .map_err(|stop| check::about(stop, format!("volume_id {id:?}")))?;
    }
    Ok(())
}
