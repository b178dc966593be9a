#!/usr/bin/env python3
"""Check rendered Cairn manifests. Called by deploy/validate.sh, which renders
them and installs what this imports (PyYAML, kubernetes-validate).

Usage: check_manifests.py --cairn-help FILE --kube-version V [--kube-version V ...]
                          [--examples NAME=FILE ...] [--walkthrough NAME=FILE ...]
                          NAME=RENDERED.yaml [NAME=RENDERED.yaml ...]

Checks, for every object of every rendered file:
  - schema: the Kubernetes OpenAPI schema of each --kube-version, strict (an
    unknown field is an error). Kinds from CRD groups listed in CRD_GROUPS are
    skipped and counted; any other kind without a schema is an error.
  - images: every container image carries a tag or digest, never :latest.
  - names: every StorageClass provisioner and VolumeSnapshotClass driver is a
    CSIDriver of the overlay; every cairn-csi --driver-name is one; in each
    pod the registrar announces, and the socket-dir hostPath is, the plugin
    directory of that pod's cairn-csi driver name; every CSIDriver has a
    node plugin registering it.
  - namespaces: namespaced objects are in cairn-system, cluster-scoped ones
    (CSIDriver, StorageClass, VolumeSnapshotClass, ...) carry no namespace.
  - references: service accounts, roles and named probe ports exist.
  - cairn-csi flags: every --flag given to a cairn-csi container is listed by
    `cairn-csi serve --help` (the file --cairn-help), the first argument is
    `serve`, the flags its Usage line requires are given (or their env var
    set), and --node-id is given where the mode is node or all.
Across overlays:
  - a CSIDriver that several overlays define has the same value in all of
    them for every field the API server refuses to change (read from the
    schema's "This field is immutable"): switching overlays must not fail.
Examples against the walkthrough (--walkthrough: the docs whose commands a
user runs in order, deploy/README.md):
  - a claim restored or cloned from an example's snapshot or claim asks for
    at least the source claim's size after every `kubectl patch pvc` the
    walkthrough makes to it;
  - no `kubectl apply -f <examples dir>/` applies a restore together with
    its snapshot; the file with the snapshot is applied before the file with
    the restore, with a `kubectl wait` for the snapshot in between.
Prints one line per problem and, last, `deploy: N manifests valid, M flags
checked`. Exits 1 if there was any problem.
"""

import argparse
import json
import os
import re
import sys

import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

# API groups whose kinds are CRDs, not part of Kubernetes' OpenAPI schema.
CRD_GROUPS = {"snapshot.storage.k8s.io", "groupsnapshot.storage.k8s.io"}

WORKLOAD_KINDS = {"Pod", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}
# Kinds without a namespace (the rest of what these manifests hold is
# namespaced).
CLUSTER_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CSIDriver", "StorageClass",
                 "VolumeSnapshotClass", "PersistentVolume", "PriorityClass",
                 "CustomResourceDefinition", "VolumeAttributesClass"}
NAMESPACE = "cairn-system"
# Used where the schema has no descriptions to read them from.
CSIDRIVER_IMMUTABLE_FALLBACK = {"attachRequired", "volumeLifecycleModes"}
PLUGINS_DIR = "/var/lib/kubelet/plugins"
FLAG_RE = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")
VAR_RE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


class Report:
    def __init__(self):
        self.problems = []

    def fail(self, where, message):
        self.problems.append(f"{where}: {message}")


def where_of(source, obj):
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{source}: {obj.get('kind', '?')} {ns + '/' if ns else ''}{name}"


def pod_spec(obj):
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind in WORKLOAD_KINDS:
        return ((spec.get("template") or {}).get("spec")) or {}
    return None


def containers(spec):
    return (spec.get("initContainers") or []) + (spec.get("containers") or [])


def image_repo(image):
    """registry/path/name:tag@digest -> name"""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def check_schema(report, source, obj, versions):
    api_version = obj.get("apiVersion", "")
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    if group in CRD_GROUPS:
        return "skipped"
    for version in versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except ValidationError as e:
            path = ".".join(str(p) for p in e.absolute_path) or "(top level)"
            report.fail(where_of(source, obj), f"k8s {version} schema: {path}: {e.message}")
            return "invalid"
        except SchemaNotFoundError as e:
            report.fail(where_of(source, obj), f"{e.message} (not a known CRD group either)")
            return "invalid"
    return "valid"


def check_images(report, source, obj, spec):
    for c in containers(spec):
        image = c.get("image", "")
        where = f"{where_of(source, obj)} container {c.get('name')}"
        if "@sha256:" in image:
            continue
        name_part = image.rsplit("/", 1)[-1]
        if ":" not in name_part:
            report.fail(where, f"image {image!r} is not pinned (no tag); "
                               "pin it in deploy/components/common")
        elif name_part.endswith(":latest"):
            report.fail(where, f"image {image!r} uses :latest")


def expand(value, env):
    return VAR_RE.sub(lambda m: env.get(m.group(1), m.group(0)), value)


def parse_help(text):
    """Flags `cairn-csi serve --help` lists, the flags its Usage line requires,
    and the env var clap names for each flag ([env: NAME=])."""
    flags = set(FLAG_RE.findall(text))
    usage = next((line for line in text.splitlines() if line.startswith("Usage:")), "")
    required = set(FLAG_RE.findall(re.sub(r"\[[^]]*\]", "", usage)))
    env_of = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s*(?:-\w, )?(--[a-z0-9][a-z0-9-]*)", line)
        if m:
            current = m.group(1)
        e = re.search(r"\[env: ([A-Za-z_][A-Za-z0-9_]*)=", line)
        if e and current:
            env_of[current] = e.group(1)
    return flags, required, env_of


def check_cairn(report, source, obj, spec, help_, driver_names):
    """Returns the number of flags checked."""
    help_flags, required, env_of = help_
    checked = 0
    for c in containers(spec):
        if image_repo(c.get("image", "")) != "cairn-csi":
            continue
        where = f"{where_of(source, obj)} container {c.get('name')}"
        argv = list(c.get("command") or [])[1:] + list(c.get("args") or [])
        if not argv or argv[0] != "serve":
            report.fail(where, f"cairn-csi must be started as `cairn-csi serve ...`, got {argv[:1]}")
        env = {e["name"]: e["value"] for e in c.get("env") or [] if "value" in e}
        env_names = {e["name"] for e in c.get("env") or []}
        given = {}
        for arg in argv:
            if not arg.startswith("--"):
                continue
            flag, _, value = arg.partition("=")
            checked += 1
            if flag not in help_flags:
                report.fail(where, f"{flag} is not a flag of `cairn-csi serve` "
                                   "(not in its --help)")
            for var in VAR_RE.findall(value):
                if var not in env_names:
                    report.fail(where, f"{flag} uses $({var}), which the container's env does not set")
            given[flag] = expand(value, env)
        for flag in sorted(required):
            if flag not in given and env_of.get(flag) not in env_names:
                report.fail(where, f"`cairn-csi serve` requires {flag} (its --help Usage line), "
                                   "which is neither given nor set through its env var")
        mode = given.get("--mode", env.get("CAIRN_MODE", "all"))
        if mode in ("node", "all") and "--node-id" not in given and "NODE_ID" not in env_names:
            report.fail(where, f"--mode={mode} needs --node-id")
        name = given.get("--driver-name", env.get("CSI_DRIVER_NAME", "cairn.csi.io"))
        if driver_names and name not in driver_names:
            report.fail(where, f"--driver-name={name} but the CSIDriver is {sorted(driver_names)}")
    return checked


def pod_driver_names(spec):
    """The --driver-name of each cairn-csi container in the pod."""
    names = set()
    for c in containers(spec):
        if image_repo(c.get("image", "")) != "cairn-csi":
            continue
        env = {e["name"]: e["value"] for e in c.get("env") or [] if "value" in e}
        name = env.get("CSI_DRIVER_NAME", "cairn.csi.io")
        for arg in c.get("args") or []:
            if arg.startswith("--driver-name="):
                name = arg.split("=", 1)[1]
        names.add(name)
    return names


def check_registrar(report, source, obj, spec, registered):
    """The registrar announces, and the socket-dir hostPath is, the plugin
    directory of the driver name this pod's cairn-csi serves."""
    served = pod_driver_names(spec)
    where = where_of(source, obj)
    for c in containers(spec):
        if image_repo(c.get("image", "")) != "csi-node-driver-registrar":
            continue
        for arg in c.get("args") or []:
            if arg.startswith("--kubelet-registration-path="):
                path = arg.split("=", 1)[1]
                if not any(path == f"{PLUGINS_DIR}/{n}/csi.sock" for n in served):
                    report.fail(f"{where} container {c.get('name')}",
                                f"registration path {path} is not {PLUGINS_DIR}/<driver>/csi.sock "
                                f"for the driver this pod's cairn-csi serves {sorted(served)}")
                else:
                    registered.add(path.split("/")[-2])
    for v in spec.get("volumes") or []:
        if v.get("name") == "socket-dir" and "hostPath" in v:
            path = v["hostPath"].get("path")
            if not any(path == f"{PLUGINS_DIR}/{n}" for n in served):
                report.fail(where, f"socket-dir hostPath {path} is not {PLUGINS_DIR}/<driver> "
                                   f"for {sorted(served)}")


def check_namespace(report, source, obj):
    ns = (obj.get("metadata") or {}).get("namespace")
    if obj.get("kind") in CLUSTER_KINDS:
        if ns is not None:
            report.fail(where_of(source, obj), f"is cluster-scoped but carries namespace {ns!r} "
                                               "(a kustomization `namespace:` stamps it)")
    elif ns != NAMESPACE:
        report.fail(where_of(source, obj), f"namespace is {ns!r}, not {NAMESPACE!r}")


def immutable_csidriver_fields(versions):
    """Fields of CSIDriverSpec that the schema of any of `versions` calls
    immutable ("This field is immutable.")."""
    import kubernetes_validate as kv
    base = os.path.join(os.path.dirname(kv.__file__), "kubernetes-json-schema")
    fields = set()
    for version in versions:
        for flavour in ("local-strict", "local"):
            path = os.path.join(base, f"v{version}-{flavour}", "csidriverspec-storage-v1.json")
            if os.path.exists(path):
                with open(path) as f:
                    props = json.load(f).get("properties") or {}
                fields |= {k for k, p in props.items()
                           if "This field is immutable" in (p.get("description") or "")}
                break
    return fields or set(CSIDRIVER_IMMUTABLE_FALLBACK)


def check_csidrivers_agree(report, drivers, versions):
    """drivers: {name: [(source, spec)]}. Applying one overlay over another
    must not change a field the API server keeps immutable."""
    fields = immutable_csidriver_fields(versions)
    for name, defs in sorted(drivers.items()):
        first_source, first = defs[0]
        for source, spec in defs[1:]:
            for field in sorted(fields):
                if spec.get(field) != first.get(field):
                    report.fail(f"CSIDriver {name}",
                                f"immutable field spec.{field} is {spec.get(field)!r} in {source} "
                                f"but {first.get(field)!r} in {first_source}: applying one over "
                                "the other fails (field is immutable)")
    return len(fields)


def check_probe_ports(report, source, obj, spec):
    for c in containers(spec):
        names = {p.get("name") for p in c.get("ports") or []}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str) and port not in names:
                report.fail(f"{where_of(source, obj)} container {c.get('name')}",
                            f"{probe} uses port {port!r}, which the container does not name")


def check_snapshot_class(report, source, obj, driver_names):
    """What the (skipped) CRD schema would catch: the fields a
    VolumeSnapshotClass has, and a driver that is this CSIDriver."""
    where = where_of(source, obj)
    known = {"apiVersion", "kind", "metadata", "driver", "deletionPolicy", "parameters"}
    for field in sorted(set(obj) - known):
        report.fail(where, f"unknown field {field!r} in a VolumeSnapshotClass")
    if obj.get("apiVersion") != "snapshot.storage.k8s.io/v1":
        report.fail(where, f"apiVersion {obj.get('apiVersion')} is not snapshot.storage.k8s.io/v1")
    if obj.get("driver") not in driver_names:
        report.fail(where, f"driver {obj.get('driver')} is not the CSIDriver {sorted(driver_names)}")
    if obj.get("deletionPolicy") not in ("Delete", "Retain"):
        report.fail(where, f"deletionPolicy {obj.get('deletionPolicy')!r} is not Delete or Retain")


def check_references(report, source, objs):
    def key(kind, ns, name):
        return (kind, ns or "", name)

    present = {key(o["kind"], (o.get("metadata") or {}).get("namespace"), o["metadata"]["name"])
               for o in objs}
    for o in objs:
        ns = (o.get("metadata") or {}).get("namespace")
        spec = pod_spec(o)
        if spec is not None:
            sa = spec.get("serviceAccountName")
            if sa and key("ServiceAccount", ns, sa) not in present:
                report.fail(where_of(source, o), f"service account {sa} is not in this overlay")
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            ref = o.get("roleRef") or {}
            ref_ns = ns if ref.get("kind") == "Role" else None
            if key(ref.get("kind"), ref_ns, ref.get("name")) not in present:
                report.fail(where_of(source, o), f"roleRef {ref.get('kind')} {ref.get('name')} "
                                                 "is not in this overlay")
            for s in o.get("subjects") or []:
                if s.get("kind") == "ServiceAccount" and \
                        key("ServiceAccount", s.get("namespace"), s.get("name")) not in present:
                    report.fail(where_of(source, o), f"subject ServiceAccount "
                                                     f"{s.get('namespace')}/{s.get('name')} "
                                                     "is not in this overlay")


QUANTITY_RE = re.compile(r"^([0-9.]+)([KMGTPE]i?|[kmgtpe]?)$")
UNITS = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(text):
    m = QUANTITY_RE.match(str(text))
    if not m:
        raise ValueError(f"not a storage quantity: {text!r}")
    return int(float(m.group(1)) * UNITS[m.group(2)])


def claim_request(obj):
    return ((((obj.get("spec") or {}).get("resources") or {}).get("requests") or {})
            .get("storage"))


def commands(text):
    """The shell commands of a Markdown text's code blocks, continuation
    lines joined, in order."""
    out, block, pending = [], False, ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            block = not block
            continue
        if not block:
            continue
        stripped = stripped.split("  #", 1)[0].rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append(pending + stripped)
        pending = ""
    return out


def check_walkthrough(report, examples, walkthroughs):
    """examples: {name: [objects]} keyed by path (deploy/examples/x/y.yaml).
    Returns the number of restores checked."""
    claims, snapshots = {}, {}
    file_of = {}
    for name, objs in examples.items():
        for o in objs:
            key = (o.get("kind"), (o.get("metadata") or {}).get("name"))
            file_of[key] = name
            if o.get("kind") == "PersistentVolumeClaim":
                claims[key[1]] = o
            elif o.get("kind") == "VolumeSnapshot":
                snapshots[key[1]] = o
    checked = 0
    for wname, text in walkthroughs:
        cmds = commands(text)
        size = {n: quantity(claim_request(c)) for n, c in claims.items() if claim_request(c)}
        for cmd in cmds:
            m = re.match(r"kubectl patch pvc (\S+) .*\"storage\":\s*\"([^\"]+)\"", cmd)
            if m and m.group(1) in size:
                size[m.group(1)] = max(size[m.group(1)], quantity(m.group(2)))
        applied = []  # (index, file) in the order the walkthrough applies them
        for i, cmd in enumerate(cmds):
            if not cmd.startswith("kubectl apply"):
                continue
            for target in re.findall(r"-f\s+(\S+)", cmd):
                target = target.rstrip("/")
                files = [n for n in examples if n == target or n.startswith(target + "/")]
                if len(files) > 1:
                    restores = [n for n in files for o in examples[n]
                                if o.get("kind") == "PersistentVolumeClaim"
                                and (o.get("spec") or {}).get("dataSource")]
                    if restores:
                        report.fail(wname, f"`{cmd}` applies {target}/ whole, restores "
                                           f"({', '.join(sorted(set(restores)))}) included: they "
                                           "race their source; apply each file on its own")
                applied += [(i, n) for n in files]
        for cname, claim in sorted(claims.items()):
            source = (claim.get("spec") or {}).get("dataSource")
            if not source:
                continue
            where = f"{file_of[('PersistentVolumeClaim', cname)]}: claim {cname}"
            if source.get("kind") == "VolumeSnapshot":
                snap = snapshots.get(source.get("name"))
                if snap is None:
                    report.fail(where, f"restores VolumeSnapshot {source.get('name')}, "
                                       "which no example defines")
                    continue
                src_claim = ((snap.get("spec") or {}).get("source") or {}).get(
                    "persistentVolumeClaimName")
            else:
                snap, src_claim = None, source.get("name")
            if src_claim not in size:
                report.fail(where, f"its source claim {src_claim} is not an example with a size")
                continue
            checked += 1
            want = quantity(claim_request(claim) or 0)
            if want < size[src_claim]:
                report.fail(where, f"asks for {claim_request(claim)} ({want} bytes), but its source "
                                   f"claim {src_claim} is {size[src_claim]} bytes after the "
                                   f"walkthrough ({wname}) has run: the provisioner refuses a "
                                   "restore smaller than its source")
            if snap is None:
                continue
            snap_file = file_of[("VolumeSnapshot", snap["metadata"]["name"])]
            restore_file = file_of[("PersistentVolumeClaim", cname)]
            snap_at = [i for i, n in applied if n == snap_file]
            restore_at = [i for i, n in applied if n == restore_file]
            if not snap_at or not restore_at:
                continue
            if min(restore_at) < min(snap_at):
                report.fail(wname, f"applies {restore_file} before {snap_file}")
                continue
            between = cmds[min(snap_at):min(restore_at) + 1]
            snap_name = snap["metadata"]["name"]
            if min(restore_at) > min(snap_at) and not any(
                    c.startswith("kubectl wait") and snap_name in c for c in between):
                report.fail(wname, f"applies {restore_file} after {snap_file} without a "
                                   f"`kubectl wait` for volumesnapshot/{snap_name} in between")
    return checked


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn-help", required=True)
    ap.add_argument("--kube-version", action="append", required=True)
    ap.add_argument("--examples", action="append", default=[],
                    help="NAME=FILE checked for schema and images, and against --walkthrough")
    ap.add_argument("--walkthrough", action="append", default=[],
                    help="NAME=FILE: docs whose commands a user runs in order")
    ap.add_argument("rendered", nargs="+", help="NAME=FILE of a rendered overlay")
    args = ap.parse_args()

    with open(args.cairn_help) as f:
        help_ = parse_help(f.read())
    if not help_[0]:
        print(f"deploy: {args.cairn_help}: `cairn-csi serve --help` listed no --flags", file=sys.stderr)
        return 1

    report = Report()
    valid = skipped = flags = 0

    def load(spec):
        name, _, path = spec.partition("=")
        with open(path) as f:
            return name, [d for d in yaml.safe_load_all(f) if d]

    drivers = {}
    for spec in args.rendered:
        source, objs = load(spec)
        driver_names = {o["metadata"]["name"] for o in objs if o["kind"] == "CSIDriver"}
        if not driver_names:
            report.fail(source, "no CSIDriver")
        for o in objs:
            if o["kind"] == "CSIDriver":
                drivers.setdefault(o["metadata"]["name"], []).append((source, o.get("spec") or {}))
        registered = set()
        for o in objs:
            check_namespace(report, source, o)
            result = check_schema(report, source, o, args.kube_version)
            valid += result == "valid"
            skipped += result == "skipped"
            if o["kind"] == "StorageClass" and o.get("provisioner") not in driver_names:
                report.fail(where_of(source, o), f"provisioner {o.get('provisioner')} is not "
                                                 f"the CSIDriver {sorted(driver_names)}")
            if o["kind"] == "VolumeSnapshotClass":
                check_snapshot_class(report, source, o, driver_names)
            spec_ = pod_spec(o)
            if spec_ is None:
                continue
            check_images(report, source, o, spec_)
            check_probe_ports(report, source, o, spec_)
            check_registrar(report, source, o, spec_, registered)
            flags += check_cairn(report, source, o, spec_, help_, driver_names)
        check_references(report, source, objs)
        for name in sorted(driver_names - registered):
            report.fail(source, f"CSIDriver {name}: no node-driver-registrar registers it")
        if not any(pod_spec(o) is not None and
                   any(image_repo(c.get("image", "")) == "cairn-csi" for c in containers(pod_spec(o)))
                   for o in objs):
            report.fail(source, "no cairn-csi container found: nothing to check flags against")

    immutable = check_csidrivers_agree(report, drivers, args.kube_version)

    examples = {}
    for spec in args.examples:
        source, objs = load(spec)
        examples[source] = objs
        for o in objs:
            result = check_schema(report, source, o, args.kube_version)
            valid += result == "valid"
            skipped += result == "skipped"
            spec_ = pod_spec(o)
            if spec_ is not None:
                check_images(report, source, o, spec_)
                check_probe_ports(report, source, o, spec_)

    walkthroughs = []
    for spec in args.walkthrough:
        name, _, path = spec.partition("=")
        with open(path) as f:
            walkthroughs.append((name, f.read()))
    restores = check_walkthrough(report, examples, walkthroughs)

    for p in report.problems:
        print(f"FAIL {p}")
    versions = ", ".join(args.kube_version)
    if skipped:
        print(f"deploy: skipped {skipped} objects of CRD groups {sorted(CRD_GROUPS)} (no schema)")
    if report.problems:
        print(f"deploy: {len(report.problems)} problems; {valid} manifests valid "
              f"(Kubernetes {versions}), {flags} flags checked")
        return 1
    print(f"deploy: {len(drivers)} CSIDrivers agree on {immutable} immutable fields across overlays; "
          f"{restores} example restores sized for the walkthrough")
    print(f"deploy: {valid} manifests valid, {flags} flags checked (Kubernetes {versions})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
