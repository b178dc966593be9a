//! NFS snapshots, restores and clones against a real NFS server
//! (nfs-ganesha on 127.0.0.1): copies made on the export through the
//! controller's userspace client, with no mounts on this machine.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cairn_harness::{require, require_nfs_lab, Ganesha};
use cairn_proto::v1::*;
use common::*;
use tonic::Code;

/// A small tree with what a copy can get wrong: nesting, modes, a symlink
/// pointing outside the volume (must stay a link), an empty file.
fn write_tree(dir: &Path, content: &str) {
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/b/file"), content).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    let private = dir.join("private");
    std::fs::write(&private, b"secret").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("escape")).unwrap();
}

fn assert_tree(dir: &Path, content: &str) {
    assert_eq!(
        std::fs::read_to_string(dir.join("a/b/file")).unwrap(),
        content
    );
    assert_eq!(std::fs::read(dir.join("empty")).unwrap(), b"");
    let private = std::fs::metadata(dir.join("private")).unwrap();
    assert_eq!(private.permissions().mode() & 0o7777, 0o640);
    let escape = dir.join("escape");
    assert!(std::fs::symlink_metadata(&escape)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_link(&escape).unwrap(),
        Path::new("/etc/passwd")
    );
}

#[tokio::test]
async fn nfs_snapshots_restore_and_clone_are_copies_on_the_export() {
    require!(require_nfs_lab());
    let server = Ganesha::start().expect("ganesha");
    let port = server.addr().port();
    let export = server.export_dir().to_path_buf();
    let mut driver = TestDriver::start();
    let mut c = driver.controller().await;

    let source = create(&mut c, nfs_request("pvc-src", port, &[])).await;
    write_tree(&export.join("pvc-src"), "before");

    let snapshot = try_snapshot(&mut c, "snap-1", &source.volume_id)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert!(snapshot.ready_to_use);
    assert_eq!(snapshot.source_volume_id, source.volume_id);
    assert_eq!(snapshot.size_bytes, 5 << 20);
    assert_eq!(
        snapshot.snapshot_id,
        format!("nfs-snap:{port}:127.0.0.1#/export#snap-1")
    );
    assert_tree(&export.join(".cairn-snapshots/snap-1"), "before");

    // Idempotent on name; the same name for another volume is a conflict.
    let again = try_snapshot(&mut c, "snap-1", &source.volume_id)
        .await
        .unwrap();
    assert_eq!(again, snapshot);
    let other = create(&mut c, nfs_request("pvc-other", port, &[])).await;
    assert_code(
        try_snapshot(&mut c, "snap-1", &other.volume_id).await,
        Code::AlreadyExists,
    );

    // A restarted controller finds it again: it lives on the export.
    driver.restart();
    let mut c = driver.controller().await;
    let after_restart = try_snapshot(&mut c, "snap-1", &source.volume_id)
        .await
        .unwrap();
    assert_eq!(after_restart, snapshot);

    // The snapshot keeps the content of its moment.
    std::fs::write(export.join("pvc-src/a/b/file"), "after").unwrap();
    let restored = create(
        &mut c,
        with_source(
            nfs_request("pvc-restored", port, &[]),
            snap_source(&snapshot.snapshot_id),
        ),
    )
    .await;
    assert!(restored.content_source.is_some());
    assert_tree(&export.join("pvc-restored"), "before");
    let cloned = create(
        &mut c,
        with_source(
            nfs_request("pvc-clone", port, &[]),
            vol_source(&source.volume_id),
        ),
    )
    .await;
    assert_tree(&export.join("pvc-clone"), "after");

    // Deleting the source leaves the snapshot whole: it is an independent copy.
    c.delete_volume(DeleteVolumeRequest {
        volume_id: source.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let got = c
        .get_snapshot(GetSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.snapshot.unwrap().snapshot_id, snapshot.snapshot_id);

    let delete = DeleteSnapshotRequest {
        snapshot_id: snapshot.snapshot_id.clone(),
        ..Default::default()
    };
    c.delete_snapshot(delete.clone()).await.unwrap();
    c.delete_snapshot(delete).await.unwrap();
    assert!(!export.join(".cairn-snapshots/snap-1").exists());
    assert!(!export.join(".cairn-snapshots/.snap-1.cairn.json").exists());
    assert_code(
        c.create_volume(with_source(
            nfs_request("pvc-late", port, &[]),
            snap_source(&snapshot.snapshot_id),
        ))
        .await,
        Code::NotFound,
    );
    assert!(!export.join("pvc-late").exists());
    assert_code(
        c.get_snapshot(GetSnapshotRequest {
            snapshot_id: snapshot.snapshot_id.clone(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
    );

    // Hostile snapshot ids never reach the export: never issued, they name
    // no snapshot, and DeleteSnapshot answers OK having touched nothing.
    for bad in [
        format!("nfs-snap:{port}:127.0.0.1#/export#../pvc-clone"),
        format!("nfs-snap:{port}:127.0.0.1#/export#a/b"),
        format!("nfs-snap:{port}:127.0.0.1#/../etc#x"),
    ] {
        c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: bad.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{bad}: {e}"));
    }
    assert_tree(&export.join("pvc-clone"), "after");
    assert!(cloned.content_source.is_some());
}

/// What a controller killed in the middle of a restore leaves on the export,
/// laid down by hand: the retry converges, and DeleteVolume of a restore
/// never retried leaves nothing behind.
#[tokio::test]
async fn interrupted_nfs_restores_converge_on_retry_or_delete() {
    require!(require_nfs_lab());
    let (server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;

    let source = create(&mut c, nfs_request("pvc-src", port, &[])).await;
    write_tree(&export.join("pvc-src"), "snapped");
    let snapshot = try_snapshot(&mut c, "snap-1", &source.volume_id)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));

    // Killed mid-copy: a half copy under the restoring name.
    std::fs::create_dir_all(export.join(".pvc-a.restoring/a")).unwrap();
    std::fs::write(export.join(".pvc-a.restoring/half"), "junk").unwrap();
    // Killed after the rename, before the record: the marker names the volume.
    std::fs::create_dir_all(export.join("pvc-b")).unwrap();
    std::fs::write(export.join("pvc-b/.cairn-restoring"), "pvc-b").unwrap();
    std::fs::write(export.join("pvc-b/half"), "junk").unwrap();
    for name in ["pvc-a", "pvc-b"] {
        let v = create(
            &mut c,
            with_source(
                nfs_request(name, port, &[]),
                snap_source(&snapshot.snapshot_id),
            ),
        )
        .await;
        assert_tree(&export.join(name), "snapped");
        assert!(!export.join(name).join("half").exists(), "{name}");
        assert!(
            !export.join(name).join(".cairn-restoring").exists(),
            "{name}"
        );
        assert!(
            !export.join(format!(".{name}.restoring")).exists(),
            "{name}"
        );
        assert_eq!(v.capacity_bytes, 5 << 20);
    }

    // A directory that some other writer owns is never written over.
    std::fs::create_dir_all(export.join("pvc-foreign")).unwrap();
    std::fs::write(export.join("pvc-foreign/data"), "theirs").unwrap();
    assert_code(
        c.create_volume(with_source(
            nfs_request("pvc-foreign", port, &[]),
            snap_source(&snapshot.snapshot_id),
        ))
        .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        std::fs::read_to_string(export.join("pvc-foreign/data")).unwrap(),
        "theirs"
    );

    // A restore abandoned mid-copy, then deleted by the provisioner.
    std::fs::create_dir_all(export.join(".pvc-gone.restoring")).unwrap();
    let gone_id = source.volume_id.replace("pvc-src", "pvc-gone");
    c.delete_volume(DeleteVolumeRequest {
        volume_id: gone_id,
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!export.join(".pvc-gone.restoring").exists());
    assert!(export.join("pvc-src").exists());
}

/// The external-snapshotter's deadline cuts a long copy short and it calls
/// again at once: the retry must wait for the first copy, not race it, and
/// the snapshot it reports must be whole.
#[tokio::test]
async fn a_snapshot_retried_after_a_deadline_is_whole() {
    require!(require_nfs_lab());
    let (server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;

    let source = create(&mut c, nfs_request("pvc-big", port, &[])).await;
    let payload: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(export.join("pvc-big/data"), &payload).unwrap();

    let mut hurried = tonic::Request::new(snapshot_request("snap-big", &source.volume_id));
    hurried.set_timeout(std::time::Duration::from_millis(20));
    let first = c.create_snapshot(hurried).await;
    assert!(first.is_err(), "a 24 MiB copy answered within 20 ms");
    let snapshot = try_snapshot(&mut c, "snap-big", &source.volume_id)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert!(snapshot.ready_to_use);
    let copied = std::fs::read(export.join(".cairn-snapshots/snap-big/data")).unwrap();
    assert!(
        copied == payload,
        "the snapshot's copy differs from its source"
    );
    assert!(!export.join(".cairn-snapshots/.snap-big.partial").exists());
    // The first call's log line reports its real end, not the caller's
    // give-up; it is written as that call's detached work ends, so it is
    // waited for rather than assumed to precede the retry's answer.
    let lines = driver.log_lines_with("CreateSnapshot", 2);
    let log = driver.log_text();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines.iter().all(|l| l.contains("OK")), "{log}");
}
