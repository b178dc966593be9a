//! The Kubernetes community's conformance suite, `csi-sanity`, against the
//! real driver over its socket: the local backend in one process, and split
//! into a controller and a node process as a node deployment runs it. (The
//! NFS backend runs it in the QEMU guest: `nfs_node.rs`.)
//!
//! Every spec must pass, and the skipped ones are pinned: a capability that
//! quietly stops being advertised turns specs into skips, which fails here.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_harness::csi_sanity::{self, Report};
use cairn_harness::{require, require_root};
use common::*;

/// Split, csi-sanity reads the plugin's capabilities from the node
/// endpoint, which (rightly) does not offer the controller service; its
/// two whole-lifecycle node specs then skip themselves.
const SPLIT_EXTRA_SKIPS: &[&str] = &[
    "Node Service should be idempotent",
    "Node Service should work",
];

/// Generous for a busy two-core machine: a quiet run takes about 2 s.
const DEADLINE: Duration = Duration::from_secs(300);

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the driver crate sits in the workspace")
}

/// Runs csi-sanity against `node` (and `controller`, when split) and
/// returns its report; the kubelet paths are under the node's kubelet dir.
fn run(sanity: &Path, node: &TestDriver, controller: Option<&TestDriver>) -> Report {
    let mount_dir = node.kubelet.join("pods/csi-sanity/volumes/mount");
    let staging_dir = node.kubelet.join("plugins/csi-sanity/globalmount");
    // csi-sanity makes the last component itself; the kubelet makes parents.
    std::fs::create_dir_all(mount_dir.parent().unwrap()).unwrap();
    std::fs::create_dir_all(staging_dir.parent().unwrap()).unwrap();
    let report_file = node.dir.path().join("csi-sanity.json");
    let mut cmd = Command::new(sanity);
    cmd.arg("--csi.endpoint")
        .arg(&node.socket)
        .arg("--csi.testvolumesize")
        .arg("1048576")
        .arg("--csi.mountdir")
        .arg(&mount_dir)
        .arg("--csi.stagingdir")
        .arg(&staging_dir)
        .arg(format!("--ginkgo.json-report={}", report_file.display()))
        .arg("--ginkgo.no-color")
        .arg(format!("--ginkgo.timeout={}s", DEADLINE.as_secs()));
    if let Some(controller) = controller {
        cmd.arg("--csi.controllerendpoint").arg(&controller.socket);
    }
    let started = Instant::now();
    let out = cmd.output().expect("run csi-sanity");
    let text = String::from_utf8_lossy(&out.stdout);
    let closing = text
        .lines()
        .rev()
        .find(|l| l.starts_with("SUCCESS!") || l.starts_with("FAIL!"))
        .unwrap_or("(no closing line)");
    eprintln!(
        "csi-sanity: {closing} in {:.1?}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(&report_file)
        .unwrap_or_else(|e| panic!("no report ({e}); csi-sanity said:\n{text}"));
    let report = Report::from_json(&json).expect("csi-sanity report");
    assert!(
        report.failed.is_empty(),
        "csi-sanity failures: {:#?}\n{text}",
        report.failed
    );
    assert!(
        out.status.success(),
        "csi-sanity exited {}: {text}",
        out.status
    );
    report
}

fn check(report: &Report, node: &TestDriver, extra_skips: &[&str]) {
    let expected: BTreeSet<String> = csi_sanity::SKIPPED_BY_DESIGN
        .iter()
        .chain(extra_skips)
        .map(|s| s.to_string())
        .collect();
    let newly_skipped: Vec<_> = report.skipped.difference(&expected).collect();
    let now_running: Vec<_> = expected.difference(&report.skipped).collect();
    assert!(
        newly_skipped.is_empty() && now_running.is_empty(),
        "the skip set changed: newly skipped {newly_skipped:#?}; no longer skipped \
         {now_running:#?} (update SKIPPED_BY_DESIGN only with the capability change that explains it)"
    );
    assert!(
        report.passed.len() >= 65,
        "only {} specs passed: {}",
        report.passed.len(),
        report.summary()
    );
    eprintln!("csi-sanity report: {}", report.summary());
    assert_eq!(mounts_below(node.dir.path()), 0, "mounts left behind");
    assert_eq!(loops_below(node.dir.path()), vec![], "loop devices left");
}

#[test]
fn csi_sanity_passes_against_the_local_backend() {
    require!(require_root());
    let sanity = require!(csi_sanity::require(workspace()));
    let driver = TestDriver::start();
    let report = run(&sanity, &driver, None);
    csi_sanity::record_summary("csi-sanity local backend, one process", &report);
    check(&report, &driver, &[]);
}

#[test]
fn csi_sanity_passes_with_split_controller_and_node() {
    require!(require_root());
    let sanity = require!(csi_sanity::require(workspace()));
    let node = TestDriver::start_with(&["--mode", "node"]);
    let controller = TestDriver::start_with(&[
        "--mode",
        "controller",
        "--local-root",
        node.root.to_str().unwrap(),
    ]);
    let report = run(&sanity, &node, Some(&controller));
    csi_sanity::record_summary("csi-sanity local backend, split controller/node", &report);
    check(&report, &node, SPLIT_EXTRA_SKIPS);
}
