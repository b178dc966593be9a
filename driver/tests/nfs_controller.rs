//! The NFS controller against a real NFS server (nfs-ganesha on
//! 127.0.0.1): directories made, recorded, archived and deleted over the
//! userspace client, with no mounts on this machine.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cairn_harness::{require, require_nfs_lab, Ganesha, NetnsGanesha};
use cairn_proto::v1::volume_capability::AccessType;
use cairn_proto::v1::*;
use common::*;
use tonic::Code;

/// An NFS lab with one volume, "pvc-nfs-1", created with mountPermissions
/// 0750 on the export.
struct NfsVolume {
    /// Serves the export while the test lasts; stopped on drop.
    _server: Ganesha,
    port: u16,
    export: std::path::PathBuf,
    _driver: TestDriver,
    c: controller_client::ControllerClient<tonic::transport::Channel>,
    volume: Volume,
}

fn nfs_1_request(port: u16) -> CreateVolumeRequest {
    nfs_request("pvc-nfs-1", port, &[("mountPermissions", "0750")])
}

async fn nfs_volume() -> NfsVolume {
    let (server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;
    let volume = c
        .create_volume(nfs_1_request(port))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()))
        .into_inner()
        .volume
        .unwrap();
    NfsVolume {
        _server: server,
        port,
        export,
        _driver: driver,
        c,
        volume,
    }
}

impl NfsVolume {
    async fn get(&mut self) -> Result<ControllerGetVolumeResponse, tonic::Status> {
        self.c
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: self.volume.volume_id.clone(),
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

#[tokio::test]
async fn an_nfs_volume_is_a_recorded_directory_on_the_export_with_its_mode() {
    require!(require_nfs_lab());
    let v = nfs_volume().await;
    let (port, export, volume) = (v.port, &v.export, &v.volume);
    assert_eq!(
        volume.volume_id,
        format!("nfs:d:{port}:127.0.0.1#/export#pvc-nfs-1")
    );
    assert_eq!(volume.capacity_bytes, 5 << 20, "the request is recorded");
    assert!(
        volume.accessible_topology.is_empty(),
        "NFS volumes carry no node topology"
    );
    let dir = export.join("pvc-nfs-1");
    assert!(dir.is_dir());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    assert!(export.join(".cairn-volumes/pvc-nfs-1").is_file());
}

#[tokio::test]
async fn creating_an_nfs_volume_again_returns_it_and_another_size_conflicts() {
    require!(require_nfs_lab());
    let mut v = nfs_volume().await;
    let again = create(&mut v.c, nfs_1_request(v.port)).await;
    assert_eq!(again, v.volume);
    let mut bigger = nfs_1_request(v.port);
    bigger.capacity_range.as_mut().unwrap().required_bytes = 50 << 20;
    assert_code(v.c.create_volume(bigger).await, Code::AlreadyExists);
}

#[tokio::test]
async fn an_nfs_volume_reports_its_size_and_health_and_validates_its_capabilities() {
    require!(require_nfs_lab());
    let mut v = nfs_volume().await;
    let got = v.get().await.unwrap();
    assert_eq!(got.volume.unwrap().capacity_bytes, 5 << 20);
    assert!(!got.status.unwrap().volume_condition.unwrap().abnormal);
    let validated =
        v.c.validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
            volume_id: v.volume.volume_id.clone(),
            volume_capabilities: nfs_request("x", v.port, &[]).volume_capabilities,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(validated.confirmed.is_some(), "{}", validated.message);
}

#[tokio::test]
async fn deleting_an_nfs_volume_removes_its_tree_and_nothing_above_it() {
    require!(require_nfs_lab());
    let mut v = nfs_volume().await;
    let dir = v.export.join("pvc-nfs-1");
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/b/file"), b"data").unwrap();
    std::fs::write(v.export.join("neighbour"), b"keep").unwrap();
    v.c.delete_volume(delete_request(&v.volume.volume_id))
        .await
        .unwrap();
    assert!(!dir.exists());
    assert!(!v.export.join(".cairn-volumes/pvc-nfs-1").exists());
    assert_eq!(std::fs::read(v.export.join("neighbour")).unwrap(), b"keep");
    assert!(v.export.is_dir());
    // Again: OK, and the volume is gone.
    v.c.delete_volume(delete_request(&v.volume.volume_id))
        .await
        .unwrap();
    assert_code(v.get().await, Code::NotFound);
}

#[tokio::test]
async fn get_capacity_reports_the_exports_free_space_as_the_server_sees_it() {
    require!(require_nfs_lab());
    let (_server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;
    let capacity = c
        .get_capacity(GetCapacityRequest {
            parameters: HashMap::from([
                ("server".into(), "127.0.0.1".into()),
                ("share".into(), "/export".into()),
            ]),
            volume_capabilities: nfs_request("x", port, &[]).volume_capabilities,
            accessible_topology: None,
        })
        .await
        .unwrap()
        .into_inner();
    let free = rustix::fs::statvfs(&export).unwrap();
    let host_free = free.f_bavail * free.f_frsize;
    let reported = capacity.available_capacity as u64;
    assert!(
        reported > 0 && reported.abs_diff(host_free) < host_free / 10 + (64 << 20),
        "server says {reported}, the export's filesystem has {host_free} free"
    );
}

#[tokio::test]
async fn templates_on_delete_policies_and_two_classes_on_one_export() {
    require!(require_nfs_lab());
    let (_server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;
    let template = ("subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}");

    // Two classes on the same export: one default layout, one templated.
    let plain = create(&mut c, nfs_request("pvc-two", port, &[])).await;
    let mut templated_req = nfs_request("pvc-three", port, &[template, ("onDelete", "archive")]);
    templated_req
        .parameters
        .insert("csi.storage.k8s.io/pvc/name".into(), "data".into());
    let templated = create(&mut c, templated_req).await;
    assert!(export.join("pvc-two").is_dir());
    assert!(export.join("default/data").is_dir());
    std::fs::write(export.join("default/data/keep.txt"), b"archived").unwrap();

    // Archive renames out of the way; the namespace dir and the other class stay.
    c.delete_volume(delete_request(&templated.volume_id))
        .await
        .unwrap();
    assert!(!export.join("default/data").exists());
    let archived: Vec<String> = std::fs::read_dir(export.join("default"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert!(archived[0].starts_with("data-archived-"), "{archived:?}");
    assert_eq!(
        std::fs::read(export.join("default").join(&archived[0]).join("keep.txt")).unwrap(),
        b"archived"
    );
    assert!(export.join("pvc-two").is_dir());
    c.delete_volume(delete_request(&templated.volume_id))
        .await
        .unwrap();

    // Retain leaves the directory.
    let retained = create(
        &mut c,
        nfs_request("pvc-kept", port, &[("onDelete", "retain")]),
    )
    .await;
    c.delete_volume(delete_request(&retained.volume_id))
        .await
        .unwrap();
    assert!(export.join("pvc-kept").is_dir());
    c.delete_volume(delete_request(&plain.volume_id))
        .await
        .unwrap();
    assert!(!export.join("pvc-two").exists());
}

#[tokio::test]
async fn hostile_parameters_and_ids_touch_nothing() {
    require!(require_nfs_lab());
    let server = Ganesha::start().expect("ganesha");
    let port = server.addr().port();
    let export = server.export_dir().to_path_buf();
    std::fs::write(export.join("precious"), b"x").unwrap();
    let driver = TestDriver::start();
    let mut c = driver.controller().await;

    let status = c
        .create_volume(nfs_request("pvc-x", port, &[("shares", "/x")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("shares"), "{}", status.message());
    for (key, value) in [
        ("subDir", "../escape"),
        ("subDir", "/abs"),
        ("subDir", "${pvc.metadata.name}/../.."),
        ("share", "relative"),
        ("onDelete", "shred"),
        ("mountPermissions", "rwx"),
    ] {
        let mut req = nfs_request("pvc-x", port, &[(key, value)]);
        req.parameters
            .insert("csi.storage.k8s.io/pvc/name".into(), "data".into());
        assert_code(c.create_volume(req).await, Code::InvalidArgument);
    }
    for crafted in [
        format!("nfs:d:{port}:127.0.0.1#/export#.."),
        format!("nfs:d:{port}:127.0.0.1#/export#../etc"),
        format!("nfs:d:{port}:127.0.0.1#/export/..#x"),
        format!("nfs:d:{port}:127.0.0.1#/export#/"),
    ] {
        // Never issued, so no such volume: DeleteVolume answers OK (issue
        // 10: a handle the driver does not know must still be releasable)
        // and parsing stops it before it reaches the export.
        c.delete_volume(delete_request(&crafted))
            .await
            .unwrap_or_else(|e| panic!("{crafted}: {e}"));
    }
    // A well-formed id for a directory that does not exist: nothing to do.
    c.delete_volume(delete_request(&format!(
        "nfs:d:{port}:127.0.0.1#/export#nothing-here"
    )))
    .await
    .unwrap();
    assert_eq!(std::fs::read(export.join("precious")).unwrap(), b"x");
    assert_eq!(std::fs::read_dir(&export).unwrap().count(), 1);
}

#[tokio::test]
async fn unreachable_and_silent_servers_fail_with_unavailable_in_time() {
    require!(require_nfs_lab());
    let driver = TestDriver::start_with(&["--nfs-timeout", "2"]);
    let mut c = driver.controller().await;

    // Nothing listens: refused at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    assert_code(
        c.create_volume(nfs_request("pvc-down", closed_port, &[]))
            .await,
        Code::Unavailable,
    );

    // Accepts connections and never answers: the deadline ends the call.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    assert_code(
        c.create_volume(nfs_request("pvc-silent", silent_port, &[]))
            .await,
        Code::Unavailable,
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_code(
        c.delete_volume(delete_request(&format!(
            "nfs:d:{silent_port}:127.0.0.1#/export#pvc-silent"
        )))
        .await,
        Code::Unavailable,
    );
    // The driver still answers other calls.
    driver
        .identity()
        .await
        .probe(ProbeRequest {})
        .await
        .unwrap();
    drop(silent);
}

#[tokio::test]
async fn nfsv3_through_rpcbind_in_a_private_network_namespace() {
    require!(require_nfs_lab());
    // rpcbind cannot be kept on loopback in this namespace: server and
    // driver run in a namespace of their own that has only `lo`.
    let server = NetnsGanesha::start().expect("ganesha and rpcbind in a netns");
    let export = server.export_dir().to_path_buf();
    let driver = TestDriver::start_in_netns(server.netns().name(), &[]);
    let mut c = driver.controller().await;
    let mut req = nfs_request("pvc-v3", 2049, &[]);
    if let Some(AccessType::Mount(mount)) = req.volume_capabilities[0].access_type.as_mut() {
        mount.mount_flags = vec!["nfsvers=3".into()];
    }
    let volume = create(&mut c, req).await;
    assert_eq!(volume.volume_id, "nfs:d:2049:127.0.0.1#/export#pvc-v3");
    assert!(export.join("pvc-v3").is_dir(), "{}", server.log());
    std::fs::write(export.join("pvc-v3/file"), b"x").unwrap();
    c.delete_volume(delete_request(&volume.volume_id))
        .await
        .unwrap();
    assert!(!export.join("pvc-v3").exists());
    assert!(!export.join(".cairn-volumes/pvc-v3").exists());
}

fn kernel_has_nfs() -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.trim_start_matches("nodev").trim() == "nfs")
    })
}

/// A server that refuses the connection, or whose name does not resolve,
/// is as unreachable as a silent one: every call that has to reach it
/// answers UNAVAILABLE (the caller retries), never INTERNAL.
#[tokio::test]
async fn refused_and_unresolvable_servers_are_unavailable_for_every_call() {
    require!(require_nfs_lab());
    let driver = TestDriver::start_with(&["--nfs-timeout", "5"]);
    let mut c = driver.controller().await;
    let mut n = driver.node().await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut wrong = Vec::new();
    for (host, port) in [("127.0.0.1", closed_port), ("nonexistent.invalid", 2049)] {
        let request = {
            let mut r = nfs_request("pvc-gone", port, &[]);
            r.parameters.insert("server".into(), host.into());
            r
        };
        let volume_id = format!("nfs:d:{port}:{host}#/export#pvc-gone");
        let snapshot_id = format!("nfs-snap:{port}:{host}#/export#snap-gone");
        let mut expect = |call: &str, status: Result<(), tonic::Status>| match status {
            Ok(()) => wrong.push(format!("{call} against {host}:{port}: succeeded")),
            Err(s) if s.code() == Code::Unavailable => {}
            Err(s) => wrong.push(format!(
                "{call} against {host}:{port}: {:?} {}",
                s.code(),
                s.message()
            )),
        };
        expect(
            "CreateVolume",
            c.create_volume(request.clone()).await.map(drop),
        );
        expect(
            "DeleteVolume",
            c.delete_volume(delete_request(&volume_id)).await.map(drop),
        );
        expect(
            "ControllerExpandVolume",
            c.controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: volume_id.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 10 << 20,
                    limit_bytes: 0,
                }),
                volume_capability: request.volume_capabilities.first().cloned(),
                ..Default::default()
            })
            .await
            .map(drop),
        );
        expect(
            "ValidateVolumeCapabilities",
            c.validate_volume_capabilities(ValidateVolumeCapabilitiesRequest {
                volume_id: volume_id.clone(),
                volume_capabilities: request.volume_capabilities.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        );
        expect(
            "ControllerGetVolume",
            c.controller_get_volume(ControllerGetVolumeRequest {
                volume_id: volume_id.clone(),
            })
            .await
            .map(drop),
        );
        expect(
            "CreateSnapshot",
            c.create_snapshot(snapshot_request("snap-gone", &volume_id))
                .await
                .map(drop),
        );
        expect(
            "ListSnapshots",
            c.list_snapshots(ListSnapshotsRequest {
                snapshot_id: snapshot_id.clone(),
                ..Default::default()
            })
            .await
            .map(drop),
        );
        expect(
            "GetCapacity",
            c.get_capacity(GetCapacityRequest {
                parameters: request.parameters.clone(),
                volume_capabilities: request.volume_capabilities.clone(),
                accessible_topology: None,
            })
            .await
            .map(drop),
        );
        let staging = driver.staging_path(&volume_id);
        let mut stage = stage_request(&volume_id, &staging);
        stage.volume_capability = request.volume_capabilities.first().cloned();
        // Without the kernel's NFS client (a container) mount.nfs fails
        // with "No such device" before it could try the refused port; the
        // name lookup comes first and is checked either way.
        if host != "127.0.0.1" || kernel_has_nfs() {
            expect(
                "NodeStageVolume",
                n.node_stage_volume(stage).await.map(drop),
            );
        } else {
            eprintln!("NodeStageVolume to a refused port not checked: no nfs in /proc/filesystems");
        }
        assert_eq!(mounts_below(driver.dir.path()), 0, "a failed stage mounted");
    }
    assert!(wrong.is_empty(), "not UNAVAILABLE:\n{}", wrong.join("\n"));
}
