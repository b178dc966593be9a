//! Installing Cairn the way a user does: `kubectl apply -k` of an overlay on
//! top of `deploy/local`, then the checks of deploy/README.md's install step
//! (rollout, CSINode registration, CSIStorageCapacity). The overlay the
//! suite renders changes only what the cluster forces, each change named by
//! an environment variable (see [`Config`]), so the manifests users apply are
//! the ones tested.

use crate::kubectl::{self, items, s, wait_for};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DRIVER: &str = "cairn.csi.io";
pub const NAMESPACE: &str = "cairn-system";
pub const DAEMONSET: &str = "cairn-node";
pub const STORAGE_CLASS: &str = "cairn-local";
pub const TOPOLOGY_KEY: &str = "topology.cairn.csi.io/node";
const POD_SELECTOR: &str = "app.kubernetes.io/name=cairn-node";

/// What the cluster forces on the manifests, from the environment.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// `CAIRN_E2E_HOST_NETWORK=1`: clusters without a pod network (kube-box):
    /// the node pod and the test pods get `hostNetwork: true`.
    pub host_network: bool,
    /// `CAIRN_E2E_APISERVER=HOST:PORT`: KUBERNETES_SERVICE_HOST/PORT for the
    /// sidecars where the service VIP is not routable (kube-box:
    /// 127.0.0.1:6443).
    pub apiserver: Option<(String, String)>,
    /// `CAIRN_E2E_UNENFORCED_CAPACITY=allow`: nodes whose local root has no
    /// project quotas (kind, kube-box on a kernel without quota support).
    pub unenforced_capacity: Option<String>,
    /// `CAIRN_E2E_LOCAL_ROOT=/path`: the node's directory for local volumes
    /// instead of /var/lib/cairn (kube-box: a loop-mounted XFS with prjquota).
    pub local_root: Option<String>,
    /// `CAIRN_E2E_IMAGE=name:tag`: the cairn-csi image, when it is not
    /// available under the name the manifests pin.
    pub image: Option<String>,
    /// `CAIRN_E2E_PULL_POLICY=Never|IfNotPresent|Always` for every container.
    pub pull_policy: Option<String>,
}

impl Config {
    pub fn from_env() -> Result<Config> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let apiserver = match var("CAIRN_E2E_APISERVER") {
            None => None,
            Some(v) => {
                let (host, port) = v
                    .rsplit_once(':')
                    .with_context(|| format!("CAIRN_E2E_APISERVER={v}: expected HOST:PORT"))?;
                Some((host.to_string(), port.to_string()))
            }
        };
        Ok(Config {
            host_network: var("CAIRN_E2E_HOST_NETWORK").as_deref() == Some("1"),
            apiserver,
            unenforced_capacity: var("CAIRN_E2E_UNENFORCED_CAPACITY"),
            local_root: var("CAIRN_E2E_LOCAL_ROOT"),
            image: var("CAIRN_E2E_IMAGE"),
            pull_policy: var("CAIRN_E2E_PULL_POLICY"),
        })
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ lies in the repository")
        .to_path_buf()
}

/// A deliberate mistake in the rendered overlay, to show what the install
/// step reports when a user's manifests are wrong.
#[derive(Clone, Copy, Debug)]
pub enum Breakage {
    /// node-driver-registrar tells the kubelet a socket path where no socket is.
    WrongRegistrationPath,
}

fn daemonset_of(rendered: &str) -> Result<Value> {
    let doc = rendered
        .split("\n---\n")
        .find(|d| d.contains("\nkind: DaemonSet\n") || d.starts_with("kind: DaemonSet\n"))
        .context("deploy/local renders no DaemonSet")?;
    let text = kubectl::run_with_input(
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        Some(doc),
    )?;
    serde_json::from_str(&text).context("parsing the rendered DaemonSet")
}

fn container_index(ds: &Value, name: &str) -> Result<usize> {
    ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().position(|c| c["name"] == name))
        .with_context(|| format!("DaemonSet {DAEMONSET} has no container {name}"))
}

/// JSON patch ops replacing the argument of container `c` that starts with
/// `prefix` (and testing it is still what was rendered).
fn replace_arg(ds: &Value, container: &str, prefix: &str, value: &str) -> Result<Vec<Value>> {
    let c = container_index(ds, container)?;
    let args = ds["spec"]["template"]["spec"]["containers"][c]["args"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let a = args
        .iter()
        .position(|a| a.as_str().is_some_and(|a| a.starts_with(prefix)))
        .with_context(|| format!("container {container} has no argument {prefix}..."))?;
    let path = format!("/spec/template/spec/containers/{c}/args/{a}");
    Ok(vec![
        json!({"op": "test", "path": path, "value": args[a]}),
        json!({"op": "replace", "path": path, "value": format!("{prefix}{value}")}),
    ])
}

/// Writes `dir/kustomization.yaml`: deploy/local plus what `cfg` asks for.
pub fn render(cfg: &Config, dir: &Path, breakage: Option<Breakage>) -> Result<()> {
    let local = repo_root().join("deploy/local");
    let rendered = kubectl::run(&["kustomize", &local.to_string_lossy()])?;
    let ds = daemonset_of(&rendered)?;
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut ops = Vec::new();
    if cfg.host_network {
        ops.push(json!({"op": "add", "path": "/spec/template/spec/hostNetwork", "value": true}));
    }
    for (i, c) in containers.iter().enumerate() {
        if let Some((host, port)) = &cfg.apiserver {
            let env = [
                json!({"name": "KUBERNETES_SERVICE_HOST", "value": host}),
                json!({"name": "KUBERNETES_SERVICE_PORT", "value": port}),
            ];
            if c["env"].is_array() {
                for e in env {
                    let path = format!("/spec/template/spec/containers/{i}/env/-");
                    ops.push(json!({"op": "add", "path": path, "value": e}));
                }
            } else {
                let path = format!("/spec/template/spec/containers/{i}/env");
                ops.push(json!({"op": "add", "path": path, "value": env}));
            }
        }
        if let Some(policy) = &cfg.pull_policy {
            let path = format!("/spec/template/spec/containers/{i}/imagePullPolicy");
            ops.push(json!({"op": "add", "path": path, "value": policy}));
        }
    }
    if let Some(mode) = &cfg.unenforced_capacity {
        ops.extend(replace_arg(
            &ds,
            "cairn-csi",
            "--unenforced-capacity=",
            mode,
        )?);
    }
    if let Some(root) = &cfg.local_root {
        let v = ds["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .and_then(|vs| vs.iter().position(|v| v["name"] == "local-root"))
            .context("DaemonSet has no volume local-root")?;
        let path = format!("/spec/template/spec/volumes/{v}/hostPath/path");
        ops.push(json!({"op": "replace", "path": path, "value": root}));
    }
    match breakage {
        None => {}
        Some(Breakage::WrongRegistrationPath) => ops.extend(replace_arg(
            &ds,
            "node-driver-registrar",
            "--kubelet-registration-path=",
            "/var/lib/kubelet/plugins/cairn.csi.io-wrong/csi.sock",
        )?),
    }

    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    // kustomize takes only relative paths to other kustomizations.
    let up = "../".repeat(dir.components().count().saturating_sub(1));
    let local = local.canonicalize().context("resolving deploy/local")?;
    let relative = format!("{up}{}", local.to_string_lossy().trim_start_matches('/'));
    let mut k = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [relative],
    });
    if !ops.is_empty() {
        k["patches"] = json!([{
            "target": {"group": "apps", "version": "v1", "kind": "DaemonSet", "name": DAEMONSET},
            "patch": serde_json::to_string(&ops)?,
        }]);
    }
    if let Some(image) = &cfg.image {
        let (name, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
        k["images"] = json!([{"name": "cairn-csi", "newName": name, "newTag": tag}]);
    }
    // JSON is YAML: kustomize reads this as it is.
    let file = dir.join("kustomization.yaml");
    std::fs::write(&file, serde_json::to_string_pretty(&k)?)
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

/// What a finished install step found.
#[derive(Clone, Debug)]
pub struct Installed {
    /// Nodes that run a cairn-node pod.
    pub nodes: Vec<String>,
}

/// Applies the overlay in `dir` and waits as deploy/README.md's install step
/// does; an error names what did not come up and why.
pub fn install(dir: &Path, registration_timeout: Duration) -> Result<Installed> {
    kubectl::run(&["apply", "-k", &dir.to_string_lossy()])
        .with_context(|| format!("installing Cairn from {}", dir.display()))?;
    wait_ready(registration_timeout)
}

/// The running cairn-node pods (not terminating), with their nodes.
pub fn node_pods() -> Result<Vec<(String, String)>> {
    let pods = kubectl::json(&["-n", NAMESPACE, "get", "pods", "-l", POD_SELECTOR])?;
    Ok(items(&pods)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                s(p, "/metadata/name").to_string(),
                s(p, "/spec/nodeName").to_string(),
            )
        })
        .collect())
}

/// The cairn-node pod on `node`.
pub fn node_pod(node: &str) -> Result<String> {
    node_pods()?
        .into_iter()
        .find(|(_, n)| n == node)
        .map(|(p, _)| p)
        .with_context(|| format!("no cairn-node pod on node {node}"))
}

fn pod_summary() -> String {
    kubectl::run(&["-n", NAMESPACE, "get", "pods", "-o", "wide"])
        .unwrap_or_else(|e| format!("{e:#}"))
}

/// Rollout finished, every node's driver registered with its kubelet, and a
/// CSIStorageCapacity published for it.
pub fn wait_ready(registration_timeout: Duration) -> Result<Installed> {
    wait_for(
        &format!("daemonset/{DAEMONSET} to roll out in {NAMESPACE}"),
        Duration::from_secs(180),
        || {
            let ds = kubectl::json(&["-n", NAMESPACE, "get", "daemonset", DAEMONSET])?;
            let st = &ds["status"];
            let desired = st["desiredNumberScheduled"].as_i64().unwrap_or(0);
            let done = st["observedGeneration"].as_i64() >= ds["metadata"]["generation"].as_i64()
                && desired > 0
                && st["updatedNumberScheduled"].as_i64() == Some(desired)
                && st["numberReady"].as_i64() == Some(desired)
                && st["numberAvailable"].as_i64() == Some(desired);
            // A replaced pod may still be terminating.
            Ok((done && node_pods()?.len() as i64 == desired).then_some(()))
        },
    )
    .map_err(|e| {
        e.context(format!(
            "the node plugin did not become ready (a pod 5/6 READY: its local root refuses \
             volumes, see deploy/README.md Troubleshooting)\n{}\ncairn-csi log:\n{}",
            pod_summary(),
            kubectl::run(&[
                "-n",
                NAMESPACE,
                "logs",
                &format!("ds/{DAEMONSET}"),
                "--tail=20"
            ])
            .unwrap_or_default()
        ))
    })?;

    let pods = node_pods()?;
    for (pod, node) in &pods {
        wait_for(
            &format!("driver {DRIVER} in csinode/{node}"),
            registration_timeout,
            || {
                let csinode = kubectl::get_opt(&["csinode", node])?;
                let found = csinode.as_ref().is_some_and(|c| {
                    c["spec"]["drivers"]
                        .as_array()
                        .is_some_and(|ds| ds.iter().any(|d| d["name"] == DRIVER))
                });
                Ok(found.then_some(()))
            },
        )
        .map_err(|_| never_registered(pod, node, registration_timeout))?;
    }
    for (_, node) in &pods {
        wait_for(
            &format!("a CSIStorageCapacity of {STORAGE_CLASS} for node {node}"),
            Duration::from_secs(120),
            || Ok(capacity(node)?.map(|_| ())),
        )?;
    }
    Ok(Installed {
        nodes: pods.into_iter().map(|(_, n)| n).collect(),
    })
}

/// The CSIStorageCapacity of cairn-local for `node`: (capacity,
/// maximumVolumeSize) as written in the object.
pub fn capacity(node: &str) -> Result<Option<(String, String)>> {
    let list = kubectl::json(&["-n", NAMESPACE, "get", "csistoragecapacities"])?;
    Ok(items(&list)
        .iter()
        .find(|c| {
            c["storageClassName"] == STORAGE_CLASS
                && c["nodeTopology"]["matchLabels"][TOPOLOGY_KEY] == node
        })
        .map(|c| {
            (
                s(c, "/capacity").to_string(),
                s(c, "/maximumVolumeSize").to_string(),
            )
        }))
}

/// The error of a driver that never appeared in its node's CSINode: the
/// socket the registrar announces against the one cairn-csi serves, and the
/// registrar's own words.
fn never_registered(pod: &str, node: &str, timeout: Duration) -> anyhow::Error {
    let spec = kubectl::json(&["-n", NAMESPACE, "get", "pod", pod]).unwrap_or_default();
    let containers = spec["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let registration_path = containers
        .iter()
        .filter(|c| c["name"] == "node-driver-registrar")
        .flat_map(|c| c["args"].as_array().cloned().unwrap_or_default())
        .find_map(|a| {
            a.as_str()
                .and_then(|a| a.strip_prefix("--kubelet-registration-path="))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "(no --kubelet-registration-path)".to_string());
    let socket_dir = spec["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "socket-dir"))
        .map(|v| s(v, "/hostPath/path").to_string())
        .unwrap_or_else(|| "(no socket-dir hostPath)".to_string());
    let verdict = if Path::new(&registration_path).parent() == Some(Path::new(&socket_dir)) {
        "they agree: look at the registrar's log".to_string()
    } else {
        format!("{registration_path} is not in {socket_dir}: the kubelet cannot reach the driver")
    };
    let log = kubectl::run(&[
        "-n",
        NAMESPACE,
        "logs",
        pod,
        "-c",
        "node-driver-registrar",
        "--tail=4",
    ])
    .unwrap_or_else(|e| format!("{e:#}"));
    anyhow::anyhow!(
        "driver {DRIVER} never registered on node {node} within {}s: check the socket path: \
         node-driver-registrar (pod {pod}) gives the kubelet --kubelet-registration-path={registration_path}, \
         cairn-csi serves its socket in the socket-dir hostPath {socket_dir}; {verdict}. \
         node-driver-registrar's log ends:\n{}",
        timeout.as_secs(),
        log.trim_end()
    )
}

/// The host directory of the local root, as the installed DaemonSet mounts it.
pub fn local_root_on_host() -> Result<String> {
    let ds = kubectl::json(&["-n", NAMESPACE, "get", "daemonset", DAEMONSET])?;
    let root = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "local-root"))
        .map(|v| s(v, "/hostPath/path").to_string())
        .unwrap_or_default();
    if root.is_empty() {
        bail!("daemonset/{DAEMONSET} has no hostPath volume local-root");
    }
    Ok(root)
}
