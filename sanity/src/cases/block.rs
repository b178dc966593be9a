//! Raw block volumes (`access_type: block`), for drivers that offer them:
//! probed by CreateVolume with a block capability, skipped on 3
//! INVALID_ARGUMENT.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;

use super::prelude::*;
use crate::check::describe;
use cairn_proto::v1::volume_usage::Unit;

pub fn cases() -> Vec<Case> {
    vec![
        case!("Block/lifecycle", "NodePublishVolume: for access type block the SP SHALL place the block device at target_path; NodeUnpublishVolume deletes the file it created; NodeUnstageVolume replies 0 OK", lifecycle),
        case!("Block/idempotent", "Node calls MUST be idempotent for block volumes too: stage, publish, unpublish and unstage twice each → 0 OK", idempotent),
        case!("Block/incompatible-readonly", "NodePublishVolume: a block device already published at target_path with another readonly flag → 6 ALREADY_EXISTS", incompatible_readonly),
        case!("Block/readonly-refuses-writes", "NodePublishVolume: readonly publishes a device that refuses writes, and shows what a read-write publish wrote", readonly_refuses_writes),
        case!("Block/stats-total", "NodeGetVolumeStats: for a block volume the usage reports BYTES with a total of at least the requested size (used and available MAY be omitted)", stats_total),
    ]
}

/// A new block volume, or Skip when the driver refuses access type block.
async fn block_volume(cx: &Ctx) -> Result<v1::Volume, Stop> {
    cx.need_node_volume()?;
    if cx
        .caps()
        .has_controller(ControllerCap::PublishUnpublishVolume)
    {
        return Err(Stop::Skip(
            "block cases do not ControllerPublish yet".into(),
        ));
    }
    let mut req = cx.volume_request(&cx.unique_name());
    req.volume_capabilities = vec![fixtures::block(Mode::SingleNodeWriter)];
    match cx.try_create_volume(req).await {
        Ok(resp) => resp
            .volume
            .ok_or_else(|| fail("CreateVolume returned OK without a volume (volume is REQUIRED)")),
        Err(status) if status.code() == Code::InvalidArgument => Err(Stop::Skip(format!(
            "the driver does not offer access type block ({})",
            describe(&status)
        ))),
        Err(status) => Err(fail(format!(
            "setup: CreateVolume (block) failed: {}",
            describe(&status)
        ))),
    }
}

fn stage_req(volume: &v1::Volume, staging: &str) -> v1::NodeStageVolumeRequest {
    v1::NodeStageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.to_string(),
        volume_capability: Some(fixtures::block(Mode::SingleNodeWriter)),
        volume_context: volume.volume_context.clone(),
        ..Default::default()
    }
}

/// Stages `volume` as block when the driver stages; returns the staging
/// path (empty when it does not).
async fn stage(cx: &Ctx, volume: &v1::Volume) -> Result<String, Stop> {
    if !cx.caps().has_node(NodeCap::StageUnstageVolume) {
        return Ok(String::new());
    }
    let staging = cx.staging_dir(0)?;
    check::ok(
        cx.node_stage_volume(stage_req(volume, &staging)).await,
        "NodeStageVolume (block)",
    )?;
    cx.defer(crate::cleanup::Cleanup::NodeUnstage {
        volume_id: volume.volume_id.clone(),
        staging_path: staging.clone(),
    });
    Ok(staging)
}

fn publish_req(
    cx: &Ctx,
    volume: &v1::Volume,
    staging: &str,
    target: &str,
    readonly: bool,
) -> v1::NodePublishVolumeRequest {
    v1::NodePublishVolumeRequest {
        volume_capability: Some(fixtures::block(Mode::SingleNodeWriter)),
        ..cx.publish_request(volume, staging, target, readonly)
    }
}

/// Publishes at target `n`; unpublished after the case.
async fn publish(
    cx: &Ctx,
    volume: &v1::Volume,
    staging: &str,
    n: u32,
    readonly: bool,
) -> Result<String, Stop> {
    let target = cx.target_path(n)?;
    check::ok(
        cx.try_publish(publish_req(cx, volume, staging, &target, readonly))
            .await,
        "NodePublishVolume (block)",
    )?;
    Ok(target)
}

fn unpublish_req(volume: &v1::Volume, target: &str) -> v1::NodeUnpublishVolumeRequest {
    v1::NodeUnpublishVolumeRequest {
        volume_id: volume.volume_id.clone(),
        target_path: target.to_string(),
    }
}

fn unstage_req(volume: &v1::Volume, staging: &str) -> v1::NodeUnstageVolumeRequest {
    v1::NodeUnstageVolumeRequest {
        volume_id: volume.volume_id.clone(),
        staging_target_path: staging.to_string(),
    }
}

fn is_block_device(path: &str) -> Result<bool, Stop> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.file_type().is_block_device()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(fail(format!("stat {path}: {e}"))),
    }
}

async fn lifecycle(cx: Ctx) -> CaseResult {
    let volume = block_volume(&cx).await?;
    let staging = stage(&cx, &volume).await?;
    let target = publish(&cx, &volume, &staging, 0, false).await?;
    ensure!(
        is_block_device(&target)?,
        "target_path {target} is not a block device after NodePublishVolume"
    );
    check::ok(
        cx.node_unpublish_volume(unpublish_req(&volume, &target))
            .await,
        "NodeUnpublishVolume (block)",
    )?;
    ensure!(
        std::fs::symlink_metadata(&target).is_err(),
        "target_path {target} still exists after NodeUnpublishVolume (the SP MUST delete the file it created)"
    );
    if !staging.is_empty() {
        check::ok(
            cx.node_unstage_volume(unstage_req(&volume, &staging)).await,
            "NodeUnstageVolume (block)",
        )?;
    }
    Ok(())
}

async fn idempotent(cx: Ctx) -> CaseResult {
    let volume = block_volume(&cx).await?;
    let staging = stage(&cx, &volume).await?;
    if !staging.is_empty() {
        check::ok(
            cx.node_stage_volume(stage_req(&volume, &staging)).await,
            "second NodeStageVolume (block)",
        )?;
    }
    let target = publish(&cx, &volume, &staging, 0, false).await?;
    check::ok(
        cx.node_publish_volume(publish_req(&cx, &volume, &staging, &target, false))
            .await,
        "second NodePublishVolume (block)",
    )?;
    ensure!(is_block_device(&target)?, "{target} is not a block device");
    for which in ["first", "second"] {
        check::ok(
            cx.node_unpublish_volume(unpublish_req(&volume, &target))
                .await,
            &format!("{which} NodeUnpublishVolume (block)"),
        )?;
    }
    if !staging.is_empty() {
        for which in ["first", "second"] {
            check::ok(
                cx.node_unstage_volume(unstage_req(&volume, &staging)).await,
                &format!("{which} NodeUnstageVolume (block)"),
            )?;
        }
    }
    Ok(())
}

async fn incompatible_readonly(cx: Ctx) -> CaseResult {
    let volume = block_volume(&cx).await?;
    let staging = stage(&cx, &volume).await?;
    let target = publish(&cx, &volume, &staging, 0, false).await?;
    check::code(
        cx.node_publish_volume(publish_req(&cx, &volume, &staging, &target, true))
            .await,
        &[Code::AlreadyExists],
    )
    .map(drop)
}

/// Writes 4 KiB of `fill` at offset 0 and flushes it to the device.
fn write_block(path: &str, fill: u8) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.write_all(&[fill; 4096])?;
    f.sync_all()
}

fn read_block(path: &str) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0; 4096];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

async fn readonly_refuses_writes(cx: Ctx) -> CaseResult {
    let volume = block_volume(&cx).await?;
    let staging = stage(&cx, &volume).await?;
    let rw = publish(&cx, &volume, &staging, 0, false).await?;
    let ro = publish(&cx, &volume, &staging, 1, true).await?;
    ensure!(is_block_device(&ro)?, "{ro} is not a block device");
    match write_block(&rw, 0x5A) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Err(Stop::Skip(format!(
                "the suite may not open the device for writing ({e}); run it as root"
            )))
        }
        Err(e) => {
            return Err(fail(format!(
                "write through the read-write target {rw}: {e}"
            )))
        }
    }
    let written = write_block(&ro, 0xEE);
    ensure!(
        written.is_err(),
        "a write through the read-only target {ro} succeeded"
    );
    let seen = read_block(&ro).map_err(|e| fail(format!("read {ro}: {e}")))?;
    ensure!(
        seen.iter().all(|&b| b == 0x5A),
        "the read-only target does not show what the read-write target wrote"
    );
    Ok(())
}

async fn stats_total(cx: Ctx) -> CaseResult {
    cx.need_node(NodeCap::GetVolumeStats)?;
    let volume = block_volume(&cx).await?;
    let staging = stage(&cx, &volume).await?;
    let target = publish(&cx, &volume, &staging, 0, false).await?;
    let resp = check::ok(
        cx.node_get_volume_stats(v1::NodeGetVolumeStatsRequest {
            volume_id: volume.volume_id.clone(),
            volume_path: target.clone(),
            staging_target_path: staging.clone(),
        })
        .await,
        "NodeGetVolumeStats (block)",
    )?;
    let bytes = resp
        .usage
        .iter()
        .find(|u| u.unit() == Unit::Bytes)
        .ok_or_else(|| fail("no BYTES usage entry for a block volume"))?;
    ensure!(
        bytes.total >= cx.size(),
        "total {} is below the requested {} bytes",
        bytes.total,
        cx.size()
    );
    if let Some(condition) = &resp.volume_condition {
        ensure!(
            !condition.abnormal,
            "a healthy block volume is abnormal: {}",
            condition.message
        );
    }
    Ok(())
}
