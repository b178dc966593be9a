//! ValidateVolumeCapabilities: which capabilities a volume supports.

use super::prelude::*;

pub fn cases() -> Vec<Case> {
    vec![
        case!("ValidateVolumeCapabilities/no-id", "ValidateVolumeCapabilities: volume_id is REQUIRED; missing MUST give 3 INVALID_ARGUMENT", no_id),
        case!("ValidateVolumeCapabilities/no-capabilities", "ValidateVolumeCapabilities: volume_capabilities is REQUIRED; missing MUST give 3 INVALID_ARGUMENT", no_capabilities),
        case!("ValidateVolumeCapabilities/unknown-id", "ValidateVolumeCapabilities: volume does not exist → 5 NOT_FOUND", unknown_id),
        case!("ValidateVolumeCapabilities/never-issued-id", "ValidateVolumeCapabilities: an id the plugin never issued names no volume → 5 NOT_FOUND", never_issued),
        case!("ValidateVolumeCapabilities/supported", "ValidateVolumeCapabilities: capabilities the volume supports are confirmed", supported),
        case!("ValidateVolumeCapabilities/confirmed-echo", "ValidateVolumeCapabilities: confirmed.volume_capabilities (REQUIRED) lists the supported capabilities asked about", confirmed_echo),
        case!("ValidateVolumeCapabilities/with-context-and-parameters", "ValidateVolumeCapabilities: volume_context and parameters from CreateVolume MAY be passed and do not change the answer", with_context),
        case!("ValidateVolumeCapabilities/unknown-access-mode", "ValidateVolumeCapabilities: an UNKNOWN access mode is not supported: not confirmed, or 3 INVALID_ARGUMENT", unknown_mode),
        case!("ValidateVolumeCapabilities/capability-without-access-mode", "VolumeCapability: access_mode is REQUIRED: not confirmed, or 3 INVALID_ARGUMENT", no_access_mode),
        case!("ValidateVolumeCapabilities/capability-without-access-type", "VolumeCapability: an access type is REQUIRED: not confirmed, or 3 INVALID_ARGUMENT", no_access_type),
        case!("ValidateVolumeCapabilities/block-consistent", "ValidateVolumeCapabilities: confirmed only if the volume supports ALL requested capabilities; a mount+block pair on a mount volume is confirmed only if both are", block_consistent),
    ]
}

fn validate_req(
    volume: &v1::Volume,
    caps: Vec<v1::VolumeCapability>,
) -> v1::ValidateVolumeCapabilitiesRequest {
    v1::ValidateVolumeCapabilitiesRequest {
        volume_id: volume.volume_id.clone(),
        volume_context: volume.volume_context.clone(),
        volume_capabilities: caps,
        ..Default::default()
    }
}

async fn no_id(cx: Ctx) -> CaseResult {
    let volume = cx.new_volume().await?;
    let mut req = validate_req(&volume, vec![fixtures::single_writer()]);
    req.volume_id.clear();
    check::invalid_argument(cx.validate_volume_capabilities(req).await)
}

async fn no_capabilities(cx: Ctx) -> CaseResult {
    let volume = cx.new_volume().await?;
    check::invalid_argument(
        cx.validate_volume_capabilities(validate_req(&volume, vec![]))
            .await,
    )
}

async fn unknown_id(cx: Ctx) -> CaseResult {
    let gone = cx.deleted_volume_id().await?;
    let req = v1::ValidateVolumeCapabilitiesRequest {
        volume_id: gone,
        volume_capabilities: vec![fixtures::single_writer()],
        ..Default::default()
    };
    check::not_found(cx.validate_volume_capabilities(req).await)
}

async fn supported(cx: Ctx) -> CaseResult {
    let volume = cx.new_volume().await?;
    let resp = check::ok(
        cx.validate_volume_capabilities(validate_req(&volume, vec![fixtures::single_writer()]))
            .await,
        "ValidateVolumeCapabilities",
    )?;
    ensure!(
        resp.confirmed.is_some(),
        "the capability the volume was created with is not confirmed: {:?}",
        resp.message
    );
    Ok(())
}

async fn confirmed_echo(cx: Ctx) -> CaseResult {
    let volume = cx.new_volume().await?;
    let asked = vec![fixtures::single_writer()];
    let resp = check::ok(
        cx.validate_volume_capabilities(validate_req(&volume, asked.clone()))
            .await,
        "ValidateVolumeCapabilities",
    )?;
    let confirmed = resp.confirmed.ok_or_else(|| fail("not confirmed"))?;
    ensure!(
        confirmed.volume_capabilities == asked,
        "confirmed {:?}, asked {:?}",
        confirmed.volume_capabilities,
        asked
    );
    Ok(())
}

async fn with_context(cx: Ctx) -> CaseResult {
    let volume = cx.new_volume().await?;
    let mut req = validate_req(&volume, vec![fixtures::single_writer()]);
    req.parameters = cx.params();
    let resp = check::ok(
        cx.validate_volume_capabilities(req).await,
        "ValidateVolumeCapabilities",
    )?;
    ensure!(
        resp.confirmed.is_some(),
        "not confirmed: {:?}",
        resp.message
    );
    Ok(())
}

async fn not_confirmed_or_invalid(cx: Ctx, cap: v1::VolumeCapability) -> CaseResult {
    let volume = cx.new_volume().await?;
    let result = cx
        .validate_volume_capabilities(validate_req(&volume, vec![cap]))
        .await;
    if let Some(resp) = check::ok_or_code(result, &[Code::InvalidArgument])? {
        ensure!(resp.confirmed.is_none(), "confirmed {:?}", resp.confirmed);
    }
    Ok(())
}

async fn unknown_mode(cx: Ctx) -> CaseResult {
    not_confirmed_or_invalid(cx, fixtures::mount(Mode::Unknown)).await
}

async fn no_access_mode(cx: Ctx) -> CaseResult {
    not_confirmed_or_invalid(cx, fixtures::without_access_mode()).await
}

async fn no_access_type(cx: Ctx) -> CaseResult {
    not_confirmed_or_invalid(cx, fixtures::without_access_type()).await
}

async fn block_consistent(cx: Ctx) -> CaseResult {
    let volume = cx.new_volume().await?;
    let block = fixtures::block(Mode::SingleNodeWriter);
    let alone = check::ok_or_code(
        cx.validate_volume_capabilities(validate_req(&volume, vec![block.clone()]))
            .await,
        &[Code::InvalidArgument],
    )?
    .is_some_and(|r| r.confirmed.is_some());
    let pair = check::ok_or_code(
        cx.validate_volume_capabilities(validate_req(
            &volume,
            vec![fixtures::single_writer(), block],
        ))
        .await,
        &[Code::InvalidArgument],
    )?
    .is_some_and(|r| r.confirmed.is_some());
    ensure!(
        alone || !pair,
        "block alone is not confirmed, yet mount+block together is"
    );
    Ok(())
}

async fn never_issued(cx: Ctx) -> CaseResult {
    cx.need_controller_service()?;
    for id in cx.never_issued_ids() {
        let req = v1::ValidateVolumeCapabilitiesRequest {
            volume_id: id.clone(),
            volume_capabilities: vec![fixtures::single_writer()],
            ..Default::default()
        };
        check::not_found(cx.validate_volume_capabilities(req).await)
            .map_err(|stop| check::about(stop, format!("volume_id {id:?}")))?;
    }
    Ok(())
}
