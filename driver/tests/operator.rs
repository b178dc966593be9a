//! What an operator touches: the client subcommands and the metrics
//! listener, both against the real driver.

mod common;

use std::io::{Read, Write};
use std::process::Output;

use cairn_harness::{require, require_root};
use common::*;
use serde_json::Value;

fn client(driver: &TestDriver, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_cairn-csi"))
        .arg("client")
        .arg("--endpoint")
        .arg(format!("unix://{}", driver.socket.display()))
        .args(args)
        .output()
        .expect("run cairn-csi client")
}

#[track_caller]
fn ok_text(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[track_caller]
fn ok_json(out: Output) -> Value {
    serde_json::from_str(&ok_text(out)).expect("json output")
}

#[tokio::test]
async fn client_subcommands_drive_a_whole_lifecycle() {
    require!(require_root());
    let driver = TestDriver::start();
    let info = ok_text(client(&driver, &["info"]));
    assert!(
        info.contains(DRIVER_NAME) && info.contains("ready:        true"),
        "{info}"
    );
    let caps = ok_json(client(&driver, &["--output", "json", "capabilities"]));
    assert!(caps["controller"]
        .as_array()
        .unwrap()
        .contains(&Value::from("CREATE_DELETE_VOLUME")));
    assert!(caps["node"]
        .as_array()
        .unwrap()
        .contains(&Value::from("STAGE_UNSTAGE_VOLUME")));

    let created = ok_json(client(
        &driver,
        &["-o", "json", "volume", "create", "pvc-cli", "--size", "8Mi"],
    ));
    let id = created["volume_id"].as_str().unwrap().to_string();
    assert_eq!(created["capacity_bytes"], 8 << 20);
    let text = ok_text(client(
        &driver,
        &["volume", "create", "pvc-cli", "--size", "8Mi"],
    ));
    assert!(text.contains("8.0 MiB"), "{text}");

    let listed = ok_json(client(
        &driver,
        &["-o", "json", "volume", "list", "--page-size", "1"],
    ));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["volume_id"], id.as_str());
    let got = ok_json(client(&driver, &["-o", "json", "volume", "get", &id]));
    assert_eq!(got["condition"]["abnormal"], false);
    let capacity = ok_json(client(&driver, &["-o", "json", "volume", "capacity"]));
    assert!(capacity["available_capacity"].as_i64().unwrap() > 0);
    let node_info = ok_json(client(&driver, &["-o", "json", "node", "info"]));
    assert_eq!(node_info["node_id"], NODE);

    let staging = driver.staging_path(&id);
    let target = driver.target_path("pod-cli", "pvc-cli");
    let (staging, target) = (staging.display().to_string(), target.display().to_string());
    ok_text(client(&driver, &["node", "stage", &id, &staging]));
    ok_text(client(
        &driver,
        &["node", "publish", &id, &target, "--staging-path", &staging],
    ));
    std::fs::write(format!("{target}/f"), b"x").unwrap();
    let stats = ok_json(client(
        &driver,
        &["-o", "json", "node", "stats", &id, &target],
    ));
    assert_eq!(stats["usage"][0]["unit"], "BYTES");
    assert_eq!(stats["condition"]["abnormal"], false);
    let stats_text = ok_text(client(&driver, &["node", "stats", &id, &target]));
    assert!(
        stats_text.contains("bytes") && stats_text.contains("healthy"),
        "{stats_text}"
    );
    ok_text(client(&driver, &["node", "unpublish", &id, &target]));
    ok_text(client(&driver, &["node", "unstage", &id, &staging]));
    ok_text(client(&driver, &["volume", "delete", &id]));
    assert_eq!(mounts_below(driver.dir.path()), 0);

    // Errors name the gRPC code and exit non-zero.
    let bad = client(&driver, &["volume", "get", "../etc"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("NotFound"));
    let nowhere = std::process::Command::new(env!("CARGO_BIN_EXE_cairn-csi"))
        .args(["client", "--endpoint", "/nonexistent/csi.sock", "info"])
        .output()
        .unwrap();
    assert!(!nowhere.status.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_rpcs_volumes_and_mounts_after_a_lifecycle() {
    require!(require_root());
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let driver = TestDriver::start_with(&["--health-address", &address]);
    let (status, body) = http_get(port, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    let mut c = driver.controller().await;
    let mut node = driver.node().await;
    let id = create(&mut c, create_request("pvc-metrics", 1 << 20))
        .await
        .volume_id;
    assert!(c
        .create_volume(create_request("pvc-metrics", 2 << 20))
        .await
        .is_err());
    let staging = driver.staging_path(&id);
    let target = driver.target_path("pod-m", "pvc-metrics");
    node.node_stage_volume(stage_request(&id, &staging))
        .await
        .unwrap();
    node.node_publish_volume(publish_request(&id, &staging, &target, false))
        .await
        .unwrap();

    let (status, text) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &text,
            r#"cairn_rpc_requests_total{method="CreateVolume",code="OK"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"cairn_rpc_requests_total{method="CreateVolume",code="AlreadyExists"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"cairn_rpc_duration_seconds_count{method="NodePublishVolume"}"#
        ),
        1.0
    );
    assert_eq!(metric(&text, r#"cairn_volumes{backend="local"}"#), 1.0);
    assert_eq!(metric(&text, r#"cairn_mounts{kind="staging"}"#), 1.0);
    assert_eq!(metric(&text, r#"cairn_mounts{kind="publish"}"#), 1.0);
    assert!(text.contains("cairn_build_info{version="));

    node.node_unpublish_volume(unpublish_request(&id, &target))
        .await
        .unwrap();
    node.node_unstage_volume(unstage_request(&id, &staging))
        .await
        .unwrap();
    let (_, text) = http_get(port, "/metrics");
    assert_eq!(metric(&text, r#"cairn_mounts{kind="publish"}"#), 0.0);
    assert_eq!(metric(&text, r#"cairn_mounts{kind="staging"}"#), 0.0);

    // Not ready: /healthz says so with 503.
    std::fs::rename(driver.root.join("volumes"), driver.root.join("away")).unwrap();
    assert_eq!(http_get(port, "/healthz").0, 503);
    std::fs::rename(driver.root.join("away"), driver.root.join("volumes")).unwrap();
}
