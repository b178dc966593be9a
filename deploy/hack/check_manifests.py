#!/usr/bin/env python3
"""Check rendered Cairn manifests. Called by deploy/validate.sh, which renders
them and installs what this imports (PyYAML, kubernetes-validate).

Usage: check_manifests.py --cairn-help FILE --kube-version V [--kube-version V ...]
                          NAME=RENDERED.yaml [NAME=RENDERED.yaml ...]

Checks, for every object of every rendered file:
  - schema: the Kubernetes OpenAPI schema of each --kube-version, strict (an
    unknown field is an error). Kinds from CRD groups listed in CRD_GROUPS are
    skipped and counted; any other kind without a schema is an error.
  - images: every container image carries a tag or digest, never :latest.
  - names: CSIDriver name = StorageClass provisioner = cairn-csi --driver-name
    = the socket directory the registrar announces.
  - references: service accounts, roles and named probe ports exist.
  - cairn-csi flags: every --flag given to a cairn-csi container is listed by
    `cairn-csi serve --help` (the file --cairn-help), the first argument is
    `serve`, the flags its Usage line requires are given (or their env var
    set), and --node-id is given where the mode is node or all.
Prints one line per problem and, last, `deploy: N manifests valid, M flags
checked`. Exits 1 if there was any problem.
"""

import argparse
import re
import sys

import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

# API groups whose kinds are CRDs, not part of Kubernetes' OpenAPI schema.
CRD_GROUPS = {"snapshot.storage.k8s.io", "groupsnapshot.storage.k8s.io"}

WORKLOAD_KINDS = {"Pod", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}
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


def check_registrar(report, source, obj, spec, driver_names):
    for c in containers(spec):
        if image_repo(c.get("image", "")) != "csi-node-driver-registrar":
            continue
        for arg in c.get("args") or []:
            if arg.startswith("--kubelet-registration-path="):
                path = arg.split("=", 1)[1]
                if not any(path == f"/var/lib/kubelet/plugins/{n}/csi.sock" for n in driver_names):
                    report.fail(f"{where_of(source, obj)} container {c.get('name')}",
                                f"registration path {path} is not /var/lib/kubelet/plugins/"
                                f"<CSIDriver name>/csi.sock for {sorted(driver_names)}")


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cairn-help", required=True)
    ap.add_argument("--kube-version", action="append", required=True)
    ap.add_argument("--examples", action="append", default=[],
                    help="NAME=FILE checked for schema and images only")
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

    for spec in args.rendered:
        source, objs = load(spec)
        driver_names = {o["metadata"]["name"] for o in objs if o["kind"] == "CSIDriver"}
        if len(driver_names) != 1:
            report.fail(source, f"expected exactly one CSIDriver, found {sorted(driver_names)}")
        for o in objs:
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
            check_registrar(report, source, o, spec_, driver_names)
            flags += check_cairn(report, source, o, spec_, help_, driver_names)
        check_references(report, source, objs)
        if not any(pod_spec(o) is not None and
                   any(image_repo(c.get("image", "")) == "cairn-csi" for c in containers(pod_spec(o)))
                   for o in objs):
            report.fail(source, "no cairn-csi container found: nothing to check flags against")

    for spec in args.examples:
        source, objs = load(spec)
        for o in objs:
            result = check_schema(report, source, o, args.kube_version)
            valid += result == "valid"
            skipped += result == "skipped"
            spec_ = pod_spec(o)
            if spec_ is not None:
                check_images(report, source, o, spec_)
                check_probe_ports(report, source, o, spec_)

    for p in report.problems:
        print(f"FAIL {p}")
    versions = ", ".join(args.kube_version)
    if skipped:
        print(f"deploy: skipped {skipped} objects of CRD groups {sorted(CRD_GROUPS)} (no schema)")
    if report.problems:
        print(f"deploy: {len(report.problems)} problems; {valid} manifests valid "
              f"(Kubernetes {versions}), {flags} flags checked")
        return 1
    print(f"deploy: {valid} manifests valid, {flags} flags checked (Kubernetes {versions})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
