//! NFS volumes never destroy what they did not create (issue 15), against a
//! real NFS server (nfs-ganesha on 127.0.0.1): a directory that exists
//! without a Cairn record is never taken over, volumes never nest, and
//! deleting or archiving a volume never crosses into another one's
//! directory; the same for restores, clones and snapshots.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use cairn_harness::{require, require_nfs_lab, Ganesha};
use cairn_proto::v1::controller_client::ControllerClient;
use cairn_proto::v1::*;
use common::*;
use tonic::transport::Channel;
use tonic::Code;

/// An NFS CreateVolume whose directory is `sub_dir` (a literal or template).
fn in_dir(name: &str, port: u16, sub_dir: &str) -> CreateVolumeRequest {
    nfs_request(name, port, &[("subDir", sub_dir)])
}

/// Asserts a call failed with `code` and a message holding every one of `words`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    words: &[&str],
) {
    match result {
        Ok(v) => panic!("expected {code:?}, got success: {v:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "message: {}", status.message());
            for word in words {
                assert!(
                    status.message().contains(word),
                    "{word:?} not in: {}",
                    status.message()
                );
            }
        }
    }
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[track_caller]
fn assert_content(path: &Path, content: &str) {
    assert_eq!(
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        content,
        "{}",
        path.display()
    );
}

#[tokio::test]
async fn a_directory_cairn_did_not_create_is_never_adopted() {
    require!(require_nfs_lab());
    let (_server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;
    write(&export.join("legacy/db.dat"), "theirs");

    assert_refused(
        c.create_volume(in_dir("pvc-legacy", port, "legacy")).await,
        Code::AlreadyExists,
        &[
            "legacy",
            "no Cairn volume recorded it",
            "move the directory away",
        ],
    );
    // A template that happens to name it is refused the same way.
    let mut templated = in_dir("pvc-team", port, "${pvc.metadata.namespace}");
    templated
        .parameters
        .insert("csi.storage.k8s.io/pvc/namespace".into(), "legacy".into());
    assert_code(c.create_volume(templated).await, Code::AlreadyExists);
    // Nor is it filled by a clone.
    let source = create(&mut c, nfs_request("pvc-src", port, &[])).await;
    write(&export.join("pvc-src/mine"), "source");
    assert_code(
        c.create_volume(with_source(
            in_dir("pvc-legacy-clone", port, "legacy"),
            vol_source(&source.volume_id),
        ))
        .await,
        Code::AlreadyExists,
    );
    // DeleteVolume of an id naming it (no volume was ever created there):
    // nothing is Cairn's to delete.
    for policy in ["d", "a"] {
        c.delete_volume(delete_request(&format!(
            "nfs:{policy}:{port}:127.0.0.1#/export#legacy"
        )))
        .await
        .unwrap();
    }
    assert_content(&export.join("legacy/db.dat"), "theirs");
    assert!(!export.join(".cairn-volumes/legacy").exists());

    // A retained volume's directory is no volume any more: a new volume
    // (even of the same name) does not take its data over.
    let kept = create(
        &mut c,
        nfs_request("pvc-kept", port, &[("onDelete", "retain")]),
    )
    .await;
    write(&export.join("pvc-kept/data"), "kept");
    c.delete_volume(delete_request(&kept.volume_id))
        .await
        .unwrap();
    assert_code(
        c.create_volume(nfs_request("pvc-kept", port, &[("onDelete", "retain")]))
            .await,
        Code::AlreadyExists,
    );
    c.delete_volume(delete_request(&kept.volume_id))
        .await
        .unwrap();
    assert_content(&export.join("pvc-kept/data"), "kept");

    // Refusals leave no claim behind, and the volumes that were made
    // delete only their own.
    assert!(!export.join(".cairn-volumes/legacy").exists());
    c.delete_volume(delete_request(&source.volume_id))
        .await
        .unwrap();
    assert!(!export.join("pvc-src").exists());
    assert_content(&export.join("legacy/db.dat"), "theirs");
    assert_content(&export.join("pvc-kept/data"), "kept");
}

#[tokio::test]
async fn volumes_never_nest_in_either_order() {
    require!(require_nfs_lab());
    let (_server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;

    // Outer first: the inner one is refused, naming the outer volume.
    let outer = create(&mut c, in_dir("pvc-outer", port, "shared-dir")).await;
    write(&export.join("shared-dir/outer-data"), "outer");
    assert_refused(
        c.create_volume(in_dir("pvc-inner", port, "shared-dir/inner"))
            .await,
        Code::AlreadyExists,
        &["shared-dir/inner", "lie inside", "\"pvc-outer\""],
    );
    assert_refused(
        c.create_volume(in_dir("pvc-deep", port, "shared-dir/a/b/c"))
            .await,
        Code::AlreadyExists,
        &["\"pvc-outer\""],
    );
    // Nor can a clone or a restore land inside it.
    let snapshot = try_snapshot(&mut c, "snap-outer", &outer.volume_id)
        .await
        .unwrap();
    assert_refused(
        c.create_volume(with_source(
            in_dir("pvc-restored-inside", port, "shared-dir/restored"),
            snap_source(&snapshot.snapshot_id),
        ))
        .await,
        Code::AlreadyExists,
        &["\"pvc-outer\""],
    );
    assert_refused(
        c.create_volume(with_source(
            in_dir("pvc-cloned-inside", port, "shared-dir/cloned"),
            vol_source(&outer.volume_id),
        ))
        .await,
        Code::AlreadyExists,
        &["\"pvc-outer\""],
    );
    assert!(!export.join("shared-dir/inner").exists());
    assert!(!export.join("shared-dir/restored").exists());
    assert!(!export.join("shared-dir/.restored.restoring").exists());

    // Inner first: the outer one is refused, naming the inner volume,
    // though the directory around it was made by Cairn (as a parent).
    let inner = create(&mut c, in_dir("pvc-nested", port, "nest/deep/inner")).await;
    write(&export.join("nest/deep/inner/inner-data"), "inner");
    for around in ["nest", "nest/deep"] {
        assert_refused(
            c.create_volume(in_dir("pvc-around", port, around)).await,
            Code::AlreadyExists,
            &[around, "contain", "nest/deep/inner", "\"pvc-nested\""],
        );
    }
    assert_refused(
        c.create_volume(with_source(
            in_dir("pvc-around", port, "nest"),
            vol_source(&outer.volume_id),
        ))
        .await,
        Code::AlreadyExists,
        &["\"pvc-nested\""],
    );
    // With the parent moved away (an operator's cleanup) the flat records
    // still name the inner volume, without a walk of the export.
    std::fs::rename(export.join("nest"), export.join("nest-moved")).unwrap();
    assert_refused(
        c.create_volume(in_dir("pvc-around", port, "nest")).await,
        Code::AlreadyExists,
        &["contain", "nest/deep/inner", "\"pvc-nested\""],
    );
    std::fs::rename(export.join("nest-moved"), export.join("nest")).unwrap();

    // Neighbours that share only a prefix of a name are not nested.
    let beside = create(&mut c, in_dir("pvc-beside", port, "shared-dir-2")).await;

    // Each volume's DeleteVolume removes its own and nothing else.
    c.delete_volume(delete_request(&outer.volume_id))
        .await
        .unwrap();
    assert!(!export.join("shared-dir").exists());
    assert_content(&export.join("nest/deep/inner/inner-data"), "inner");
    assert!(export.join("shared-dir-2").is_dir());
    // The place is free again.
    let later = create(&mut c, in_dir("pvc-inner", port, "shared-dir/inner")).await;
    for v in [&inner, &beside, &later] {
        c.delete_volume(delete_request(&v.volume_id)).await.unwrap();
    }
    assert!(!export.join("nest/deep/inner").exists());
    assert!(
        export.join("nest/deep").is_dir(),
        "parents are not Cairn's to remove"
    );
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snapshot.snapshot_id,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Volumes recorded by earlier versions (the record beside the directory)
/// keep working, and the nesting earlier versions allowed is never crossed.
#[tokio::test]
async fn old_layout_volumes_keep_working_and_are_never_crossed() {
    require!(require_nfs_lab());
    let (_server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;

    // What an earlier version left: pvc-old-outer at old-outer, and, inside
    // it, pvc-old-inner at old-outer/inner (which it allowed).
    let old_record = |name: &str| {
        serde_json::json!({
            "name": name,
            "capacity_bytes": 5u64 << 20,
            "parameters": {"server": "127.0.0.1", "share": "/export"},
        })
        .to_string()
    };
    write(
        &export.join(".old-outer.cairn.json"),
        &old_record("pvc-old-outer"),
    );
    write(&export.join("old-outer/outer-data"), "outer");
    write(
        &export.join("old-outer/.inner.cairn.json"),
        &old_record("pvc-old-inner"),
    );
    write(&export.join("old-outer/inner/inner-data"), "inner");
    let outer_id = format!("nfs:d:{port}:127.0.0.1#/export#old-outer");
    let inner_id = format!("nfs:d:{port}:127.0.0.1#/export#old-outer/inner");

    let got = c
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: outer_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.unwrap().capacity_bytes, 5 << 20);
    let grown = c
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: outer_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 7 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(grown.capacity_bytes, 7 << 20);
    // Rewritten where it was: the record stays in the old layout.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(export.join(".old-outer.cairn.json")).unwrap())
            .unwrap();
    assert_eq!(record["capacity_bytes"], 7u64 << 20);
    assert!(!export.join(".cairn-volumes/old-outer").exists());

    // A new volume is refused inside an old one, naming it.
    assert_refused(
        c.create_volume(in_dir("pvc-new", port, "old-outer/new"))
            .await,
        Code::AlreadyExists,
        &["\"pvc-old-outer\""],
    );
    // Deleting (or archiving) the outer one would take the inner one along:
    // refused, naming it, and nothing of either is touched.
    for policy in ["d", "a"] {
        let id = outer_id.replacen("nfs:d:", &format!("nfs:{policy}:"), 1);
        assert_refused(
            c.delete_volume(delete_request(&id)).await,
            Code::FailedPrecondition,
            &["old-outer/inner"],
        );
    }
    assert_content(&export.join("old-outer/outer-data"), "outer");
    assert_content(&export.join("old-outer/inner/inner-data"), "inner");
    assert!(export.join(".old-outer.cairn.json").is_file());

    // Inner first, then the outer one goes too.
    c.delete_volume(delete_request(&inner_id)).await.unwrap();
    assert!(!export.join("old-outer/inner").exists());
    assert!(!export.join("old-outer/.inner.cairn.json").exists());
    assert_content(&export.join("old-outer/outer-data"), "outer");
    c.delete_volume(delete_request(&outer_id)).await.unwrap();
    assert!(!export.join("old-outer").exists());
    assert!(!export.join(".old-outer.cairn.json").exists());
}

/// A CreateVolume stopped between its claim and its record is finished by
/// its retry; a claim never makes someone else's directory Cairn's.
#[tokio::test]
async fn an_interrupted_create_resumes_but_a_claim_adopts_nothing() {
    require!(require_nfs_lab());
    let (_server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;
    let claim = |req: &CreateVolumeRequest| {
        let parameters: BTreeMap<_, _> = req.parameters.clone().into_iter().collect();
        serde_json::json!({
            "name": req.name,
            "capacity_bytes": 0,
            "parameters": parameters,
            "pending": true,
        })
        .to_string()
    };

    // Stopped after mkdir, before the record: resumed.
    let half = nfs_request("pvc-half", port, &[]);
    write(&export.join(".cairn-volumes/pvc-half"), &claim(&half));
    std::fs::create_dir(export.join("pvc-half")).unwrap();
    // A claim is not a volume yet.
    let half_id = format!("nfs:d:{port}:127.0.0.1#/export#pvc-half");
    assert_code(
        c.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: half_id.clone(),
        })
        .await,
        Code::NotFound,
    );
    // Another name cannot take the claimed directory.
    assert_refused(
        c.create_volume(in_dir("pvc-thief", port, "pvc-half")).await,
        Code::AlreadyExists,
        &["being created"],
    );
    let resumed = create(&mut c, half).await;
    assert_eq!(resumed.volume_id, half_id);
    assert_eq!(resumed.capacity_bytes, 5 << 20);
    let record = std::fs::read_to_string(export.join(".cairn-volumes/pvc-half")).unwrap();
    assert!(!record.contains("pending"), "{record}");

    // A claim whose directory someone else filled: refused, untouched, and
    // DeleteVolume of its id leaves the data where it is.
    let grabbed = nfs_request("pvc-grabbed", port, &[]);
    write(&export.join(".cairn-volumes/pvc-grabbed"), &claim(&grabbed));
    write(&export.join("pvc-grabbed/data"), "theirs");
    let grabbed_id = format!("nfs:d:{port}:127.0.0.1#/export#pvc-grabbed");
    c.delete_volume(delete_request(&grabbed_id)).await.unwrap();
    assert_content(&export.join("pvc-grabbed/data"), "theirs");
    write(&export.join(".cairn-volumes/pvc-grabbed"), &claim(&grabbed));
    assert_code(c.create_volume(grabbed).await, Code::AlreadyExists);
    assert_content(&export.join("pvc-grabbed/data"), "theirs");
    assert!(!export.join(".cairn-volumes/pvc-grabbed").exists());

    // A request that can never succeed leaves no claim to reserve its place.
    assert_code(
        c.create_volume(with_source(
            nfs_request("pvc-no-source", port, &[]),
            snap_source(&format!("nfs-snap:{port}:127.0.0.1#/export#no-such")),
        ))
        .await,
        Code::NotFound,
    );
    assert!(!export.join(".cairn-volumes/pvc-no-source").exists());
    assert!(!export.join("pvc-no-source").exists());

    c.delete_volume(delete_request(&half_id)).await.unwrap();
    assert!(!export.join("pvc-half").exists());
}

#[tokio::test]
async fn snapshots_never_touch_a_copy_cairn_did_not_make() {
    require!(require_nfs_lab());
    let (_server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;
    let source = create(&mut c, nfs_request("pvc-src", port, &[])).await;
    write(&export.join("pvc-src/file"), "source");

    // Something else's directory where a snapshot would go.
    write(&export.join(".cairn-snapshots/snap-x/theirs"), "theirs");
    assert_refused(
        try_snapshot(&mut c, "snap-x", &source.volume_id).await,
        Code::AlreadyExists,
        &["snap-x", "without a Cairn record"],
    );
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: format!("nfs-snap:{port}:127.0.0.1#/export#snap-x"),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_content(&export.join(".cairn-snapshots/snap-x/theirs"), "theirs");
    assert!(!export.join(".cairn-snapshots/.snap-x.claim").exists());

    // Our own attempt, stopped mid-copy: its claim makes the leftovers ours.
    let claim = serde_json::json!({"name": "snap-y", "source": source.volume_id}).to_string();
    write(&export.join(".cairn-snapshots/.snap-y.claim"), &claim);
    write(
        &export.join(".cairn-snapshots/.snap-y.partial/junk"),
        "junk",
    );
    let snapshot = try_snapshot(&mut c, "snap-y", &source.volume_id)
        .await
        .unwrap();
    assert_content(&export.join(".cairn-snapshots/snap-y/file"), "source");
    assert!(!export.join(".cairn-snapshots/.snap-y.partial").exists());
    // Another volume's snapshot of that name is refused while it is made or kept.
    let other = create(&mut c, nfs_request("pvc-other", port, &[])).await;
    assert_code(
        try_snapshot(&mut c, "snap-y", &other.volume_id).await,
        Code::AlreadyExists,
    );
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snapshot.snapshot_id,
        ..Default::default()
    })
    .await
    .unwrap();
    for gone in ["snap-y", ".snap-y.claim", ".snap-y.cairn.json"] {
        assert!(
            !export.join(".cairn-snapshots").join(gone).exists(),
            "{gone}"
        );
    }
    assert_content(&export.join(".cairn-snapshots/snap-x/theirs"), "theirs");
}

/// xorshift64*: a small PRNG with a fixed seed, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Whether one directory is the other or lies inside it.
fn overlaps(a: &str, b: &str) -> bool {
    a == b || a.starts_with(&format!("{b}/")) || b.starts_with(&format!("{a}/"))
}

struct Live {
    id: String,
    dir: String,
    on_delete: &'static str,
    token: String,
}

const TEMPLATES: &[&str] = &[
    "${pvc.metadata.namespace}",
    "${pvc.metadata.namespace}/${pvc.metadata.name}",
    "${pvc.metadata.name}",
    "${pvc.metadata.namespace}/${pvc.metadata.name}/data",
    "shared",
    "shared/${pvc.metadata.name}",
];
const NAMESPACES: &[&str] = &["team-a", "team-b", "shared"];
const PVC_NAMES: &[&str] = &["db", "web", "team-a"];
const POLICIES: &[&str] = &["delete", "delete", "retain", "archive"];

/// How often each outcome came up: the property holds over a run that
/// tried them all.
#[derive(Default)]
struct Tally {
    created: usize,
    refused: usize,
    deleted: usize,
}

/// One seed's random walk: two StorageClasses with templates drawn from
/// `TEMPLATES` on an export of its own, the volumes live on it, and what
/// was done so far (printed, with the seed, in every failure).
struct Walk<'a> {
    c: &'a mut ControllerClient<Channel>,
    seed: u64,
    port: u16,
    export: std::path::PathBuf,
    rng: Rng,
    classes: [&'static str; 2],
    live: Vec<Live>,
    history: Vec<String>,
}

impl<'a> Walk<'a> {
    fn new(c: &'a mut ControllerClient<Channel>, seed: u64, server: &Ganesha) -> Self {
        let mut rng = Rng(seed);
        let classes = [*rng.pick(TEMPLATES), *rng.pick(TEMPLATES)];
        Walk {
            c,
            seed,
            port: server.addr().port(),
            export: server.export_dir().to_path_buf(),
            rng,
            classes,
            live: Vec::new(),
            history: Vec::new(),
        }
    }

    /// A CreateVolume of a random class, namespace, PVC name and policy:
    /// it succeeds exactly when its directory is new and overlaps no live
    /// volume, and is otherwise refused as AlreadyExists.
    async fn create_at_random(&mut self, step: usize, tally: &mut Tally) {
        let seed = self.seed;
        let template = *self.rng.pick(&self.classes);
        let (namespace, pvc) = (*self.rng.pick(NAMESPACES), *self.rng.pick(PVC_NAMES));
        let on_delete = *self.rng.pick(POLICIES);
        let name = format!("pvc-{seed:x}-{step}");
        let dir = template
            .replace("${pvc.metadata.namespace}", namespace)
            .replace("${pvc.metadata.name}", pvc);
        let mut req = nfs_request(
            &name,
            self.port,
            &[("subDir", template), ("onDelete", on_delete)],
        );
        req.parameters
            .insert("csi.storage.k8s.io/pvc/namespace".into(), namespace.into());
        req.parameters
            .insert("csi.storage.k8s.io/pvc/name".into(), pvc.into());
        let expect_ok =
            !self.export.join(&dir).exists() && !self.live.iter().any(|v| overlaps(&v.dir, &dir));
        self.history
            .push(format!("create {name} at {dir} ({on_delete})"));
        let history = &self.history;
        match self.c.create_volume(req).await {
            Ok(response) => {
                assert!(
                    expect_ok,
                    "seed {seed:x}, step {step}: CreateVolume {name} succeeded over {dir}, \
                     which exists or overlaps a live volume: {history:#?}"
                );
                tally.created += 1;
                let volume = response.into_inner().volume.unwrap();
                let token = format!("{name} was here");
                write(&self.export.join(&dir).join("token"), &token);
                self.live.push(Live {
                    id: volume.volume_id,
                    dir,
                    on_delete,
                    token,
                });
            }
            Err(status) => {
                assert!(
                    !expect_ok,
                    "seed {seed:x}, step {step}: CreateVolume {name} was refused {dir}, \
                     which is new and overlaps no live volume: {status}: {history:#?}"
                );
                assert_eq!(
                    status.code(),
                    Code::AlreadyExists,
                    "seed {seed:x}, step {step}: CreateVolume {name} over {dir} was refused \
                     with another code than AlreadyExists: {status}"
                );
                tally.refused += 1;
            }
        }
    }

    /// DeleteVolume of a random live volume: its directory is gone unless
    /// its policy is retain. Two archives of one directory within a second
    /// may abort; the volume then stays live.
    async fn delete_at_random(&mut self, step: usize, tally: &mut Tally) {
        let seed = self.seed;
        let index = self.rng.below(self.live.len());
        let (id, dir, on_delete) = {
            let v = &self.live[index];
            (v.id.clone(), v.dir.clone(), v.on_delete)
        };
        self.history.push(format!("delete {id} at {dir}"));
        let history = &self.history;
        match self.c.delete_volume(delete_request(&id)).await {
            Ok(_) => {
                let gone = on_delete != "retain";
                assert_eq!(
                    !self.export.join(&dir).exists(),
                    gone,
                    "seed {seed:x}, step {step}: after DeleteVolume {id} ({on_delete}), \
                     whether {dir} is gone: {history:#?}"
                );
                self.live.remove(index);
                tally.deleted += 1;
            }
            // Two archives of one directory within a second.
            Err(status) if status.code() == Code::Aborted && on_delete == "archive" => {}
            Err(status) => panic!(
                "seed {seed:x}, step {step}: DeleteVolume {id} at {dir} failed: {status}: \
                 {history:#?}"
            ),
        }
    }

    /// Every live volume still holds the token written into it when it
    /// was created.
    #[track_caller]
    fn assert_every_live_volume_whole(&self, after: &str) {
        let (seed, history) = (self.seed, &self.history);
        for v in &self.live {
            let token = self.export.join(&v.dir).join("token");
            assert_eq!(
                std::fs::read_to_string(&token).ok().as_deref(),
                Some(v.token.as_str()),
                "seed {seed:x}, after {after}: {} lost its data: {history:#?}",
                v.dir
            );
        }
    }

    /// Every volume is still whole until its own DeleteVolume.
    async fn delete_every_volume_in_turn(&mut self) {
        let seed = self.seed;
        while let Some(v) = self.live.pop() {
            self.c
                .delete_volume(delete_request(&v.id))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "seed {seed:x}, tearing down: DeleteVolume {} failed: {e}",
                        v.id
                    )
                });
            self.assert_every_live_volume_whole(&format!(
                "tearing down, DeleteVolume {} at {}",
                v.id, v.dir
            ));
        }
    }
}

/// Two StorageClasses with random subDir templates on one export, volumes
/// created and deleted in a random order: every CreateVolume succeeds
/// exactly when its directory is new and overlaps no live volume, and no
/// volume's data ever disappears but by its own DeleteVolume.
#[tokio::test]
async fn random_templates_on_one_export_never_lose_another_volumes_data() {
    require!(require_nfs_lab());
    let driver = TestDriver::start();
    let mut c = driver.controller().await;

    let mut tally = Tally::default();
    for seed in [0x5eed_0001u64, 0x5eed_0002, 0x5eed_0003] {
        // A server (and export) of its own per seed: the export is only
        // ever changed through the server while it runs.
        let server = Ganesha::start()
            .unwrap_or_else(|e| panic!("seed {seed:x}: starting nfs-ganesha: {e:?}"));
        let mut walk = Walk::new(&mut c, seed, &server);
        for step in 0..40 {
            if walk.live.is_empty() || walk.rng.below(10) < 6 {
                walk.create_at_random(step, &mut tally).await;
            } else {
                walk.delete_at_random(step, &mut tally).await;
            }
            walk.assert_every_live_volume_whole(&format!("step {step}"));
        }
        walk.delete_every_volume_in_turn().await;
    }
    let Tally {
        created,
        refused,
        deleted,
    } = tally;
    eprintln!("{created} created, {refused} refused, {deleted} deleted at random");
    assert!(
        created >= 10 && refused >= 10 && deleted >= 5,
        "the random walks did not try every outcome often enough: \
         {created} created, {refused} refused, {deleted} deleted"
    );
}

/// The record mirror (`.cairn-volumes/<subDir>`) after a crash: empty
/// directories and temporary files a claim left never block a volume, but
/// a record beneath a directory does, and the refusal names its volume.
#[tokio::test]
async fn crash_leftovers_in_the_record_mirror_never_block_a_volume() {
    require!(require_nfs_lab());
    let (_server, port, export, driver) = nfs_lab();
    let mut c = driver.controller().await;
    let mirror = export.join(".cairn-volumes");
    std::fs::create_dir_all(mirror.join("stale/deeper/still")).unwrap();
    write(&mirror.join("stale/.inner.tmp-1-2"), "half a claim");

    let stale = create(&mut c, in_dir("pvc-stale", port, "stale")).await;
    assert!(
        mirror.join("stale").is_file(),
        "the record replaced the leftovers"
    );
    assert!(export.join("stale").is_dir());

    // A volume inside: its record is beneath `held`, so `held` is refused,
    // by the volume's name, and nothing of it is touched.
    let inner = create(&mut c, in_dir("pvc-inner", port, "held/inner")).await;
    write(&export.join("held/inner/data"), "inner's");
    assert_refused(
        c.create_volume(in_dir("pvc-outer", port, "held")).await,
        Code::AlreadyExists,
        &["contain", "held/inner", "pvc-inner"],
    );
    assert_content(&export.join("held/inner/data"), "inner's");
    assert!(mirror.join("held/inner").is_file());

    c.delete_volume(delete_request(&inner.volume_id))
        .await
        .unwrap();
    c.delete_volume(delete_request(&stale.volume_id))
        .await
        .unwrap();
    // The mirror keeps directories only while records lie beneath them.
    let left: Vec<_> = std::fs::read_dir(&mirror)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in the mirror: {left:?}");
}

/// CreateVolume calls for nested directories, or for one directory under
/// two ids (two onDelete policies), racing each other: never both succeed.
#[tokio::test]
async fn racing_creates_never_nest_or_share_a_directory() {
    require!(require_nfs_lab());
    let (_server, port, export, driver) = nfs_lab();
    let (mut a, mut b) = (driver.controller().await, driver.controller().await);
    let mut made = Vec::new();
    for round in 0..10 {
        let outer = format!("race-{round}");
        let inner = format!("race-{round}/inner");
        let (first, second) = if round % 2 == 0 {
            (in_dir("pvc-a", port, &outer), in_dir("pvc-b", port, &inner))
        } else {
            (
                nfs_request("pvc-a", port, &[("subDir", &outer)]),
                nfs_request("pvc-b", port, &[("subDir", &outer), ("onDelete", "retain")]),
            )
        };
        let (first, second) = tokio::join!(a.create_volume(first), b.create_volume(second));
        let won: Vec<Volume> = [first, second]
            .into_iter()
            .filter_map(|r| match r {
                Ok(r) => r.into_inner().volume,
                Err(s) => {
                    assert!(
                        matches!(s.code(), Code::AlreadyExists | Code::Aborted),
                        "round {round}: {s}"
                    );
                    None
                }
            })
            .collect();
        assert!(won.len() <= 1, "round {round}: both made: {won:?}");
        made.extend(won);
    }
    assert!(!made.is_empty(), "no round had a winner");
    for v in &made {
        a.delete_volume(delete_request(&v.volume_id)).await.unwrap();
    }
    let left: Vec<_> = std::fs::read_dir(export.join(".cairn-volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "records or claims left: {left:?}");
}
