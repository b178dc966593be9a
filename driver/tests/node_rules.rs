//! The publish rules of spec.md, each against the real driver with real
//! bind mounts: access modes at publish, node calls that touch only their
//! own volume, and a volume in use that DeleteVolume refuses.

mod common;

use cairn_harness::{require, require_root};
use cairn_proto::v1::volume_capability::access_mode::Mode;
use cairn_proto::v1::*;
use common::*;
use tonic::Code;

/// A staged volume with the given access mode; returns its id and staging path.
async fn staged_volume(
    driver: &TestDriver,
    name: &str,
    mode: Mode,
) -> (String, std::path::PathBuf) {
    let mut c = driver.controller().await;
    let mut n = driver.node().await;
    let mut request = create_request(name, 1 << 20);
    request.volume_capabilities = vec![mount_capability(mode)];
    let id = create(&mut c, request).await.volume_id;
    let staging = driver.staging_path(&id);
    let mut stage = stage_request(&id, &staging);
    stage.volume_capability = Some(mount_capability(mode));
    n.node_stage_volume(stage).await.unwrap();
    (id, staging)
}

fn publish_with(
    id: &str,
    staging: &std::path::Path,
    target: &std::path::Path,
    mode: Mode,
    readonly: bool,
) -> NodePublishVolumeRequest {
    let mut request = publish_request(id, staging, target, readonly);
    request.volume_capability = Some(mount_capability(mode));
    request
}

#[tokio::test]
async fn a_single_writer_volume_is_published_at_one_target_only() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut n = driver.node().await;
    let (id, staging) = staged_volume(&driver, "pvc-snsw", Mode::SingleNodeSingleWriter).await;
    let first = driver.target_path("pod-1", "pvc-snsw");
    let second = driver.target_path("pod-2", "pvc-snsw");
    let snsw = Mode::SingleNodeSingleWriter;
    n.node_publish_volume(publish_with(&id, &staging, &first, snsw, false))
        .await
        .unwrap();
    // The same publish again is fine (idempotent).
    n.node_publish_volume(publish_with(&id, &staging, &first, snsw, false))
        .await
        .unwrap();
    assert_code(
        n.node_publish_volume(publish_with(&id, &staging, &second, snsw, false))
            .await,
        Code::FailedPrecondition,
    );
    assert!(!second.exists() || std::fs::read_dir(&second).unwrap().count() == 0);
    assert_eq!(mounts_below(&driver.kubelet.join("pods/pod-2")), 0);
    // Once the first target is unpublished, the second may have it.
    n.node_unpublish_volume(unpublish_request(&id, &first))
        .await
        .unwrap();
    n.node_publish_volume(publish_with(&id, &staging, &second, snsw, false))
        .await
        .unwrap();
    n.node_unpublish_volume(unpublish_request(&id, &second))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    assert_eq!(mounts_below(driver.dir.path()), 0);
}

#[tokio::test]
async fn a_publish_that_differs_from_the_one_at_its_target_is_already_exists() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut n = driver.node().await;
    let (id, staging) = staged_volume(&driver, "pvc-differ", Mode::SingleNodeWriter).await;
    let target = driver.target_path("pod-1", "pvc-differ");
    let snw = Mode::SingleNodeWriter;
    n.node_publish_volume(publish_with(&id, &staging, &target, snw, false))
        .await
        .unwrap();
    assert_code(
        n.node_publish_volume(publish_with(&id, &staging, &target, snw, true))
            .await,
        Code::AlreadyExists,
    );
    assert_code(
        n.node_publish_volume(publish_with(
            &id,
            &staging,
            &target,
            Mode::SingleNodeReaderOnly,
            false,
        ))
        .await,
        Code::AlreadyExists,
    );
    // Still the read-write publish it was.
    std::fs::write(target.join("still-writable"), b"x").unwrap();
    // A reader-only mode never gives a writable mount, readonly or not.
    let reader = driver.target_path("pod-2", "pvc-differ");
    n.node_publish_volume(publish_with(
        &id,
        &staging,
        &reader,
        Mode::SingleNodeReaderOnly,
        false,
    ))
    .await
    .unwrap();
    let err = std::fs::write(reader.join("nope"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    for t in [&target, &reader] {
        n.node_unpublish_volume(unpublish_request(&id, t))
            .await
            .unwrap();
    }
    n.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    assert_eq!(mounts_below(driver.dir.path()), 0);
}

#[tokio::test]
async fn node_calls_touch_only_their_own_volume() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut n = driver.node().await;
    let snw = Mode::SingleNodeWriter;
    let (a, staging_a) = staged_volume(&driver, "pvc-a", snw).await;
    let (b, staging_b) = staged_volume(&driver, "pvc-b", snw).await;
    let target_b = driver.target_path("pod-b", "pvc-b");
    n.node_publish_volume(publish_with(&b, &staging_b, &target_b, snw, false))
        .await
        .unwrap();
    std::fs::write(target_b.join("data"), b"b's").unwrap();
    // A's id with B's target: refused, B stays published.
    assert_code(
        n.node_unpublish_volume(unpublish_request(&a, &target_b))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(std::fs::read(target_b.join("data")).unwrap(), b"b's");
    // A's id with B's staging path: refused, B stays staged.
    assert_code(
        n.node_unstage_volume(unstage_request(&a, &staging_b)).await,
        Code::FailedPrecondition,
    );
    assert!(std::fs::read(staging_b.join("data")).is_ok(), "B unstaged");
    // A staging path is never a publish target, nor unpublished.
    assert_code(
        n.node_publish_volume(publish_with(&a, &staging_a, &staging_a, snw, false))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        n.node_publish_volume(publish_with(&b, &staging_b, &staging_a, snw, false))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        n.node_unpublish_volume(unpublish_request(&a, &staging_a))
            .await,
        Code::FailedPrecondition,
    );
    assert!(std::fs::read_dir(&staging_a).is_ok());
    // A target holding files Cairn did not put there (nothing mounted) is
    // left alone, and the unpublish succeeds: the kubelet must not retry forever.
    let foreign = driver.target_path("pod-x", "pvc-a");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("theirs"), b"keep").unwrap();
    n.node_unpublish_volume(unpublish_request(&a, &foreign))
        .await
        .unwrap();
    assert_eq!(std::fs::read(foreign.join("theirs")).unwrap(), b"keep");
    // The rightful calls still work.
    n.node_unpublish_volume(unpublish_request(&b, &target_b))
        .await
        .unwrap();
    for (id, staging) in [(&a, &staging_a), (&b, &staging_b)] {
        n.node_unstage_volume(unstage_request(id, staging))
            .await
            .unwrap();
    }
    assert_eq!(mounts_below(driver.dir.path()), 0);
}

#[tokio::test]
async fn delete_volume_refuses_a_volume_in_use_and_keeps_its_data() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut c = driver.controller().await;
    let mut n = driver.node().await;
    let snw = Mode::SingleNodeWriter;
    let (id, staging) = staged_volume(&driver, "pvc-busy", snw).await;
    let target = driver.target_path("pod-1", "pvc-busy");
    n.node_publish_volume(publish_with(&id, &staging, &target, snw, false))
        .await
        .unwrap();
    std::fs::write(target.join("precious"), b"pod data").unwrap();
    let delete = || delete_request(&id);
    assert_code(c.delete_volume(delete()).await, Code::FailedPrecondition);
    assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"pod data");
    n.node_unpublish_volume(unpublish_request(&id, &target))
        .await
        .unwrap();
    // Still staged: still in use.
    assert_code(c.delete_volume(delete()).await, Code::FailedPrecondition);
    assert!(driver.data_dir("pvc-busy").join("precious").exists());
    n.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    c.delete_volume(delete()).await.unwrap();
    assert!(!driver.root.join("volumes/pvc-busy").exists());
    assert_eq!(mounts_below(driver.dir.path()), 0);
}
