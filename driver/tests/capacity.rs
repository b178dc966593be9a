//! Capacity on this host, whose kernel has no quotas: what the driver does
//! on a root that cannot enforce sizes, expansion of local and NFS volumes,
//! and the no-overcommit ledger. (Enforcement itself is tested in a guest
//! with quotas: tests/local_quota.rs.)

mod common;

use cairn_harness::{require, require_nfs_lab, require_root};
use cairn_proto::v1::volume_capability::{access_mode::Mode, AccessMode, AccessType, BlockVolume};
use cairn_proto::v1::*;
use common::*;
use tonic::Code;

const MI: i64 = 1 << 20;

fn expand_request(id: &str, required: i64, limit: i64) -> ControllerExpandVolumeRequest {
    ControllerExpandVolumeRequest {
        volume_id: id.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }),
        ..Default::default()
    }
}

fn node_expand_request(id: &str, path: &std::path::Path, required: i64) -> NodeExpandVolumeRequest {
    NodeExpandVolumeRequest {
        volume_id: id.into(),
        volume_path: path.display().to_string(),
        capacity_range: (required > 0).then_some(CapacityRange {
            required_bytes: required,
            limit_bytes: 0,
        }),
        volume_capability: Some(rwo()),
        ..Default::default()
    }
}

fn capacity_request() -> GetCapacityRequest {
    GetCapacityRequest {
        volume_capabilities: vec![rwo()],
        ..Default::default()
    }
}

#[tokio::test]
async fn unenforceable_roots_refuse_by_default_and_allow_on_request() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_cairn-csi"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("[env: CAIRN_UNENFORCED_CAPACITY=]") && help.contains("[default: refuse]"),
        "{help}"
    );
    assert!(help.contains("[env: CAIRN_OVERCOMMIT=]"), "{help}");
    // The harness passes allow unless told otherwise; here: the default.
    let driver = TestDriver::start_with(&["--unenforced-capacity", "refuse"]);
    let mut c = driver.controller().await;
    let err = c
        .create_volume(create_request("pvc-refused", MI))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("--unenforced-capacity=allow")
            && err.message().contains("not be held to their size"),
        "{}",
        err.message()
    );
    assert!(!driver.root.join("volumes/pvc-refused").exists());
    let log = driver.log_text();
    assert!(
        log.contains("cannot enforce volume sizes") && log.contains("--unenforced-capacity=refuse"),
        "startup says why and what to do: {log}"
    );
    // Capacity this node would refuse to use is no capacity.
    let cap = c
        .get_capacity(capacity_request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cap.available_capacity, 0);
    assert_eq!(cap.maximum_volume_size, Some(0));
    drop(driver);

    // allow: the volume is made, its size recorded, a warning logged for it.
    let driver = TestDriver::start_with(&["--unenforced-capacity=allow"]);
    let mut c = driver.controller().await;
    let volume = create(&mut c, create_request("pvc-allowed", MI)).await;
    assert_eq!(volume.capacity_bytes, MI);
    let meta = std::fs::read_to_string(driver.root.join("volumes/pvc-allowed/meta.json")).unwrap();
    assert!(
        !meta.contains("project_id"),
        "unenforced: no project id: {meta}"
    );
    let log = driver.log_text();
    assert!(
        log.contains("NOT enforced") && log.contains("pvc-allowed"),
        "a warning per unenforced volume: {log}"
    );
    let cap = c
        .get_capacity(capacity_request())
        .await
        .unwrap()
        .into_inner();
    assert!(cap.available_capacity > 0);
    assert!(cap.maximum_volume_size.unwrap() >= cap.available_capacity);
}

// ---- expanding a local volume, one behaviour a test -------------------------

type Controller = controller_client::ControllerClient<tonic::transport::Channel>;

/// ControllerExpandVolume that must succeed.
async fn expand(c: &mut Controller, id: &str, required: i64) -> ControllerExpandVolumeResponse {
    c.controller_expand_volume(expand_request(id, required, 0))
        .await
        .unwrap_or_else(|e| panic!("ControllerExpandVolume {id} to {required}: {e}"))
        .into_inner()
}

/// A fresh driver with a 1 MiB local volume "pvc-grow" already expanded to
/// 3 MiB; the expansion's answer.
async fn grown_volume() -> (
    TestDriver,
    Controller,
    String,
    ControllerExpandVolumeResponse,
) {
    let driver = TestDriver::start();
    let mut c = driver.controller().await;
    let id = create(&mut c, create_request("pvc-grow", MI))
        .await
        .volume_id;
    let grown = expand(&mut c, &id, 3 * MI).await;
    (driver, c, id, grown)
}

#[tokio::test]
async fn expanding_a_local_volume_raises_its_capacity_with_nothing_to_do_on_the_node() {
    let (_driver, _c, _id, grown) = grown_volume().await;
    assert_eq!(grown.capacity_bytes, 3 * MI);
    assert!(
        !grown.node_expansion_required,
        "a directory needs nothing on the node"
    );
}

#[tokio::test]
async fn expanding_again_or_to_a_smaller_floor_keeps_the_size() {
    let (_driver, mut c, id, _) = grown_volume().await;
    // Idempotent: the same request again, and a smaller floor (the volume
    // is already at least that large: spec, "SHOULD reply 0 OK").
    for required in [3 * MI, 2 * MI] {
        assert_eq!(expand(&mut c, &id, required).await.capacity_bytes, 3 * MI);
    }
}

#[tokio::test]
async fn a_local_volume_never_shrinks_nor_grows_past_its_filesystem() {
    let (_driver, mut c, id, _) = grown_volume().await;
    // A ceiling below the current size asks for shrinking.
    let shrink = c
        .controller_expand_volume(expand_request(&id, MI, 2 * MI))
        .await;
    assert_code(shrink, Code::OutOfRange);
    let bigger_than_the_filesystem = c
        .controller_expand_volume(expand_request(&id, i64::MAX, 0))
        .await;
    assert_code(bigger_than_the_filesystem, Code::OutOfRange);
}

#[tokio::test]
async fn expansion_refuses_bad_arguments_and_a_block_capability() {
    let (_driver, mut c, id, _) = grown_volume().await;
    assert_code(
        c.controller_expand_volume(expand_request("", 4 * MI, 0))
            .await,
        Code::InvalidArgument,
    );
    let mut no_range = expand_request(&id, 4 * MI, 0);
    no_range.capacity_range = None;
    assert_code(
        c.controller_expand_volume(no_range).await,
        Code::InvalidArgument,
    );
    assert_code(
        c.controller_expand_volume(expand_request(&id, 0, 0)).await,
        Code::InvalidArgument,
    );
    assert_code(
        c.controller_expand_volume(expand_request(&id, -1, 0)).await,
        Code::InvalidArgument,
    );
    // An id Cairn never issued names no volume.
    assert_code(
        c.controller_expand_volume(expand_request("local:node-a:../../etc", 4 * MI, 0))
            .await,
        Code::NotFound,
    );
    let mut block = expand_request(&id, 4 * MI, 0);
    block.volume_capability = Some(VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    });
    assert_code(
        c.controller_expand_volume(block).await,
        Code::InvalidArgument,
    );
    let mut with_capability = expand_request(&id, 3 * MI, 0);
    with_capability.volume_capability = Some(rwo());
    c.controller_expand_volume(with_capability).await.unwrap();
}

#[tokio::test]
async fn expanding_an_unknown_or_another_nodes_volume_is_refused() {
    let (_driver, mut c, _, _) = grown_volume().await;
    assert_code(
        c.controller_expand_volume(expand_request("local:node-a:pvc-nothing", 4 * MI, 0))
            .await,
        Code::NotFound,
    );
    // Another node's volume is that node's to expand: a non-final code, so
    // the resizer beside this node's controller retries instead of marking
    // the claim as failed (every node's resizer sees every claim).
    assert_code(
        c.controller_expand_volume(expand_request("local:node-b:pvc-grow", 4 * MI, 0))
            .await,
        Code::Unavailable,
    );
}

#[tokio::test]
async fn an_expanded_record_is_replaced_whole_and_survives_a_restart() {
    let (mut driver, c, id, _) = grown_volume().await;
    // Nothing is left beside the record.
    let dir = driver.root.join("volumes/pvc-grow");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    drop(c);
    driver.restart();
    let mut c = driver.controller().await;
    let got = c
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.unwrap().capacity_bytes, 3 * MI);
}

#[tokio::test]
async fn a_crashs_leftover_temp_record_does_not_stop_an_expansion() {
    let (driver, mut c, id, _) = grown_volume().await;
    let dir = driver.root.join("volumes/pvc-grow");
    std::fs::write(dir.join(".meta.json.tmp"), b"{half").unwrap();
    assert_eq!(expand(&mut c, &id, 4 * MI).await.capacity_bytes, 4 * MI);
    assert!(!dir.join(".meta.json.tmp").exists());
}

#[tokio::test]
async fn a_deleted_volume_cannot_be_expanded() {
    let (_driver, mut c, id, _) = grown_volume().await;
    c.delete_volume(delete_request(&id)).await.unwrap();
    assert_code(
        c.controller_expand_volume(expand_request(&id, 5 * MI, 0))
            .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn node_expand_answers_for_a_published_volume() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut c = driver.controller().await;
    let mut n = driver.node().await;
    let id = create(&mut c, create_request("pvc-node-grow", MI))
        .await
        .volume_id;
    let staging = driver.staging_path(&id);
    let target = driver.target_path("pod-1", "pvc-node-grow");
    n.node_stage_volume(stage_request(&id, &staging))
        .await
        .unwrap();
    n.node_publish_volume(publish_request(&id, &staging, &target, false))
        .await
        .unwrap();

    c.controller_expand_volume(expand_request(&id, 2 * MI, 0))
        .await
        .unwrap();
    for path in [&target, &staging] {
        let resp = n
            .node_expand_volume(node_expand_request(&id, path, 2 * MI))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.capacity_bytes, 2 * MI);
    }
    // Without a range, and again: the same answer.
    let resp = n
        .node_expand_volume(node_expand_request(&id, &target, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.capacity_bytes, 2 * MI);
    // More than the controller granted: the node grows it itself (node-only
    // expansion, as a CO does when the controller has no EXPAND_VOLUME).
    let grown = n
        .node_expand_volume(node_expand_request(&id, &target, 8 * MI))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 8 * MI);
    let recorded = n
        .node_expand_volume(node_expand_request(&id, &target, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recorded.capacity_bytes, 8 * MI, "the growth is recorded");
    // Paths that do not hold the volume.
    let elsewhere = driver.target_path("pod-2", "pvc-node-grow");
    std::fs::create_dir_all(&elsewhere).unwrap();
    assert_code(
        n.node_expand_volume(node_expand_request(&id, &elsewhere, 0))
            .await,
        Code::NotFound,
    );
    let missing = driver
        .kubelet
        .join("pods/pod-3/volumes/kubernetes.io~csi/x/mount");
    assert_code(
        n.node_expand_volume(node_expand_request(&id, &missing, 0))
            .await,
        Code::NotFound,
    );
    let other = create(&mut c, create_request("pvc-other", MI))
        .await
        .volume_id;
    assert_code(
        n.node_expand_volume(node_expand_request(&other, &target, 0))
            .await,
        Code::NotFound,
    );
    assert_code(
        n.node_expand_volume(node_expand_request("local:node-a:pvc-gone", &target, 0))
            .await,
        Code::NotFound,
    );
    // Arguments.
    assert_code(
        n.node_expand_volume(node_expand_request("", &target, 0))
            .await,
        Code::InvalidArgument,
    );
    let mut no_path = node_expand_request(&id, &target, 0);
    no_path.volume_path = String::new();
    assert_code(n.node_expand_volume(no_path).await, Code::InvalidArgument);
    // No volume is published outside the kubelet dir; nothing there is touched.
    assert_code(
        n.node_expand_volume(node_expand_request(&id, std::path::Path::new("/etc"), 0))
            .await,
        Code::NotFound,
    );
    let mut multi = node_expand_request(&id, &target, 0);
    multi.volume_capability = Some(mount_capability(Mode::MultiNodeMultiWriter));
    assert_code(n.node_expand_volume(multi).await, Code::InvalidArgument);

    n.node_unpublish_volume(unpublish_request(&id, &target))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    assert_eq!(mounts_below(driver.dir.path()), 0);
}

#[tokio::test]
async fn without_overcommit_the_node_promises_no_more_than_it_holds() {
    require!(require_root());
    let mut driver = TestDriver::start_with(&["--overcommit=false"]);
    // The local root becomes a 64 MiB filesystem of its own.
    driver.stop();
    rustix::mount::mount(
        "cairn-capacity",
        &driver.root,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        Some(c"size=64m,mode=755"),
    )
    .expect("mount tmpfs");
    driver.spawn();
    let mut c = driver.controller().await;
    let capacity = |cap: GetCapacityResponse| (cap.available_capacity, cap.maximum_volume_size);
    let cap = capacity(
        c.get_capacity(capacity_request())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(cap, (64 * MI, Some(64 * MI)));

    // Five creates at once for three volumes' worth of room: exactly three
    // are promised their 20 MiB, the others are refused.
    let mut calls = Vec::new();
    for i in 0..5 {
        let mut c = driver.controller().await;
        calls.push(tokio::spawn(async move {
            c.create_volume(create_request(&format!("pvc-{i}"), 20 * MI))
                .await
        }));
    }
    let mut made = Vec::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(r) => made.push(r.into_inner().volume.unwrap().volume_id),
            Err(status) => assert_eq!(
                status.code(),
                Code::ResourceExhausted,
                "{}",
                status.message()
            ),
        }
    }
    assert_eq!(made.len(), 3, "{made:?}");
    let cap = capacity(
        c.get_capacity(capacity_request())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(cap, (4 * MI, Some(4 * MI)));
    // Growing needs room too.
    assert_code(
        c.controller_expand_volume(expand_request(&made[0], 30 * MI, 0))
            .await,
        Code::ResourceExhausted,
    );
    c.controller_expand_volume(expand_request(&made[0], 24 * MI, 0))
        .await
        .unwrap();
    let cap = capacity(
        c.get_capacity(capacity_request())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(cap, (0, Some(0)));

    // A restart sums the records again.
    driver.restart();
    let mut c = driver.controller().await;
    let cap = capacity(
        c.get_capacity(capacity_request())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(cap, (0, Some(0)));
    assert_code(
        c.create_volume(create_request("pvc-late", MI)).await,
        Code::ResourceExhausted,
    );
    // Deleting gives the room back.
    c.delete_volume(delete_request(&made[1])).await.unwrap();
    let cap = capacity(
        c.get_capacity(capacity_request())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(cap, (20 * MI, Some(20 * MI)));
    create(&mut c, create_request("pvc-late", 20 * MI)).await;
    assert_code(
        c.create_volume(create_request("pvc-later", MI)).await,
        Code::ResourceExhausted,
    );
}

#[tokio::test]
async fn nfs_expansion_raises_the_recorded_size() {
    require!(require_nfs_lab());
    let (server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;
    let request = nfs_request("pvc-nfs-grow", port, &[]);
    let id = c
        .create_volume(request)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()))
        .into_inner()
        .volume
        .unwrap()
        .volume_id;
    let record = export.join(".cairn-volumes/pvc-nfs-grow");
    let recorded = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap()
    };

    let grown = c
        .controller_expand_volume(expand_request(&id, 50 * MI, 0))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()))
        .into_inner();
    assert_eq!(grown.capacity_bytes, 50 * MI);
    assert!(!grown.node_expansion_required);
    assert_eq!(recorded()["capacity_bytes"], 50 * MI);
    assert_eq!(recorded()["name"], "pvc-nfs-grow");
    let again = c
        .controller_expand_volume(expand_request(&id, 10 * MI, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.capacity_bytes, 50 * MI, "never shrinks");
    assert_code(
        c.controller_expand_volume(expand_request(&id, MI, 2 * MI))
            .await,
        Code::OutOfRange,
    );
    let got = c
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.unwrap().capacity_bytes, 50 * MI);
    // No temp record is left on the export.
    let leftovers: Vec<String> = std::fs::read_dir(export.join(".cairn-volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    c.delete_volume(delete_request(&id)).await.unwrap();
    assert_code(
        c.controller_expand_volume(expand_request(&id, 60 * MI, 0))
            .await,
        Code::NotFound,
    );
}
