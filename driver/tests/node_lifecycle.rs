//! The kubelet's view: stage, publish, write, read-only publish, unpublish,
//! unstage, against the real binary with real bind mounts.

mod common;

use cairn_harness::{require, require_root};
use cairn_proto::v1::volume_capability::access_mode::Mode;
use cairn_proto::v1::*;
use common::*;
use tonic::Code;

#[tokio::test]
async fn provision_stage_publish_write_readonly_unpublish_unstage_delete() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut controller = driver.controller().await;
    let mut node = driver.node().await;

    let name = "pvc-8d1c7b2e-4f0a-4a4e-9d7c-2b6f1e0c9a11";
    let volume = create(&mut controller, create_request(name, 10 << 20)).await;
    assert_eq!(volume.capacity_bytes, 10 << 20);
    assert_eq!(volume.volume_id, format!("local:{NODE}:{name}"));
    assert_eq!(
        volume.accessible_topology[0].segments["topology.cairn.csi.io/node"],
        NODE
    );
    let id = volume.volume_id.as_str();

    let staging = driver.staging_path(id);
    node.node_stage_volume(stage_request(id, &staging))
        .await
        .unwrap();
    let rw_target = driver.target_path("pod-rw", name);
    node.node_publish_volume(publish_request(id, &staging, &rw_target, false))
        .await
        .unwrap();

    // A file written through the pod's target lands in the volume.
    std::fs::write(rw_target.join("hello.txt"), b"from the pod").unwrap();
    assert_eq!(
        std::fs::read(driver.data_dir(name).join("hello.txt")).unwrap(),
        b"from the pod"
    );

    let stats = node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: rw_target.display().to_string(),
            staging_target_path: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let bytes = stats
        .usage
        .iter()
        .find(|u| u.unit == volume_usage::Unit::Bytes as i32)
        .expect("byte usage");
    assert!(bytes.total > 0 && bytes.available > 0 && bytes.used >= 0);
    assert!(stats
        .usage
        .iter()
        .any(|u| u.unit == volume_usage::Unit::Inodes as i32));
    assert!(!stats.volume_condition.unwrap().abnormal);

    // A read-only publish of the same volume for another pod: reads, refuses writes.
    let ro_target = driver.target_path("pod-ro", name);
    node.node_publish_volume(publish_request(id, &staging, &ro_target, true))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(ro_target.join("hello.txt")).unwrap(),
        b"from the pod"
    );
    let err = std::fs::write(ro_target.join("nope.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    // ...while the read-write publish still writes.
    std::fs::write(rw_target.join("second.txt"), b"ok").unwrap();

    for target in [&rw_target, &ro_target] {
        node.node_unpublish_volume(unpublish_request(id, target))
            .await
            .unwrap();
        assert!(
            !target.exists(),
            "target dir not removed: {}",
            target.display()
        );
    }
    node.node_unstage_volume(unstage_request(id, &staging))
        .await
        .unwrap();
    assert!(!rustix_is_mount(&staging));
    assert_eq!(mounts_below(driver.dir.path()), 0);

    controller.delete_volume(delete_request(id)).await.unwrap();
    assert!(!driver.root.join("volumes").join(name).exists());
}

fn rustix_is_mount(path: &std::path::Path) -> bool {
    cairn_csi::mount::inspect(path)
        .unwrap()
        .is_some_and(|s| s.is_mount_root)
}

#[tokio::test]
async fn every_node_call_is_idempotent() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut controller = driver.controller().await;
    let mut node = driver.node().await;
    let volume = create(&mut controller, create_request("pvc-idem", 1 << 20)).await;
    let id = volume.volume_id.as_str();
    let staging = driver.staging_path(id);
    let target = driver.target_path("pod-1", "pvc-idem");
    for _ in 0..2 {
        node.node_stage_volume(stage_request(id, &staging))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        node.node_publish_volume(publish_request(id, &staging, &target, false))
            .await
            .unwrap();
    }
    // Exactly one mount each, not stacked copies.
    assert_eq!(mounts_below(driver.dir.path()), 2);
    for _ in 0..2 {
        node.node_unpublish_volume(unpublish_request(id, &target))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        node.node_unstage_volume(unstage_request(id, &staging))
            .await
            .unwrap();
    }
    assert_eq!(mounts_below(driver.dir.path()), 0);
    // After a reboot the kubelet may retry with paths that are gone entirely.
    std::fs::remove_dir_all(driver.kubelet.join("pods")).unwrap();
    node.node_unpublish_volume(unpublish_request(id, &target))
        .await
        .unwrap();
}

#[tokio::test]
async fn publish_refuses_conflicts_and_unstaged_volumes() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut controller = driver.controller().await;
    let mut node = driver.node().await;
    let mut ids = Vec::new();
    for name in ["pvc-a", "pvc-b"] {
        let v = create(&mut controller, create_request(name, 1 << 20)).await;
        ids.push(v.volume_id);
    }
    let (a, b) = (ids[0].as_str(), ids[1].as_str());
    let staging_a = driver.staging_path(a);
    let staging_b = driver.staging_path(b);
    let target = driver.target_path("pod-1", "pvc-a");

    // Not staged yet.
    assert_code(
        node.node_publish_volume(publish_request(a, &staging_a, &target, false))
            .await,
        Code::FailedPrecondition,
    );
    // No staging path at all, with STAGE_UNSTAGE advertised.
    assert_code(
        node.node_publish_volume(publish_request(a, std::path::Path::new(""), &target, false))
            .await,
        Code::FailedPrecondition,
    );
    node.node_stage_volume(stage_request(a, &staging_a))
        .await
        .unwrap();
    node.node_stage_volume(stage_request(b, &staging_b))
        .await
        .unwrap();
    // b's staging path already holds b: staging a there conflicts.
    assert_code(
        node.node_stage_volume(stage_request(a, &staging_b)).await,
        Code::AlreadyExists,
    );

    node.node_publish_volume(publish_request(a, &staging_a, &target, true))
        .await
        .unwrap();
    // Same target, same volume, other read-only flag.
    assert_code(
        node.node_publish_volume(publish_request(a, &staging_a, &target, false))
            .await,
        Code::AlreadyExists,
    );
    // Same target, another volume.
    assert_code(
        node.node_publish_volume(publish_request(b, &staging_b, &target, true))
            .await,
        Code::AlreadyExists,
    );
    // An access mode this volume cannot serve.
    let mut multi = publish_request(a, &staging_a, &driver.target_path("pod-2", "x"), false);
    multi.volume_capability = Some(mount_capability(Mode::MultiNodeMultiWriter));
    assert_code(
        node.node_publish_volume(multi).await,
        Code::FailedPrecondition,
    );
    // Unknown volume.
    assert_code(
        node.node_stage_volume(stage_request(
            &format!("local:{NODE}:pvc-nope"),
            &driver.staging_path("local:node-a:pvc-nope"),
        ))
        .await,
        Code::NotFound,
    );
    assert_eq!(
        std::fs::write(target.join("x"), b"x")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EROFS)
    );
}

#[tokio::test]
async fn paths_outside_the_kubelet_dir_or_through_symlinks_are_refused() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut controller = driver.controller().await;
    let mut node = driver.node().await;
    let v = create(&mut controller, create_request("pvc-sym", 1 << 20)).await;
    let id = v.volume_id.as_str();
    let staging = driver.staging_path(id);
    node.node_stage_volume(stage_request(id, &staging))
        .await
        .unwrap();

    let outside = tempfile::tempdir().unwrap();
    let before: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();

    // Outside the kubelet dir.
    let escaped = outside.path().join("mount");
    assert_code(
        node.node_publish_volume(publish_request(id, &staging, &escaped, false))
            .await,
        Code::InvalidArgument,
    );
    // `..` climbing out.
    let dotdot = driver.kubelet.join("pods/../../escape/mount");
    assert_code(
        node.node_publish_volume(publish_request(id, &staging, &dotdot, false))
            .await,
        Code::InvalidArgument,
    );
    // A symlink planted at the target.
    let planted = driver.target_path("pod-evil", "pvc-sym");
    std::os::unix::fs::symlink(outside.path(), &planted).unwrap();
    assert_code(
        node.node_publish_volume(publish_request(id, &staging, &planted, false))
            .await,
        Code::InvalidArgument,
    );
    // A symlink on the way to the target.
    std::fs::create_dir_all(driver.kubelet.join("pods")).unwrap();
    std::os::unix::fs::symlink(outside.path(), driver.kubelet.join("pods/pod-link")).unwrap();
    let through = driver
        .kubelet
        .join("pods/pod-link/volumes/kubernetes.io~csi/pv/mount");
    assert_code(
        node.node_publish_volume(publish_request(id, &staging, &through, false))
            .await,
        Code::InvalidArgument,
    );
    // Nothing was created or mounted outside.
    let after: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
    assert_eq!(before.len(), after.len());
    assert_eq!(mounts_below(outside.path()), 0);
    assert!(std::fs::symlink_metadata(&planted)
        .unwrap()
        .file_type()
        .is_symlink());
    // Unpublish through a symlink does not unmount or delete elsewhere.
    assert_code(
        node.node_unpublish_volume(unpublish_request(id, &planted))
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn stats_report_not_found_and_abnormal_volumes() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut controller = driver.controller().await;
    let mut node = driver.node().await;
    let v = create(&mut controller, create_request("pvc-stats", 1 << 20)).await;
    let id = v.volume_id.as_str();
    let stats = |path: &std::path::Path| NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.display().to_string(),
        staging_target_path: String::new(),
    };
    // A path that was never published.
    let never = driver.target_path("pod-none", "pvc-stats");
    assert_code(
        node.node_get_volume_stats(stats(&never)).await,
        Code::NotFound,
    );
    assert_code(
        node.node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: String::new(),
            volume_path: never.display().to_string(),
            staging_target_path: String::new(),
        })
        .await,
        Code::InvalidArgument,
    );

    let staging = driver.staging_path(id);
    let target = driver.target_path("pod-1", "pvc-stats");
    node.node_stage_volume(stage_request(id, &staging))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(id, &staging, &target, false))
        .await
        .unwrap();
    // The backing directory disappears under a published volume.
    std::fs::remove_dir_all(driver.root.join("volumes/pvc-stats")).unwrap();
    let response = node
        .node_get_volume_stats(stats(&target))
        .await
        .unwrap()
        .into_inner();
    let condition = response.volume_condition.unwrap();
    assert!(condition.abnormal, "{condition:?}");
    // An existing directory that is not mounted.
    node.node_unpublish_volume(unpublish_request(id, &target))
        .await
        .unwrap();
    std::fs::create_dir(&target).unwrap();
    match node.node_get_volume_stats(stats(&target)).await {
        Err(status) => assert_eq!(status.code(), Code::NotFound),
        Ok(r) => assert!(r.into_inner().volume_condition.unwrap().abnormal),
    }
    let _ = std::fs::remove_dir(&target);
}
