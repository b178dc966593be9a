//! The kubelet directory is writable by others while the driver works in
//! it. A thread swaps a parent directory of a target (or of a staging
//! path) with a symlink to a directory outside, in a loop, while publishes
//! run: no mount may ever land outside the kubelet dir, and no outside
//! directory may ever be published into a pod.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cairn_harness::{require, require_root};
use common::*;
use rustix::fs::{RenameFlags, CWD};

/// Publishes per scenario (CAIRN_RACE_ITERATIONS for a longer run).
fn iterations() -> usize {
    std::env::var("CAIRN_RACE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

fn is_mount_root(path: &Path) -> bool {
    rustix::fs::statx(
        CWD,
        path,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::BASIC_STATS,
    )
    .map(|st| {
        st.stx_attributes
            .contains(rustix::fs::StatxAttributes::MOUNT_ROOT)
    })
    .unwrap_or(false)
}

/// Swaps `dir` with `link` (a symlink) until stopped; returns the swap count.
fn swapper(dir: PathBuf, link: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            if rustix::fs::renameat_with(CWD, &dir, CWD, &link, RenameFlags::EXCHANGE).is_ok() {
                swaps += 1;
            }
        }
        // Leave the real directory in place.
        if std::fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            rustix::fs::renameat_with(CWD, &dir, CWD, &link, RenameFlags::EXCHANGE).unwrap();
        }
        swaps
    })
}

#[tokio::test]
async fn swapping_a_target_parent_for_a_symlink_never_mounts_outside() {
    require!(require_root());
    let driver = TestDriver::start();
    let outside = tempfile::tempdir().unwrap();
    let mut c = driver.controller().await;
    let mut n = driver.node().await;
    let id = create(&mut c, create_request("pvc-race", 1 << 20))
        .await
        .volume_id;
    let staging = driver.staging_path(&id);
    n.node_stage_volume(stage_request(&id, &staging))
        .await
        .unwrap();

    // pods/pod-1/volumes/kubernetes.io~csi/pvc-race/mount; the parent
    // `pvc-race` is what gets swapped for a symlink to `outside`.
    let target = driver.target_path("pod-1", "pvc-race");
    let parent = target.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&parent).unwrap();
    std::fs::create_dir_all(outside.path().join("mount")).unwrap();
    let link = parent.with_file_name("swap-link");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = swapper(parent.clone(), link.clone(), stop.clone());
    let (mut published, mut refused, mut escapes) = (0, 0, 0);
    for _ in 0..iterations() {
        match n
            .node_publish_volume(publish_request(&id, &staging, &target, false))
            .await
        {
            Ok(_) => published += 1,
            Err(status) => {
                assert_ne!(status.code(), tonic::Code::Internal, "{status:?}");
                refused += 1
            }
        }
        if is_mount_root(&outside.path().join("mount")) {
            escapes += 1;
            let _ = rustix::mount::unmount(
                outside.path().join("mount"),
                rustix::mount::UnmountFlags::DETACH,
            );
        }
        let _ = n
            .node_unpublish_volume(unpublish_request(&id, &target))
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swaps.join().unwrap();
    n.node_unpublish_volume(unpublish_request(&id, &target))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    eprintln!(
        "target-parent race: {} publishes ({published} OK, {refused} refused), {swaps} swaps, {escapes} mounts outside",
        iterations()
    );
    assert_eq!(escapes, 0, "mounts escaped the kubelet dir");
    let outside_entries: Vec<_> = std::fs::read_dir(outside.path().join("mount"))
        .unwrap()
        .collect();
    assert!(
        outside_entries.is_empty(),
        "written outside: {outside_entries:?}"
    );
    assert!(swaps > 0, "the swapper never ran");
    assert_eq!(mounts_below(outside.path()), 0);
    assert_eq!(mounts_below(driver.dir.path()), 0);
}

#[tokio::test]
async fn swapping_a_staging_parent_for_a_symlink_never_publishes_an_outside_directory() {
    require!(require_root());
    let driver = TestDriver::start();
    let outside = tempfile::tempdir().unwrap();
    let mut c = driver.controller().await;
    let mut n = driver.node().await;
    let id = create(&mut c, create_request("pvc-race2", 1 << 20))
        .await
        .volume_id;
    std::fs::write(driver.data_dir("pvc-race2").join("volume-marker"), b"v").unwrap();
    let staging = driver.staging_path(&id);
    n.node_stage_volume(stage_request(&id, &staging))
        .await
        .unwrap();
    // An outside directory shaped like the staging path's last component,
    // holding what an attacker would like a pod to see.
    let decoy = outside.path().join(staging.file_name().unwrap());
    std::fs::create_dir_all(&decoy).unwrap();
    std::fs::write(decoy.join("host-secret"), b"s").unwrap();
    let parent = staging.parent().unwrap().to_path_buf();
    let link = parent.with_file_name("swap-link");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();

    let target = driver.target_path("pod-1", "pvc-race2");
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = swapper(parent.clone(), link.clone(), stop.clone());
    let (mut published, mut refused, mut foreign) = (0, 0, 0);
    for _ in 0..iterations() {
        match n
            .node_publish_volume(publish_request(&id, &staging, &target, false))
            .await
        {
            Ok(_) => {
                published += 1;
                if target.join("host-secret").exists() || !target.join("volume-marker").exists() {
                    foreign += 1;
                }
            }
            Err(status) => {
                assert_ne!(status.code(), tonic::Code::Internal, "{status:?}");
                refused += 1
            }
        }
        let _ = n
            .node_unpublish_volume(unpublish_request(&id, &target))
            .await;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swaps.join().unwrap();
    n.node_unpublish_volume(unpublish_request(&id, &target))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    eprintln!(
        "staging-parent race: {} publishes ({published} OK, {refused} refused), {swaps} swaps, {foreign} foreign directories published",
        iterations()
    );
    assert_eq!(foreign, 0, "an outside directory was published into a pod");
    assert!(swaps > 0, "the swapper never ran");
    assert!(
        published > 0,
        "no publish ever succeeded: the test proves nothing"
    );
    assert_eq!(mounts_below(outside.path()), 0);
    assert_eq!(mounts_below(driver.dir.path()), 0);
}
