//! Crash safety: kill -9 in the middle of a lifecycle, restart, retry.

mod common;

use cairn_harness::{require, require_root};
use cairn_proto::v1::*;
use common::*;

#[tokio::test]
async fn kill9_mid_lifecycle_then_restart_and_retry_converges() {
    require!(require_root());
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
    c.delete_volume(delete_request(&id)).await.unwrap();
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

/// One worker's lifecycles until the driver dies under it: every volume it
/// was told exists (CreateVolume answered) is reported back.
async fn worker(
    channel: tonic::transport::Channel,
    kubelet: std::path::PathBuf,
    worker: usize,
    round: usize,
) -> Vec<String> {
    use cairn_proto::v1::controller_client::ControllerClient;
    use cairn_proto::v1::node_client::NodeClient;
    let mut c = ControllerClient::new(channel.clone());
    let mut n = NodeClient::new(channel);
    let mut acknowledged = Vec::new();
    for i in 0.. {
        let name = format!("pvc-r{round}-w{worker}-{i}");
        let block = i % 3 == 2;
        let request = if block {
            block_create_request(&name, 1 << 20)
        } else {
            create_request(&name, 1 << 20)
        };
        let Ok(v) = c.create_volume(request).await else {
            return acknowledged;
        };
        let id = v.into_inner().volume.unwrap().volume_id;
        acknowledged.push(id.clone());
        if block {
            let staging = kubelet.join(format!("plugins/crash/{name}/globalmount"));
            std::fs::create_dir_all(&staging).unwrap();
            if n.node_stage_volume(block_stage_request(&id, &staging))
                .await
                .is_err()
            {
                return acknowledged;
            }
            continue;
        }
        // A snapshot and a clone of every other filesystem volume.
        if i % 2 == 0 {
            let snap = format!("snap-r{round}-w{worker}-{i}");
            if c.create_snapshot(snapshot_request(&snap, &id))
                .await
                .is_err()
            {
                return acknowledged;
            }
            let clone = with_source(
                create_request(&format!("{name}-clone"), 1 << 20),
                vol_source(&id),
            );
            match c.create_volume(clone).await {
                Ok(v) => acknowledged.push(v.into_inner().volume.unwrap().volume_id),
                Err(_) => return acknowledged,
            }
        }
        let staging = kubelet.join(format!("plugins/crash/{name}/globalmount"));
        let target = kubelet.join(format!(
            "pods/{name}/volumes/kubernetes.io~csi/{name}/mount"
        ));
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        if n.node_stage_volume(stage_request(&id, &staging))
            .await
            .is_err()
            || n.node_publish_volume(publish_request(&id, &staging, &target, false))
                .await
                .is_err()
        {
            return acknowledged;
        }
    }
    acknowledged
}

#[tokio::test]
async fn kill9_at_random_moments_under_concurrent_lifecycles_loses_and_leaks_nothing() {
    require!(require_root());
    let mut driver = TestDriver::start();
    let loops_before = loops_below(driver.dir.path()).len();
    let mut acknowledged: Vec<String> = Vec::new();
    // A fixed sequence of kill delays (ms): reproducible, yet spread over
    // creates, copies, stages and publishes.
    let delays = [37u64, 181, 93, 260, 59];
    for (round, delay) in delays.iter().enumerate() {
        let mut workers = Vec::new();
        for w in 0..4 {
            let channel = driver.channel().await;
            workers.push(tokio::spawn(worker(
                channel,
                driver.kubelet.clone(),
                w,
                round,
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(*delay)).await;
        driver.kill9();
        for w in workers {
            acknowledged.extend(w.await.unwrap());
        }
        driver.spawn();
    }
    // Every volume the driver acknowledged is still there after the crashes.
    let mut c = driver.controller().await;
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_volumes(ListVolumesRequest {
                max_entries: 50,
                starting_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        listed.extend(
            page.entries
                .into_iter()
                .map(|e| e.volume.unwrap().volume_id),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|id| !listed.contains(id))
        .collect();
    eprintln!(
        "kill -9 x{}: {} volumes acknowledged, {} listed after restart, {} lost",
        delays.len(),
        acknowledged.len(),
        listed.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged volumes lost: {lost:?}");
    // Converge as the CO would: unpublish, unstage, delete everything.
    unmount_below(&driver.kubelet.join("pods"));
    let mut n = driver.node().await;
    for id in &listed {
        let name = id.rsplit(':').next().unwrap();
        let target = driver.kubelet.join(format!(
            "pods/{name}/volumes/kubernetes.io~csi/{name}/mount"
        ));
        n.node_unpublish_volume(unpublish_request(id, &target))
            .await
            .unwrap();
        let staging = driver
            .kubelet
            .join(format!("plugins/crash/{name}/globalmount"));
        n.node_unstage_volume(unstage_request(id, &staging))
            .await
            .unwrap();
    }
    let snapshots = c
        .list_snapshots(ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    for s in snapshots.entries {
        c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: s.snapshot.unwrap().snapshot_id,
            secrets: Default::default(),
        })
        .await
        .unwrap();
    }
    for id in &listed {
        c.delete_volume(delete_request(id)).await.unwrap();
    }
    assert_eq!(mounts_below(driver.dir.path()), 0, "mounts left");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while loops_below(driver.dir.path()).len() > loops_before {
        assert!(std::time::Instant::now() < deadline, "loop devices left");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_empty_dirs(&driver.root, &["volumes", "snapshots", "tmp", "trash"]);
}
