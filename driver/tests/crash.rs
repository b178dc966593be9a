//! Crash safety: kill -9 in the middle of a lifecycle, restart, retry.

mod common;

use cairn_proto::v1::*;
use common::*;

#[tokio::test]
async fn kill9_mid_lifecycle_then_restart_and_retry_converges() {
    require_root!();
    let mut driver = TestDriver::start();
    let name = "pvc-crash";
    let id = {
        let mut c = driver.controller().await;
        create(&mut c, create_request(name, 1 << 20))
            .await
            .volume_id
    };
    let staging = driver.staging_path(&id);
    let target = driver.target_path("pod-1", name);
    {
        let mut node = driver.node().await;
        node.node_stage_volume(stage_request(&id, &staging))
            .await
            .unwrap();
        node.node_publish_volume(publish_request(&id, &staging, &target, false))
            .await
            .unwrap();
    }
    std::fs::write(target.join("before"), b"1").unwrap();

    driver.kill9();
    // Leftovers a crash could leave mid-create and mid-delete.
    std::fs::create_dir_all(driver.root.join("tmp/pvc-half.99.0/data")).unwrap();
    std::fs::create_dir_all(driver.root.join("trash/pvc-old.99.0/data")).unwrap();
    driver.spawn();

    assert_eq!(
        std::fs::read_dir(driver.root.join("tmp")).unwrap().count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(driver.root.join("trash"))
            .unwrap()
            .count(),
        0
    );

    let mut c = driver.controller().await;
    let mut node = driver.node().await;
    // The kubelet and provisioner retry what they had sent: all succeed, nothing doubles.
    let again = create(&mut c, create_request(name, 1 << 20)).await;
    assert_eq!(again.volume_id, id);
    node.node_stage_volume(stage_request(&id, &staging))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&id, &staging, &target, false))
        .await
        .unwrap();
    assert_eq!(mounts_below(driver.dir.path()), 2);
    assert_eq!(std::fs::read(target.join("before")).unwrap(), b"1");
    std::fs::write(target.join("after"), b"2").unwrap();

    node.node_unpublish_volume(unpublish_request(&id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    c.delete_volume(DeleteVolumeRequest {
        volume_id: id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    assert_eq!(mounts_below(driver.dir.path()), 0);
    let listed = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.entries.is_empty());
}

#[tokio::test]
async fn volumes_survive_a_restart() {
    let mut driver = TestDriver::start();
    let ids: Vec<String> = {
        let mut c = driver.controller().await;
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(
                create(&mut c, create_request(&format!("pvc-keep-{i}"), 1 << 20))
                    .await
                    .volume_id,
            );
        }
        ids
    };
    driver.kill9();
    driver.spawn();
    let mut c = driver.controller().await;
    let listed: Vec<String> = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.volume.unwrap().volume_id)
        .collect();
    assert_eq!(listed, ids);
    for id in ids {
        let got = c
            .controller_get_volume(ControllerGetVolumeRequest { volume_id: id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.volume.unwrap().capacity_bytes, 1 << 20);
    }
}
