//! The conformance suite (`sanity/`) against the real driver: every
//! capability Cairn advertises must pass, in one process and split into a
//! controller and a node process.

mod common;

use cairn_harness::{require, require_root};
use common::*;

async fn conformance(endpoint: &str, controller: Option<String>, driver: &TestDriver) {
    let mut config = cairn_sanity::Config::new(endpoint);
    config.controller_endpoint = controller;
    // Cairn refuses paths outside its kubelet dir, as it should.
    config.staging_base = Some(driver.kubelet.join("plugins/sanity"));
    config.target_base = Some(driver.kubelet.join("pods/sanity"));
    config.progress = true;
    let report = cairn_sanity::run(config).await.expect("suite runs");
    eprintln!("{}", report.to_text());
    let failed: Vec<_> = report.failed().iter().map(|c| c.name.clone()).collect();
    assert!(failed.is_empty(), "conformance failures: {failed:?}");
    assert!(
        report.passed().len() >= 100,
        "only {} cases passed",
        report.passed().len()
    );
    let leftovers: Vec<_> = report
        .cases
        .iter()
        .flat_map(|c| c.leftovers.clone())
        .collect();
    assert!(leftovers.is_empty(), "leftovers: {leftovers:?}");
    assert_eq!(mounts_below(driver.dir.path()), 0);
    assert_eq!(loops_below(driver.dir.path()), vec![], "loop devices left");
}

#[tokio::test]
async fn conformance_suite_passes_against_cairn() {
    require!(require_root());
    let driver = TestDriver::start();
    let endpoint = format!("unix://{}", driver.socket.display());
    conformance(&endpoint, None, &driver).await;
}

#[tokio::test]
async fn conformance_suite_passes_with_split_controller_and_node() {
    require!(require_root());
    let node = TestDriver::start_with(&["--mode", "node"]);
    // The controller shares the node's local root, as in a node deployment.
    let controller = TestDriver::start_with(&[
        "--mode",
        "controller",
        "--local-root",
        node.root.to_str().unwrap(),
    ]);
    let endpoint = format!("unix://{}", node.socket.display());
    let controller_endpoint = format!("unix://{}", controller.socket.display());
    conformance(&endpoint, Some(controller_endpoint), &node).await;
}
