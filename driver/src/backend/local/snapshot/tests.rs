use super::*;

use crate::backend::local::tests::request;

fn backend(root: &Path) -> Arc<LocalBackend> {
    Arc::new(crate::backend::local::tests::backend(root))
}

fn name(n: &str) -> VolumeName {
    VolumeName::parse(n).unwrap()
}

async fn snapshot(b: &Arc<LocalBackend>, n: &str, source: &VolumeId) -> Result<Snapshot> {
    match b.snapshot_state(&name(n), source)? {
        SnapshotState::Ready(s) => Ok(s),
        SnapshotState::Running(job) => job.wait().await,
        SnapshotState::New(plan) => b.start_snapshot(plan).wait().await,
    }
}

async fn restore(b: &Arc<LocalBackend>, req: &NewVolume, source: &ContentSource) -> Result<Volume> {
    match b.restore_state(req, source)? {
        RestoreState::Existing(v) => Ok(v),
        RestoreState::Running(job) => job.wait().await,
        RestoreState::New(plan) => b.start_restore(plan).wait().await,
    }
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[tokio::test]
async fn a_snapshot_restores_into_a_new_volume_with_its_content() {
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    let source = b.create_volume(&request("src", 8192)).unwrap();
    let data = root.path().join("volumes/src/data");
    std::fs::create_dir(data.join("dir")).unwrap();
    std::fs::write(data.join("dir/file"), b"before").unwrap();

    let snap = snapshot(&b, "snap-1", &source.id).await.unwrap();
    assert!(snap.ready);
    assert_eq!(snap.size_bytes, 8192);
    assert_eq!(snap.id.to_string(), "snap:node-a:snap-1");
    // Changes after the snapshot do not reach it.
    std::fs::write(data.join("dir/file"), b"after").unwrap();
    assert_eq!(
        std::fs::read(root.path().join("snapshots/snap-1/payload/dir/file")).unwrap(),
        b"before"
    );
    // Same name, same source: the same snapshot.
    assert_eq!(snapshot(&b, "snap-1", &source.id).await.unwrap(), snap);

    let from = ContentSource::Snapshot(snap.id.clone());
    let restored = restore(&b, &request("restored", 0), &from).await.unwrap();
    assert_eq!(restored.capacity_bytes, 8192, "the source's size");
    assert_eq!(
        std::fs::read(root.path().join("volumes/restored/data/dir/file")).unwrap(),
        b"before"
    );
    // The data directory keeps the source's mode (0777 for a new volume).
    let mode = std::fs::metadata(root.path().join("volumes/restored/data"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o777
    );
    // Idempotent; another source, or none, for the same name conflicts.
    assert_eq!(
        restore(&b, &request("restored", 0), &from).await.unwrap(),
        restored
    );
    let clone = ContentSource::Volume(source.id.clone());
    assert!(matches!(
        restore(&b, &request("restored", 0), &clone).await,
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        b.create_volume(&request("restored", 0)),
        Err(Error::AlreadyExists(_))
    ));
    assert!(empty(&root.path().join("tmp")));
}

#[tokio::test]
async fn a_clone_copies_the_volume_as_it_is_now() {
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    let source = b.create_volume(&request("src", 4096)).unwrap();
    std::fs::write(root.path().join("volumes/src/data/f"), b"now").unwrap();
    let from = ContentSource::Volume(source.id.clone());
    let clone = restore(&b, &request("clone", 16384), &from).await.unwrap();
    assert_eq!(
        clone.capacity_bytes, 16384,
        "larger than the source is fine"
    );
    assert_eq!(
        std::fs::read(root.path().join("volumes/clone/data/f")).unwrap(),
        b"now"
    );
}

#[tokio::test]
async fn conflicts_and_missing_sources_get_their_codes() {
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    let a = b.create_volume(&request("a", 4096)).unwrap();
    let other = b.create_volume(&request("other", 4096)).unwrap();
    snapshot(&b, "s", &a.id).await.unwrap();
    let code = |r: Result<Snapshot>| r.unwrap_err().code();
    assert_eq!(
        code(snapshot(&b, "s", &other.id).await),
        tonic::Code::AlreadyExists
    );
    let gone = VolumeId::parse("local:node-a:gone").unwrap();
    assert_eq!(code(snapshot(&b, "t", &gone).await), tonic::Code::NotFound);
    let foreign = VolumeId::parse("local:node-b:a").unwrap();
    assert_eq!(
        code(snapshot(&b, "t", &foreign).await),
        tonic::Code::NotFound
    );

    let rcode = |r: Result<Volume>| r.unwrap_err().code();
    let s = ContentSource::Snapshot(b.snapshot_id(name("s").key()));
    assert_eq!(
        rcode(restore(&b, &request("small", 1024), &s).await),
        tonic::Code::OutOfRange
    );
    let mut limited = request("limited", 0);
    limited.capacity.limit = Some(2048);
    assert_eq!(
        rcode(restore(&b, &limited, &s).await),
        tonic::Code::OutOfRange
    );
    let missing = ContentSource::Snapshot(SnapshotId::parse("snap:node-a:nope").unwrap());
    assert_eq!(
        rcode(restore(&b, &request("x", 0), &missing).await),
        tonic::Code::NotFound
    );
    let elsewhere = ContentSource::Snapshot(SnapshotId::parse("snap:node-b:s").unwrap());
    assert_eq!(
        rcode(restore(&b, &request("x", 0), &elsewhere).await),
        tonic::Code::ResourceExhausted
    );
    let elsewhere = ContentSource::Volume(foreign);
    assert_eq!(
        rcode(restore(&b, &request("x", 0), &elsewhere).await),
        tonic::Code::ResourceExhausted
    );
    // Nothing was made by the refused calls.
    assert!(!root.path().join("volumes/x").exists());
    assert!(!root.path().join("volumes/small").exists());
    assert!(empty(&root.path().join("tmp")));
}

#[tokio::test]
async fn snapshots_outlive_their_source_and_deletes_are_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    let v = b.create_volume(&request("v", 4096)).unwrap();
    std::fs::write(root.path().join("volumes/v/data/f"), b"kept").unwrap();
    let snap = snapshot(&b, "s", &v.id).await.unwrap();
    b.delete_volume(&v.id).unwrap();
    assert_eq!(b.find_snapshot(&snap.id).unwrap().unwrap(), snap);
    let from = ContentSource::Snapshot(snap.id.clone());
    restore(&b, &request("back", 0), &from).await.unwrap();
    assert_eq!(
        std::fs::read(root.path().join("volumes/back/data/f")).unwrap(),
        b"kept"
    );
    b.remove_snapshot(&snap.id).unwrap();
    b.remove_snapshot(&snap.id).unwrap();
    assert!(b.find_snapshot(&snap.id).unwrap().is_none());
    assert!(empty(&root.path().join("snapshots")));
    assert!(b.settle_deletes(std::time::Duration::from_secs(30)));
    assert!(empty(&root.path().join("trash")));
    let foreign = SnapshotId::parse("snap:node-b:s").unwrap();
    assert!(matches!(
        b.remove_snapshot(&foreign),
        Err(Error::FailedPrecondition(_))
    ));
}

#[tokio::test]
async fn listing_pages_and_filters() {
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    let a = b.create_volume(&request("a", 0)).unwrap();
    let c = b.create_volume(&request("c", 0)).unwrap();
    for i in 0..5 {
        snapshot(&b, &format!("a{i}"), &a.id).await.unwrap();
    }
    snapshot(&b, "c0", &c.id).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = b.snapshot_page(after.as_ref(), 2, None).unwrap();
        assert!(page.snapshots.len() <= 2);
        seen.extend(page.snapshots.into_iter().map(|s| s.id.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    let of_c = b.snapshot_page(None, 0, Some(&c.id)).unwrap();
    assert_eq!(of_c.snapshots.len(), 1);
    assert_eq!(of_c.snapshots[0].id.to_string(), "snap:node-a:c0");
    let of_a = b.snapshot_page(None, 3, Some(&a.id)).unwrap();
    assert_eq!(of_a.snapshots.len(), 3);
    assert!(of_a.next.is_some());
}

#[tokio::test]
async fn restart_removes_half_made_snapshots_and_keeps_whole_ones() {
    let root = tempfile::tempdir().unwrap();
    let b = backend(root.path());
    let v = b.create_volume(&request("v", 0)).unwrap();
    snapshot(&b, "whole", &v.id).await.unwrap();
    // What a kill -9 mid-copy leaves: a scratch dir with a partial payload.
    std::fs::create_dir_all(root.path().join("tmp/half.1.0/payload/x")).unwrap();
    drop(b);
    let b = backend(root.path());
    assert!(empty(&root.path().join("tmp")));
    let all = b.snapshot_page(None, 0, None).unwrap();
    assert_eq!(all.snapshots.len(), 1);
    assert!(all.snapshots[0].ready);
}
