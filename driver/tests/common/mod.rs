//! Test harness: starts the real `cairn-csi` binary on a throwaway socket,
//! under a throwaway kubelet dir and local root, and talks to it with the
//! generated tonic clients. Dropping it stops the driver by pid, unmounts
//! whatever is still mounted under its directory and removes it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::v1::controller_client::ControllerClient;
use cairn_proto::v1::identity_client::IdentityClient;
use cairn_proto::v1::node_client::NodeClient;
use cairn_proto::v1::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use cairn_proto::v1::volume_content_source::{SnapshotSource, Type as SourceType, VolumeSource};
use cairn_proto::v1::*;
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

pub const DRIVER_NAME: &str = "cairn.csi.io";
pub const NODE: &str = "node-a";

pub struct TestDriver {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub kubelet: PathBuf,
    pub log: PathBuf,
    extra_args: Vec<String>,
    /// Network namespace the driver runs in (for NFS servers kept in one).
    netns: Option<String>,
}

impl TestDriver {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cairn-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("root");
        let kubelet = dir.path().join("kubelet");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&kubelet).unwrap();
        let mut driver = Self {
            child: None,
            socket: dir.path().join("csi.sock"),
            log: dir.path().join("driver.log"),
            root,
            kubelet,
            dir,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            netns: None,
        };
        driver.spawn();
        driver
    }

    /// Starts the driver inside the network namespace `netns` (its unix
    /// socket is still reached from here: sockets on disk are not namespaced).
    pub fn start_in_netns(netns: &str, extra: &[&str]) -> Self {
        let mut driver = Self::start_with(extra);
        driver.stop();
        driver.netns = Some(netns.to_string());
        driver.spawn();
        driver
    }

    pub fn command(&self) -> Command {
        let binary = env!("CARGO_BIN_EXE_cairn-csi");
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the driver: the pid stays the driver's.
            Some(netns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", netns, binary]);
                cmd
            }
            None => Command::new(binary),
        };
        cmd.arg("serve")
            .arg("--endpoint")
            .arg(format!("unix://{}", self.socket.display()))
            .arg("--node-id")
            .arg(NODE)
            .arg("--kubelet-dir")
            .arg(&self.kubelet)
            .args(&self.extra_args)
            .env_remove("NODE_ID")
            .env_remove("CSI_ENDPOINT")
            .env_remove("CAIRN_UNENFORCED_CAPACITY")
            .env_remove("CAIRN_OVERCOMMIT");
        // A test may point the driver at another driver's root instead.
        if !self.extra_args.iter().any(|a| a == "--local-root") {
            cmd.arg("--local-root").arg(&self.root);
        }
        // This host's kernel has no quotas: tests provision unenforced
        // volumes unless they choose the policy themselves.
        if !self
            .extra_args
            .iter()
            .any(|a| a.starts_with("--unenforced-capacity"))
        {
            cmd.arg("--unenforced-capacity=allow");
        }
        cmd
    }

    /// Starts the driver and waits until its socket accepts connections.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start cairn-csi");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cairn-csi exited early ({status}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "socket never came up: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid()).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        self.wait()
    }

    /// SIGKILL and wait: a crash.
    pub fn kill9(&mut self) {
        self.signal(rustix::process::Signal::KILL);
        self.wait();
    }

    fn wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "driver did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's lines holding `needle`, once there are at least `count` of
    /// them, or whatever there is at a deadline generous for a busy machine.
    /// A call's line is written when its work ends, which a caller that gave
    /// up, or a later call, does not wait for.
    pub fn log_lines_with(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let lines: Vec<String> = self
                .log_text()
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_string)
                .collect();
            if lines.len() >= count || Instant::now() >= deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn channel(&self) -> Channel {
        cairn_proto::endpoint::connect_path(&self.socket)
            .await
            .expect("connect")
    }

    pub async fn identity(&self) -> IdentityClient<Channel> {
        IdentityClient::new(self.channel().await)
    }

    pub async fn controller(&self) -> ControllerClient<Channel> {
        ControllerClient::new(self.channel().await)
    }

    pub async fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel().await)
    }

    /// The kubelet's staging path for a volume handle; the kubelet creates it.
    pub fn staging_path(&self, volume_id: &str) -> PathBuf {
        let digest = Sha256::digest(volume_id.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let path = self
            .kubelet
            .join("plugins/kubernetes.io/csi")
            .join(DRIVER_NAME)
            .join(hex)
            .join("globalmount");
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// The kubelet's target path for a pod; the kubelet creates the parent,
    /// the driver creates `mount`.
    pub fn target_path(&self, pod_uid: &str, pv: &str) -> PathBuf {
        let parent = self
            .kubelet
            .join("pods")
            .join(pod_uid)
            .join("volumes/kubernetes.io~csi")
            .join(pv);
        std::fs::create_dir_all(&parent).unwrap();
        parent.join("mount")
    }

    /// Where a local volume's data lives on disk.
    pub fn data_dir(&self, key: &str) -> PathBuf {
        self.root.join("volumes").join(key).join("data")
    }

    /// The kubelet's staging path for a block volume (a directory the
    /// kubelet creates): `plugins/kubernetes.io/csi/volumeDevices/staging/<pv>`.
    pub fn block_staging_path(&self, pv: &str) -> PathBuf {
        let path = self
            .kubelet
            .join("plugins/kubernetes.io/csi/volumeDevices/staging")
            .join(pv);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    /// The kubelet's publish path for a block volume and pod:
    /// `plugins/kubernetes.io/csi/volumeDevices/publish/<pv>/<pod-uid>`. The
    /// kubelet creates the parent; the driver creates the file.
    pub fn block_target_path(&self, pv: &str, pod_uid: &str) -> PathBuf {
        let parent = self
            .kubelet
            .join("plugins/kubernetes.io/csi/volumeDevices/publish")
            .join(pv);
        std::fs::create_dir_all(&parent).unwrap();
        parent.join(pod_uid)
    }

    /// Where a local block volume's bytes live on disk.
    pub fn block_file(&self, key: &str) -> PathBuf {
        self.root.join("volumes").join(key).join("block")
    }
}

impl Drop for TestDriver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        unmount_below(self.dir.path());
        detach_loops_below(self.dir.path());
    }
}

/// Loop devices (number, backing file) serving files at or below `dir`,
/// read from sysfs (`(deleted)` files included). A detached device that
/// someone (udev's probe) still holds open for a moment stays bound with
/// autoclear set until that close: such devices are waited for (2 s at
/// most) before the answer is given.
pub fn loops_below(dir: &Path) -> Vec<(u32, PathBuf)> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let found = loops_below_now(dir);
        let closing = found.iter().any(|(n, _)| {
            std::fs::read_to_string(format!("/sys/block/loop{n}/loop/autoclear"))
                .is_ok_and(|v| v.trim() == "1")
        });
        if !closing || Instant::now() >= deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn loops_below_now(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(number) = name.strip_prefix("loop").and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        let text = text.trim_end_matches('\n');
        let path = PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(text));
        if path.starts_with(dir) {
            found.push((number, path));
        }
    }
    found.sort();
    found
}

/// How many loop devices are bound on the host (any backing file).
pub fn loops_attached() -> usize {
    std::fs::read_dir("/sys/block")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("loop/backing_file"))
                        .is_ok_and(|t| !t.trim().is_empty())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Detaches every loop device serving a file below `dir` (test cleanup).
pub fn detach_loops_below(dir: &Path) {
    for (number, _) in loops_below(dir) {
        if let Ok(device) = cairn_csi::loopdev::LoopDevice::open(number) {
            let _ = device.detach();
        }
    }
}

/// A raw block capability.
pub fn block_capability(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A CreateVolume request for a raw block volume (PVC `volumeMode: Block`).
pub fn block_create_request(name: &str, bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        volume_capabilities: vec![block_capability(Mode::SingleNodeWriter)],
        ..create_request(name, bytes)
    }
}

pub fn block_stage_request(volume_id: &str, staging: &Path) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_capability: Some(block_capability(Mode::SingleNodeWriter)),
        ..stage_request(volume_id, staging)
    }
}

pub fn block_publish_request(
    volume_id: &str,
    staging: &Path,
    target: &Path,
    readonly: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_capability: Some(block_capability(Mode::SingleNodeWriter)),
        ..publish_request(volume_id, staging, target, readonly)
    }
}

/// Unmounts every mount point below `dir`, deepest first. Tests may read the
/// whole mount table; the driver may not.
pub fn unmount_below(dir: &Path) {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<String> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let _ = rustix::mount::unmount(
            point.as_str(),
            rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
        );
    }
}

/// How many mounts exist at or below `dir` (for leak checks).
pub fn mounts_below(dir: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .count()
}

pub fn mount_capability(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub fn rwo() -> VolumeCapability {
    mount_capability(Mode::SingleNodeWriter)
}

/// A CreateVolume request as external-provisioner sends it.
pub fn create_request(name: &str, bytes: i64) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![rwo()],
        parameters: [
            ("csi.storage.k8s.io/pvc/name", "data"),
            ("csi.storage.k8s.io/pvc/namespace", "default"),
            ("csi.storage.k8s.io/pv/name", name),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    }
}

/// A CreateVolume of a StorageClass for NFS volumes on the test server's
/// `/export` (`extra`: more StorageClass parameters), with the server's
/// port as a mount option.
pub fn nfs_request(name: &str, port: u16, extra: &[(&str, &str)]) -> CreateVolumeRequest {
    let mut req = create_request(name, 5 << 20);
    req.parameters.insert("server".into(), "127.0.0.1".into());
    req.parameters.insert("share".into(), "/export".into());
    for (k, v) in extra {
        req.parameters.insert(k.to_string(), v.to_string());
    }
    req.volume_capabilities = vec![VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            mount_flags: vec![format!("port={port}"), "nfsvers=4.1".into(), "hard".into()],
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::MultiNodeMultiWriter as i32,
        }),
    }];
    req
}

/// A CreateSnapshot request as external-snapshotter sends it.
pub fn snapshot_request(name: &str, source: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        source_volume_id: source.into(),
        name: name.into(),
        // What external-snapshotter --extra-create-metadata adds.
        parameters: [
            ("csi.storage.k8s.io/volumesnapshot/name", "snap"),
            ("csi.storage.k8s.io/volumesnapshot/namespace", "default"),
            (
                "csi.storage.k8s.io/volumesnapshotcontent/name",
                "snapcontent-1",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    }
}

/// CreateSnapshot; the snapshot it answers with.
pub async fn try_snapshot(
    c: &mut ControllerClient<Channel>,
    name: &str,
    source: &str,
) -> Result<Snapshot, tonic::Status> {
    c.create_snapshot(snapshot_request(name, source))
        .await
        .map(|r| {
            r.into_inner()
                .snapshot
                .expect("CreateSnapshot returned no snapshot")
        })
}

/// CreateSnapshot repeated until the snapshot is ready, as the
/// external-snapshotter does: a copy may outlast the call's grace period on
/// a busy machine, and a repeat joins it.
pub async fn ready_snapshot(
    c: &mut ControllerClient<Channel>,
    name: &str,
    source: &str,
) -> Snapshot {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let snapshot = try_snapshot(c, name, source)
            .await
            .unwrap_or_else(|e| panic!("CreateSnapshot {name}: {e}"));
        if snapshot.ready_to_use {
            return snapshot;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot {name} not ready after 120 s"
        );
    }
}

pub fn snap_source(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource {
        r#type: Some(SourceType::Snapshot(SnapshotSource {
            snapshot_id: id.into(),
        })),
    })
}

pub fn vol_source(id: &str) -> Option<VolumeContentSource> {
    Some(VolumeContentSource {
        r#type: Some(SourceType::Volume(VolumeSource {
            volume_id: id.into(),
        })),
    })
}

/// `req` filled from a content source (restore, clone).
pub fn with_source(
    mut req: CreateVolumeRequest,
    source: Option<VolumeContentSource>,
) -> CreateVolumeRequest {
    req.volume_content_source = source;
    req
}

pub fn stage_request(volume_id: &str, staging: &Path) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(rwo()),
        ..Default::default()
    }
}

pub fn publish_request(
    volume_id: &str,
    staging: &Path,
    target: &Path,
    readonly: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(rwo()),
        readonly,
        volume_context: [("csi.storage.k8s.io/pod.name", "web-0")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

pub fn unpublish_request(volume_id: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
    }
}

pub fn delete_request(volume_id: &str) -> DeleteVolumeRequest {
    DeleteVolumeRequest {
        volume_id: volume_id.into(),
        secrets: Default::default(),
    }
}

pub fn unstage_request(volume_id: &str, staging: &Path) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
    }
}

/// Asserts a call failed with `code`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code) {
    match result {
        Ok(v) => panic!("expected {code:?}, got success: {v:?}"),
        Err(status) => assert_eq!(status.code(), code, "message: {}", status.message()),
    }
}

/// CreateVolume that must succeed; returns the volume.
pub async fn create(
    controller: &mut ControllerClient<Channel>,
    request: CreateVolumeRequest,
) -> Volume {
    let name = request.name.clone();
    controller
        .create_volume(request)
        .await
        .unwrap_or_else(|status| panic!("CreateVolume {name}: {status}"))
        .into_inner()
        .volume
        .expect("CreateVolume returned no volume")
}

/// Asserts that these directories below `root` are empty or absent: what a
/// converged driver leaves of its scratch, trash and deleted volumes.
/// Deleted trees leave trash/ in the background, so this waits for the
/// directories to empty, up to a deadline generous for a busy machine.
pub fn assert_empty_dirs(root: &Path, dirs: &[&str]) {
    for dir in dirs {
        let left = left_in(root, dir);
        assert!(left.is_empty(), "{dir}/ not empty: {left:?}");
    }
}

/// What stays in `root/dir` after waiting for it to empty (as
/// `assert_empty_dirs` does), for a caller that names its own step.
pub fn left_in(root: &Path, dir: &str) -> Vec<PathBuf> {
    let left = || -> Vec<PathBuf> {
        std::fs::read_dir(root.join(dir))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    left()
}

/// What every NFS controller test starts from (after
/// `require!(require_nfs_lab())`): an nfs-ganesha export on 127.0.0.1, its
/// port (which NFS requests and ids name), the exported directory as the
/// host sees it, and a driver to create volumes on it.
pub fn nfs_lab() -> (cairn_harness::Ganesha, u16, PathBuf, TestDriver) {
    let server = cairn_harness::Ganesha::start().expect("ganesha");
    let port = server.addr().port();
    let export = server.export_dir().to_path_buf();
    (server, port, export, TestDriver::start())
}
