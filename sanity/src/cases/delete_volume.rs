//! DeleteVolume: required id and idempotency.

use super::prelude::*;

pub fn cases() -> Vec<Case> {
    vec![
        case!("DeleteVolume/no-id", "DeleteVolume: volume_id is REQUIRED; missing MUST give 3 INVALID_ARGUMENT", no_id),
        case!("DeleteVolume/ok", "DeleteVolume: with CREATE_DELETE_VOLUME the plugin deprovisions the volume and replies 0 OK", delete_ok),
        case!("DeleteVolume/unknown-id", "DeleteVolume: if the volume does not exist the Plugin MUST reply 0 OK", unknown_id),
        case!("DeleteVolume/twice", "DeleteVolume: this operation MUST be idempotent; a repeated call replies 0 OK", twice),
        case!("DeleteVolume/never-issued-id", "DeleteVolume: an id the plugin never issued does not exist → 0 OK (or 3 INVALID_ARGUMENT if malformed for this plugin)", never_issued),
    ]
}

fn delete_req(id: &str) -> v1::DeleteVolumeRequest {
    v1::DeleteVolumeRequest {
        volume_id: id.to_string(),
        ..Default::default()
    }
}

async fn no_id(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::CreateDeleteVolume)?;
    check::invalid_argument(cx.delete_volume(delete_req("")).await)
}

async fn delete_ok(cx: Ctx) -> CaseResult {
    let volume = cx.new_volume().await?;
    check::ok(
        cx.delete_volume(delete_req(&volume.volume_id)).await,
        "DeleteVolume",
    )
    .map(drop)
}

async fn unknown_id(cx: Ctx) -> CaseResult {
    let gone = cx.deleted_volume_id().await?;
    check::ok(
        cx.delete_volume(delete_req(&gone)).await,
        "DeleteVolume of a deleted volume",
    )
    .map(drop)
}

async fn twice(cx: Ctx) -> CaseResult {
    let volume = cx.new_volume().await?;
    check::ok(
        cx.delete_volume(delete_req(&volume.volume_id)).await,
        "first DeleteVolume",
    )?;
    check::ok(
        cx.delete_volume(delete_req(&volume.volume_id)).await,
        "second DeleteVolume",
    )
    .map(drop)
}

async fn never_issued(cx: Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::CreateDeleteVolume)?;
    let result = cx
        .delete_volume(delete_req("sanity-never-issued-volume-id"))
        .await;
    check::ok_or_code(result, &[Code::InvalidArgument]).map(drop)
}
