//! One user story: the opt-in check, the install, a namespace of its own,
//! the examples applied into it, diagnostics when it fails and cleanup
//! whatever happens.

use crate::install::{self, Breakage, Config, Installed, NAMESPACE};
use crate::kubectl::{self, items, s, wait_for};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long the install step waits for the driver to appear in CSINode.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(90);
pub const POD_READY: Duration = Duration::from_secs(180);

/// Whether `CAIRN_E2E=1` asks for the suite; if not, the test says so,
/// loudly, and passes (`cairn_harness::skip::not_asked_for`): CI asks for
/// the suite in its own step, `.ci/e2e.sh`.
/// Opt-in even where KUBECONFIG is set: the suite installs a DaemonSet with
/// privileged pods into the cluster it names, which no plain `cargo nextest
/// run` should do to whatever cluster a shell happens to point at.
pub fn opted_in(test: &str) -> bool {
    if std::env::var("CAIRN_E2E").as_deref() == Ok("1") {
        return true;
    }
    let cluster = match std::env::var("KUBECONFIG") {
        Ok(k) if !k.is_empty() => format!("KUBECONFIG={k} is set, but "),
        _ => "no cluster: KUBECONFIG is unset and ".to_string(),
    };
    cairn_harness::skip::not_asked_for(&format!(
        "e2e story {test}: {cluster}CAIRN_E2E=1 is not. The suite installs Cairn \
         (deploy/local) into the cluster KUBECONFIG names; run it with `CAIRN_E2E=1 cargo \
         nextest run -p cairn-e2e` or `.ci/e2e.sh` (kube-box)"
    ));
    false
}

/// One test at a time on the cluster, across nextest's processes: stories
/// restart the node plugin and reinstall it, and read the node's state.
pub fn cluster_lock() -> Result<File> {
    let path = std::env::temp_dir().join("cairn-e2e.lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Where the suite renders its overlays: `kubectl delete -k` of
/// `$TMPDIR/cairn-e2e/overlay` removes what it installed.
pub fn overlay_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join("cairn-e2e").join(name)
}

/// Renders the overlay from the environment and installs it.
pub fn install_from_env(breakage: Option<Breakage>, timeout: Duration) -> Result<Installed> {
    let cfg = Config::from_env()?;
    let dir = overlay_dir(if breakage.is_some() {
        "overlay-broken"
    } else {
        "overlay"
    });
    kubectl::run(&["get", "--raw", "/readyz"]).context(
        "CAIRN_E2E=1 but no cluster answers: set KUBECONFIG to a reachable cluster \
         (kube-box: eval \"$(../shared/kube-box/box env)\")",
    )?;
    install::render(&cfg, &dir, breakage)?;
    install::install(&dir, timeout)
}

pub struct Story {
    pub test: String,
    pub ns: String,
    pub cfg: Config,
    pub installed: Installed,
    started: Instant,
    diagnosed: bool,
    _lock: File,
}

impl Story {
    /// None when the suite is not opted in; panics when the install fails.
    pub fn start(test: &str) -> Option<Story> {
        if !opted_in(test) {
            return None;
        }
        let started = Instant::now();
        let lock = cluster_lock().expect("taking the e2e cluster lock");
        let cfg = Config::from_env().expect("reading CAIRN_E2E_* settings");
        let installed = match install_from_env(None, REGISTRATION_TIMEOUT) {
            Ok(i) => i,
            Err(e) => panic!("installing Cairn failed: {e:#}"),
        };
        let short: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let ns = format!("e2e-{}-{}", short.trim_end_matches('-'), std::process::id());
        let story = Story {
            test: test.to_string(),
            ns,
            cfg,
            installed,
            started,
            diagnosed: false,
            _lock: lock,
        };
        if let Err(e) = story.create_namespace() {
            panic!("creating namespace {}: {e:#}", story.ns);
        }
        eprintln!(
            "e2e {}: installed in {:.1}s on {:?}, namespace {}",
            story.test,
            started.elapsed().as_secs_f64(),
            story.installed.nodes,
            story.ns
        );
        Some(story)
    }

    /// Runs the story; on failure prints the namespace's events, pod
    /// statuses and the driver's log, then fails the test. The namespace is
    /// deleted either way (Drop).
    pub fn run(mut self, body: impl FnOnce(&Story) -> Result<()>) {
        let t = Instant::now();
        match body(&self) {
            Ok(()) => eprintln!(
                "e2e {}: story passed in {:.1}s ({:.1}s with the install step)",
                self.test,
                t.elapsed().as_secs_f64(),
                self.started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                self.diagnose();
                self.diagnosed = true;
                panic!("e2e {} failed: {e:#}", self.test);
            }
        }
    }

    fn create_namespace(&self) -> Result<()> {
        kubectl::run(&["create", "namespace", &self.ns])?;
        // Pods are refused until the namespace's default ServiceAccount exists.
        wait_for(
            "the namespace's default ServiceAccount",
            Duration::from_secs(60),
            || Ok(kubectl::get_opt(&["-n", &self.ns, "serviceaccount", "default"])?.map(|_| ())),
        )
    }

    pub fn diagnose(&self) {
        let sections: [(&str, Vec<&str>); 6] = [
            (
                "events",
                vec!["-n", &self.ns, "get", "events", "--sort-by=.lastTimestamp"],
            ),
            (
                "pods, claims",
                vec!["-n", &self.ns, "get", "pods,pvc", "-o", "wide"],
            ),
            ("describe pods", vec!["-n", &self.ns, "describe", "pods"]),
            (
                "cairn-system pods",
                vec!["-n", NAMESPACE, "get", "pods", "-o", "wide"],
            ),
            (
                "cairn-csi log",
                vec![
                    "-n",
                    NAMESPACE,
                    "logs",
                    "ds/cairn-node",
                    "-c",
                    "cairn-csi",
                    "--tail=60",
                ],
            ),
            (
                "external-provisioner log",
                vec![
                    "-n",
                    NAMESPACE,
                    "logs",
                    "ds/cairn-node",
                    "-c",
                    "external-provisioner",
                    "--tail=30",
                ],
            ),
        ];
        for (title, args) in sections {
            let out = kubectl::run(&args).unwrap_or_else(|e| format!("{e:#}"));
            eprintln!(
                "----- {title} (kubectl {}) -----\n{}",
                args.join(" "),
                out.trim_end()
            );
        }
    }

    // ----- objects ------------------------------------------------------

    /// A file of deploy/examples as JSON objects, moved into this story's
    /// namespace (and onto the host network where the cluster forces it):
    /// the example as written otherwise.
    pub fn example(&self, rel: &str) -> Result<Vec<Value>> {
        let path = install::repo_root().join("deploy/examples").join(rel);
        let text = kubectl::run(&[
            "create",
            "--dry-run=client",
            "-o",
            "json",
            "-f",
            &path.to_string_lossy(),
        ])?;
        // One JSON document per object of a multi-document file.
        let mut objects = Vec::new();
        for v in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
            let v =
                v.with_context(|| format!("parsing {} as kubectl renders it", path.display()))?;
            if v["kind"] == "List" {
                objects.extend(items(&v));
            } else {
                objects.push(v);
            }
        }
        Ok(objects.into_iter().map(|o| self.adapt(o)).collect())
    }

    fn adapt(&self, mut o: Value) -> Value {
        o["metadata"]["namespace"] = json!(self.ns);
        if o["kind"] == "Pod" && self.cfg.host_network {
            o["spec"]["hostNetwork"] = json!(true);
        }
        o
    }

    pub fn apply(&self, objects: &[Value]) -> Result<()> {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        kubectl::run_with_input(&["apply", "-f", "-"], Some(&list.to_string()))?;
        Ok(())
    }

    /// Applies a file of deploy/examples as written (in this namespace).
    pub fn apply_example(&self, rel: &str) -> Result<Vec<Value>> {
        let objects = self.example(rel)?;
        self.apply(&objects)?;
        Ok(objects)
    }

    pub fn get(&self, what: &str) -> Result<Value> {
        kubectl::json(&["-n", &self.ns, "get", what])
    }

    pub fn get_opt(&self, what: &str) -> Result<Option<Value>> {
        kubectl::get_opt(&["-n", &self.ns, what])
    }

    /// Deletes and waits until it is gone; pods get a 1 s grace period (the
    /// examples' `sleep` as PID 1 ignores SIGTERM).
    pub fn delete(&self, what: &str) -> Result<()> {
        let mut args = vec![
            "-n",
            &self.ns,
            "delete",
            what,
            "--wait=true",
            "--timeout=120s",
        ];
        if what.starts_with("pod/") {
            args.push("--grace-period=1");
        }
        kubectl::run(&args)?;
        Ok(())
    }

    pub fn wait_pod_ready(&self, pod: &str) -> Result<Value> {
        wait_for(&format!("pod/{pod} to be Ready"), POD_READY, || {
            let p = self.get(&format!("pod/{pod}"))?;
            let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            Ok(ready.then_some(p))
        })
    }

    pub fn wait_bound(&self, pvc: &str) -> Result<Value> {
        wait_for(
            &format!("pvc/{pvc} to be Bound"),
            Duration::from_secs(60),
            || {
                let c = self.get(&format!("pvc/{pvc}"))?;
                Ok((s(&c, "/status/phase") == "Bound").then_some(c))
            },
        )
    }

    pub fn logs(&self, pod: &str) -> Result<String> {
        kubectl::run(&["-n", &self.ns, "logs", pod])
    }

    pub fn exec(&self, pod: &str, script: &str) -> Result<String> {
        kubectl::run(&["-n", &self.ns, "exec", pod, "--", "sh", "-c", script])
    }

    /// Events about `name` in this namespace, as "Reason: message".
    pub fn events_of(&self, name: &str) -> Result<Vec<String>> {
        let list = kubectl::json(&[
            "-n",
            &self.ns,
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ])?;
        Ok(items(&list)
            .iter()
            .map(|e| format!("{}: {}", s(e, "/reason"), s(e, "/message")))
            .collect())
    }

    /// Waits for an event about `name` whose text contains `needle`.
    pub fn wait_event(&self, name: &str, needle: &str, timeout: Duration) -> Result<String> {
        wait_for(
            &format!("an event on {name} saying {needle:?}"),
            timeout,
            || {
                Ok(self
                    .events_of(name)?
                    .into_iter()
                    .find(|e| e.contains(needle)))
            },
        )
    }

    // ----- the node's side --------------------------------------------------

    /// A pod on `node` that can read the local root and the kubelet's mount
    /// table: the suite's only view of the node, so it works on any cluster
    /// that admits a privileged pod.
    pub fn inspector(&self, node: &str) -> Result<Inspector> {
        let root = install::local_root_on_host()?;
        let name = format!("node-inspector-{}", node.replace('.', "-"));
        let name: String = name.chars().take(60).collect();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "nodeName": node,
                "hostPID": true,
                "hostNetwork": self.cfg.host_network,
                "terminationGracePeriodSeconds": 1,
                "tolerations": [{"operator": "Exists"}],
                "containers": [{
                    "name": "inspect",
                    "image": "busybox:1.37",
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
                    "securityContext": {"privileged": true},
                    "volumeMounts": [{"name": "root", "mountPath": "/cairn-root", "readOnly": true}],
                }],
                "volumes": [{"name": "root", "hostPath": {"path": root, "type": "Directory"}}],
            },
        });
        self.apply(&[pod])?;
        self.wait_pod_ready(&name)?;
        Ok(Inspector {
            ns: self.ns.clone(),
            pod: name,
        })
    }
}

impl Drop for Story {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.diagnosed {
            self.diagnose();
        }
        let t = Instant::now();
        // The examples' pods ignore SIGTERM: do not wait their 30 s each.
        let _ = kubectl::run(&[
            "-n",
            &self.ns,
            "delete",
            "pods",
            "--all",
            "--grace-period=1",
            "--wait=false",
        ]);
        if let Err(e) = kubectl::run(&[
            "delete",
            "namespace",
            &self.ns,
            "--wait=true",
            "--timeout=180s",
        ]) {
            eprintln!(
                "e2e {}: CLEANUP FAILED, namespace {} left: {e:#}",
                self.test, self.ns
            );
        }
        // Claims are gone with the namespace; their PVs go when the
        // provisioner has deleted the volumes.
        let ns = self.ns.clone();
        let left = wait_for(
            "the namespace's PVs to be deleted",
            Duration::from_secs(120),
            || {
                let pvs = kubectl::json(&["get", "pv"])?;
                let mine = items(&pvs)
                    .iter()
                    .filter(|pv| s(pv, "/spec/claimRef/namespace") == ns)
                    .count();
                Ok((mine == 0).then_some(()))
            },
        );
        if let Err(e) = left {
            eprintln!("e2e {}: CLEANUP FAILED: {e:#}", self.test);
        }
        eprintln!(
            "e2e {}: cleaned up in {:.1}s",
            self.test,
            t.elapsed().as_secs_f64()
        );
    }
}

/// Commands on a node, through its inspector pod.
pub struct Inspector {
    ns: String,
    pod: String,
}

impl Inspector {
    pub fn sh(&self, script: &str) -> Result<String> {
        kubectl::run(&["-n", &self.ns, "exec", &self.pod, "--", "sh", "-c", script])
    }

    /// The kubelet's mount table (its mount namespace; the host's pid 1 where
    /// no kubelet process is visible).
    pub fn mountinfo(&self) -> Result<String> {
        self.sh("for p in $(pidof kubelet) 1; do cat /proc/$p/mountinfo && break; done")
    }

    /// Mounts under /var/lib/kubelet whose mount point or source path
    /// contains any of `needles`.
    pub fn kubelet_mounts(&self, needles: &[&str]) -> Result<Vec<String>> {
        Ok(self
            .mountinfo()?
            .lines()
            .filter(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.len() > 4
                    && f[4].starts_with("/var/lib/kubelet/")
                    && needles.iter().any(|n| f[3].contains(n) || f[4].contains(n))
            })
            .map(str::to_string)
            .collect())
    }

    /// Entries of a directory of the local root ("volumes", "snapshots").
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let out = self.sh(&format!("ls -1 /cairn-root/{dir} 2>/dev/null || true"))?;
        Ok(out.lines().map(str::to_string).collect())
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        let out = self.sh(&format!(
            "if [ -e /cairn-root/{path} ]; then echo yes; else echo no; fi"
        ))?;
        Ok(out.trim() == "yes")
    }

    pub fn cat(&self, path: &str) -> Result<String> {
        self.sh(&format!("cat /cairn-root/{path}"))
    }

    /// Backing files of the node's loop devices.
    pub fn loop_backing_files(&self) -> Result<String> {
        self.sh("cat /sys/block/loop*/loop/backing_file 2>/dev/null || true")
    }
}

/// The key of a local volume or snapshot id (`local:<node>:<key>`,
/// `snap:<node>:<key>`): its directory's name under the local root.
pub fn key_of(id: &str) -> Result<String> {
    let mut parts = id.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("local" | "snap"), Some(_), Some(key)) if !key.is_empty() => Ok(key.to_string()),
        _ => bail!("{id:?} is not a local volume or snapshot id"),
    }
}
