//! NFS snapshots, restores and clones against a real NFS server
//! (nfs-ganesha on 127.0.0.1): copies made on the export through the
//! controller's userspace client, with no mounts on this machine.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cairn_harness::{require, require_nfs_lab, Ganesha};
use cairn_proto::v1::controller_client::ControllerClient;
use cairn_proto::v1::*;
use common::*;
use tonic::transport::Channel;
use tonic::Code;

type Controller = ControllerClient<Channel>;

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

/// An NFS lab (nfs-ganesha, its port and export, a driver) with a source
/// volume "pvc-src" holding `write_tree(content)`, snapshotted as "snap-1".
struct NfsSnapped {
    /// Serves the export while the test lasts; stopped on drop.
    _server: Ganesha,
    port: u16,
    export: PathBuf,
    driver: TestDriver,
    c: Controller,
    source: Volume,
    snapshot: Snapshot,
}

async fn nfs_snapped(content: &str) -> NfsSnapped {
    let (server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;
    let source = create(&mut c, nfs_request("pvc-src", port, &[])).await;
    write_tree(&export.join("pvc-src"), content);
    let snapshot = try_snapshot(&mut c, "snap-1", &source.volume_id)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    NfsSnapped {
        _server: server,
        port,
        export,
        driver,
        c,
        source,
        snapshot,
    }
}

impl NfsSnapped {
    /// CreateVolume `name` on the export from `source`.
    async fn create_from(&mut self, name: &str, source: Option<VolumeContentSource>) -> Volume {
        let request = with_source(nfs_request(name, self.port, &[]), source);
        create(&mut self.c, request).await
    }

    /// The source written again after its snapshot ("before" becomes "after").
    fn write_after_the_snapshot(&self) {
        std::fs::write(self.export.join("pvc-src/a/b/file"), "after").unwrap();
    }

    async fn get_snapshot(&mut self) -> Result<GetSnapshotResponse, tonic::Status> {
        self.c
            .get_snapshot(GetSnapshotRequest {
                snapshot_id: self.snapshot.snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn delete_snapshot(&mut self, snapshot_id: &str) -> Result<(), tonic::Status> {
        self.c
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: snapshot_id.to_string(),
                ..Default::default()
            })
            .await
            .map(drop)
    }
}

#[tokio::test]
async fn an_nfs_snapshot_is_a_ready_copy_on_the_export_that_names_its_source() {
    require!(require_nfs_lab());
    let s = nfs_snapped("before").await;
    assert!(s.snapshot.ready_to_use);
    assert_eq!(s.snapshot.source_volume_id, s.source.volume_id);
    assert_eq!(s.snapshot.size_bytes, 5 << 20);
    assert_eq!(
        s.snapshot.snapshot_id,
        format!("nfs-snap:{}:127.0.0.1#/export#snap-1", s.port)
    );
    assert_tree(&s.export.join(".cairn-snapshots/snap-1"), "before");
}

#[tokio::test]
async fn an_nfs_snapshot_repeats_on_its_name_and_conflicts_for_another_volume() {
    require!(require_nfs_lab());
    let mut s = nfs_snapped("before").await;
    let again = try_snapshot(&mut s.c, "snap-1", &s.source.volume_id)
        .await
        .unwrap();
    assert_eq!(again, s.snapshot);
    let other = create(&mut s.c, nfs_request("pvc-other", s.port, &[])).await;
    assert_code(
        try_snapshot(&mut s.c, "snap-1", &other.volume_id).await,
        Code::AlreadyExists,
    );
}

#[tokio::test]
async fn a_restarted_controller_finds_an_nfs_snapshot_on_the_export() {
    require!(require_nfs_lab());
    let mut s = nfs_snapped("before").await;
    s.driver.restart();
    s.c = s.driver.controller().await;
    let after_restart = try_snapshot(&mut s.c, "snap-1", &s.source.volume_id)
        .await
        .unwrap();
    assert_eq!(after_restart, s.snapshot);
}

#[tokio::test]
async fn a_restored_nfs_volume_holds_the_snapshots_content_not_later_writes() {
    require!(require_nfs_lab());
    let mut s = nfs_snapped("before").await;
    s.write_after_the_snapshot();
    let restored = s
        .create_from("pvc-restored", snap_source(&s.snapshot.snapshot_id))
        .await;
    assert!(restored.content_source.is_some());
    assert_tree(&s.export.join("pvc-restored"), "before");
}

#[tokio::test]
async fn an_nfs_clone_holds_its_source_as_it_is_now() {
    require!(require_nfs_lab());
    let mut s = nfs_snapped("before").await;
    s.write_after_the_snapshot();
    let cloned = s
        .create_from("pvc-clone", vol_source(&s.source.volume_id))
        .await;
    assert_tree(&s.export.join("pvc-clone"), "after");
    assert!(cloned.content_source.is_some());
}

#[tokio::test]
async fn an_nfs_snapshot_outlives_its_source_volume() {
    require!(require_nfs_lab());
    let mut s = nfs_snapped("before").await;
    s.c.delete_volume(DeleteVolumeRequest {
        volume_id: s.source.volume_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let got = s.get_snapshot().await.unwrap();
    assert_eq!(got.snapshot.unwrap().snapshot_id, s.snapshot.snapshot_id);
}

#[tokio::test]
async fn a_deleted_nfs_snapshot_leaves_the_export_and_restores_nothing() {
    require!(require_nfs_lab());
    let mut s = nfs_snapped("before").await;
    let id = s.snapshot.snapshot_id.clone();
    s.delete_snapshot(&id).await.unwrap();
    s.delete_snapshot(&id).await.unwrap();
    assert!(!s.export.join(".cairn-snapshots/snap-1").exists());
    assert!(!s
        .export
        .join(".cairn-snapshots/.snap-1.cairn.json")
        .exists());
    let port = s.port;
    assert_code(
        s.c.create_volume(with_source(
            nfs_request("pvc-late", port, &[]),
            snap_source(&id),
        ))
        .await,
        Code::NotFound,
    );
    assert!(!s.export.join("pvc-late").exists());
    assert_code(s.get_snapshot().await, Code::NotFound);
}

#[tokio::test]
async fn hostile_nfs_snapshot_ids_never_reach_the_export() {
    require!(require_nfs_lab());
    let mut s = nfs_snapped("before").await;
    s.write_after_the_snapshot();
    s.create_from("pvc-clone", vol_source(&s.source.volume_id))
        .await;
    // Never issued, they name no snapshot, and DeleteSnapshot answers OK
    // having touched nothing.
    let port = s.port;
    for bad in [
        format!("nfs-snap:{port}:127.0.0.1#/export#../pvc-clone"),
        format!("nfs-snap:{port}:127.0.0.1#/export#a/b"),
        format!("nfs-snap:{port}:127.0.0.1#/../etc#x"),
    ] {
        s.delete_snapshot(&bad)
            .await
            .unwrap_or_else(|e| panic!("{bad}: {e}"));
    }
    assert_tree(&s.export.join("pvc-clone"), "after");
}

/// What a controller killed in the middle of a restore leaves on the export,
/// laid down by hand: the retry converges, and DeleteVolume of a restore
/// never retried leaves nothing behind.
#[tokio::test]
async fn interrupted_nfs_restores_converge_on_retry_or_delete() {
    require!(require_nfs_lab());
    // Bound first: the fields left out of the pattern (the server, the
    // driver) live as long as it does.
    let snapped = nfs_snapped("snapped").await;
    let NfsSnapped {
        port,
        export,
        mut c,
        source,
        snapshot,
        ..
    } = snapped;

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
