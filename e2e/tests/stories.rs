//! The user stories of README.md and deploy/README.md, on a real cluster,
//! with deploy/examples as written. Each runs in its own namespace; see
//! e2e/README.md for what the cluster needs and the environment it reads.

use anyhow::{ensure, Context, Result};
use cairn_e2e::install::{self, Breakage, TOPOLOGY_KEY};
use cairn_e2e::kubectl::{self, s, wait_for};
use cairn_e2e::story::{self, key_of, Inspector, Story};
use serde_json::json;
use std::time::Duration;

/// The pod's node, PV name and volume key of a bound claim.
struct Volume {
    node: String,
    pv: String,
    key: String,
}

fn volume_of(st: &Story, pod: &str, pvc: &str) -> Result<Volume> {
    let p = st.get(&format!("pod/{pod}"))?;
    let c = st.wait_bound(pvc)?;
    let pv_name = s(&c, "/spec/volumeName").to_string();
    let pv = kubectl::json(&["get", "pv", &pv_name])?;
    let handle = s(&pv, "/spec/csi/volumeHandle");
    Ok(Volume {
        node: s(&p, "/spec/nodeName").to_string(),
        pv: pv_name.clone(),
        key: key_of(handle)?,
    })
}

/// After the pod and claim are deleted: the PV, the volume's directory and
/// every kubelet mount of it are gone.
fn assert_nothing_left(ins: &Inspector, v: &Volume) -> Result<()> {
    wait_for(
        &format!("pv/{} to be deleted", v.pv),
        Duration::from_secs(120),
        || Ok(kubectl::get_opt(&["pv", &v.pv])?.is_none().then_some(())),
    )?;
    let dir = format!("volumes/{}", v.key);
    wait_for(
        &format!("{dir} to leave the local root"),
        Duration::from_secs(30),
        || Ok((!ins.exists(&dir)?).then_some(())),
    )?;
    let needle = format!("/volumes/{}/", v.key);
    let mounts = ins.kubelet_mounts(&[&needle, &v.pv])?;
    ensure!(
        mounts.is_empty(),
        "mounts of {} left under /var/lib/kubelet:\n{}",
        v.pv,
        mounts.join("\n")
    );
    let loops = ins.loop_backing_files()?;
    ensure!(
        !loops.contains(&needle),
        "a loop device still serves {needle}: {loops}"
    );
    Ok(())
}

/// (1) deploy/README.md step 5: a claim and a pod that writes into it; the
/// data is in the volume's directory on the node; deleting pod and claim
/// leaves nothing behind.
#[test]
fn claim_pod_writes_data_on_node_then_nothing_left() {
    let Some(st) = Story::start("claim-lifecycle") else {
        return;
    };
    st.run(|st| {
        st.apply_example("local/pvc.yaml")?;
        st.apply_example("local/pod.yaml")?;
        let pod = st.wait_pod_ready("cairn-local-example")?;
        let v = volume_of(st, "cairn-local-example", "cairn-local-example")?;
        let written = st.logs("cairn-local-example")?;
        ensure!(!written.trim().is_empty(), "the pod logged no date");

        let ins = st.inspector(&v.node)?;
        let on_node = ins.cat(&format!("volumes/{}/data/hello", v.key))?;
        ensure!(
            on_node == written,
            "volumes/{}/data/hello on node {} holds {on_node:?}, the pod wrote {written:?}",
            v.key,
            v.node
        );
        let uid = s(&pod, "/metadata/uid");
        let target = format!(
            "/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~csi/{}/mount",
            v.pv
        );
        let mounts = ins.kubelet_mounts(&[&v.pv])?;
        ensure!(
            mounts
                .iter()
                .any(|m| m.split(' ').nth(4) == Some(target.as_str())),
            "no mount at {target}; the kubelet's mounts of the volume: {mounts:?}"
        );

        st.delete("pod/cairn-local-example")?;
        st.delete("pvc/cairn-local-example")?;
        assert_nothing_left(&ins, &v)
    });
}

/// (2) WaitForFirstConsumer: the claim waits for a pod, then its PV is
/// pinned to the pod's node.
#[test]
fn wait_for_first_consumer_then_pv_pinned_to_node() {
    let Some(st) = Story::start("topology") else {
        return;
    };
    st.run(|st| {
        st.apply_example("local/pvc.yaml")?;
        st.wait_event(
            "cairn-local-example",
            "waiting for first consumer",
            Duration::from_secs(60),
        )?;
        let c = st.get("pvc/cairn-local-example")?;
        ensure!(s(&c, "/status/phase") == "Pending", "claim not Pending without a pod: {}", c["status"]);
        ensure!(s(&c, "/spec/volumeName").is_empty(), "claim bound without a pod");

        st.apply_example("local/pod.yaml")?;
        st.wait_pod_ready("cairn-local-example")?;
        let v = volume_of(st, "cairn-local-example", "cairn-local-example")?;
        let pv = kubectl::json(&["get", "pv", &v.pv])?;
        let terms = &pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"];
        let want = json!([{"matchExpressions": [{"key": TOPOLOGY_KEY, "operator": "In", "values": [v.node]}]}]);
        ensure!(*terms == want, "pv/{} node affinity {terms}, expected {want}", v.pv);
        let c = st.get("pvc/cairn-local-example")?;
        let selected = s(&c, "/metadata/annotations/volume.kubernetes.io~1selected-node");
        ensure!(selected == v.node, "selected-node {selected:?}, pod on {}", v.node);
        Ok(())
    });
}

/// The size `df -k` shows for a mount in a pod, in KiB.
fn df_kib(st: &Story, pod: &str, path: &str) -> Result<u64> {
    let out = st.exec(pod, &format!("df -k {path} | tail -n 1"))?;
    out.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("df -k {path} in {pod}: {out:?}"))
}

/// (3) deploy/README.md step 6: grow the claim online; the pod keeps running
/// and (where the local root enforces sizes) `df` in it shows the new size.
#[test]
fn online_expansion_seen_by_pod() {
    let Some(st) = Story::start("expansion") else {
        return;
    };
    st.run(|st| {
        st.apply_example("local/pvc.yaml")?;
        st.apply_example("local/pod.yaml")?;
        let before = st.wait_pod_ready("cairn-local-example")?;
        st.wait_bound("cairn-local-example")?;
        let df_before = df_kib(st, "cairn-local-example", "/data")?;
        kubectl::run(&[
            "-n",
            &st.ns,
            "patch",
            "pvc",
            "cairn-local-example",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
        ])?;
        wait_for("pvc capacity 2Gi", Duration::from_secs(120), || {
            let c = st.get("pvc/cairn-local-example")?;
            Ok((s(&c, "/status/capacity/storage") == "2Gi").then_some(()))
        })?;
        let after = st.get("pod/cairn-local-example")?;
        ensure!(
            s(&after, "/metadata/uid") == s(&before, "/metadata/uid")
                && after["status"]["containerStatuses"][0]["restartCount"] == 0,
            "the pod was restarted or replaced by the expansion"
        );
        let gib = 1024 * 1024;
        if df_before == gib {
            wait_for("df in the pod to show 2Gi", Duration::from_secs(60), || {
                Ok((df_kib(st, "cairn-local-example", "/data")? == 2 * gib).then_some(()))
            })?;
        } else {
            eprintln!(
                "NOTE: df in the pod showed {df_before} KiB for a 1Gi volume: the local root does \
                 not enforce sizes here (no project quotas, --unenforced-capacity=allow), so df \
                 shows the filesystem; the new size is checked on the claim only"
            );
        }
        st.exec(
            "cairn-local-example",
            "date >> /data/hello && cat /data/hello",
        )?;
        Ok(())
    });
}

/// (4) deploy/examples/local-block: a raw block volume written and read
/// through its device; nothing left after.
#[test]
fn raw_block_volume() {
    let Some(st) = Story::start("raw-block") else {
        return;
    };
    st.run(|st| {
        st.apply_example("local-block/pvc.yaml")?;
        st.apply_example("local-block/pod.yaml")?;
        st.wait_pod_ready("cairn-local-block-example")?;
        let v = volume_of(st, "cairn-local-block-example", "cairn-local-block-example")?;
        let logged = st.logs("cairn-local-block-example")?;
        let date = st.exec("cairn-local-block-example", "date +%Y")?;
        ensure!(
            logged.contains(date.trim()),
            "the pod read back {logged:?} from its device, not the date it wrote"
        );
        let ins = st.inspector(&v.node)?;
        ensure!(
            ins.exists(&format!("volumes/{}/block", v.key))?,
            "no block file for {}",
            v.key
        );
        let loops = ins.loop_backing_files()?;
        ensure!(
            loops.contains(&format!("/volumes/{}/block", v.key)),
            "no loop device serves the volume's file: {loops:?}"
        );
        st.delete("pod/cairn-local-block-example")?;
        st.delete("pvc/cairn-local-block-example")?;
        assert_nothing_left(&ins, &v)
    });
}

/// (5) deploy/examples/local/inline-pod.yaml: an inline ephemeral volume,
/// made with the pod and deleted with it.
#[test]
fn inline_ephemeral_volume() {
    let Some(st) = Story::start("inline") else {
        return;
    };
    st.run(|st| {
        let node = st.installed.nodes.first().context("no node")?.clone();
        let ins = st.inspector(&node)?;
        let before = ins.list("volumes")?;
        let mut objects = st.example("local/inline-pod.yaml")?;
        // On the inspected node (a one-node cluster has no other).
        objects[0]["spec"]["nodeName"] = json!(node);
        st.apply(&objects)?;
        let pod = st.wait_pod_ready("cairn-inline-example")?;
        let logged = st.logs("cairn-inline-example")?;
        ensure!(
            logged.contains("/scratch"),
            "no df of /scratch in the log: {logged:?}"
        );
        let during = ins.list("volumes")?;
        let new: Vec<&String> = during.iter().filter(|k| !before.contains(k)).collect();
        ensure!(
            new.len() == 1,
            "expected one new volume for the inline volume, got {new:?}"
        );
        let key = new[0].clone();
        ensure!(
            ins.cat(&format!("volumes/{key}/meta.json"))?
                .contains("csi-"),
            "volume {key} is not named after the kubelet's handle"
        );
        let uid = s(&pod, "/metadata/uid").to_string();
        st.delete("pod/cairn-inline-example")?;
        wait_for(
            "the inline volume to be deleted",
            Duration::from_secs(60),
            || Ok((!ins.exists(&format!("volumes/{key}"))?).then_some(())),
        )?;
        let mounts = ins.kubelet_mounts(&[&uid, &format!("/volumes/{key}/")])?;
        ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
        Ok(())
    });
}

/// (6) Restarting the node plugin pod while a volume is in use: the pod
/// keeps its volume, and unmount and delete work after.
#[test]
fn node_plugin_restart_with_volume_in_use() {
    let Some(st) = Story::start("plugin-restart") else {
        return;
    };
    st.run(|st| {
        st.apply_example("local/pvc.yaml")?;
        st.apply_example("local/pod.yaml")?;
        st.wait_pod_ready("cairn-local-example")?;
        let v = volume_of(st, "cairn-local-example", "cairn-local-example")?;
        let plugin = install::node_pod(&v.node)?;
        kubectl::run(&[
            "-n",
            install::NAMESPACE,
            "delete",
            "pod",
            &plugin,
            "--wait=true",
        ])?;
        install::wait_ready(story::REGISTRATION_TIMEOUT)?;
        let replacement = install::node_pod(&v.node)?;
        ensure!(
            replacement != plugin,
            "the node plugin pod was not replaced"
        );

        let out = st.exec(
            "cairn-local-example",
            "date >> /data/hello && cat /data/hello",
        )?;
        ensure!(
            out.lines().count() == 2,
            "the volume after the restart holds {out:?}"
        );
        let p = st.get("pod/cairn-local-example")?;
        ensure!(
            p["status"]["containerStatuses"][0]["restartCount"] == 0,
            "the app restarted"
        );

        let ins = st.inspector(&v.node)?;
        ensure!(
            ins.cat(&format!("volumes/{}/data/hello", v.key))? == out,
            "the node's copy differs from what the pod reads"
        );
        st.delete("pod/cairn-local-example")?;
        st.delete("pvc/cairn-local-example")?;
        assert_nothing_left(&ins, &v)
    });
}

/// (7) A claim larger than any node can hold: the pod stays Pending with
/// the scheduler saying why, the claim stays Pending, no volume is made.
#[test]
fn claim_larger_than_node_stays_pending_with_reason() {
    let Some(st) = Story::start("too-large") else {
        return;
    };
    st.run(|st| {
        let mut pvc = st.example("local/pvc.yaml")?.remove(0);
        pvc["spec"]["resources"]["requests"]["storage"] = json!("1000Pi");
        st.apply(&[pvc])?;
        st.apply_example("local/pod.yaml")?;
        let event = st.wait_event(
            "cairn-local-example",
            "did not have enough free storage",
            Duration::from_secs(90),
        )?;
        eprintln!("the scheduler said: {event}");
        let c = st.get("pvc/cairn-local-example")?;
        ensure!(s(&c, "/status/phase") == "Pending", "claim {}", c["status"]);
        ensure!(
            s(&c, "/spec/volumeName").is_empty(),
            "a 1000Pi claim got a volume"
        );
        let p = st.get("pod/cairn-local-example")?;
        ensure!(s(&p, "/status/phase") == "Pending", "pod {}", p["status"]);
        Ok(())
    });
}

/// (8) deploy/README.md steps 5-8: write, grow, snapshot, restore into a
/// 2Gi claim, read the data back; the snapshot's copy goes with it.
#[test]
fn snapshot_then_restore() {
    let Some(st) = Story::start("snapshot") else {
        return;
    };
    st.run(|st| {
        kubectl::get_opt(&["crd", "volumesnapshots.snapshot.storage.k8s.io"])?.context(
            "no VolumeSnapshot CRD: snapshots need the snapshot CRDs and snapshot-controller \
             (deploy/README.md step 2; kube-box: box crds; box snapshot-controller)",
        )?;
        st.apply_example("local/pvc.yaml")?;
        st.apply_example("local/pod.yaml")?;
        st.wait_pod_ready("cairn-local-example")?;
        let v = volume_of(st, "cairn-local-example", "cairn-local-example")?;
        kubectl::run(&[
            "-n",
            &st.ns,
            "patch",
            "pvc",
            "cairn-local-example",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
        ])?;
        wait_for("pvc capacity 2Gi", Duration::from_secs(120), || {
            let c = st.get("pvc/cairn-local-example")?;
            Ok((s(&c, "/status/capacity/storage") == "2Gi").then_some(()))
        })?;
        let written = st.exec("cairn-local-example", "cat /data/hello")?;

        st.apply_example("local/snapshot.yaml")?;
        let snap = wait_for(
            "the snapshot to be ready to use",
            Duration::from_secs(300),
            || {
                let vs = st.get("volumesnapshot/cairn-local-example-snap")?;
                Ok((vs["status"]["readyToUse"] == true).then_some(vs))
            },
        )?;
        ensure!(
            s(&snap, "/status/restoreSize") == "2Gi",
            "restoreSize {}",
            snap["status"]
        );
        let content = kubectl::json(&[
            "get",
            "volumesnapshotcontent",
            s(&snap, "/status/boundVolumeSnapshotContentName"),
        ])?;
        let snap_key = key_of(s(&content, "/status/snapshotHandle"))?;

        st.apply_example("local/restore.yaml")?;
        st.wait_pod_ready("cairn-local-example-restored")?;
        let restored = st.logs("cairn-local-example-restored")?;
        ensure!(
            restored == written,
            "restored {restored:?}, the source held {written:?}"
        );

        let ins = st.inspector(&v.node)?;
        ensure!(
            ins.exists(&format!("snapshots/{snap_key}"))?,
            "no snapshots/{snap_key} on the node"
        );
        st.delete("pod/cairn-local-example-restored")?;
        st.delete("pvc/cairn-local-example-restored")?;
        st.delete("volumesnapshot/cairn-local-example-snap")?;
        let content_name = s(&content, "/metadata/name").to_string();
        wait_for(
            "the VolumeSnapshotContent to be deleted",
            Duration::from_secs(120),
            || {
                Ok(kubectl::get_opt(&["volumesnapshotcontent", &content_name])?
                    .is_none()
                    .then_some(()))
            },
        )?;
        wait_for(
            "the snapshot's copy to leave the node",
            Duration::from_secs(30),
            || Ok((!ins.exists(&format!("snapshots/{snap_key}"))?).then_some(())),
        )?;
        st.delete("pod/cairn-local-example")?;
        st.delete("pvc/cairn-local-example")?;
        assert_nothing_left(&ins, &v)
    });
}

/// `cairn_rpc_requests_total{method="M",code="OK"}` from a /metrics text.
fn ok_calls(metrics: &str, method: &str) -> u64 {
    let prefix = format!("cairn_rpc_requests_total{{method=\"{method}\",code=\"OK\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

/// The /metrics of every node plugin pod, through the API server's pod proxy.
fn metrics() -> Result<Vec<String>> {
    install::node_pods()?
        .iter()
        .map(|(pod, _)| {
            kubectl::run(&[
                "get",
                "--raw",
                &format!(
                    "/api/v1/namespaces/{}/pods/{pod}:9809/proxy/metrics",
                    install::NAMESPACE
                ),
            ])
        })
        .collect()
}

/// OK calls of `method` counted by all node plugins.
fn ok_calls_total(all: &[String], method: &str) -> u64 {
    all.iter().map(|m| ok_calls(m, method)).sum()
}

/// (9) The node plugins' /metrics count the CSI calls a claim's life makes.
#[test]
fn metrics_count_the_calls() {
    let Some(st) = Story::start("metrics") else {
        return;
    };
    st.run(|st| {
        let before = metrics()?;
        st.apply_example("local/pvc.yaml")?;
        st.apply_example("local/pod.yaml")?;
        st.wait_pod_ready("cairn-local-example")?;
        st.delete("pod/cairn-local-example")?;
        st.delete("pvc/cairn-local-example")?;
        let after = metrics()?;
        for method in [
            "CreateVolume",
            "NodeStageVolume",
            "NodePublishVolume",
            "NodeUnpublishVolume",
            "NodeUnstageVolume",
        ] {
            let got =
                ok_calls_total(&after, method).saturating_sub(ok_calls_total(&before, method));
            ensure!(
                got >= 1,
                "{method}: {got} more OK calls counted, expected at least 1"
            );
        }
        wait_for(
            "DeleteVolume to be counted",
            Duration::from_secs(60),
            || {
                let now = metrics()?;
                Ok(
                    (ok_calls_total(&now, "DeleteVolume")
                        > ok_calls_total(&before, "DeleteVolume"))
                    .then_some(()),
                )
            },
        )?;
        Ok(())
    });
}

/// A DaemonSet whose registrar announces the wrong socket path: the install
/// step fails, naming the cause. The good install is restored after.
#[test]
fn broken_socket_path_install_fails_naming_the_cause() {
    if !story::opted_in("broken-socket-path") {
        return;
    }
    let _lock = story::cluster_lock().expect("taking the e2e cluster lock");
    let result = story::install_from_env(
        Some(Breakage::WrongRegistrationPath),
        Duration::from_secs(45),
    );
    let restored = story::install_from_env(None, story::REGISTRATION_TIMEOUT);
    let err = match result {
        Ok(i) => panic!(
            "a registrar announcing the wrong socket path installed cleanly on {:?}",
            i.nodes
        ),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("the install step said:\n{err}");
    if let Err(e) = restored {
        panic!("restoring the good install failed: {e:#}");
    }
    assert!(
        err.contains("never registered on node") && err.contains("check the socket path"),
        "the failure does not name the cause: {err}"
    );
    assert!(
        err.contains("cairn.csi.io-wrong"),
        "the failure does not show the wrong path: {err}"
    );
}
