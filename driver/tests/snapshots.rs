//! Snapshots, restores and clones of local volumes, through the real binary
//! over its socket: on a plain directory root (full copies), on a tmpfs
//! (a full copy slow enough to be killed mid-way) and on a loop-mounted XFS
//! with reflink (shared blocks; the figures of the note).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use cairn_harness::{require, require_loop_xfs, require_root};
use cairn_proto::v1::controller_client::ControllerClient;
use cairn_proto::v1::*;
use common::*;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;
use tonic::Code;

type Controller = ControllerClient<Channel>;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

// ---- requests ------------------------------------------------------------

fn from(name: &str, bytes: i64, source: Option<VolumeContentSource>) -> CreateVolumeRequest {
    with_source(create_request(name, bytes), source)
}

/// CreateSnapshot repeated, as external-snapshotter does, until ready.
async fn snapshot_until_ready(c: &mut Controller, name: &str, source: &str) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let snap = try_snapshot(c, name, source)
            .await
            .unwrap_or_else(|s| panic!("CreateSnapshot {name}: {s}"));
        if snap.ready_to_use {
            return snap;
        }
        assert!(
            Instant::now() < deadline,
            "snapshot {name} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn list(c: &mut Controller, req: ListSnapshotsRequest) -> Vec<String> {
    let mut req = req;
    let mut all = Vec::new();
    loop {
        let page = c.list_snapshots(req.clone()).await.unwrap().into_inner();
        if req.max_entries > 0 {
            assert!(page.entries.len() <= req.max_entries as usize);
        }
        all.extend(
            page.entries
                .into_iter()
                .map(|e| e.snapshot.unwrap().snapshot_id),
        );
        if page.next_token.is_empty() {
            return all;
        }
        req.starting_token = page.next_token;
    }
}

async fn delete_snapshot(c: &mut Controller, id: &str) -> Result<(), tonic::Status> {
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: id.into(),
        secrets: Default::default(),
    })
    .await
    .map(drop)
}

async fn delete_volume(c: &mut Controller, id: &str) {
    c.delete_volume(delete_request(id)).await.unwrap();
}

// ---- what is on disk -------------------------------------------------------

fn key_of(id: &str) -> &str {
    id.rsplit(':').next().unwrap()
}

fn data_of(root: &Path, volume_id: &str) -> PathBuf {
    root.join("volumes").join(key_of(volume_id)).join("data")
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The one scratch directory under `<root>/tmp/` of a copy that has begun:
/// waited for (the copy creates it on a thread of its own, after the call
/// that started it may already have answered), then returned by name.
fn running_copy(root: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = entries(&root.join("tmp"));
        match found.as_slice() {
            [one] => return one.clone(),
            [] if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => panic!("expected one copy running in tmp/, found {found:?}"),
        }
    }
}

/// A volume's content as a pod leaves it: nested directories, odd modes
/// and owners, symlinks pointing outside the volume (to a file and to a
/// directory holding a secret), a file with holes, a fifo.
fn populate(data: &Path, outside: &Path) {
    std::fs::create_dir_all(outside).unwrap();
    std::fs::write(outside.join("secret"), b"not in any volume").unwrap();
    std::fs::create_dir_all(data.join("app/db/wal")).unwrap();
    std::fs::write(data.join("app/db/wal/0001"), vec![7u8; 100_000]).unwrap();
    std::fs::write(data.join("app/config.yaml"), b"replicas: 3\n").unwrap();
    std::fs::set_permissions(
        data.join("app/config.yaml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(data.join("app/db"), std::fs::Permissions::from_mode(0o2770)).unwrap();
    std::os::unix::fs::chown(data.join("app/db"), Some(999), Some(999)).unwrap();
    std::os::unix::fs::chown(data.join("app/db/wal/0001"), Some(999), Some(999)).unwrap();
    symlink(outside.join("secret"), data.join("escape")).unwrap();
    symlink(outside, data.join("app/escape-dir")).unwrap();
    symlink("../../../../../../..", data.join("app/db/up")).unwrap();
    let sparse = std::fs::File::create(data.join("sparse.img")).unwrap();
    rustix::io::pwrite(&sparse, b"head", 0).unwrap();
    rustix::io::pwrite(&sparse, b"tail", 16 * MIB).unwrap();
    drop(sparse);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        data.join("app/pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// Every entry of a tree: type, mode, owner, mtime, content digest or link
/// target. (The root's mtime is left out: it is not the volume's to keep.)
fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let what = if ft.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                todo.push(rel.join(entry.unwrap().file_name()));
            }
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("-> {}", std::fs::read_link(&path).unwrap().display())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            format!(
                "{} bytes {:x}",
                meta.len(),
                Sha256::digest(std::fs::read(&path).unwrap())
            )
        };
        let time = if ft.is_symlink() || rel.as_os_str().is_empty() {
            String::new()
        } else {
            format!("{}.{}", meta.mtime(), meta.mtime_nsec())
        };
        let mode = if ft.is_symlink() { 0 } else { meta.mode() };
        out.insert(
            rel,
            format!("{what} {mode:o} {}:{} {time}", meta.uid(), meta.gid()),
        );
    }
    out
}

/// The symlinks of a restored volume are symlinks, not what they point at.
fn assert_links_not_followed(data: &Path, outside: &Path) {
    for (link, target) in [
        (data.join("escape"), outside.join("secret")),
        (data.join("app/escape-dir"), outside.to_path_buf()),
    ] {
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "{} is not a symlink",
            link.display()
        );
        assert_eq!(std::fs::read_link(&link).unwrap(), target);
    }
    let sparse = std::fs::metadata(data.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), 16 * MIB + 4);
    assert!(
        sparse.blocks() * 512 < 4 * MIB,
        "the file with holes was filled: {} bytes allocated",
        sparse.blocks() * 512
    );
}

fn assert_no_scratch(root: &Path) {
    assert_empty_dirs(root, &["tmp", "trash"]);
}

// ---- one behaviour a test, on either root ------------------------------------

/// A driver on a local root: its own plain directory (full copies) or a
/// loop-mounted XFS with reflink (shared blocks). The driver drops first,
/// unmounting whatever a test left mounted, then the filesystem it served.
struct Lab {
    driver: TestDriver,
    root: PathBuf,
    _fs: Option<cairn_harness::LoopFs>,
}

impl Lab {
    fn plain_directory() -> Self {
        let driver = TestDriver::start();
        let root = driver.root.clone();
        Lab {
            driver,
            root,
            _fs: None,
        }
    }

    fn reflink_xfs() -> Self {
        let fs = cairn_harness::LoopFs::xfs_reflink(512).unwrap();
        let root = fs.path().to_path_buf();
        let driver = TestDriver::start_with(&["--local-root", root.to_str().unwrap()]);
        Lab {
            driver,
            root,
            _fs: Some(fs),
        }
    }

    fn data(&self, volume: &Volume) -> PathBuf {
        data_of(&self.root, &volume.volume_id)
    }

    /// What every test ends on: no copy's scratch or trash left, no mount.
    fn assert_converged(&self) {
        assert_no_scratch(&self.root);
        assert_eq!(
            mounts_below(self.driver.dir.path()),
            0,
            "a mount was left below the driver's directory"
        );
    }
}

/// A source volume a pod wrote through its real mount, snapshotted as
/// "snap-1" and then written again before the pod went away; and a second
/// volume, "other".
struct Snapped {
    c: Controller,
    src: Volume,
    other: Volume,
    snap: Snapshot,
    /// The source's tree when the snapshot was taken.
    at_snapshot: BTreeMap<PathBuf, String>,
    /// Where the source's symlinks point, outside any volume.
    outside: PathBuf,
}

async fn snapped_source(lab: &Lab) -> Snapped {
    let driver = &lab.driver;
    let outside = driver.dir.path().join("outside");
    let mut c = driver.controller().await;
    let src = create(&mut c, create_request("src", 64 * MIB as i64)).await;
    let other = create(&mut c, create_request("other", MIB as i64)).await;

    let staging = driver.staging_path(&src.volume_id);
    let target = driver.target_path("pod-src", "src");
    let mut node = driver.node().await;
    node.node_stage_volume(stage_request(&src.volume_id, &staging))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&src.volume_id, &staging, &target, false))
        .await
        .unwrap();
    populate(&target, &outside);
    let at_snapshot = describe(&lab.data(&src));
    let snap = try_snapshot(&mut c, "snap-1", &src.volume_id)
        .await
        .unwrap();

    // The pod goes on writing after the snapshot.
    std::fs::write(target.join("app/config.yaml"), b"replicas: 5\n").unwrap();
    std::fs::write(target.join("late"), b"after the snapshot").unwrap();
    node.node_unpublish_volume(unpublish_request(&src.volume_id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&src.volume_id, &staging))
        .await
        .unwrap();
    Snapped {
        c,
        src,
        other,
        snap,
        at_snapshot,
        outside,
    }
}

/// Four more snapshots of the source ("snap-2" to "snap-5") and one of
/// the other volume: six in all. Returns the other volume's snapshot.
async fn six_snapshots(s: &mut Snapped) -> Snapshot {
    for i in 2..=5 {
        try_snapshot(&mut s.c, &format!("snap-{i}"), &s.src.volume_id)
            .await
            .unwrap();
    }
    try_snapshot(&mut s.c, "snap-of-other", &s.other.volume_id)
        .await
        .unwrap()
}

async fn restore(c: &mut Controller, name: &str, snap: &Snapshot) -> Volume {
    create(c, from(name, 0, snap_source(&snap.snapshot_id))).await
}

async fn a_snapshot_is_ready_at_once_and_names_its_source(lab: Lab) {
    let s = snapped_source(&lab).await;
    assert!(
        s.snap.ready_to_use,
        "a small copy is ready within the grace"
    );
    assert_eq!(s.snap.snapshot_id, "snap:node-a:snap-1");
    assert_eq!(s.snap.source_volume_id, s.src.volume_id);
    assert_eq!(s.snap.size_bytes, 64 * MIB as i64);
    assert!(s.snap.creation_time.is_some());
    lab.assert_converged();
}

async fn create_snapshot_repeats_on_its_name_and_refuses_conflicts_and_bad_ids(lab: Lab) {
    let Snapped {
        mut c,
        src,
        other,
        snap,
        ..
    } = snapped_source(&lab).await;
    // Idempotent on name; the name is taken for any other source.
    assert_eq!(
        try_snapshot(&mut c, "snap-1", &src.volume_id)
            .await
            .unwrap(),
        snap
    );
    assert_code(
        try_snapshot(&mut c, "snap-1", &other.volume_id).await,
        Code::AlreadyExists,
    );
    assert_code(
        try_snapshot(&mut c, "snap-2", "local:node-a:missing").await,
        Code::NotFound,
    );
    // An id Cairn never issued names no volume.
    assert_code(
        try_snapshot(&mut c, "snap-2", "../etc").await,
        Code::NotFound,
    );
    assert_code(
        try_snapshot(&mut c, "../etc", &src.volume_id).await,
        Code::InvalidArgument,
    );
    let mut unknown = snapshot_request("snap-2", &src.volume_id);
    unknown.parameters.insert("retention".into(), "7d".into());
    let err = c.create_snapshot(unknown).await.unwrap_err();
    assert!(err.message().contains("retention"), "{err:?}");
    lab.assert_converged();
}

async fn a_restored_volume_holds_the_snapshots_content_not_later_writes(lab: Lab) {
    let mut s = snapped_source(&lab).await;
    let restored = restore(&mut s.c, "restored", &s.snap).await;
    assert_eq!(restored.content_source, snap_source(&s.snap.snapshot_id));
    assert_eq!(
        restored.capacity_bytes,
        64 * MIB as i64,
        "the source's size"
    );
    let restored_data = lab.data(&restored);
    assert_eq!(describe(&restored_data), s.at_snapshot);
    assert_links_not_followed(&restored_data, &s.outside);
    assert!(!restored_data.join("secret").exists());
    lab.assert_converged();
}

async fn restoring_again_returns_the_same_volume_and_another_source_conflicts(lab: Lab) {
    let mut s = snapped_source(&lab).await;
    let restored = restore(&mut s.c, "restored", &s.snap).await;
    let c = &mut s.c;
    // Repeats return the same volume; a different source (or none) conflicts.
    assert_eq!(restore(c, "restored", &s.snap).await, restored);
    assert_code(
        c.create_volume(from("restored", 0, vol_source(&s.src.volume_id)))
            .await,
        Code::AlreadyExists,
    );
    assert_code(
        c.create_volume(create_request("restored", 0)).await,
        Code::AlreadyExists,
    );
    lab.assert_converged();
}

async fn a_clone_holds_its_source_volume_as_it_is_now(lab: Lab) {
    let mut s = snapped_source(&lab).await;
    let clone = create(
        &mut s.c,
        from("clone", 128 * MIB as i64, vol_source(&s.src.volume_id)),
    )
    .await;
    assert_eq!(clone.content_source, vol_source(&s.src.volume_id));
    assert_eq!(clone.capacity_bytes, 128 * MIB as i64);
    assert_eq!(describe(&lab.data(&clone)), describe(&lab.data(&s.src)));
    lab.assert_converged();
}

async fn restores_too_small_from_nothing_or_from_another_node_are_refused(lab: Lab) {
    let Snapped { mut c, snap, .. } = snapped_source(&lab).await;
    assert_code(
        c.create_volume(from("small", MIB as i64, snap_source(&snap.snapshot_id)))
            .await,
        Code::OutOfRange,
    );
    for missing in [
        "snap:node-a:never-made",
        "../../etc/passwd",
        "snap:node-a:..",
    ] {
        assert_code(
            c.create_volume(from("x", 0, snap_source(missing))).await,
            Code::NotFound,
        );
    }
    assert_code(
        c.create_volume(from("x", 0, snap_source("snap:node-b:snap-1")))
            .await,
        Code::ResourceExhausted,
    );
    assert_code(
        c.create_volume(from("x", 0, vol_source("local:node-b:src")))
            .await,
        Code::ResourceExhausted,
    );
    let root = &lab.root;
    assert!(!root.join("volumes/x").exists() && !root.join("volumes/small").exists());
    lab.assert_converged();
}

async fn list_snapshots_pages_filters_and_refuses_bad_tokens(lab: Lab) {
    let mut s = snapped_source(&lab).await;
    let of_other = six_snapshots(&mut s).await;
    let Snapped {
        mut c, src, snap, ..
    } = s;
    let all = list(
        &mut c,
        ListSnapshotsRequest {
            max_entries: 2,
            ..Default::default()
        },
    )
    .await;
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "listed twice: {all:?}");
    assert_eq!(all.len(), 6);
    let of_src = list(
        &mut c,
        ListSnapshotsRequest {
            source_volume_id: src.volume_id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(of_src.len(), 5);
    assert!(!of_src.contains(&of_other.snapshot_id));
    let by_id = |id: &str| ListSnapshotsRequest {
        snapshot_id: id.into(),
        ..Default::default()
    };
    assert_eq!(
        list(&mut c, by_id(&snap.snapshot_id)).await,
        vec![snap.snapshot_id.clone()]
    );
    for nothing in ["snap:node-a:nope", "garbage", "snap:node-b:snap-1"] {
        assert!(list(&mut c, by_id(nothing)).await.is_empty(), "{nothing}");
    }
    assert_code(
        c.list_snapshots(ListSnapshotsRequest {
            starting_token: "not/a/token".into(),
            ..Default::default()
        })
        .await,
        Code::Aborted,
    );
    assert_code(
        c.list_snapshots(ListSnapshotsRequest {
            max_entries: -1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    lab.assert_converged();
}

async fn get_snapshot_finds_a_snapshot_by_id_and_not_a_missing_one(lab: Lab) {
    let Snapped { mut c, snap, .. } = snapped_source(&lab).await;
    let got = c
        .get_snapshot(GetSnapshotRequest {
            snapshot_id: snap.snapshot_id.clone(),
            secrets: Default::default(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert_eq!(got, snap);
    assert_code(
        c.get_snapshot(GetSnapshotRequest {
            snapshot_id: "snap:node-a:nope".into(),
            secrets: Default::default(),
        })
        .await,
        Code::NotFound,
    );
    lab.assert_converged();
}

async fn a_snapshot_outlives_its_source_volume(lab: Lab) {
    let mut s = snapped_source(&lab).await;
    delete_volume(&mut s.c, &s.src.volume_id).await;
    let again = restore(&mut s.c, "after-delete", &s.snap).await;
    assert_eq!(describe(&lab.data(&again)), s.at_snapshot);
    assert!(list(&mut s.c, ListSnapshotsRequest::default())
        .await
        .contains(&s.snap.snapshot_id));
    lab.assert_converged();
}

async fn snapshots_survive_a_driver_restart(mut lab: Lab) {
    let mut s = snapped_source(&lab).await;
    six_snapshots(&mut s).await;
    drop(s);
    lab.driver.restart();
    let mut c = lab.driver.controller().await;
    assert_eq!(
        list(&mut c, ListSnapshotsRequest::default()).await.len(),
        6,
        "after restart"
    );
    lab.assert_converged();
}

async fn deleting_snapshots_is_idempotent_and_ids_never_issued_touch_nothing(lab: Lab) {
    let mut s = snapped_source(&lab).await;
    six_snapshots(&mut s).await;
    let Snapped {
        mut c, src, other, ..
    } = s;
    // Deleting is idempotent; an id Cairn never issued names no snapshot:
    // deleting it succeeds and touches nothing; a missing one is refused.
    for id in list(&mut c, ListSnapshotsRequest::default()).await {
        delete_snapshot(&mut c, &id).await.unwrap();
        delete_snapshot(&mut c, &id).await.unwrap();
    }
    delete_snapshot(&mut c, "../../x").await.unwrap();
    assert_code(delete_snapshot(&mut c, "").await, Code::InvalidArgument);
    assert!(list(&mut c, ListSnapshotsRequest::default())
        .await
        .is_empty());
    assert_eq!(entries(&lab.root.join("snapshots")), Vec::<String>::new());
    for v in [&src, &other] {
        delete_volume(&mut c, &v.volume_id).await;
    }
    lab.assert_converged();
}

/// Each behaviour as two tests: `plain_directory::<behaviour>` and
/// `reflink_xfs::<behaviour>`.
macro_rules! on_both_roots {
    ($($behaviour:ident),* $(,)?) => {
        mod plain_directory {
            use super::*;
            $(
                #[tokio::test]
                async fn $behaviour() {
                    require!(require_root());
                    super::$behaviour(Lab::plain_directory()).await;
                }
            )*
        }
        mod reflink_xfs {
            use super::*;
            $(
                #[tokio::test]
                async fn $behaviour() {
                    require!(require_loop_xfs());
                    super::$behaviour(Lab::reflink_xfs()).await;
                }
            )*
        }
    };
}

on_both_roots!(
    a_snapshot_is_ready_at_once_and_names_its_source,
    create_snapshot_repeats_on_its_name_and_refuses_conflicts_and_bad_ids,
    a_restored_volume_holds_the_snapshots_content_not_later_writes,
    restoring_again_returns_the_same_volume_and_another_source_conflicts,
    a_clone_holds_its_source_volume_as_it_is_now,
    restores_too_small_from_nothing_or_from_another_node_are_refused,
    list_snapshots_pages_filters_and_refuses_bad_tokens,
    get_snapshot_finds_a_snapshot_by_id_and_not_a_missing_one,
    a_snapshot_outlives_its_source_volume,
    snapshots_survive_a_driver_restart,
    deleting_snapshots_is_idempotent_and_ids_never_issued_touch_nothing,
);

// ---- the client ------------------------------------------------------------

fn client(driver: &TestDriver, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cairn-csi"))
        .arg("client")
        .arg("--endpoint")
        .arg(format!("unix://{}", driver.socket.display()))
        .args(args)
        .output()
        .expect("run cairn-csi client")
}

#[track_caller]
fn ok_json(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json output")
}

#[tokio::test]
async fn client_snapshot_commands() {
    require!(require_root());
    let driver = TestDriver::start();
    let volume = ok_json(client(
        &driver,
        &["-o", "json", "volume", "create", "v", "--size", "4Mi"],
    ));
    let vid = volume["volume_id"].as_str().unwrap().to_string();
    std::fs::write(data_of(&driver.root, &vid).join("f"), b"x").unwrap();
    let snap = ok_json(client(
        &driver,
        &["-o", "json", "snapshot", "create", "s", &vid, "--wait"],
    ));
    assert_eq!(snap["ready_to_use"], true);
    let sid = snap["snapshot_id"].as_str().unwrap().to_string();
    let listed = ok_json(client(
        &driver,
        &["-o", "json", "snapshot", "list", "--source", &vid],
    ));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let got = ok_json(client(&driver, &["-o", "json", "snapshot", "get", &sid]));
    assert_eq!(got["source_volume_id"], vid.as_str());
    let restored = ok_json(client(
        &driver,
        &[
            "-o",
            "json",
            "volume",
            "create",
            "r",
            "--from-snapshot",
            &sid,
        ],
    ));
    assert_eq!(restored["content_source"]["snapshot_id"], sid.as_str());
    let rid = restored["volume_id"].as_str().unwrap();
    assert_eq!(
        std::fs::read(data_of(&driver.root, rid).join("f")).unwrap(),
        b"x"
    );
    let cloned = ok_json(client(
        &driver,
        &["-o", "json", "volume", "create", "c", "--from-volume", &vid],
    ));
    assert_eq!(cloned["content_source"]["volume_id"], vid.as_str());
    let text = client(&driver, &["snapshot", "list"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("1 snapshot(s)"));
    ok_json(client(&driver, &["-o", "json", "snapshot", "delete", &sid]));
    let gone = client(&driver, &["snapshot", "get", &sid]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));
}

// ---- a copy slower than the grace: ready_to_use, kill -9, retry ------------

/// A tmpfs mounted in a temporary directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cairn-tmpfs-")
            .tempdir()
            .unwrap();
        rustix::mount::mount(
            "tmpfs",
            dir.path(),
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(self.0.path(), rustix::mount::UnmountFlags::DETACH);
    }
}

/// Writes `files` small files and one `big`-byte file, all with data.
fn fill_heavy(data: &Path, files: usize, big: u64) {
    let chunk: Vec<u8> = (0..MIB).map(|i| (i % 253) as u8).collect();
    for d in 0..(files / 1000).max(1) {
        let dir = data.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..1000.min(files) {
            std::fs::write(dir.join(format!("f{f}")), &chunk[..(f % 4096)]).unwrap();
        }
    }
    let file = std::fs::File::create(data.join("big")).unwrap();
    for i in 0..big / MIB {
        rustix::io::pwrite(&file, &chunk, i * MIB).unwrap();
    }
}

/// Same bytes in two files, compared a MiB at a time; `what` names the
/// step and the copy in a failure.
#[track_caller]
fn assert_same_file(a: &Path, b: &Path, what: &str) {
    let open = |p: &Path| {
        std::fs::File::open(p).unwrap_or_else(|e| panic!("{what}: {}: {e}", p.display()))
    };
    let (fa, fb) = (open(a), open(b));
    let len = fa.metadata().unwrap().len();
    assert_eq!(len, fb.metadata().unwrap().len(), "{what}: another size");
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut offset = 0;
    while offset < len {
        let n = rustix::io::pread(&fa, &mut ba, offset).unwrap();
        assert_eq!(
            rustix::io::pread(&fb, &mut bb[..n], offset).unwrap(),
            n,
            "{what}: short read at {offset}"
        );
        assert!(ba[..n] == bb[..n], "{what}: differ at {offset}");
        offset += n as u64;
    }
}

/// A driver on a tmpfs root and one volume on it, heavy enough that a full
/// copy outlasts the grace, a repeat, a listing, a refused restore and the
/// kill on an idle machine (100,000 files and 512 MiB sometimes finished
/// before the repeat). The driver drops before the tmpfs it serves.
struct Heavy {
    driver: TestDriver,
    root: PathBuf,
    volume: Volume,
    data: PathBuf,
    _fs: Tmpfs,
}

async fn heavy_volume_on_tmpfs() -> Heavy {
    let fs = Tmpfs::new();
    let root = fs.0.path().to_path_buf();
    let driver = TestDriver::start_with(&["--local-root", root.to_str().unwrap()]);
    let mut c = driver.controller().await;
    let volume = create(&mut c, create_request("heavy", GIB as i64)).await;
    let data = data_of(&root, &volume.volume_id);
    fill_heavy(&data, 300_000, 1024 * MIB);
    Heavy {
        driver,
        root,
        volume,
        data,
        _fs: fs,
    }
}

/// `assert_code`, naming the step and what the call should have done.
#[track_caller]
fn assert_code_at<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, step: &str) {
    match result {
        Ok(v) => panic!("{step}: expected {code:?}, got success: {v:?}"),
        Err(status) => assert_eq!(status.code(), code, "{step}: message: {}", status.message()),
    }
}

/// Neither tmp/ nor trash/ holds anything (waited for), `after` the step named.
#[track_caller]
fn assert_no_scratch_after(root: &Path, after: &str) {
    for dir in ["tmp", "trash"] {
        let left = left_in(root, dir);
        assert!(
            left.is_empty(),
            "after {after}, {dir}/ still holds {left:?}"
        );
    }
}

/// CreateSnapshot starts a copy that is not ready at once; a repeat joins
/// it (one scratch directory); it is listed, not ready, while it is made;
/// a restore from it is refused until it is ready. Returns the first answer.
async fn start_a_copy_slower_than_the_grace(c: &mut Controller, heavy: &Heavy) -> Snapshot {
    let first = try_snapshot(c, "snap-heavy", &heavy.volume.volume_id)
        .await
        .unwrap_or_else(|e| panic!("the first CreateSnapshot of the heavy volume failed: {e}"));
    assert!(
        !first.ready_to_use,
        "the first CreateSnapshot: the copy finished within the grace: make the volume heavier"
    );
    // A repeat joins the running copy: still the same one scratch directory.
    let scratch = running_copy(&heavy.root);
    let second = try_snapshot(c, "snap-heavy", &heavy.volume.volume_id)
        .await
        .unwrap_or_else(|e| panic!("the repeated CreateSnapshot mid-copy failed: {e}"));
    assert!(
        !second.ready_to_use,
        "the repeated CreateSnapshot mid-copy answered ready"
    );
    assert_eq!(
        second.creation_time, first.creation_time,
        "the repeated CreateSnapshot mid-copy has another creation time: it did not join the copy"
    );
    assert_eq!(
        entries(&heavy.root.join("tmp")),
        vec![scratch],
        "the repeated CreateSnapshot mid-copy started a second copy instead of joining"
    );
    // Listed (not ready) while it is made; never as ready.
    let listed = c
        .list_snapshots(ListSnapshotsRequest::default())
        .await
        .unwrap_or_else(|e| panic!("ListSnapshots mid-copy failed: {e}"))
        .into_inner();
    assert_eq!(
        listed.entries.len(),
        1,
        "ListSnapshots mid-copy does not list exactly the snapshot being made"
    );
    assert!(
        !listed.entries[0].snapshot.as_ref().unwrap().ready_to_use,
        "ListSnapshots mid-copy lists the snapshot being made as ready"
    );
    // A restore from it must wait for it.
    assert_code_at(
        c.create_volume(from("early", 0, snap_source(&first.snapshot_id)))
            .await,
        Code::FailedPrecondition,
        "a restore from the snapshot mid-copy",
    );
    first
}

/// kill -9 with the copy half done, then restart: the half copy leaves no
/// scratch and no snapshot, neither listed nor found by id.
async fn kill9_mid_copy_and_restart(heavy: &mut Heavy, first: &Snapshot) -> Controller {
    heavy.driver.kill9();
    assert!(
        !heavy.root.join("snapshots/snap-heavy").exists(),
        "the copy finished before the kill: make the volume heavier"
    );
    heavy.driver.spawn();
    assert_no_scratch_after(&heavy.root, "the restart following kill -9 mid-copy");
    let mut c = heavy.driver.controller().await;
    assert!(
        list(&mut c, ListSnapshotsRequest::default())
            .await
            .is_empty(),
        "after the restart, ListSnapshots lists the snapshot whose copy was killed"
    );
    assert_code_at(
        c.get_snapshot(GetSnapshotRequest {
            snapshot_id: first.snapshot_id.clone(),
            secrets: Default::default(),
        })
        .await,
        Code::NotFound,
        "after the restart, GetSnapshot of the snapshot whose copy was killed",
    );
    c
}

/// The snapshotter retries: a new copy; deleting it mid-way cancels it.
async fn a_retried_copy_stops_when_its_snapshot_is_deleted(c: &mut Controller, heavy: &Heavy) {
    let retry = try_snapshot(c, "snap-heavy", &heavy.volume.volume_id)
        .await
        .unwrap_or_else(|e| panic!("after the restart, the retried CreateSnapshot failed: {e}"));
    assert!(
        !retry.ready_to_use,
        "after the restart, the retried CreateSnapshot answered ready at once: make the volume heavier"
    );
    delete_snapshot(c, &retry.snapshot_id)
        .await
        .unwrap_or_else(|e| panic!("DeleteSnapshot of the retried copy mid-way failed: {e}"));
    assert_no_scratch_after(&heavy.root, "DeleteSnapshot of the retried copy mid-way");
    assert!(
        !heavy.root.join("snapshots/snap-heavy").exists(),
        "the retried copy outlived its DeleteSnapshot and made the snapshot"
    );
}

/// Retried again until ready: the snapshot has the first answer's id and
/// the whole volume's content, and no scratch is left.
async fn a_retried_copy_completes_under_the_first_id(
    c: &mut Controller,
    heavy: &Heavy,
    first: &Snapshot,
) -> Snapshot {
    let started = Instant::now();
    let done = snapshot_until_ready(c, "snap-heavy", &heavy.volume.volume_id).await;
    eprintln!(
        "FIGURE full copy (tmpfs, debug build) of 300000 small files + 1 GiB: ready after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        done.snapshot_id, first.snapshot_id,
        "the snapshot retried to completion has another id than the first CreateSnapshot gave"
    );
    let payload = heavy.root.join("snapshots/snap-heavy/payload");
    assert_same_file(
        &heavy.data.join("big"),
        &payload.join("big"),
        "the snapshot retried to completion, its big file",
    );
    assert_eq!(
        entries(&payload.join("d99")).len(),
        1000,
        "the snapshot retried to completion lacks small files"
    );
    assert_no_scratch_after(&heavy.root, "the retried copy completed");
    done
}

/// A restore whose caller gives up (deadline) goes on; a repeat joins it;
/// DeleteVolume of the claim stops it, and nothing appears later.
async fn an_abandoned_restore_stops_at_delete_volume(
    c: &mut Controller,
    heavy: &Heavy,
    done: &Snapshot,
) {
    let mut req = tonic::Request::new(from("restored", 0, snap_source(&done.snapshot_id)));
    req.set_timeout(Duration::from_millis(300));
    assert!(
        c.create_volume(req).await.is_err(),
        "the restore was too fast: it beat a 300 ms deadline"
    );
    let scratch = running_copy(&heavy.root);
    let mut req = tonic::Request::new(from("restored", 0, snap_source(&done.snapshot_id)));
    req.set_timeout(Duration::from_millis(300));
    assert!(
        c.create_volume(req).await.is_err(),
        "the repeated restore mid-copy beat a 300 ms deadline"
    );
    assert_eq!(
        entries(&heavy.root.join("tmp")),
        vec![scratch.clone()],
        "the repeated restore mid-copy: joined, not restarted"
    );
    delete_volume(c, "local:node-a:restored").await;
    // The restore builds the volume in its scratch directory and renames it
    // into volumes/ in one step, so once that scratch is gone the copy has
    // ended, and it ended without a volume: nothing can appear later.
    assert_no_scratch_after(&heavy.root, "DeleteVolume of the abandoned restore");
    assert!(
        !heavy.root.join("volumes/restored").exists(),
        "the restore outlived DeleteVolume and renamed its volume in"
    );
}

/// Then a patient caller gets the whole volume.
async fn a_patient_restore_gets_the_whole_volume(
    c: &mut Controller,
    heavy: &Heavy,
    done: &Snapshot,
) -> Volume {
    let restored = create(c, from("restored", 0, snap_source(&done.snapshot_id))).await;
    let restored_data = data_of(&heavy.root, &restored.volume_id);
    assert_same_file(
        &heavy.data.join("big"),
        &restored_data.join("big"),
        "the patient restore, its big file",
    );
    assert_eq!(
        entries(&restored_data.join("d99")).len(),
        1000,
        "the patient restore lacks small files"
    );
    restored
}

/// A full copy killed mid-way leaves nothing behind and its retry (and a
/// restore from the result) behaves as if the first attempt never was.
#[tokio::test]
async fn kill9_during_a_full_copy_then_restart_and_retry() {
    require!(require_root());
    let mut heavy = heavy_volume_on_tmpfs().await;
    let mut c = heavy.driver.controller().await;
    let first = start_a_copy_slower_than_the_grace(&mut c, &heavy).await;

    drop(c);
    let mut c = kill9_mid_copy_and_restart(&mut heavy, &first).await;
    a_retried_copy_stops_when_its_snapshot_is_deleted(&mut c, &heavy).await;
    let done = a_retried_copy_completes_under_the_first_id(&mut c, &heavy, &first).await;
    an_abandoned_restore_stops_at_delete_volume(&mut c, &heavy, &done).await;
    let restored = a_patient_restore_gets_the_whole_volume(&mut c, &heavy, &done).await;

    delete_snapshot(&mut c, &done.snapshot_id)
        .await
        .unwrap_or_else(|e| panic!("cleaning up, deleting the snapshot: {e}"));
    delete_volume(&mut c, &restored.volume_id).await;
    delete_volume(&mut c, &heavy.volume.volume_id).await;
    assert_no_scratch_after(&heavy.root, "cleaning up");
}

// ---- the note's figure -------------------------------------------------------

/// Writes `bytes` of data (not holes) into `path`, then flushes it, so the
/// snapshot's time is the copy's, not the write-back of what the pod wrote.
fn write_data(path: &Path, bytes: u64) {
    let chunk: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
    let file = std::fs::File::create(path).unwrap();
    for i in 0..bytes / MIB {
        rustix::io::pwrite(&file, &chunk, i * MIB).unwrap();
    }
    file.sync_all().unwrap();
    rustix::fs::sync();
}

#[tokio::test]
async fn figure_snapshot_of_a_1gib_volume_on_reflink_xfs_takes_milliseconds() {
    require!(require_loop_xfs());
    // Reflink: 1 GiB written into a 1.5 GiB image, snapshotted and restored.
    {
        let fs = cairn_harness::LoopFs::xfs_reflink(1536).unwrap();
        let root = fs.path().to_path_buf();
        let driver = TestDriver::start_with(&["--local-root", root.to_str().unwrap()]);
        let mut c = driver.controller().await;
        let v = create(&mut c, create_request("big", GIB as i64)).await;
        let data = data_of(&root, &v.volume_id);
        write_data(&data.join("data.bin"), GIB);
        let free_before = fs.free_bytes().unwrap();

        let started = Instant::now();
        let snap = try_snapshot(&mut c, "snap-big", &v.volume_id)
            .await
            .unwrap();
        let snapshot_ms = started.elapsed().as_secs_f64() * 1000.0;
        assert!(snap.ready_to_use);
        let started = Instant::now();
        let restored = create(
            &mut c,
            from("big-restored", GIB as i64, snap_source(&snap.snapshot_id)),
        )
        .await;
        let restore_ms = started.elapsed().as_secs_f64() * 1000.0;
        rustix::fs::sync();
        let used = free_before.saturating_sub(fs.free_bytes().unwrap());
        eprintln!(
            "FIGURE reflink XFS: CreateSnapshot of a volume holding 1 GiB: {snapshot_ms:.1} ms \
             (ready_to_use=true); CreateVolume from it: {restore_ms:.1} ms; \
             space used by snapshot + restored volume: {:.2} MiB",
            used as f64 / MIB as f64
        );
        // The driver's own account of each copy (files, reflinked, times).
        for line in driver
            .log_text()
            .lines()
            .filter(|l| l.contains("copy finished"))
        {
            eprintln!("driver: {line}");
        }
        assert!(
            used < 32 * MIB,
            "the copies used {used} bytes: blocks not shared"
        );
        assert!(snapshot_ms < 1000.0, "{snapshot_ms} ms");
        assert_same_file(
            &data.join("data.bin"),
            &data_of(&root, &restored.volume_id).join("data.bin"),
            "the volume restored from a reflink snapshot, its data",
        );
        drop(c);
        drop(driver);
    }
    // The same on XFS without reflink: a full copy, for comparison.
    {
        let fs = cairn_harness::LoopFs::xfs_without_reflink(2600).unwrap();
        let root = fs.path().to_path_buf();
        let driver = TestDriver::start_with(&["--local-root", root.to_str().unwrap()]);
        let mut c = driver.controller().await;
        let v = create(&mut c, create_request("big", GIB as i64)).await;
        write_data(&data_of(&root, &v.volume_id).join("data.bin"), GIB);
        let started = Instant::now();
        let first = try_snapshot(&mut c, "snap-big", &v.volume_id)
            .await
            .unwrap();
        let first_ms = started.elapsed().as_secs_f64() * 1000.0;
        let snap = snapshot_until_ready(&mut c, "snap-big", &v.volume_id).await;
        let ready_s = started.elapsed().as_secs_f64();
        eprintln!(
            "FIGURE XFS without reflink (full copy): CreateSnapshot answered in {first_ms:.0} ms \
             with ready_to_use={}; ready after {ready_s:.2} s",
            first.ready_to_use
        );
        assert!(snap.ready_to_use);
        drop(c);
        drop(driver);
    }
}
