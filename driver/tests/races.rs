//! Calls racing a DeleteVolume of the same volume: whichever wins, the
//! loser is told the volume does not exist (NOT_FOUND) or is in use
//! (FAILED_PRECONDITION) — never INTERNAL — and nothing is left behind.

mod common;

use std::collections::BTreeMap;

use cairn_harness::{require, require_root};
use cairn_proto::v1::*;
use common::*;
use tonic::Code;

/// Codes a call racing a delete may answer with, besides OK.
const EXPECTED: &[Code] = &[Code::NotFound, Code::FailedPrecondition];

#[tokio::test]
async fn calls_racing_a_delete_never_answer_internal() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut note = |what: &str, result: Result<(), tonic::Status>| {
        let code = match result {
            Ok(()) => Code::Ok,
            Err(status) => {
                assert!(
                    EXPECTED.contains(&status.code()),
                    "{what} racing DeleteVolume answered {status:?}"
                );
                status.code()
            }
        };
        *seen.entry(format!("{what}: {code:?}")).or_default() += 1;
    };
    for i in 0..30 {
        let mut c = driver.controller().await;
        let name = format!("pvc-race-{i}");
        let id = create(&mut c, create_request(&name, 1 << 20))
            .await
            .volume_id;
        std::fs::write(driver.data_dir(&name).join("f"), b"x").unwrap();
        let staging = driver.staging_path(&id);
        let target = driver.target_path(&format!("pod-{i}"), &name);
        let (mut c1, mut c2, mut n1, mut n2) = (
            driver.controller().await,
            driver.controller().await,
            driver.node().await,
            driver.node().await,
        );
        let delete = c1.delete_volume(delete_request(&id));
        let snapshot_name = format!("snap-race-{i}");
        let snapshot = try_snapshot(&mut c2, &snapshot_name, &id);
        let stage = n1.node_stage_volume(stage_request(&id, &staging));
        let stats = n2.node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: target.display().to_string(),
            staging_target_path: String::new(),
        });
        let (delete, snapshot, stage, stats) = tokio::join!(delete, snapshot, stage, stats);
        note("DeleteVolume", delete.map(|_| ()));
        let snapshot_id = snapshot.as_ref().ok().map(|s| s.snapshot_id.clone());
        note("CreateSnapshot", snapshot.map(|_| ()));
        note("NodeStageVolume", stage.map(|_| ()));
        note("NodeGetVolumeStats", stats.map(|_| ()));
        // Converge: unstage, delete what was made, and the volume is gone.
        let mut n = driver.node().await;
        n.node_unstage_volume(unstage_request(&id, &staging))
            .await
            .unwrap();
        if let Some(snapshot_id) = snapshot_id {
            c.delete_snapshot(DeleteSnapshotRequest {
                snapshot_id,
                secrets: Default::default(),
            })
            .await
            .unwrap();
        }
        c.delete_volume(delete_request(&id)).await.unwrap();
        assert!(!driver.root.join("volumes").join(&name).exists());
    }
    eprintln!("outcomes over 30 races: {seen:#?}");
    assert_eq!(mounts_below(driver.dir.path()), 0);
    assert_empty_dirs(&driver.root, &["tmp", "trash"]);
}
