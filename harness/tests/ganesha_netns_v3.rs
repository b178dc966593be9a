//! rpcbind + nfs-ganesha (NFSv3 and v4) inside a fresh lo-only network namespace.

use std::fs;
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::Command;

mod common;

use cairn_harness::sockets::listening;
use cairn_harness::{require, require_nfs_lab, NetnsGanesha};
use common::{block_on, nfs_read};

fn netns_exists(name: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn v3_and_v4_read_inside_the_namespace() {
    require!(require_nfs_lab());
    let server = NetnsGanesha::start().expect("start rpcbind + ganesha in a netns");
    let ns = server.netns().name().to_string();
    eprintln!(
        "netns {ns}: rpcbind + ganesha ready in {:?}",
        server.started_in()
    );
    assert_eq!(server.netns().interfaces().unwrap(), ["lo"]);

    fs::write(
        server.export_dir().join("hello.txt"),
        b"hello from the host",
    )
    .unwrap();
    for version in ["3", "4.1"] {
        let url = server.url(version);
        let data = server
            .netns()
            .in_netns(|| block_on(nfs_read(&url, "hello.txt")))
            .expect("enter netns")
            .unwrap_or_else(|e| panic!("v{version} read in {ns}: {e}\n{}", server.log()));
        assert_eq!(data, b"hello from the host", "v{version}");
    }

    // rpcbind's portmapper knows the MOUNT service (what NFSv3 clients ask it for).
    let rpcinfo = server
        .netns()
        .command("rpcinfo")
        .args(["-p", "127.0.0.1"])
        .output()
        .expect("run rpcinfo in the netns");
    let table = String::from_utf8_lossy(&rpcinfo.stdout);
    assert!(table.contains("mountd"), "rpcinfo -p: {table}");
    assert!(table.contains(&server.mount_port().to_string()), "{table}");

    // The host's namespace doesn't see these servers: the port in there is not this one.
    let (ganesha_pid, rpcbind_pid) = server.pids();
    let ganesha_ports: Vec<u16> = listening(ganesha_pid)
        .unwrap()
        .iter()
        .map(|a| a.port())
        .collect();
    assert!(ganesha_ports.contains(&2049), "{ganesha_ports:?}");
    if TcpStream::connect((Ipv4Addr::LOCALHOST, 111)).is_ok() {
        eprintln!("note: something in the host namespace listens on 127.0.0.1:111 (not ours)");
    }

    let export = server.export_dir().to_path_buf();
    drop(server);
    for pid in [ganesha_pid, rpcbind_pid] {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} left running"
        );
    }
    assert!(!netns_exists(&ns), "netns {ns} left behind");
    assert!(!export.exists(), "{} left behind", export.display());
}
