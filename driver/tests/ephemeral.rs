//! CSI inline ephemeral volumes as the kubelet drives them: only
//! NodePublishVolume (no staging) with its own `csi-<sha256>` handle and
//! `csi.storage.k8s.io/ephemeral: "true"`, then NodeUnpublishVolume, which
//! must delete the volume. Real binary, real bind mounts.

mod common;

use std::collections::HashMap;
use std::path::Path;

use cairn_harness::{require, require_root};
use cairn_proto::v1::*;
use common::*;
use sha2::{Digest, Sha256};
use tonic::Code;

/// The kubelet's handle for a pod's inline volume (pkg/volume/csi:
/// "csi-" + sha256(podUID + volume spec name)).
fn kubelet_handle(pod_uid: &str, volume: &str) -> String {
    let digest = Sha256::digest(format!("{pod_uid}{volume}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("csi-{hex}")
}

fn inline_publish(
    handle: &str,
    target: &Path,
    attributes: &[(&str, &str)],
) -> NodePublishVolumeRequest {
    let mut context: HashMap<String, String> = [
        ("csi.storage.k8s.io/ephemeral", "true"),
        ("csi.storage.k8s.io/pod.name", "web-0"),
        ("csi.storage.k8s.io/pod.namespace", "default"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    context.extend(
        attributes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    NodePublishVolumeRequest {
        volume_id: handle.into(),
        target_path: target.display().to_string(),
        volume_capability: Some(rwo()),
        volume_context: context,
        ..Default::default()
    }
}

/// Volumes on disk (entries of `<root>/volumes`).
fn volumes_on_disk(driver: &TestDriver) -> usize {
    std::fs::read_dir(driver.root.join("volumes"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn inline_volume_lives_exactly_as_long_as_its_pod() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut node = driver.node().await;
    let mut controller = driver.controller().await;

    let handle = kubelet_handle("0c6b3a52-0f51-4bd9-9c58-5e1a3b0e7a10", "scratch");
    let target = driver.target_path("pod-eph", "scratch");
    let request = inline_publish(&handle, &target, &[("size", "8Mi")]);
    node.node_publish_volume(request.clone()).await.unwrap();
    // The kubelet retries publish: same answer, nothing new.
    node.node_publish_volume(request.clone()).await.unwrap();
    assert_eq!(volumes_on_disk(&driver), 1);
    assert_eq!(mounts_below(&target), 1);

    std::fs::write(target.join("cache.bin"), b"scratch data").unwrap();
    let stats = node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: handle.clone(),
            volume_path: target.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!stats.volume_condition.unwrap().abnormal);

    // The controller sees it as a local volume of the recorded size.
    let listed = controller
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(
        listed.entries[0].volume.as_ref().unwrap().capacity_bytes,
        8 << 20
    );

    // Read-write publish of the same handle read-only elsewhere conflicts.
    let mut readonly = request.clone();
    readonly.readonly = true;
    assert_code(
        node.node_publish_volume(readonly).await,
        Code::AlreadyExists,
    );

    let unpublish = unpublish_request(&handle, &target);
    node.node_unpublish_volume(unpublish.clone()).await.unwrap();
    assert!(!target.exists());
    assert_eq!(
        volumes_on_disk(&driver),
        0,
        "unpublish deletes the inline volume"
    );
    node.node_unpublish_volume(unpublish).await.unwrap();
}

#[tokio::test]
async fn unpublish_retry_after_a_crash_between_unmount_and_delete_still_deletes() {
    require!(require_root());
    let mut driver = TestDriver::start();
    let mut node = driver.node().await;
    let handle = kubelet_handle("9f1e0d2c-3b4a-4c5d-8e6f-7a8b9c0d1e2f", "tmp");
    let target = driver.target_path("pod-crash", "tmp");
    node.node_publish_volume(inline_publish(&handle, &target, &[]))
        .await
        .unwrap();
    // What a unpublish killed after its unmount leaves behind.
    driver.kill9();
    unmount_below(&target);
    std::fs::remove_dir(&target).unwrap();
    driver.restart();
    let mut node = driver.node().await;
    assert_eq!(volumes_on_disk(&driver), 1);
    node.node_unpublish_volume(unpublish_request(&handle, &target))
        .await
        .unwrap();
    assert_eq!(volumes_on_disk(&driver), 0);
}

#[tokio::test]
async fn bad_inline_requests_are_refused_and_touch_nothing() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut node = driver.node().await;
    let target = driver.target_path("pod-bad", "v");
    let handle = kubelet_handle("pod-bad", "v");

    // A typo in the pod's attributes is named, not ignored.
    let status = node
        .node_publish_volume(inline_publish(&handle, &target, &[("sise", "1Gi")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("sise"), "{}", status.message());
    assert_code(
        node.node_publish_volume(inline_publish(&handle, &target, &[("size", "lots")]))
            .await,
        Code::InvalidArgument,
    );
    // Only the kubelet's handle shape is an inline volume.
    for id in ["pvc-1", "csi-../../etc", "local:node-a:pvc-1"] {
        assert_code(
            node.node_publish_volume(inline_publish(id, &target, &[]))
                .await,
            Code::InvalidArgument,
        );
    }
    // A target outside the kubelet dir.
    let outside = driver.dir.path().join("elsewhere");
    assert_code(
        node.node_publish_volume(inline_publish(&handle, &outside, &[]))
            .await,
        Code::InvalidArgument,
    );
    assert!(!outside.exists());
    assert!(!target.exists());
    assert_eq!(volumes_on_disk(&driver), 0);

    // Unpublishing a PVC volume's id never deletes it: only inline volumes go.
    let mut controller = driver.controller().await;
    let volume = create(&mut controller, create_request("pvc-kept", 1 << 20)).await;
    let pvc_target = driver.target_path("pod-kept", "pvc-kept");
    node.node_unpublish_volume(unpublish_request(&volume.volume_id, &pvc_target))
        .await
        .unwrap();
    assert_eq!(volumes_on_disk(&driver), 1);
}
