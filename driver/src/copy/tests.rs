use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use cairn_harness::{require, require_loop_xfs, require_root};

use super::*;

fn no_cancel() -> AtomicBool {
    AtomicBool::new(false)
}

/// What a tree looks like, entry by entry: type, mode, owner, mtime,
/// content or link target, xattrs.
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
            format!("link -> {}", std::fs::read_link(&path).unwrap().display())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            let data = std::fs::read(&path).unwrap();
            let digest = sha2::Sha256::digest(&data);
            format!("file {} bytes {digest:x}", data.len())
        };
        // Symlink modes and times are not meaningful to compare; the root's
        // mtime changes when the copy is made inside the same parent.
        let attrs = if ft.is_symlink() {
            format!("{}:{}", meta.uid(), meta.gid())
        } else if rel.as_os_str().is_empty() {
            format!("{:o} {}:{}", meta.mode(), meta.uid(), meta.gid())
        } else {
            format!(
                "{:o} {}:{} {}.{}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                meta.mtime_nsec()
            )
        };
        let xattr = if ft.is_symlink() {
            String::new()
        } else {
            read_xattr(&path, "user.cairn").unwrap_or_default()
        };
        out.insert(rel, format!("{what} {attrs} {xattr}"));
    }
    out
}

use sha2::Digest;

fn read_xattr(path: &Path, name: &str) -> Option<String> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::getxattr(path, name, &mut buf[..]).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A tree with what a volume may hold: nested directories, odd modes and
/// owners, a symlink pointing outside, a sparse file, a fifo, a hard link,
/// an extended attribute.
fn populate(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::write(root.join("a/b/c/deep.txt"), b"deep").unwrap();
    std::fs::write(root.join("top.txt"), b"hello").unwrap();
    std::fs::set_permissions(root.join("top.txt"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(root.join("a/setgid"), b"x").unwrap();
    std::fs::set_permissions(
        root.join("a/setgid"),
        std::fs::Permissions::from_mode(0o2755),
    )
    .unwrap();
    std::fs::set_permissions(root.join("a/b"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    symlink("/etc/passwd", root.join("escape")).unwrap();
    symlink("../../..", root.join("a/b/up")).unwrap();
    symlink("a/b/c", root.join("inside")).unwrap();
    let sparse = std::fs::File::create(root.join("sparse")).unwrap();
    rustix::io::pwrite(&sparse, b"start", 0).unwrap();
    rustix::io::pwrite(&sparse, b"end", 8 << 20).unwrap();
    drop(sparse);
    std::fs::hard_link(root.join("top.txt"), root.join("a/hardlink")).unwrap();
    rustix::fs::mknodat(
        CWD,
        root.join("pipe"),
        FileType::Fifo,
        Mode::from_raw_mode(0o620),
        0,
    )
    .unwrap();
    // Not every filesystem takes user xattrs; the comparison sees either way.
    let _ = rustix::fs::setxattr(
        root.join("top.txt"),
        "user.cairn",
        b"kept",
        XattrFlags::empty(),
    );
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::lchown(root.join("a/b/c/deep.txt"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("escape"), Some(42), Some(43)).unwrap();
        std::os::unix::fs::lchown(root.join("a"), Some(1000), Some(1000)).unwrap();
    }
    // Distinct, old times, set last (children change their parent's mtime).
    for (i, rel) in ["top.txt", "a/b/c/deep.txt", "sparse", "a/b/c", "a/b", "a"]
        .iter()
        .enumerate()
    {
        let t = Timespec {
            tv_sec: 1_000_000_000 + i as i64 * 1000,
            tv_nsec: 123_456_789,
        };
        rustix::fs::utimensat(
            CWD,
            root.join(rel),
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
            AtFlags::empty(),
        )
        .unwrap();
    }
}

fn copy_tree_and_compare(base: &Path) -> CopyStats {
    let src = base.join("src");
    std::fs::create_dir(&src).unwrap();
    populate(&src);
    let stats = copy_path(&src, &base.join("dst"), &no_cancel()).unwrap();
    assert_eq!(describe(&src), describe(&base.join("dst")));
    assert_eq!(stats.symlinks, 3);
    assert_eq!(stats.fifos, 1);
    assert_eq!(stats.dirs, 4, "root, a, a/b, a/b/c");
    assert_eq!(stats.files, 4, "the hard link is not a fifth file");
    assert_eq!(stats.changed, 0);
    // Hard links stay links: one file with two names, copied once.
    let a = std::fs::metadata(base.join("dst/top.txt")).unwrap();
    let b = std::fs::metadata(base.join("dst/a/hardlink")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_ne!(
        a.ino(),
        std::fs::metadata(src.join("top.txt")).unwrap().ino(),
        "the copy must not be a link to its source"
    );
    assert_eq!(stats.hardlinks, 1);
    // Holes stay holes: 8 MiB of length, a few blocks of data.
    let sparse = std::fs::metadata(base.join("dst/sparse")).unwrap();
    assert_eq!(sparse.len(), (8 << 20) + 3);
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse file copied with {} bytes allocated",
        sparse.blocks() * 512
    );
    stats
}

#[test]
fn a_tree_is_copied_with_modes_owners_times_links_and_holes() {
    let base = tempfile::tempdir().unwrap();
    let stats = copy_tree_and_compare(base.path());
    assert_eq!(stats.skipped_special, 0);
}

#[test]
fn one_file_is_copied_as_a_payload() {
    let base = tempfile::tempdir().unwrap();
    let file = base.path().join("block");
    let f = std::fs::File::create(&file).unwrap();
    rustix::io::pwrite(&f, b"superblock", 1 << 20).unwrap();
    f.set_len(16 << 20).unwrap();
    drop(f);
    let stats = copy_path(&file, &base.path().join("copy"), &no_cancel()).unwrap();
    assert_eq!(stats.files, 1);
    assert_eq!(
        std::fs::read(base.path().join("copy")).unwrap(),
        std::fs::read(&file).unwrap()
    );
}

#[test]
fn a_symlink_payload_is_refused_not_followed() {
    let base = tempfile::tempdir().unwrap();
    std::fs::create_dir(base.path().join("elsewhere")).unwrap();
    std::fs::write(base.path().join("elsewhere/secret"), b"s").unwrap();
    symlink(base.path().join("elsewhere"), base.path().join("data")).unwrap();
    let err = copy_path(
        &base.path().join("data"),
        &base.path().join("copy"),
        &no_cancel(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("Symlink"), "{err}");
    assert!(!base.path().join("copy").exists());
}

#[test]
fn a_directory_swapped_for_a_symlink_is_never_traversed() {
    // A pod flips `src/d` between a directory and a symlink to a directory
    // outside the volume while copies run; no copy may contain what is
    // outside.
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"not yours").unwrap();
    let src = base.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..50 {
        std::fs::write(src.join(format!("f{i}")), b"x").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (src, outside, stop) = (src.clone(), outside.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_dir(src.join("d"));
                let _ = symlink(&outside, src.join("d"));
                let _ = std::fs::remove_file(src.join("d"));
                let _ = std::fs::create_dir(src.join("d"));
            }
        })
    };
    for i in 0..200 {
        let dst = base.path().join(format!("copy{i}"));
        copy_path(&src, &dst, &no_cancel()).unwrap();
        let d = dst.join("d");
        if let Ok(meta) = std::fs::symlink_metadata(&d) {
            if meta.is_dir() {
                assert!(
                    !d.join("secret").exists(),
                    "copy {i} followed a symlink out of the volume"
                );
            } else {
                assert!(meta.file_type().is_symlink());
            }
        }
        std::fs::remove_dir_all(&dst).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
}

#[test]
fn a_cancelled_copy_stops_with_aborted() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let err = copy_path(&src, &base.path().join("dst"), &AtomicBool::new(true)).unwrap_err();
    assert!(matches!(err, Error::Aborted(_)), "{err}");
}

#[test]
fn trees_deeper_than_the_limit_are_refused() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    let mut deep = src.clone();
    for _ in 0..MAX_DEPTH {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    let err = copy_path(&src, &base.path().join("dst"), &no_cancel()).unwrap_err();
    assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
    assert!(err.to_string().contains("deeper"), "{err}");
}

#[test]
fn device_nodes_are_skipped_and_counted() {
    require!(require_root());
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // /dev/null's numbers: harmless even if it were opened.
    rustix::fs::mknodat(
        CWD,
        src.join("null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let stats = copy_path(&src, &base.path().join("dst"), &no_cancel()).unwrap();
    assert_eq!(stats.skipped_special, 1);
    assert!(!base.path().join("dst/null").exists());
}

/// A tmpfs mounted in a temporary directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
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

#[test]
fn tmpfs_gets_a_full_copy() {
    require!(require_root());
    let fs = Tmpfs::new();
    let stats = copy_tree_and_compare(fs.0.path());
    assert_eq!(stats.reflinked, 0, "tmpfs cannot share blocks");
    assert!(!stats.all_reflinked());
}

#[test]
fn reflink_xfs_shares_blocks() {
    require!(require_loop_xfs());
    let fs = cairn_harness::LoopFs::xfs_reflink(512).unwrap();
    // The tree (times, modes, holes) survives on XFS too.
    let base = fs.path().join("tree");
    std::fs::create_dir(&base).unwrap();
    let stats = copy_tree_and_compare(&base);
    assert!(stats.all_reflinked(), "{stats:?}");

    // 64 MiB of written data: the copy must not allocate it again.
    let src = fs.path().join("vol");
    std::fs::create_dir(&src).unwrap();
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("big"), &data).unwrap();
    rustix::fs::sync();
    let before = fs.free_bytes().unwrap();
    let stats = copy_path(&src, &fs.path().join("copy"), &no_cancel()).unwrap();
    rustix::fs::sync();
    let after = fs.free_bytes().unwrap();
    assert_eq!(stats.reflinked, 1);
    assert!(
        before - after < 4 << 20,
        "the copy used {} bytes of a 64 MiB file",
        before - after
    );
    assert_eq!(std::fs::read(fs.path().join("copy/big")).unwrap(), data);
    // Copy on write: changing the copy leaves the source alone.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(fs.path().join("copy/big"))
        .unwrap();
    rustix::io::pwrite(&f, b"changed", 0).unwrap();
    drop(f);
    assert_eq!(std::fs::read(src.join("big")).unwrap(), data);
}
