//! Raw block volumes of the local backend, against the real binary with
//! real loop devices and bind mounts: the kubelet's block paths, two pods
//! sharing a device, read-only publishes that really refuse writes, no
//! leaked loop devices or mounts, kill -9 recovery, hostile paths, and
//! mount/block mixing.

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_harness::{require, require_root};
use cairn_proto::v1::volume_capability::access_mode::Mode;
use cairn_proto::v1::*;
use common::*;
use tonic::transport::Channel;
use tonic::Code;

const SIZE: i64 = 8 << 20;

/// A 4 KiB-aligned buffer, as O_DIRECT wants.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(fill: u8) -> Self {
        let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null());
        // SAFETY: ptr is valid for layout.size() bytes.
        unsafe { std::ptr::write_bytes(ptr, fill, layout.size()) };
        Self { ptr, layout }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for layout.size() bytes while self lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in new().
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

fn open_direct(path: &Path, write: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Writes 4 KiB of `fill` at `offset` through `path` with O_DIRECT + fsync.
fn write_direct(path: &Path, offset: u64, fill: u8) -> std::io::Result<()> {
    let mut f = open_direct(path, true)?;
    let mut buf = Aligned::new(fill);
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(buf.bytes())?;
    f.sync_all()
}

/// Reads 4 KiB at `offset` through `path` with O_DIRECT (no page cache).
fn read_direct(path: &Path, offset: u64) -> Vec<u8> {
    let mut f = open_direct(path, false).unwrap();
    let mut buf = Aligned::new(0);
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(buf.bytes()).unwrap();
    buf.bytes().to_vec()
}

fn assert_block_device(path: &Path) {
    let meta = std::fs::metadata(path).unwrap();
    assert!(
        meta.file_type().is_block_device(),
        "{} is not a block device",
        path.display()
    );
    assert_eq!(libc::major(meta.rdev()), 7, "not a loop device");
}

fn is_mount_root(path: &Path) -> bool {
    cairn_csi::mount::inspect(path)
        .unwrap()
        .is_some_and(|s| s.is_mount_root)
}

fn stats_request(id: &str, path: &Path) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: id.into(),
        volume_path: path.display().to_string(),
        staging_target_path: String::new(),
    }
}

/// The log without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---- one block volume, one behaviour a test --------------------------------

const NAME: &str = "pvc-0b1c2d3e-block";

/// A fresh driver with one block volume (`NAME`, `SIZE` bytes) as
/// external-provisioner creates it, and what the tests below call it with.
struct Block {
    driver: TestDriver,
    controller: controller_client::ControllerClient<Channel>,
    node: node_client::NodeClient<Channel>,
    volume: Volume,
    staging: PathBuf,
}

impl Block {
    async fn created() -> Self {
        let driver = TestDriver::start();
        let mut controller = driver.controller().await;
        let node = driver.node().await;
        let volume = create(&mut controller, block_create_request(NAME, SIZE)).await;
        let staging = driver.block_staging_path(NAME);
        Block {
            driver,
            controller,
            node,
            volume,
            staging,
        }
    }

    /// Created, then staged (attached to a loop device).
    async fn staged() -> Self {
        let mut block = Self::created().await;
        block.stage().await;
        block
    }

    fn id(&self) -> &str {
        &self.volume.volume_id
    }

    async fn stage(&mut self) -> Duration {
        let started = Instant::now();
        self.node
            .node_stage_volume(block_stage_request(&self.volume.volume_id, &self.staging))
            .await
            .unwrap_or_else(|e| panic!("NodeStageVolume: {e}"));
        started.elapsed()
    }

    async fn try_publish(&mut self, pod: &str, readonly: bool) -> Result<PathBuf, tonic::Status> {
        let target = self.driver.block_target_path(NAME, pod);
        let id = self.volume.volume_id.clone();
        self.node
            .node_publish_volume(block_publish_request(&id, &self.staging, &target, readonly))
            .await
            .map(|_| target)
    }

    /// Publishes the volume to `pod`'s target; returns the target.
    async fn publish(&mut self, pod: &str, readonly: bool) -> PathBuf {
        self.try_publish(pod, readonly)
            .await
            .unwrap_or_else(|e| panic!("NodePublishVolume for {pod}: {e}"))
    }

    fn loops(&self) -> Vec<(u32, PathBuf)> {
        loops_below(self.driver.dir.path())
    }
}

fn all_bytes(block: &[u8], value: u8) -> bool {
    block.iter().all(|&b| b == value)
}

#[tokio::test]
async fn a_block_volume_is_a_sparse_file_and_creating_it_again_returns_it() {
    require!(require_root());
    let mut block = Block::created().await;
    assert_eq!(block.volume.capacity_bytes, SIZE);
    // Idempotent, and sparse: no block of the 8 MiB is allocated yet.
    assert_eq!(
        create(&mut block.controller, block_create_request(NAME, SIZE)).await,
        block.volume
    );
    let driver = &block.driver;
    let file = std::fs::metadata(driver.block_file(NAME)).unwrap();
    assert_eq!(file.len(), SIZE as u64);
    assert!(
        file.blocks() * 512 <= 64 << 10,
        "block file not sparse: {} bytes allocated",
        file.blocks() * 512
    );
    let meta =
        std::fs::read_to_string(driver.root.join("volumes").join(NAME).join("meta.json")).unwrap();
    assert!(meta.contains("\"access_type\": \"block\""), "{meta}");
    assert!(!driver.data_dir(NAME).exists());
}

#[tokio::test]
async fn staging_a_block_volume_again_attaches_no_second_device() {
    require!(require_root());
    let mut block = Block::staged().await;
    block.stage().await;
    assert_eq!(block.loops().len(), 1, "stage attaches once");
}

#[tokio::test]
async fn two_pods_share_one_device_and_read_each_others_writes() {
    require!(require_root());
    let mut block = Block::staged().await;
    let pod_a = block.publish("pod-a-uid", false).await;
    let pod_b = block.publish("pod-b-uid", false).await;
    for target in [&pod_a, &pod_b] {
        assert_block_device(target);
        assert!(is_mount_root(target));
    }
    block.publish("pod-a-uid", false).await;

    // Bytes written by pod A (O_DIRECT, fsync) are what pod B reads, and
    // they land in the volume's file.
    write_direct(&pod_a, 1 << 20, 0x5A).unwrap();
    assert!(all_bytes(&read_direct(&pod_b, 1 << 20), 0x5A));
    // Plain buffered writes + fsync too.
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&pod_b)
            .unwrap();
        f.seek(SeekFrom::Start(2 << 20)).unwrap();
        f.write_all(&[0xC3; 8192]).unwrap();
        f.sync_all().unwrap();
    }
    assert!(all_bytes(&read_direct(&pod_a, 2 << 20), 0xC3));
    let mut on_disk = vec![0u8; 4096];
    let mut backing = File::open(block.driver.block_file(NAME)).unwrap();
    backing.seek(SeekFrom::Start(1 << 20)).unwrap();
    backing.read_exact(&mut on_disk).unwrap();
    assert!(all_bytes(&on_disk, 0x5A));
}

#[tokio::test]
async fn a_read_only_publish_reads_the_same_bytes_and_refuses_writes() {
    require!(require_root());
    let mut block = Block::staged().await;
    let pod_a = block.publish("pod-a-uid", false).await;
    write_direct(&pod_a, 1 << 20, 0x5A).unwrap();

    let pod_ro = block.publish("pod-ro-uid", true).await;
    assert_block_device(&pod_ro);
    assert!(all_bytes(&read_direct(&pod_ro, 1 << 20), 0x5A));
    let refused = write_direct(&pod_ro, 1 << 20, 0xEE).and_then(|()| {
        let mut f = std::fs::OpenOptions::new().write(true).open(&pod_ro)?;
        f.write_all(&[0xEE; 4096])?;
        f.sync_all()
    });
    let err = refused.expect_err("a write through a read-only publish succeeded");
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::EPERM | libc::EROFS | libc::EACCES)
        ),
        "{err}"
    );
    assert!(all_bytes(&read_direct(&pod_a, 1 << 20), 0x5A));
    // Read-write and read-only publishes are separate devices: 2 in all.
    assert_eq!(block.loops().len(), 2);
}

#[tokio::test]
async fn publishing_a_target_again_with_the_other_readonly_flag_is_refused() {
    require!(require_root());
    let mut block = Block::staged().await;
    block.publish("pod-a-uid", false).await;
    block.publish("pod-ro-uid", true).await;
    assert_code(
        block.try_publish("pod-a-uid", true).await,
        Code::AlreadyExists,
    );
    assert_code(
        block.try_publish("pod-ro-uid", false).await,
        Code::AlreadyExists,
    );
}

#[tokio::test]
async fn block_stats_are_the_total_bytes_at_each_target_and_the_staging_path() {
    require!(require_root());
    let mut block = Block::staged().await;
    let pod_a = block.publish("pod-a-uid", false).await;
    let pod_ro = block.publish("pod-ro-uid", true).await;
    let id = block.id().to_string();
    // Stats: total bytes only (spec), at a target and at the staging path.
    for path in [&pod_a, &pod_ro, &block.staging] {
        let stats = block
            .node
            .node_get_volume_stats(stats_request(&id, path))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.usage.len(), 1, "{:?}", stats.usage);
        assert_eq!(stats.usage[0].unit, volume_usage::Unit::Bytes as i32);
        assert_eq!(stats.usage[0].total, SIZE);
        assert!(!stats.volume_condition.unwrap().abnormal);
    }
    // Another volume's id at this target: not published there.
    let other = create(
        &mut block.controller,
        block_create_request("pvc-other", 1 << 20),
    )
    .await
    .volume_id;
    assert_code(
        block
            .node
            .node_get_volume_stats(stats_request(&other, &pod_a))
            .await,
        Code::NotFound,
    );
    block
        .controller
        .delete_volume(delete_request(&other))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_published_block_volume_is_healthy_and_cannot_be_deleted() {
    require!(require_root());
    let mut block = Block::staged().await;
    block.publish("pod-a-uid", false).await;
    let id = block.id().to_string();
    let health = block
        .controller
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!health.status.unwrap().volume_condition.unwrap().abnormal);
    // Staged: DeleteVolume refuses (in use).
    assert_code(
        block.controller.delete_volume(delete_request(&id)).await,
        Code::FailedPrecondition,
    );
}

#[tokio::test]
async fn unpublish_unstage_and_delete_repeat_cleanly_and_leak_no_device_or_mount() {
    require!(require_root());
    let global_before = loops_attached();
    let mut block = Block::created().await;
    let mounts_before = mounts_below(block.driver.dir.path());
    let stage_time = block.stage().await;
    let started = Instant::now();
    let pod_a = block.publish("pod-a-uid", false).await;
    let publish_time = started.elapsed();
    let pod_b = block.publish("pod-b-uid", false).await;
    let pod_ro = block.publish("pod-ro-uid", true).await;
    let id = block.id().to_string();
    let Block {
        driver,
        mut controller,
        mut node,
        staging,
        ..
    } = block;

    let mut unpublish_times = Vec::new();
    for target in [&pod_a, &pod_b, &pod_ro] {
        for _ in 0..2 {
            let started = Instant::now();
            node.node_unpublish_volume(unpublish_request(&id, target))
                .await
                .unwrap();
            unpublish_times.push(started.elapsed());
        }
        assert!(!target.exists(), "target file left: {}", target.display());
    }
    let started = Instant::now();
    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    let unstage_time = started.elapsed();
    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    assert_eq!(loops_below(driver.dir.path()), vec![]);
    assert_eq!(mounts_below(driver.dir.path()), mounts_before);

    controller.delete_volume(delete_request(&id)).await.unwrap();
    controller.delete_volume(delete_request(&id)).await.unwrap();
    assert!(!driver.root.join("volumes").join(NAME).exists());
    eprintln!(
        "FIGURES block: stage {:.2} ms, first publish {:.2} ms, unpublish {:.2} ms (first), \
         unstage {:.2} ms; loop devices on host before {global_before}, after {}",
        ms(stage_time),
        ms(publish_time),
        ms(unpublish_times[0]),
        ms(unstage_time),
        loops_attached()
    );
}

#[tokio::test]
async fn many_cycles_leave_no_loop_devices_or_mounts() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut controller = driver.controller().await;
    let mut node = driver.node().await;
    let global_before = loops_attached();
    let name = "pvc-cycles";
    let id = create(&mut controller, block_create_request(name, 1 << 20))
        .await
        .volume_id;
    let staging = driver.block_staging_path(name);
    const CYCLES: u32 = 20;
    let (mut publish, mut unpublish) = (Vec::new(), Vec::new());
    for i in 0..CYCLES {
        node.node_stage_volume(block_stage_request(&id, &staging))
            .await
            .unwrap();
        let target = driver.block_target_path(name, &format!("pod-{i}"));
        let readonly = i % 2 == 1;
        let started = Instant::now();
        node.node_publish_volume(block_publish_request(&id, &staging, &target, readonly))
            .await
            .unwrap();
        publish.push(started.elapsed());
        write_direct(&target, 0, i as u8).unwrap_or_else(|e| assert!(readonly, "{e}"));
        let started = Instant::now();
        node.node_unpublish_volume(unpublish_request(&id, &target))
            .await
            .unwrap();
        unpublish.push(started.elapsed());
        node.node_unstage_volume(unstage_request(&id, &staging))
            .await
            .unwrap();
        assert_eq!(loops_below(driver.dir.path()), vec![], "cycle {i}");
    }
    assert_eq!(mounts_below(driver.dir.path()), 0);
    let avg = |v: &[Duration]| ms(v.iter().sum::<Duration>()) / v.len() as f64;
    let max = |v: &[Duration]| ms(*v.iter().max().unwrap());
    eprintln!(
        "FIGURES block cycles: {CYCLES} stage/publish/unpublish/unstage cycles; publish avg {:.2} ms \
         (max {:.2}), unpublish avg {:.2} ms (max {:.2}); loop devices ours after: 0; host before \
         {global_before}, after {}",
        avg(&publish),
        max(&publish),
        avg(&unpublish),
        max(&unpublish),
        loops_attached()
    );
}

#[tokio::test]
async fn mount_and_block_do_not_mix() {
    let driver = TestDriver::start();
    let mut controller = driver.controller().await;

    // One request, both access types: invalid.
    let mut mixed = create_request("pvc-mixed", 1 << 20);
    mixed
        .volume_capabilities
        .push(block_capability(Mode::SingleNodeWriter));
    assert_code(controller.create_volume(mixed).await, Code::InvalidArgument);
    assert!(!driver.root.join("volumes/pvc-mixed").exists());
    // Block on several nodes: a local volume cannot.
    let mut multi = block_create_request("pvc-multi", 1 << 20);
    multi.volume_capabilities = vec![block_capability(Mode::MultiNodeMultiWriter)];
    assert_code(controller.create_volume(multi).await, Code::InvalidArgument);

    // The same name with the other access type: an incompatible volume.
    let mount_id = create(&mut controller, create_request("pvc-m", 1 << 20))
        .await
        .volume_id;
    assert_code(
        controller
            .create_volume(block_create_request("pvc-m", 1 << 20))
            .await,
        Code::AlreadyExists,
    );
    let block_id = create(&mut controller, block_create_request("pvc-b", 1 << 20))
        .await
        .volume_id;
    assert_code(
        controller
            .create_volume(create_request("pvc-b", 1 << 20))
            .await,
        Code::AlreadyExists,
    );
    create(&mut controller, block_create_request("pvc-b", 1 << 20)).await;
    // A size that is not whole 4 KiB blocks is rounded up.
    let odd = create(&mut controller, block_create_request("pvc-odd", 1000)).await;
    assert_eq!(odd.capacity_bytes, 4096);

    // ValidateVolumeCapabilities answers per the volume's access type.
    let validate = |id: &str, cap: VolumeCapability| ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: vec![cap],
        ..Default::default()
    };
    let confirmed = |r: ValidateVolumeCapabilitiesResponse| r.confirmed.is_some();
    let block_rwo = block_capability(Mode::SingleNodeWriter);
    let v = |r: Result<tonic::Response<ValidateVolumeCapabilitiesResponse>, tonic::Status>| {
        confirmed(r.unwrap().into_inner())
    };
    assert!(v(controller
        .validate_volume_capabilities(validate(&block_id, block_rwo.clone()))
        .await));
    assert!(!v(controller
        .validate_volume_capabilities(validate(&block_id, rwo()))
        .await));
    assert!(!v(controller
        .validate_volume_capabilities(validate(&mount_id, block_rwo.clone()))
        .await));
    assert!(v(controller
        .validate_volume_capabilities(validate(&mount_id, rwo()))
        .await));

    // Node side: the other access type exceeds the volume's capabilities.
    let mut node = driver.node().await;
    let staging = driver.block_staging_path("pvc-b");
    assert_code(
        node.node_stage_volume(stage_request(&block_id, &staging))
            .await,
        Code::FailedPrecondition,
    );
    let mount_staging = driver.staging_path(&mount_id);
    assert_code(
        node.node_stage_volume(block_stage_request(&mount_id, &mount_staging))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(loops_below(driver.dir.path()), vec![]);
    assert_eq!(mounts_below(driver.dir.path()), 0);
}

#[tokio::test]
async fn publishing_a_block_volume_as_mount_is_refused() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut controller = driver.controller().await;
    let mut node = driver.node().await;
    let id = create(&mut controller, block_create_request("pvc-bm", 1 << 20))
        .await
        .volume_id;
    let staging = driver.block_staging_path("pvc-bm");
    node.node_stage_volume(block_stage_request(&id, &staging))
        .await
        .unwrap();
    let target = driver.target_path("pod-1", "pvc-bm");
    assert_code(
        node.node_publish_volume(publish_request(&id, &staging, &target, false))
            .await,
        Code::FailedPrecondition,
    );
    // Publishing before staging (another staging path) is refused too.
    let elsewhere = driver.block_staging_path("pvc-other");
    let pod = driver.block_target_path("pvc-bm", "pod-2");
    assert_code(
        node.node_publish_volume(block_publish_request(&id, &elsewhere, &pod, false))
            .await,
        Code::FailedPrecondition,
    );
    assert!(!pod.exists());
    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    assert_eq!(loops_below(driver.dir.path()), vec![]);
    assert_eq!(mounts_below(driver.dir.path()), 0);
}

#[tokio::test]
async fn hostile_paths_are_refused_without_touching_anything() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut controller = driver.controller().await;
    let mut node = driver.node().await;
    let name = "pvc-hostile";
    let id = create(&mut controller, block_create_request(name, 1 << 20))
        .await
        .volume_id;
    let staging = driver.block_staging_path(name);
    node.node_stage_volume(block_stage_request(&id, &staging))
        .await
        .unwrap();
    let devices = loops_below(driver.dir.path());
    assert_eq!(devices.len(), 1);

    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let publish_dir = driver
        .block_target_path(name, "x")
        .parent()
        .unwrap()
        .to_path_buf();
    // A symlink as the target, pointing at a file outside.
    let link_target = publish_dir.join("pod-link");
    std::os::unix::fs::symlink(&victim, &link_target).unwrap();
    // A symlinked directory on the way.
    let link_dir = publish_dir.join("dir-link");
    std::os::unix::fs::symlink(outside.path(), &link_dir).unwrap();
    // A directory where the file should be.
    let dir_target = publish_dir.join("pod-dir");
    std::fs::create_dir(&dir_target).unwrap();

    let attempts: Vec<(String, Code)> = vec![
        (victim.display().to_string(), Code::InvalidArgument),
        (link_target.display().to_string(), Code::InvalidArgument),
        (
            link_dir.join("pod").display().to_string(),
            Code::InvalidArgument,
        ),
        (
            format!("{}/../pod", publish_dir.display()),
            Code::InvalidArgument,
        ),
        ("relative/pod".into(), Code::InvalidArgument),
        (
            format!("{}/po\0d", publish_dir.display()),
            Code::InvalidArgument,
        ),
        (dir_target.display().to_string(), Code::FailedPrecondition),
    ];
    for (target, code) in attempts {
        for readonly in [false, true] {
            let mut req = block_publish_request(&id, &staging, Path::new("/"), readonly);
            req.target_path = target.clone();
            let result = node.node_publish_volume(req).await;
            match result {
                Ok(_) => panic!("publish at {target:?} succeeded"),
                Err(status) => {
                    assert_eq!(status.code(), code, "{target:?}: {}", status.message())
                }
            }
        }
    }
    // Refused read-only publishes attached no read-only device.
    assert_eq!(loops_below(driver.dir.path()), devices);
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
    assert!(std::fs::symlink_metadata(&link_target)
        .unwrap()
        .is_symlink());
    assert!(std::fs::read_dir(&dir_target).unwrap().next().is_none());
    assert!(!is_mount_root(&victim) && !is_mount_root(&dir_target));
    assert_eq!(mounts_below(driver.dir.path()), 0);
    assert_eq!(mounts_below(outside.path()), 0);

    // A symlinked staging path is refused before any device is attached.
    let other = create(&mut controller, block_create_request("pvc-h2", 1 << 20))
        .await
        .volume_id;
    let staging_root = staging.parent().unwrap();
    let link_staging = staging_root.join("pvc-h2");
    std::os::unix::fs::symlink(outside.path(), &link_staging).unwrap();
    assert_code(
        node.node_stage_volume(block_stage_request(&other, &link_staging))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(loops_below(driver.dir.path()), devices);
    // Unpublish through a symlink is refused too, and leaves it alone.
    assert_code(
        node.node_unpublish_volume(unpublish_request(&id, &link_target))
            .await,
        Code::InvalidArgument,
    );
    assert!(std::fs::symlink_metadata(&link_target).is_ok());

    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    assert_eq!(loops_below(driver.dir.path()), vec![]);
}

/// The four block volumes of the kill -9 scenario, and where the kubelet
/// staged and published them before the crash.
struct Crashed {
    /// kept (staged, published to `pod`), deleted (staged, then moved to
    /// trash), unrecorded (a device attached, no record), orphaned (staged,
    /// its staging path gone).
    ids: [String; 4],
    staging_kept: PathBuf,
    staging_deleted: PathBuf,
    staging_orphaned: PathBuf,
    pod: PathBuf,
    /// The kept volume's device before the crash.
    kept_device: Vec<(u32, PathBuf)>,
}

const KEPT: &str = "pvc-kept";
const DELETED: &str = "pvc-deleted";
const UNRECORDED: &str = "pvc-unrec";
const ORPHANED: &str = "pvc-orph";

/// Before the crash: four volumes, three staged, the kept one published to
/// a pod that wrote 0x42 into its first block.
async fn stage_three_and_publish_one(driver: &TestDriver) -> Crashed {
    let mut c = driver.controller().await;
    let mut ids = Vec::new();
    for name in [KEPT, DELETED, UNRECORDED, ORPHANED] {
        ids.push(
            create(&mut c, block_create_request(name, 1 << 20))
                .await
                .volume_id,
        );
    }
    let ids: [String; 4] = ids.try_into().unwrap();
    let staging_kept = driver.block_staging_path(KEPT);
    let staging_deleted = driver.block_staging_path(DELETED);
    let staging_orphaned = driver.block_staging_path(ORPHANED);
    let pod = driver.block_target_path(KEPT, "pod-1");
    let mut node = driver.node().await;
    for (id, staging) in [
        (&ids[0], &staging_kept),
        (&ids[1], &staging_deleted),
        (&ids[3], &staging_orphaned),
    ] {
        node.node_stage_volume(block_stage_request(id, staging))
            .await
            .unwrap_or_else(|e| panic!("before the crash, staging {id}: {e}"));
    }
    node.node_publish_volume(block_publish_request(&ids[0], &staging_kept, &pod, false))
        .await
        .unwrap_or_else(|e| panic!("before the crash, publishing the kept volume: {e}"));
    write_direct(&pod, 0, 0x42).unwrap();
    let kept_device = loops_below(&driver.root.join("volumes").join(KEPT));
    assert_eq!(
        kept_device.len(),
        1,
        "before the crash: the kept volume has one device"
    );
    Crashed {
        ids,
        staging_kept,
        staging_deleted,
        staging_orphaned,
        pod,
        kept_device,
    }
}

/// With the driver dead, lays down what a crash (or a hand) can leave.
fn leave_what_a_crash_leaves(driver: &TestDriver, crashed: &Crashed) {
    // - a staged volume's directory moved to trash/ (a delete cut short),
    std::fs::rename(
        driver.root.join("volumes").join(DELETED),
        driver.root.join("trash").join(format!("{DELETED}.99.0")),
    )
    .unwrap();
    // - a device attached right before the crash, its record never written,
    let stray =
        cairn_csi::loopdev::LoopDevice::attach(&driver.block_file(UNRECORDED), Default::default())
            .unwrap();
    drop(stray);
    // - a device whose staging path the kubelet no longer has,
    std::fs::remove_dir(&crashed.staging_orphaned).unwrap();
    // - a half-made volume in tmp/ with a device.
    let half = driver.root.join("tmp/pvc-half.99.0");
    std::fs::create_dir_all(&half).unwrap();
    File::create(half.join("block"))
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    drop(cairn_csi::loopdev::LoopDevice::attach(&half.join("block"), Default::default()).unwrap());
    assert_eq!(
        loops_below(driver.dir.path()).len(),
        5,
        "the crash's leftovers: 1 staged and 4 stray devices"
    );
}

/// After the restart the kubelet retries: the pod's device still works,
/// stage and publish again succeed, a second pod shares the same device.
async fn kubelet_retries_for_the_kept_volume(driver: &TestDriver, crashed: &Crashed) -> PathBuf {
    let Crashed {
        ids,
        staging_kept,
        pod,
        kept_device,
        ..
    } = crashed;
    let mut node = driver.node().await;
    assert!(
        read_direct(pod, 0).iter().all(|&b| b == 0x42),
        "after the restart, the pod's device lost what it wrote"
    );
    node.node_stage_volume(block_stage_request(&ids[0], staging_kept))
        .await
        .unwrap_or_else(|e| panic!("after the restart, the kubelet's stage retry: {e}"));
    node.node_publish_volume(block_publish_request(&ids[0], staging_kept, pod, false))
        .await
        .unwrap_or_else(|e| panic!("after the restart, the kubelet's publish retry: {e}"));
    let pod2 = driver.block_target_path(KEPT, "pod-2");
    node.node_publish_volume(block_publish_request(&ids[0], staging_kept, &pod2, false))
        .await
        .unwrap_or_else(|e| panic!("after the restart, publishing to a second pod: {e}"));
    write_direct(&pod2, 4096, 0x43).unwrap();
    assert!(
        read_direct(pod, 4096).iter().all(|&b| b == 0x43),
        "after the restart, the two pods do not share the kept device"
    );
    assert_eq!(
        &loops_below(driver.dir.path()),
        kept_device,
        "after the retries, the kept volume still has its one old device"
    );
    pod2
}

/// After the restart, the volumes the crash left half-way stage (or
/// unstage) normally. Returns the unrecorded volume's staging path.
async fn the_half_way_volumes_stage_again(driver: &TestDriver, crashed: &Crashed) -> PathBuf {
    let ids = &crashed.ids;
    let mut node = driver.node().await;
    let staging_unrecorded = driver.block_staging_path(UNRECORDED);
    node.node_stage_volume(block_stage_request(&ids[2], &staging_unrecorded))
        .await
        .unwrap_or_else(|e| panic!("after the restart, staging the unrecorded volume: {e}"));
    // Its stale record is replaced.
    std::fs::create_dir_all(&crashed.staging_orphaned).unwrap();
    node.node_stage_volume(block_stage_request(&ids[3], &crashed.staging_orphaned))
        .await
        .unwrap_or_else(|e| panic!("after the restart, staging the orphaned volume: {e}"));
    assert_eq!(
        loops_below(driver.dir.path()).len(),
        3,
        "after the restart: kept, unrecorded and orphaned staged, one device each"
    );
    node.node_unstage_volume(unstage_request(&ids[1], &crashed.staging_deleted))
        .await
        .unwrap_or_else(|e| panic!("after the restart, unstaging the deleted volume: {e}"));
    staging_unrecorded
}

#[tokio::test]
async fn kill9_while_staged_and_half_way_then_restart_leaks_nothing() {
    require!(require_root());
    let mut driver = TestDriver::start();
    let crashed = stage_three_and_publish_one(&driver).await;

    driver.kill9();
    leave_what_a_crash_leaves(&driver, &crashed);
    let started = Instant::now();
    driver.spawn();
    let startup = started.elapsed();
    // Only the staged volume's device is left, the very same one.
    assert_eq!(
        loops_below(driver.dir.path()),
        crashed.kept_device,
        "the restart kept only the staged volume's own device"
    );
    let log = strip_ansi(&driver.log_text());
    assert!(
        log.contains("kept=1 detached=4"),
        "the restart's log does not report 1 kept and 4 detached: {log}"
    );

    let pod2 = kubelet_retries_for_the_kept_volume(&driver, &crashed).await;
    let staging_unrecorded = the_half_way_volumes_stage_again(&driver, &crashed).await;

    // Then everything unpublishes and unstages, leaving nothing.
    let ids = &crashed.ids;
    let mut node = driver.node().await;
    for target in [&crashed.pod, &pod2] {
        node.node_unpublish_volume(unpublish_request(&ids[0], target))
            .await
            .unwrap_or_else(|e| panic!("cleaning up, unpublishing {}: {e}", target.display()));
    }
    for (id, staging) in [
        (&ids[0], &crashed.staging_kept),
        (&ids[2], &staging_unrecorded),
        (&ids[3], &crashed.staging_orphaned),
    ] {
        node.node_unstage_volume(unstage_request(id, staging))
            .await
            .unwrap_or_else(|e| panic!("cleaning up, unstaging {id}: {e}"));
    }
    assert_eq!(
        loops_below(driver.dir.path()),
        vec![],
        "a loop device outlived the last unstage"
    );
    assert_eq!(
        mounts_below(driver.dir.path()),
        0,
        "a mount outlived the last unpublish"
    );
    let mut c = driver.controller().await;
    for id in ids {
        c.delete_volume(delete_request(id))
            .await
            .unwrap_or_else(|e| panic!("cleaning up, deleting {id}: {e}"));
    }
    eprintln!(
        "FIGURES block recovery: restart with 5 loop devices (1 staged, 4 stray) took {:.1} ms \
         to a serving socket; 4 detached, 1 kept",
        ms(startup)
    );
}

#[tokio::test]
async fn kill9_right_after_stage_then_retry_reuses_the_device() {
    require!(require_root());
    let mut driver = TestDriver::start();
    let id = {
        let mut c = driver.controller().await;
        create(&mut c, block_create_request("pvc-retry", 1 << 20))
            .await
            .volume_id
    };
    let staging = driver.block_staging_path("pvc-retry");
    driver
        .node()
        .await
        .node_stage_volume(block_stage_request(&id, &staging))
        .await
        .unwrap();
    let before = loops_below(driver.dir.path());
    assert_eq!(before.len(), 1);
    driver.kill9();
    driver.spawn();
    assert_eq!(loops_below(driver.dir.path()), before);
    let mut node = driver.node().await;
    node.node_stage_volume(block_stage_request(&id, &staging))
        .await
        .unwrap();
    assert_eq!(loops_below(driver.dir.path()), before);
    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    assert_eq!(loops_below(driver.dir.path()), vec![]);
}

/// The size a block device reports (BLKGETSIZE64), through `path`.
fn device_size(path: &Path) -> u64 {
    let f = File::open(path).unwrap();
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    // SAFETY: the ioctl writes one u64 into `size`, which lives across the call.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            BLKGETSIZE64 as _,
            &mut size,
        )
    };
    assert_eq!(rc, 0, "BLKGETSIZE64: {}", std::io::Error::last_os_error());
    size
}

#[tokio::test]
async fn a_published_block_volume_grows_online() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut controller = driver.controller().await;
    let mut node = driver.node().await;
    let name = "pvc-block-grows";
    let volume = create(&mut controller, block_create_request(name, SIZE)).await;
    let id = volume.volume_id.as_str();
    let staging = driver.block_staging_path(name);
    node.node_stage_volume(block_stage_request(id, &staging))
        .await
        .unwrap();
    let target = driver.block_target_path(name, "pod-grow-uid");
    node.node_publish_volume(block_publish_request(id, &staging, &target, false))
        .await
        .unwrap();
    write_direct(&target, 0, 0x42).unwrap();
    assert_eq!(device_size(&target), SIZE as u64);

    let grow = |bytes: i64| ControllerExpandVolumeRequest {
        volume_id: id.to_string(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capability: Some(block_capability(Mode::SingleNodeWriter)),
        ..Default::default()
    };
    // Not 4 KiB aligned: the file grows to the next whole block.
    let expanded = controller
        .controller_expand_volume(grow(2 * SIZE + 100))
        .await
        .unwrap()
        .into_inner();
    let grown = (2 * SIZE as u64 + 100).div_ceil(4096) * 4096;
    assert_eq!(expanded.capacity_bytes as u64, grown);
    assert_eq!(
        std::fs::metadata(driver.block_file(name)).unwrap().len(),
        grown
    );
    // Online: the pod's device already has the new size, and kept its data.
    assert_eq!(device_size(&target), grown);
    assert!(read_direct(&target, 0).iter().all(|&b| b == 0x42));
    write_direct(&target, grown - 4096, 0x43).unwrap();
    // Repeats change nothing; the kubelet's NodeExpandVolume agrees.
    let again = controller
        .controller_expand_volume(grow(2 * SIZE + 100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.capacity_bytes as u64, grown);
    let node_expanded = node
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: id.to_string(),
            volume_path: target.display().to_string(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(block_capability(Mode::SingleNodeWriter)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(node_expanded.capacity_bytes as u64, grown);
    assert_eq!(device_size(&target), grown);

    node.node_unpublish_volume(unpublish_request(id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(id, &staging))
        .await
        .unwrap();
    assert!(loops_below(driver.dir.path()).is_empty());
}

/// Attaches a block volume the kubelet's way (stage + publish) and runs `f`
/// on the device at the pod's target; detaches it again.
async fn with_device<T>(
    driver: &TestDriver,
    name: &str,
    id: &str,
    f: impl FnOnce(&Path) -> T,
) -> T {
    let mut node = driver.node().await;
    let staging = driver.block_staging_path(name);
    node.node_stage_volume(block_stage_request(id, &staging))
        .await
        .unwrap();
    let target = driver.block_target_path(name, &format!("pod-{name}"));
    node.node_publish_volume(block_publish_request(id, &staging, &target, false))
        .await
        .unwrap();
    assert_block_device(&target);
    let out = f(&target);
    node.node_unpublish_volume(unpublish_request(id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(id, &staging))
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn block_volumes_snapshot_restore_and_clone_through_their_devices() {
    require!(require_root());
    let driver = TestDriver::start();
    let mut c = driver.controller().await;
    let source = create(&mut c, block_create_request("pvc-block-src", SIZE)).await;
    let src = source.volume_id.clone();
    // Written through the device: first block, last block, the rest holes.
    with_device(&driver, "pvc-block-src", &src, |dev| {
        write_direct(dev, 0, 0x5a).unwrap();
        write_direct(dev, SIZE as u64 - 4096, 0xa5).unwrap();
    })
    .await;
    let snapshot = ready_snapshot(&mut c, "snap-block", &src).await;
    assert_eq!(snapshot.size_bytes, SIZE);
    // The source moves on after the snapshot.
    with_device(&driver, "pvc-block-src", &src, |dev| {
        write_direct(dev, 0, 0x11).unwrap();
    })
    .await;

    let from = |name: &str, bytes: i64, source: Option<VolumeContentSource>| {
        with_source(block_create_request(name, bytes), source)
    };
    let from_snap = || snap_source(&snapshot.snapshot_id);

    // Restore into a larger volume: the snapshot's blocks, then zeros.
    let restored = create(&mut c, from("pvc-block-restored", 2 * SIZE, from_snap())).await;
    assert_eq!(restored.capacity_bytes, 2 * SIZE);
    assert!(restored.content_source.is_some());
    let repeat = create(&mut c, from("pvc-block-restored", 2 * SIZE, from_snap())).await;
    assert_eq!(repeat, restored);
    with_device(&driver, "pvc-block-restored", &restored.volume_id, |dev| {
        assert_eq!(device_size(dev), 2 * SIZE as u64);
        assert!(read_direct(dev, 0).iter().all(|&b| b == 0x5a));
        assert!(read_direct(dev, SIZE as u64 - 4096)
            .iter()
            .all(|&b| b == 0xa5));
        assert!(read_direct(dev, SIZE as u64).iter().all(|&b| b == 0));
        assert!(read_direct(dev, 2 * SIZE as u64 - 4096)
            .iter()
            .all(|&b| b == 0));
    })
    .await;
    // Holes stay holes: the restore allocated about what was written.
    let file = std::fs::metadata(driver.block_file("pvc-block-restored")).unwrap();
    assert_eq!(file.len(), 2 * SIZE as u64);
    assert!(
        file.blocks() * 512 < SIZE as u64 / 2,
        "{} bytes allocated",
        file.blocks() * 512
    );

    // Clone: the source as it is now.
    let clone = create(&mut c, from("pvc-block-clone", 0, vol_source(&src))).await;
    assert_eq!(clone.capacity_bytes, SIZE);
    with_device(&driver, "pvc-block-clone", &clone.volume_id, |dev| {
        assert!(read_direct(dev, 0).iter().all(|&b| b == 0x11));
        assert!(read_direct(dev, SIZE as u64 - 4096)
            .iter()
            .all(|&b| b == 0xa5));
    })
    .await;

    // A device image never becomes a filesystem volume, nor a tree a device.
    let mut as_mount = from("pvc-block-as-mount", 0, from_snap());
    as_mount.volume_capabilities = create_request("x", 0).volume_capabilities;
    assert_code(c.create_volume(as_mount).await, Code::InvalidArgument);
    let fs_source = create(&mut c, create_request("pvc-fs-src", SIZE)).await;
    let fs_as_block = from("pvc-fs-as-block", 0, vol_source(&fs_source.volume_id));
    assert_code(c.create_volume(fs_as_block).await, Code::InvalidArgument);
    // Smaller than the source: OutOfRange.
    assert_code(
        c.create_volume(from("pvc-block-small", SIZE / 2, from_snap()))
            .await,
        Code::OutOfRange,
    );
    for refused in ["pvc-block-as-mount", "pvc-fs-as-block", "pvc-block-small"] {
        assert!(!driver.block_file(refused).exists(), "{refused}");
    }
    assert!(loops_below(driver.dir.path()).is_empty());
}
