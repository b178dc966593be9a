//! nfs-ganesha serving NFSv4 on 127.0.0.1: the server the controller tests speak to from userspace.

use std::fs;
use std::path::Path;

mod common;

use cairn_harness::sockets::{is_loopback, listening};
use cairn_harness::{require, require_nfs_lab, Ganesha};
use common::{block_on, nfs_read, nfs_write};

#[test]
fn v4_roundtrip_between_host_path_and_nfs() {
    require!(require_nfs_lab());
    let server = Ganesha::start().expect("start ganesha");
    eprintln!(
        "ganesha on {} ready in {:?}",
        server.addr(),
        server.started_in()
    );
    assert!(server.addr().ip().is_loopback());
    assert_eq!(server.pseudo_path(), "/export");

    fs::write(
        server.export_dir().join("from-host.txt"),
        b"written on the host",
    )
    .unwrap();
    // nfs-rs speaks 4.0 and 4.1 with ganesha (its 4.2 EXCHANGE_ID is refused: NFS4ERR_INVAL).
    for version in ["4.0", "4.1"] {
        let data = block_on(nfs_read(&server.url(version), "from-host.txt"))
            .unwrap_or_else(|e| panic!("v{version} read: {e}\n{}", server.log()));
        assert_eq!(data, b"written on the host", "v{version}");

        let name = format!("from-nfs-{version}.txt");
        block_on(nfs_write(&server.url(version), &name, b"written over NFS"))
            .unwrap_or_else(|e| panic!("v{version} write: {e}\n{}", server.log()));
        assert_eq!(
            fs::read(server.export_dir().join(&name)).unwrap(),
            b"written over NFS"
        );
    }
}

#[test]
fn listens_on_loopback_only_and_cleans_up_on_drop() {
    require!(require_nfs_lab());
    let server = Ganesha::start().expect("start ganesha");
    let pid = server.pid();
    let addrs = listening(pid).expect("read /proc sockets");
    // ganesha binds 127.0.0.1 as the v4-mapped [::ffff:127.0.0.1]
    assert!(
        addrs.iter().any(|a| a.port() == server.addr().port()),
        "{addrs:?}"
    );
    assert!(
        addrs.iter().all(is_loopback),
        "ganesha listens beyond loopback: {addrs:?}"
    );
    let export = server.export_dir().to_path_buf();
    let stop_took = server.stop();
    eprintln!("ganesha stopped in {stop_took:?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists"
    );
    assert!(!export.exists(), "{} not removed", export.display());
}

#[test]
fn two_servers_run_side_by_side() {
    require!(require_nfs_lab());
    let a = Ganesha::start().expect("start first ganesha");
    let b = Ganesha::start().expect("start second ganesha");
    assert_ne!(a.addr(), b.addr());
    fs::write(a.export_dir().join("which"), b"a").unwrap();
    fs::write(b.export_dir().join("which"), b"b").unwrap();
    assert_eq!(block_on(nfs_read(&a.url("4.1"), "which")).unwrap(), b"a");
    assert_eq!(block_on(nfs_read(&b.url("4.1"), "which")).unwrap(), b"b");
}

#[test]
fn server_stops_when_a_test_panics() {
    require!(require_nfs_lab());
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let server = Ganesha::start().expect("start ganesha");
        seen = Some((server.pid(), server.export_dir().to_path_buf()));
        panic!("a failing test");
    }));
    assert!(result.is_err());
    let (pid, export) = seen.expect("server started");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} survived the panic"
    );
    assert!(!export.exists(), "{} survived the panic", export.display());
}
