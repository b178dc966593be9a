//! The two binaries as a user runs them. (Their runs against a real driver
//! live in the driver's tests, which start `cairn-csi`.)

use std::process::Command;

#[test]
fn cairn_sanity_lists_every_case_with_its_rule() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-sanity"))
        .arg("--list")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    let rules: Vec<&str> = text.lines().filter(|l| l.starts_with(' ')).collect();
    assert!(names.len() >= 100, "{} cases", names.len());
    assert_eq!(names.len(), rules.len(), "every case states its rule");
}

#[test]
fn cairn_sanity_fails_clearly_without_a_driver() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-sanity"))
        .args(["--endpoint", "unix:///nonexistent/csi.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nonexistent"), "{stderr}");
}

#[test]
fn cairn_bench_documents_its_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--endpoint",
        "--workers",
        "--sweep",
        "--driver-pid",
        "--svg",
        "--label",
        "--versus",
        "--versus-controller-endpoint",
        "--versus-pid",
        "--versus-param",
        "--versus-label",
        "--rounds",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn cairn_bench_versus_options_need_versus() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args([
            "--endpoint",
            "unix:///nonexistent/csi.sock",
            "--versus-pid",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--versus <ENDPOINT>"), "{stderr}");

    // Their defaults (labels, rounds) do not count as given.
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args([
            "--endpoint",
            "unix:///nonexistent/csi.sock",
            "--baseline",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nonexistent"), "{stderr}");
}

#[test]
fn cairn_bench_refuses_zero_rounds() {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args([
            "--endpoint",
            "unix:///nonexistent/a.sock",
            "--baseline",
            "0",
        ])
        .args(["--versus", "unix:///nonexistent/b.sock", "--rounds", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--rounds"), "{stderr}");
}
