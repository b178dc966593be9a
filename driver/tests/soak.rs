//! Long use and contention. A soak of whole lifecycles samples the driver's
//! RSS, open files, threads and the mounts below its directories: none may
//! grow. Many clients racing conflicting calls on one block volume leave a
//! consistent state: no INTERNAL, no loop device left attached.
//! (CAIRN_SOAK_LIFECYCLES sets a longer soak; CI runs a bounded one.)

mod common;

use cairn_harness::{require, require_root};
use cairn_proto::v1::*;
use common::*;
use tonic::Code;

#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

fn sample(pid: i32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    Sample {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
    }
}

async fn lifecycle(driver: &TestDriver, i: usize) {
    let mut c = driver.controller().await;
    let mut n = driver.node().await;
    let name = format!("pvc-soak-{i}");
    let id = create(&mut c, create_request(&name, 1 << 20))
        .await
        .volume_id;
    let staging = driver.staging_path(&id);
    let target = driver.target_path(&format!("pod-{i}"), &name);
    n.node_stage_volume(stage_request(&id, &staging))
        .await
        .unwrap();
    n.node_publish_volume(publish_request(&id, &staging, &target, false))
        .await
        .unwrap();
    n.node_get_volume_stats(NodeGetVolumeStatsRequest {
        volume_id: id.clone(),
        volume_path: target.display().to_string(),
        staging_target_path: String::new(),
    })
    .await
    .unwrap();
    n.node_unpublish_volume(unpublish_request(&id, &target))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    c.delete_volume(delete_request(&id)).await.unwrap();
    // The kubelet removes the directories it made.
    let _ = std::fs::remove_dir_all(driver.kubelet.join(format!("pods/pod-{i}")));
    let _ = std::fs::remove_dir(&staging);
}

#[tokio::test]
async fn a_soak_of_lifecycles_grows_nothing() {
    require!(require_root());
    let total: usize = std::env::var("CAIRN_SOAK_LIFECYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let driver = TestDriver::start();
    // Warm up first: allocator arenas, runtime threads and the first
    // connections settle in the first hundred.
    for i in 0..100 {
        lifecycle(&driver, i).await;
    }
    let before = sample(driver.pid());
    for i in 100..total {
        lifecycle(&driver, i).await;
    }
    let after = sample(driver.pid());
    eprintln!("soak of {total} lifecycles: after warm-up {before:?}, at the end {after:?}");
    assert!(
        after.fds <= before.fds + 4,
        "open files grew: {before:?} -> {after:?}"
    );
    assert!(
        after.threads <= before.threads + 4,
        "threads grew: {before:?} -> {after:?}"
    );
    assert!(
        after.rss_kib <= before.rss_kib + 4096,
        "RSS grew by more than 4 MiB: {before:?} -> {after:?}"
    );
    assert_eq!(mounts_below(driver.dir.path()), 0);
    assert_empty_dirs(&driver.root, &["volumes", "tmp", "trash"]);
}

#[tokio::test]
async fn clients_racing_conflicting_calls_on_one_block_volume_leak_nothing() {
    require!(require_root());
    let driver = TestDriver::start();
    let loops_before = loops_below(driver.dir.path()).len();
    let mut c = driver.controller().await;
    let name = "pvc-contended";
    let id = create(&mut c, block_create_request(name, 4 << 20))
        .await
        .volume_id;
    let mut internal = Vec::new();
    let mut tasks = Vec::new();
    for client in 0..8 {
        let channel = driver.channel().await;
        let id = id.clone();
        let staging = driver.staging_path(&id);
        tasks.push(tokio::spawn(async move {
            let mut c = cairn_proto::v1::controller_client::ControllerClient::new(channel.clone());
            let mut n = cairn_proto::v1::node_client::NodeClient::new(channel);
            let mut codes = Vec::new();
            for round in 0..25 {
                let code = match (client + round) % 3 {
                    0 => n
                        .node_stage_volume(block_stage_request(&id, &staging))
                        .await
                        .map(|_| ()),
                    1 => n
                        .node_unstage_volume(unstage_request(&id, &staging))
                        .await
                        .map(|_| ()),
                    _ => c.delete_volume(delete_request(&id)).await.map(|_| ()),
                };
                codes.push(code.err().map(|s| (s.code(), s.message().to_string())));
            }
            codes
        }));
    }
    for task in tasks {
        for outcome in task.await.unwrap().into_iter().flatten() {
            if matches!(outcome.0, Code::Internal | Code::Unknown) {
                internal.push(outcome);
            }
        }
    }
    assert!(internal.is_empty(), "INTERNAL answers: {internal:?}");
    // Converge as the CO would: unstage, then delete.
    let mut n = driver.node().await;
    let staging = driver.staging_path(&id);
    n.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    c.delete_volume(delete_request(&id)).await.unwrap();
    assert!(!driver.root.join("volumes").join(name).exists());
    wait_for_loops_detached(&driver, loops_before);
    assert_eq!(mounts_below(driver.dir.path()), 0);
}

/// A detached loop device may be held open briefly by udev's probe: poll
/// the observable state with a deadline rather than sleeping.
fn wait_for_loops_detached(driver: &TestDriver, expected: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = loops_below(driver.dir.path());
        if left.len() <= expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "loop devices still attached to the driver's files: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
