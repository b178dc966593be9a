//! `sanity/bench-vs-reference.sh` as a user runs it: it starts cairn-csi and
//! the reference driver (csi-driver-host-path's `hostpathplugin`), runs
//! `cairn-bench --versus` over a short sweep, writes the reports, and leaves
//! no driver, mount or temp dir behind.
//!
//! Needs root (bind mounts), `cairn-csi` beside this test's `cairn-bench`
//! (built by `cargo nextest run --workspace`; or `CAIRN_CSI`) and
//! `hostpathplugin` in `../shared/tools` (or `HOSTPATHPLUGIN`). Without them
//! it skips loudly, and fails when `CI` is set: `cairn_harness::require!`.

use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_harness::{require, require_root};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

/// `env` if set, else `default`; an error unless it is a file.
fn require_program(env: &str, default: PathBuf) -> Result<PathBuf, String> {
    let path = std::env::var_os(env).map_or(default, PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{} not found (set {env})", path.display()))
    }
}

fn alive(pid: &str) -> bool {
    // A zombie still has a /proc entry; it is dead for our purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn bench_vs_reference_compares_and_cleans_up() {
    require!(require_root());
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_cairn-bench"));
    let cairn_csi = require!(require_program(
        "CAIRN_CSI",
        bench.with_file_name("cairn-csi")
    ));
    let hostpath = require!(require_program(
        "HOSTPATHPLUGIN",
        workspace().join("../shared/tools/hostpathplugin")
    ));
    let out = std::env::temp_dir().join(format!("cairn-bench-vs-test-{}", std::process::id()));

    let run = Command::new("bash")
        .arg(workspace().join("sanity/bench-vs-reference.sh"))
        .args(["--workers", "1,2", "--count", "6", "--sweep", "0,2"])
        .args(["--rounds", "2", "--baseline", "5"])
        .arg("--out")
        .arg(&out)
        .env("CAIRN_CSI", &cairn_csi)
        .env("CAIRN_BENCH", &bench)
        .env("HOSTPATHPLUGIN", &hostpath)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");

    // The table: both drivers, the ratios, both floors, the whole run.
    for expected in [
        "cairn (unix://",
        "vs hostpath (unix://",
        "K=2 workers=2: 2 rounds per driver",
        "lifecycles/s",
        "lifecycle p50 / durable floor",
        "bare kernel (mkdir",
        "durable floor (bare kernel",
        "RSS idle before the run, KiB",
        "Probe p50 ms (round trip)",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing from\n{stderr}"
        );
    }

    for workers in [1, 2] {
        let json = std::fs::read_to_string(out.join(format!("bench-w{workers}.json"))).unwrap();
        let report: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(report["rounds"], 2);
        for (side, label) in [("driver", "cairn"), ("versus", "hostpath")] {
            let r = &report[side];
            assert_eq!(r["label"], label);
            assert_eq!(r["workers"], workers);
            assert!(r["durable_floor"]["error"].is_null(), "{json}");
            assert!(r["driver_rss_idle_kib"].as_u64().unwrap() > 0, "{json}");
            let points = r["points"].as_array().unwrap();
            assert_eq!(points.len(), 2, "{json}");
            for p in points {
                assert_eq!(p["lifecycles"], 6, "{json}");
                assert_eq!(p["failed_lifecycles"], 0, "{json}");
                assert_eq!(p["rounds"], 2, "{json}");
                assert!(
                    p["rpcs"]["DeleteVolume"]["count"].as_u64() == Some(6),
                    "{json}"
                );
            }
        }
        let ratios = report["ratios"].as_array().unwrap();
        assert_eq!(ratios.len(), 2);
        assert!(ratios[1]["lifecycles_per_second"].as_f64().unwrap() > 0.0);
        assert!(ratios[1]["rpc_p50"]["CreateVolume"].as_f64().unwrap() > 0.0);

        let svg = std::fs::read_to_string(out.join(format!("bench-w{workers}.svg"))).unwrap();
        assert!(svg.contains("<polyline") && svg.contains("stroke-dasharray"));
        assert!(svg.contains(">cairn</text>") && svg.contains(">hostpath</text>"));
    }

    // Nothing left: the drivers are stopped, their temp dir is gone.
    let work = stderr
        .lines()
        .find_map(|l| l.strip_prefix("work dir: "))
        .expect("the script names its work dir");
    assert!(work.starts_with("/var/tmp/"), "{work}");
    assert!(!Path::new(work).exists(), "{work} left behind");
    let pids = stderr
        .lines()
        .find_map(|l| l.strip_prefix("cairn-csi pid "))
        .expect("the script names the pids");
    for pid in pids
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
    {
        assert!(!alive(pid), "driver pid {pid} still running");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(work), "mounts left under {work}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bench_vs_reference_refuses_bad_arguments() {
    let run = Command::new("bash")
        .arg(workspace().join("sanity/bench-vs-reference.sh"))
        .args(["--workers", "one"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("--workers"), "{stderr}");

    let help = Command::new("bash")
        .arg(workspace().join("sanity/bench-vs-reference.sh"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--sweep") && text.contains("HOSTPATHPLUGIN"),
        "{text}"
    );
}
