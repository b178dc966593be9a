//! The process: identity, socket handling, modes, signals, logging.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::Stdio;

use cairn_proto::v1::plugin_capability::service::Type as ServiceType;
use cairn_proto::v1::*;
use common::*;
use tonic::Code;

fn services(caps: &GetPluginCapabilitiesResponse) -> Vec<i32> {
    caps.capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn identity_reports_name_version_capabilities_and_readiness() {
    let driver = TestDriver::start();
    let mut identity = driver.identity().await;
    let info = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, DRIVER_NAME);
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let caps = identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let services = services(&caps);
    assert!(services.contains(&(ServiceType::ControllerService as i32)));
    assert!(services.contains(&(ServiceType::VolumeAccessibilityConstraints as i32)));
    let probe = identity.probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));

    // The local root becomes unusable: Probe says not ready instead of failing.
    std::fs::rename(driver.root.join("volumes"), driver.root.join("moved")).unwrap();
    let probe = identity.probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(false));
    std::fs::rename(driver.root.join("moved"), driver.root.join("volumes")).unwrap();

    let mut node = driver.node().await;
    let info = node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, NODE);
    assert_eq!(
        info.accessible_topology.unwrap().segments["topology.cairn.csi.io/node"],
        NODE
    );
    let caps = node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    // Stage/unstage, stats, condition, single-node multi-writer, expand.
    assert_eq!(caps.capabilities.len(), 5);
}

#[tokio::test]
async fn node_mode_serves_no_controller() {
    let driver = TestDriver::start_with(&["--mode", "node"]);
    let caps = driver
        .identity()
        .await
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!services(&caps).contains(&(ServiceType::ControllerService as i32)));
    assert_code(
        driver
            .controller()
            .await
            .create_volume(create_request("pvc-x", 1 << 20))
            .await,
        Code::Unimplemented,
    );
}

/// The kubelet (or an operator) may stop the plugin the moment its socket
/// appears: the handler must already be there, or the default action kills
/// the process and leaves the socket behind. Once a run in CI in hundreds.
#[test]
fn sigterm_as_soon_as_the_socket_appears_is_a_clean_exit() {
    for round in 0..20 {
        let mut driver = TestDriver::start();
        let status = driver.stop();
        assert!(status.success(), "round {round}: {status}");
        assert!(!driver.socket.exists(), "round {round}: socket left behind");
    }
}

#[tokio::test]
async fn socket_is_0660_and_sigterm_removes_it_and_exits_zero() {
    let mut driver = TestDriver::start();
    let meta = std::fs::symlink_metadata(&driver.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // The kubelet keeps an idle connection open; it must not delay the exit.
    let idle = driver.identity().await;
    let asked = std::time::Instant::now();
    let status = driver.stop();
    assert!(status.success(), "{status}");
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(5),
        "an idle connection held shutdown for {:?}",
        asked.elapsed()
    );
    drop(idle);
    assert!(!driver.socket.exists());
    // No TCP listener: the driver only ever opened the unix socket.
    assert!(driver.log_text().contains("serving"));
}

#[tokio::test]
async fn stale_socket_is_replaced_other_files_are_not() {
    let mut driver = TestDriver::start();
    driver.kill9();
    assert!(driver.socket.exists(), "a crash leaves the socket behind");
    driver.spawn();
    let info = driver.identity().await.probe(ProbeRequest {}).await;
    assert!(info.is_ok());
    driver.stop();

    std::fs::write(&driver.socket, b"not a socket").unwrap();
    let out = driver.command().stderr(Stdio::piped()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&driver.socket).unwrap(), b"not a socket");
}

#[tokio::test]
async fn startup_errors_say_what_to_fix() {
    let driver = TestDriver::start();
    let cases: [(&[&str], &str); 3] = [
        (&["--local-root", "/nonexistent/cairn"], "--local-root"),
        (&["--driver-name", "Not_A_Domain"], "driver name"),
        (&["--node-id", "bad/node"], "--node-id"),
    ];
    for (args, expect) in cases {
        let out = driver
            .command()
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    let version = std::process::Command::new(env!("CARGO_BIN_EXE_cairn-csi"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn every_rpc_logs_one_line_and_never_secrets() {
    let mut driver = TestDriver::start_with(&["--log-format", "json"]);
    let mut c = driver.controller().await;
    let mut req = create_request("pvc-logged", 1 << 20);
    req.secrets
        .insert("password".into(), "hunter2-secret".into());
    let id = create(&mut c, req).await.volume_id;
    assert_code(
        c.delete_volume(DeleteVolumeRequest {
            volume_id: String::new(),
            secrets: [("token".to_string(), "hunter2-secret".to_string())].into(),
        })
        .await,
        Code::InvalidArgument,
    );
    driver.stop();
    let log = driver.log_text();
    assert!(!log.contains("hunter2"), "secret leaked: {log}");
    let rpc_lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["message"] == "rpc")
        .collect();
    let create = rpc_lines
        .iter()
        .find(|v| v["method"] == "CreateVolume")
        .expect("CreateVolume logged");
    assert_eq!(create["volume"], "pvc-logged");
    assert_eq!(create["code"], "OK");
    assert!(create["duration_ms"].as_f64().is_some());
    let delete = rpc_lines
        .iter()
        .find(|v| v["method"] == "DeleteVolume")
        .expect("DeleteVolume logged");
    assert_eq!(delete["code"], "InvalidArgument");
    assert_eq!(
        rpc_lines
            .iter()
            .filter(|v| v["method"] == "CreateVolume")
            .count(),
        1
    );
    let _ = id;
}

/// A message whose field 1 is a number where DeleteVolumeRequest has a
/// string: bytes that are not a DeleteVolumeRequest.
#[derive(Clone, PartialEq, prost::Message)]
struct NotADeleteVolumeRequest {
    #[prost(uint64, tag = "1")]
    volume_id: u64,
}

#[tokio::test]
async fn a_body_that_is_not_the_methods_message_is_invalid_argument() {
    let driver = TestDriver::start();
    let mut grpc = tonic::client::Grpc::new(driver.channel().await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<NotADeleteVolumeRequest, DeleteVolumeResponse>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/csi.v1.Controller/DeleteVolume");
    let answer = grpc
        .unary(
            tonic::Request::new(NotADeleteVolumeRequest { volume_id: 7 }),
            path,
            codec,
        )
        .await;
    let status = answer.expect_err("an undecodable request must fail");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // The server goes on serving.
    driver
        .identity()
        .await
        .probe(ProbeRequest {})
        .await
        .unwrap();
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test]
async fn silent_connections_are_bounded_and_closed_and_cost_no_cpu() {
    use std::io::Read as _;
    let driver = TestDriver::start();
    let cpu_before = cpu_seconds(driver.pid());
    // More connections than the driver serves at once (256), none of them
    // ever saying a word.
    let silent: Vec<std::os::unix::net::UnixStream> = (0..300)
        .map(|_| std::os::unix::net::UnixStream::connect(&driver.socket).unwrap())
        .collect();
    let started = std::time::Instant::now();
    // A real client gets through once the silent ones are dropped (10 s
    // after they were accepted), well within the deadline.
    let probe = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        driver.identity().await.probe(ProbeRequest {}).await
    })
    .await
    .expect("Probe answered while silent connections were held")
    .expect("Probe");
    assert!(probe.into_inner().ready.is_some_and(|r| r));
    let waited = started.elapsed();
    // The driver closed the silent connections: reading one ends.
    let mut first = silent.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    // (After the server's own greeting, which it sends to everyone.)
    let mut rest = Vec::new();
    let read = first.read_to_end(&mut rest).map(|_| 0);
    assert!(
        matches!(read, Ok(0))
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a silent connection stayed open: {read:?}"
    );
    let cpu = cpu_seconds(driver.pid()) - cpu_before;
    eprintln!("Probe answered after {waited:.1?}; driver CPU over the flood: {cpu:.2} s");
    assert!(cpu < 2.0, "the flood cost {cpu:.2} CPU seconds");
}
