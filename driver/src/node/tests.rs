//! The node rules against the recording mounter: no mount is made and no
//! privilege is needed, so each rule is a unit test beside the real-mount
//! tests of `driver/tests/node_*.rs`. The kubelet dir and the records are
//! real files in a temporary directory (paths resolve as in production);
//! every path the rules inspect, mount or remove lives in the fake.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn_proto::v1::volume_capability::access_mode::Mode;
use cairn_proto::v1::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use cairn_proto::v1::VolumeCapability;
use tonic::Code;

use super::flow::{publish_flags, NodeContext, Publish};
use crate::backend::{Backend, BackendKind, Capacity, Expanded, Health, NewVolume, Stats, Volume};
use crate::capability::{access_kind, AccessKind, Unsupported};
use crate::capacity::Range;
use crate::error::{Error, Result};
use crate::ids::{NodeId, VolumeId};
use crate::mount::{BindFlags, PathState};
use crate::mounter::fake::{Call, FakeMounter};
use crate::mounter::Mounter;
use crate::paths::{KubeletDir, KubeletPath};
use crate::published::PublishedRecords;
use crate::staged::StagedRecords;

/// A backend whose volumes are directories of the fake: staging binds the
/// volume's directory, a block volume's device is a file of the fake.
struct FakeBackend {
    mounter: Arc<FakeMounter>,
    data: Mutex<BTreeMap<String, PathBuf>>,
    unstaged: Mutex<Vec<String>>,
}

impl FakeBackend {
    fn data_of(&self, id: &VolumeId) -> Result<PathBuf> {
        let data = self.data.lock().unwrap();
        data.get(&id.to_string())
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("volume {id} does not exist")))
    }

    fn data_state(&self, id: &VolumeId) -> Result<PathState> {
        let data = self.data_of(id)?;
        Ok(self.mounter.inspect(&data).unwrap().unwrap())
    }
}

fn unused<T>() -> Result<T> {
    Err(Error::Unimplemented("not used by the node rules".into()))
}

#[tonic::async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        // The node rules never ask; any kind will do.
        BackendKind::Local
    }
    fn unstaged_source(&self, id: &VolumeId) -> Result<(PathBuf, PathState)> {
        Ok((self.data_of(id)?, self.data_state(id)?))
    }
    fn node(&self) -> Option<&NodeId> {
        None
    }
    fn check_parameters(&self, _: &BTreeMap<String, String>) -> Result<()> {
        unused()
    }
    fn supports(&self, _: &VolumeCapability) -> Result<(), Unsupported> {
        Ok(())
    }
    fn volume_id_for(&self, _: &NewVolume) -> Result<VolumeId> {
        unused()
    }
    async fn create(self: Arc<Self>, _: NewVolume) -> Result<Volume> {
        unused()
    }
    async fn delete(self: Arc<Self>, _: VolumeId) -> Result<()> {
        unused()
    }
    async fn get(self: Arc<Self>, _: VolumeId) -> Result<Option<Volume>> {
        unused()
    }
    async fn capacity(
        self: Arc<Self>,
        _: BTreeMap<String, String>,
        _: Vec<String>,
    ) -> Result<Capacity> {
        unused()
    }
    async fn health(self: Arc<Self>, _: VolumeId) -> Health {
        Health::Ok
    }
    async fn expand(self: Arc<Self>, _: VolumeId, _: Range) -> Result<Expanded> {
        unused()
    }
    fn stage(&self, id: &VolumeId, staging: &Path, _: &VolumeCapability) -> Result<()> {
        if self.staged(id, staging)?.is_some() {
            return Ok(());
        }
        let data = self.data_of(id)?;
        self.mounter
            .bind(&data, staging, BindFlags::default())
            .map_err(Error::io("bind", staging))
    }
    fn publish_flags(&self, _: &VolumeCapability) -> Result<BindFlags> {
        Ok(BindFlags::default())
    }
    fn staged(&self, id: &VolumeId, staging: &Path) -> Result<Option<PathState>> {
        let volume = self.data_state(id)?;
        let there = self.mounter.inspect(staging).unwrap();
        Ok(there.filter(|s| s.is_mount_root && s.same_inode(&volume)))
    }
    fn stats(&self, _: &VolumeId, _: &Path) -> Result<Stats> {
        unused()
    }
    fn unstage(&self, id: &VolumeId, _: &Path) -> Result<()> {
        self.unstaged.lock().unwrap().push(id.to_string());
        Ok(())
    }
    fn block_device(&self, id: &VolumeId, _: &Path, _: bool) -> Result<PathBuf> {
        Ok(self.data_of(id)?.with_file_name("device"))
    }
    fn node_expand(
        &self,
        _: &VolumeId,
        _: &Path,
        _: Option<&VolumeCapability>,
        _: &Range,
    ) -> Result<u64> {
        unused()
    }
}

/// One node: a kubelet dir and records in a temporary directory, the
/// fake mounter, the fake backend.
struct TestNode {
    _dir: tempfile::TempDir,
    ctx: NodeContext,
    fake: Arc<FakeMounter>,
    backend: FakeBackend,
}

/// A node with volume pvc-a staged at its staging path.
fn with_pvc_a_staged() -> (TestNode, VolumeId, String) {
    let n = node();
    let (id, staging) = n.staged_volume("pvc-a");
    (n, id, staging)
}

fn node() -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("kubelet")).unwrap();
    let fake = Arc::new(FakeMounter::default());
    let ctx = NodeContext {
        node: NodeId::parse("node-1").unwrap(),
        kubelet: KubeletDir::open(&dir.path().join("kubelet")).unwrap(),
        staged: StagedRecords::open(dir.path().join("own/staged")).unwrap(),
        published: PublishedRecords::open(dir.path().join("own/published")).unwrap(),
        mounter: fake.clone(),
    };
    let backend = FakeBackend {
        mounter: fake.clone(),
        data: Mutex::default(),
        unstaged: Mutex::default(),
    };
    TestNode {
        _dir: dir,
        ctx,
        fake,
        backend,
    }
}

fn capability(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn block_capability(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn code(result: Result<()>) -> Code {
    match result {
        Ok(()) => Code::Ok,
        Err(e) => e.code(),
    }
}

fn staging_of(name: &str) -> String {
    format!("plugins/kubernetes.io/csi/cairn/{name}/globalmount")
}

fn target_of(pod: &str, name: &str) -> String {
    format!("pods/{pod}/volumes/kubernetes.io~csi/{name}/mount")
}

impl TestNode {
    /// A volume of the fake backend: a directory (and a device file) of the fake.
    fn volume(&self, name: &str) -> VolumeId {
        let id = VolumeId::parse(&format!("local:node-1:{name}")).unwrap();
        let data = PathBuf::from(format!("/fake/volumes/{name}/data"));
        self.fake.add_dir(&data);
        self.fake.add_file(&data.with_file_name("device"));
        self.backend
            .data
            .lock()
            .unwrap()
            .insert(id.to_string(), data);
        id
    }

    fn path(&self, relative: &str) -> KubeletPath {
        let raw = self.ctx.kubelet.real().join(relative);
        self.ctx
            .kubelet
            .check(raw.to_str().unwrap(), "path")
            .unwrap()
    }

    fn real(&self, relative: &str) -> PathBuf {
        self.ctx.kubelet.real().join(relative)
    }

    fn stage_as(&self, id: &VolumeId, staging: &str, cap: &VolumeCapability) -> Result<()> {
        self.ctx.stage(&self.backend, id, &self.path(staging), cap)
    }

    fn stage(&self, id: &VolumeId, staging: &str) -> Result<()> {
        self.stage_as(id, staging, &capability(Mode::SingleNodeWriter))
    }

    fn publish_as(
        &self,
        id: &VolumeId,
        staging: &str,
        target: &str,
        cap: &VolumeCapability,
        readonly: bool,
    ) -> Result<()> {
        let request = Publish {
            id: id.clone(),
            staging: self.path(staging),
            target: self.path(target),
            flags: publish_flags(&self.backend, cap, readonly)?,
            mode: cap.access_mode.as_ref().map_or(0, |m| m.mode),
            block: access_kind(cap) == AccessKind::Block,
        };
        self.ctx.publish(&self.backend, &request)
    }

    fn publish(&self, id: &VolumeId, staging: &str, target: &str) -> Result<()> {
        self.publish_as(
            id,
            staging,
            target,
            &capability(Mode::SingleNodeWriter),
            false,
        )
    }

    fn unpublish(&self, id: &VolumeId, target: &str) -> Result<()> {
        self.ctx.unpublish(id, &self.path(target))
    }

    fn unstage(&self, id: &VolumeId, staging: &str) -> Result<()> {
        self.ctx
            .unstage(Some(&self.backend), id, &self.path(staging))
    }

    fn binds_at(&self, relative: &str) -> usize {
        self.fake.binds_at(&self.real(relative)).len()
    }

    fn recorded_at(&self, relative: &str) -> Option<VolumeId> {
        let publication = self.ctx.published.at(&self.real(relative)).unwrap();
        publication.map(|p| p.volume_id)
    }

    /// A volume staged at its staging path.
    fn staged_volume(&self, name: &str) -> (VolumeId, String) {
        let id = self.volume(name);
        let staging = staging_of(name);
        self.stage(&id, &staging).unwrap();
        (id, staging)
    }
}

// Stage.

#[test]
fn stage_repeated_succeeds_and_binds_once() {
    let n = node();
    let id = n.volume("pvc-a");
    n.stage(&id, &staging_of("pvc-a")).unwrap();
    n.stage(&id, &staging_of("pvc-a")).unwrap();
    assert_eq!(n.binds_at(&staging_of("pvc-a")), 1);
    assert_eq!(
        n.ctx.staged.lookup(&n.real(&staging_of("pvc-a"))).unwrap(),
        Some(id.clone())
    );
}

#[test]
fn stage_where_another_volume_is_staged_is_already_exists() {
    let n = node();
    let (_, staging) = n.staged_volume("pvc-a");
    let b = n.volume("pvc-b");
    assert_eq!(code(n.stage(&b, &staging)), Code::AlreadyExists);
    assert_eq!(n.binds_at(&staging), 1);
}

#[test]
fn stage_over_a_stale_record_of_another_volume_succeeds() {
    let n = node();
    let (_, staging) = n.staged_volume("pvc-a");
    // A reboot: the record stays, the mount is gone.
    n.fake.unmount_behind(&n.real(&staging));
    let b = n.volume("pvc-b");
    n.stage(&b, &staging).unwrap();
    assert_eq!(
        n.ctx.staged.lookup(&n.real(&staging)).unwrap(),
        Some(b.clone())
    );
}

#[test]
fn stage_at_a_live_publish_target_is_already_exists() {
    let n = node();
    let (a, staging) = n.staged_volume("pvc-a");
    let target = target_of("pod-1", "pvc-a");
    n.publish(&a, &staging, &target).unwrap();
    let b = n.volume("pvc-b");
    assert_eq!(code(n.stage(&b, &target)), Code::AlreadyExists);
    assert_eq!(n.binds_at(&target), 1);
}

// Publish: idempotency and staging.

#[test]
fn publish_repeated_succeeds_and_binds_once() {
    let (n, id, staging) = with_pvc_a_staged();
    let target = target_of("pod-1", "pvc-a");
    n.publish(&id, &staging, &target).unwrap();
    n.publish(&id, &staging, &target).unwrap();
    assert_eq!(n.binds_at(&target), 1);
    assert_eq!(n.recorded_at(&target), Some(id.clone()));
}

#[test]
fn publish_of_a_volume_never_staged_is_failed_precondition() {
    let n = node();
    let id = n.volume("pvc-a");
    let target = target_of("pod-1", "pvc-a");
    // The staging path's parents do not even exist.
    let result = n.publish(&id, &staging_of("pvc-a"), &target);
    assert_eq!(code(result), Code::FailedPrecondition);
    assert!(n.fake.calls().is_empty(), "{:?}", n.fake.calls());
}

#[test]
fn publish_after_the_staging_mount_went_is_failed_precondition_and_records_nothing() {
    let (n, id, staging) = with_pvc_a_staged();
    n.fake.unmount_behind(&n.real(&staging));
    let target = target_of("pod-1", "pvc-a");
    assert_eq!(
        code(n.publish(&id, &staging, &target)),
        Code::FailedPrecondition
    );
    assert_eq!(n.binds_at(&target), 0);
    assert_eq!(n.recorded_at(&target), None);
}

#[test]
fn publish_from_a_staging_path_holding_another_volume_is_not_found() {
    let n = node();
    let (_, staging) = n.staged_volume("pvc-a");
    let b = n.volume("pvc-b");
    let result = n.publish(&b, &staging, &target_of("pod-1", "pvc-b"));
    assert_eq!(code(result), Code::NotFound);
}

#[test]
fn publish_at_a_staging_path_is_invalid_argument() {
    let n = node();
    let (a, staging_a) = n.staged_volume("pvc-a");
    let (_, staging_b) = n.staged_volume("pvc-b");
    assert_eq!(
        code(n.publish(&a, &staging_a, &staging_a)),
        Code::InvalidArgument
    );
    assert_eq!(
        code(n.publish(&a, &staging_a, &staging_b)),
        Code::InvalidArgument
    );
    assert_eq!(n.binds_at(&staging_b), 1, "only its own stage");
}

// Publish: conflicts.

#[test]
fn publish_at_a_target_holding_another_volume_is_already_exists() {
    let n = node();
    let (a, staging_a) = n.staged_volume("pvc-a");
    let (b, staging_b) = n.staged_volume("pvc-b");
    let target = target_of("pod-1", "shared");
    n.publish(&a, &staging_a, &target).unwrap();
    assert_eq!(
        code(n.publish(&b, &staging_b, &target)),
        Code::AlreadyExists
    );
    assert_eq!(n.binds_at(&target), 1);
    assert_eq!(n.recorded_at(&target), Some(a.clone()));
}

#[test]
fn publish_at_a_target_with_an_unrecorded_mount_is_already_exists() {
    let (n, id, staging) = with_pvc_a_staged();
    let target = target_of("pod-1", "pvc-a");
    let other = PathBuf::from("/fake/elsewhere");
    n.fake.add_dir(&other);
    n.fake.add_dir(&n.real(&target));
    n.fake.mount_behind(&other, &n.real(&target), false);
    assert_eq!(code(n.publish(&id, &staging, &target)), Code::AlreadyExists);
    assert_eq!(n.binds_at(&target), 0);
    // The mount stays: it is not this volume's, and no record says it is.
    assert_eq!(n.fake.mounts_at(&n.real(&target)), 1);
    assert_eq!(n.recorded_at(&target), None);
}

#[test]
fn publish_again_with_the_other_read_only_flag_is_already_exists() {
    let (n, id, staging) = with_pvc_a_staged();
    let target = target_of("pod-1", "pvc-a");
    let cap = capability(Mode::SingleNodeWriter);
    n.publish_as(&id, &staging, &target, &cap, false).unwrap();
    let again = n.publish_as(&id, &staging, &target, &cap, true);
    assert_eq!(code(again), Code::AlreadyExists);
    assert_eq!(n.binds_at(&target), 1);
}

#[test]
fn publish_again_with_another_access_mode_is_already_exists() {
    let (n, id, staging) = with_pvc_a_staged();
    let target = target_of("pod-1", "pvc-a");
    let multi = capability(Mode::MultiNodeMultiWriter);
    n.publish_as(&id, &staging, &target, &multi, false).unwrap();
    let single = capability(Mode::SingleNodeSingleWriter);
    let again = n.publish_as(&id, &staging, &target, &single, false);
    assert_eq!(code(again), Code::AlreadyExists);
}

#[test]
fn publish_on_a_file_target_is_failed_precondition_and_records_nothing() {
    let (n, id, staging) = with_pvc_a_staged();
    let target = target_of("pod-1", "pvc-a");
    n.fake.add_file(&n.real(&target));
    assert_eq!(
        code(n.publish(&id, &staging, &target)),
        Code::FailedPrecondition
    );
    assert_eq!(n.recorded_at(&target), None);
}

// Publish: access modes.

#[test]
fn a_single_writer_volume_at_a_second_target_is_failed_precondition() {
    let (n, id, staging) = with_pvc_a_staged();
    let snsw = capability(Mode::SingleNodeSingleWriter);
    let first = target_of("pod-1", "pvc-a");
    let second = target_of("pod-2", "pvc-a");
    n.publish_as(&id, &staging, &first, &snsw, false).unwrap();
    let result = n.publish_as(&id, &staging, &second, &snsw, false);
    assert_eq!(code(result), Code::FailedPrecondition);
    assert_eq!(n.binds_at(&second), 0);
    assert_eq!(n.recorded_at(&second), None);
}

#[test]
fn a_multi_writer_volume_is_published_at_two_targets() {
    let (n, id, staging) = with_pvc_a_staged();
    let multi = capability(Mode::SingleNodeMultiWriter);
    let first = target_of("pod-1", "pvc-a");
    let second = target_of("pod-2", "pvc-a");
    n.publish_as(&id, &staging, &first, &multi, false).unwrap();
    n.publish_as(&id, &staging, &second, &multi, false).unwrap();
    assert_eq!((n.binds_at(&first), n.binds_at(&second)), (1, 1));
    assert_eq!(n.ctx.published.of_volume(&id).unwrap().len(), 2);
}

#[test]
fn a_single_writer_volume_moves_to_a_second_target_once_the_first_mount_is_gone() {
    let (n, id, staging) = with_pvc_a_staged();
    let snsw = capability(Mode::SingleNodeSingleWriter);
    let first = target_of("pod-1", "pvc-a");
    let second = target_of("pod-2", "pvc-a");
    n.publish_as(&id, &staging, &first, &snsw, false).unwrap();
    n.fake.unmount_behind(&n.real(&first));
    n.publish_as(&id, &staging, &second, &snsw, false).unwrap();
    // The stale record of the first target was dropped on the way.
    assert_eq!(n.recorded_at(&first), None);
    assert_eq!(n.recorded_at(&second), Some(id.clone()));
}

// Publish: read-only.

#[test]
fn a_reader_only_access_mode_binds_read_only_without_the_readonly_flag() {
    let (n, id, staging) = with_pvc_a_staged();
    let target = target_of("pod-1", "pvc-a");
    let reader = capability(Mode::MultiNodeReaderOnly);
    n.publish_as(&id, &staging, &target, &reader, false)
        .unwrap();
    let binds = n.fake.binds_at(&n.real(&target));
    assert!(
        matches!(
            binds.as_slice(),
            [Call::Bind {
                read_only: true,
                ..
            }]
        ),
        "{binds:?}"
    );
    // The same publish again finds the read-only mount it asks for.
    n.publish_as(&id, &staging, &target, &reader, false)
        .unwrap();
    assert_eq!(n.binds_at(&target), 1);
}

#[test]
fn the_readonly_flag_binds_read_only_and_a_writer_mode_alone_does_not() {
    let (n, id, staging) = with_pvc_a_staged();
    let cap = capability(Mode::SingleNodeMultiWriter);
    let ro = target_of("pod-1", "pvc-a");
    let rw = target_of("pod-2", "pvc-a");
    n.publish_as(&id, &staging, &ro, &cap, true).unwrap();
    n.publish_as(&id, &staging, &rw, &cap, false).unwrap();
    let read_only = |target: &str| match n.fake.binds_at(&n.real(target)).as_slice() {
        [Call::Bind { read_only, .. }] => *read_only,
        other => panic!("{other:?}"),
    };
    assert!(read_only(&ro));
    assert!(!read_only(&rw));
}

// Publish: retries.

#[test]
fn a_failed_bind_leaves_no_record_and_the_retry_binds() {
    let (n, id, staging) = with_pvc_a_staged();
    let target = target_of("pod-1", "pvc-a");
    n.fake.fail_next_bind(io::ErrorKind::PermissionDenied);
    assert!(matches!(
        n.publish(&id, &staging, &target),
        Err(Error::Io { .. })
    ));
    assert_eq!(n.recorded_at(&target), None);
    n.publish(&id, &staging, &target).unwrap();
    assert_eq!(n.binds_at(&target), 2, "the failed one and the retry");
    assert_eq!(n.fake.mounts_at(&n.real(&target)), 1);
    assert_eq!(n.recorded_at(&target), Some(id.clone()));
}

// Unpublish.

#[test]
fn unpublish_unmounts_removes_and_forgets_and_a_repeat_succeeds() {
    let (n, id, staging) = with_pvc_a_staged();
    let target = target_of("pod-1", "pvc-a");
    n.publish(&id, &staging, &target).unwrap();
    n.unpublish(&id, &target).unwrap();
    assert!(!n.fake.exists(&n.real(&target)));
    assert_eq!(n.recorded_at(&target), None);
    n.unpublish(&id, &target).unwrap();
    assert_eq!(n.binds_at(&target), 1, "no mount made by an unpublish");
    // The staging mount is not touched.
    assert_eq!(n.fake.mounts_at(&n.real(&staging)), 1);
}

#[test]
fn unpublish_after_an_earlier_attempt_unmounted_succeeds() {
    let (n, id, staging) = with_pvc_a_staged();
    let target = target_of("pod-1", "pvc-a");
    n.publish(&id, &staging, &target).unwrap();
    // The earlier attempt unmounted, then died before removing anything.
    n.fake.unmount_behind(&n.real(&target));
    n.unpublish(&id, &target).unwrap();
    assert!(!n.fake.exists(&n.real(&target)));
    assert_eq!(n.recorded_at(&target), None);
}

#[test]
fn unpublish_of_a_target_whose_parents_are_gone_succeeds() {
    let n = node();
    let id = n.volume("pvc-a");
    n.unpublish(&id, &target_of("pod-gone", "pvc-a")).unwrap();
    assert!(n.fake.calls().is_empty(), "{:?}", n.fake.calls());
}

#[test]
fn unpublish_of_a_staging_path_is_failed_precondition_and_leaves_it() {
    let (n, id, staging) = with_pvc_a_staged();
    assert_eq!(code(n.unpublish(&id, &staging)), Code::FailedPrecondition);
    assert_eq!(n.fake.mounts_at(&n.real(&staging)), 1);
    assert!(!n.fake.calls().contains(&Call::UnmountAll(n.real(&staging))));
}

#[test]
fn unpublish_of_another_volumes_target_is_refused_and_leaves_it() {
    let n = node();
    let (a, staging) = n.staged_volume("pvc-a");
    let b = n.volume("pvc-b");
    let target = target_of("pod-1", "pvc-a");
    n.publish(&a, &staging, &target).unwrap();
    assert_eq!(code(n.unpublish(&b, &target)), Code::FailedPrecondition);
    assert_eq!(n.fake.mounts_at(&n.real(&target)), 1);
    assert_eq!(n.recorded_at(&target), Some(a.clone()));
}

#[test]
fn unpublish_leaves_a_target_holding_foreign_files_and_succeeds() {
    let (n, id, staging) = with_pvc_a_staged();
    let target = target_of("pod-1", "pvc-a");
    n.publish(&id, &staging, &target).unwrap();
    n.fake.add_foreign_file_in(&n.real(&target));
    n.unpublish(&id, &target).unwrap();
    assert!(n.fake.exists(&n.real(&target)), "not ours to delete");
    assert_eq!(n.fake.mounts_at(&n.real(&target)), 0);
    assert_eq!(n.recorded_at(&target), None);
}

// Unstage.

#[test]
fn unstage_unmounts_forgets_and_a_repeat_succeeds() {
    let (n, id, staging) = with_pvc_a_staged();
    n.unstage(&id, &staging).unwrap();
    n.unstage(&id, &staging).unwrap();
    assert_eq!(n.fake.mounts_at(&n.real(&staging)), 0);
    assert_eq!(n.ctx.staged.lookup(&n.real(&staging)).unwrap(), None);
    assert_eq!(n.binds_at(&staging), 1);
    assert_eq!(n.backend.unstaged.lock().unwrap().len(), 2);
}

#[test]
fn unstage_of_a_path_holding_another_volume_is_failed_precondition() {
    let n = node();
    let (a, staging) = n.staged_volume("pvc-a");
    let b = n.volume("pvc-b");
    assert_eq!(code(n.unstage(&b, &staging)), Code::FailedPrecondition);
    assert_eq!(n.fake.mounts_at(&n.real(&staging)), 1);
    assert_eq!(
        n.ctx.staged.lookup(&n.real(&staging)).unwrap(),
        Some(a.clone())
    );
    assert!(n.backend.unstaged.lock().unwrap().is_empty());
}

// Raw block volumes.

#[test]
fn a_block_publish_repeated_places_the_device_once() {
    let n = node();
    let id = n.volume("pvc-a");
    let staging = staging_of("pvc-a");
    let cap = block_capability(Mode::SingleNodeWriter);
    n.stage_as(&id, &staging, &cap).unwrap();
    let target = "plugins/kubernetes.io/csi/volumeDevices/publish/pvc-a/pod-1";
    n.publish_as(&id, &staging, target, &cap, false).unwrap();
    n.publish_as(&id, &staging, target, &cap, false).unwrap();
    let binds = n.fake.binds_at(&n.real(target));
    assert!(
        matches!(binds.as_slice(), [Call::BindFile { .. }]),
        "{binds:?}"
    );
    n.unpublish(&id, target).unwrap();
    assert!(!n.fake.exists(&n.real(target)));
}

#[test]
fn a_block_publish_on_a_directory_is_failed_precondition_and_records_nothing() {
    let n = node();
    let id = n.volume("pvc-a");
    let staging = staging_of("pvc-a");
    let cap = block_capability(Mode::SingleNodeWriter);
    n.stage_as(&id, &staging, &cap).unwrap();
    let target = "plugins/kubernetes.io/csi/volumeDevices/publish/pvc-a/pod-1";
    n.fake.add_dir(&n.real(target));
    let result = n.publish_as(&id, &staging, target, &cap, false);
    assert_eq!(code(result), Code::FailedPrecondition);
    assert_eq!(n.recorded_at(target), None);
}

// Inline ephemeral volumes.

#[test]
fn an_inline_publish_repeated_binds_once_and_another_flag_conflicts() {
    let n = node();
    let id = n.volume("csi-inline");
    let relative = target_of("pod-1", "inline");
    let target = n.path(&relative);
    let rw = BindFlags::default();
    n.ctx.publish_inline(&id, &target, rw, &n.backend).unwrap();
    n.ctx.publish_inline(&id, &target, rw, &n.backend).unwrap();
    assert_eq!(n.binds_at(&relative), 1, "bound again");
    let ro = rw.read_only();
    let result = n.ctx.publish_inline(&id, &target, ro, &n.backend);
    assert_eq!(code(result), Code::AlreadyExists);
}
