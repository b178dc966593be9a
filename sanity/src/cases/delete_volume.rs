//! DeleteVolume: required id, idempotency, ids never issued and volumes in
//! use.

use std::path::Path;

use super::prelude::*;

pub fn cases() -> Vec<Case> {
    vec![
        case!("DeleteVolume/no-id", "DeleteVolume: volume_id is REQUIRED; missing MUST give 3 INVALID_ARGUMENT", no_id),
        case!("DeleteVolume/ok", "DeleteVolume: with CREATE_DELETE_VOLUME the plugin deprovisions the volume and replies 0 OK", delete_ok),
        case!("DeleteVolume/unknown-id", "DeleteVolume: if the volume does not exist the Plugin MUST reply 0 OK", unknown_id),
        case!("DeleteVolume/twice", "DeleteVolume: this operation MUST be idempotent; a repeated call replies 0 OK", twice),
        case!("DeleteVolume/never-issued-id", "DeleteVolume: an id the plugin never issued (plain, or 128 bytes of path characters) names no volume, and if the volume does not exist the Plugin MUST reply 0 OK", never_issued),
        case!("DeleteVolume/while-published", "DeleteVolume: a staged and published volume is in use → 9 FAILED_PRECONDITION, or 0 OK; either way the data written through its target stays readable", while_published),
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
    for id in cx.never_issued_ids() {
        check::ok(
            cx.delete_volume(delete_req(&id)).await,
            "DeleteVolume of an id never issued",
        )
        .map_err(|stop| check::about(stop, format!("volume_id {id:?}")))?;
    }
    Ok(())
}

async fn while_published(cx: Ctx) -> CaseResult {
    let (volume, _, target) = cx.published_volume().await?;
    let file = Path::new(&target).join("sanity-in-use");
    let data = b"written by a running pod".as_slice();
    std::fs::write(&file, data)
        .map_err(|e| fail(format!("cannot write {}: {e}", file.display())))?;
    let answer = check::ok_or_code(
        cx.delete_volume(delete_req(&volume.volume_id)).await,
        &[Code::FailedPrecondition],
    )?;
    let answered = if answer.is_some() {
        "0 OK"
    } else {
        "9 FAILED_PRECONDITION"
    };
    let read = std::fs::read(&file);
    ensure!(
        read.as_deref().ok() == Some(data),
        "DeleteVolume of the published volume answered {answered}, and the data written \
         through {target} is gone or changed: {read:?}"
    );
    Ok(())
}
