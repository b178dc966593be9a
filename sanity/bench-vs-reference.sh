#!/usr/bin/env bash
# Cairn against the reference CSI driver (kubernetes-csi/csi-driver-host-path)
# on this machine, side by side in one cairn-bench run per worker count: both
# drivers are started here, each with its own temp dir under /var/tmp and
# kubelet-style staging and target paths inside it, measured interleaved,
# then stopped (by pid) and everything they made unmounted and removed.
#
#   sanity/bench-vs-reference.sh [--workers 1,8] [--count 300] [--sweep 0,100]
#                                [--rounds 4] [--baseline 200] [--volume-size 1Mi]
#                                [--out DIR]
#
# Each option can also come from the environment: WORKERS, COUNT, SWEEP,
# ROUNDS, BASELINE, VOLUME_SIZE, OUT. The binaries: CAIRN_CSI (default
# target/release/cairn-csi), CAIRN_BENCH (target/release/cairn-bench),
# HOSTPATHPLUGIN (../shared/tools/hostpathplugin). Build the first two with
#   cargo build --release -p cairn-csi -p cairn-sanity
# Writes, per worker count W, OUT/bench-wW.{txt,json,svg}, plus both drivers'
# logs. Runs as root: publishing volumes makes bind mounts.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
workers=${WORKERS:-1}
count=${COUNT:-300}
sweep=${SWEEP:-0,100}
rounds=${ROUNDS:-4}
baseline=${BASELINE:-200}
volume_size=${VOLUME_SIZE:-1Mi}
out=${OUT:-$repo/target/bench-vs-reference}
cairn_csi=${CAIRN_CSI:-$repo/target/release/cairn-csi}
cairn_bench=${CAIRN_BENCH:-$repo/target/release/cairn-bench}
hostpath=${HOSTPATHPLUGIN:-$repo/../shared/tools/hostpathplugin}

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "bench-vs-reference: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --workers) workers=${2:?--workers needs a value}; shift 2 ;;
        --count) count=${2:?--count needs a value}; shift 2 ;;
        --sweep) sweep=${2:?--sweep needs a value}; shift 2 ;;
        --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
        --baseline) baseline=${2:?--baseline needs a value}; shift 2 ;;
        --volume-size) volume_size=${2:?--volume-size needs a value}; shift 2 ;;
        --out) out=${2:?--out needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[[ $workers =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--workers: a number or a list like 1,8"
[ "$(id -u)" = 0 ] || die "run as root: publishing volumes makes bind mounts"
for bin in "$cairn_csi" "$cairn_bench" "$hostpath"; do
    [ -x "$bin" ] || die "$bin is missing (cargo build --release -p cairn-csi -p cairn-sanity; hostpathplugin: ../shared/tools/README.md)"
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# /var/tmp, not /tmp: the drivers' state and the floors' fsyncs should hit a
# disk-backed filesystem, as on a node.
work=$(mktemp -d /var/tmp/cairn-bench-vs.XXXXXX)
cairn_pid=""
hostpath_pid=""

# Mount points at or below $work, deepest first (mountinfo's 5th field;
# the temp dir's name has no characters mountinfo would escape).
mounts_below() {
    awk -v dir="$work" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# SIGTERM, up to 15 s to drain, then SIGKILL; only the pid we started.
stop() {
    local pid=$1 name=$2
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "bench-vs-reference: $name (pid $pid) ignored SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    set +e
    stop "$cairn_pid" cairn-csi
    stop "$hostpath_pid" hostpathplugin
    for m in $(mounts_below); do
        umount "$m" 2>/dev/null || umount -l "$m"
    done
    # Never rm -r across a mount: it would delete a volume's data through it.
    if [ -z "$(mounts_below)" ]; then
        rm -rf --one-file-system "$work"
    else
        echo "bench-vs-reference: left $work in place, still mounted: $(mounts_below | tr '\n' ' ')" >&2
        [ "$status" = 0 ] && status=1
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work"/cairn/{root,kubelet/plugins,kubelet/pods} \
    "$work"/hostpath/{state,kubelet/plugins,kubelet/pods}
echo "work dir: $work" >&2

"$cairn_csi" serve --endpoint "unix://$work/cairn/csi.sock" --node-id bench-node \
    --local-root "$work/cairn/root" --kubelet-dir "$work/cairn/kubelet" \
    --unenforced-capacity=allow >"$out/cairn-csi.log" 2>&1 &
cairn_pid=$!
"$hostpath" --endpoint "unix://$work/hostpath/csi.sock" --nodeid n1 \
    --drivername hostpath.csi.k8s.io --statedir "$work/hostpath/state" \
    >"$out/hostpathplugin.log" 2>&1 &
hostpath_pid=$!
echo "cairn-csi pid $cairn_pid, hostpathplugin pid $hostpath_pid" >&2

wait_for_socket() {
    local sock=$1 pid=$2 log=$3
    for _ in $(seq 200); do
        [ -S "$sock" ] && return 0
        kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "driver (pid $pid) exited before serving $sock"; }
        sleep 0.1
    done
    tail -20 "$log" >&2
    die "no socket at $sock after 20 s"
}
wait_for_socket "$work/cairn/csi.sock" "$cairn_pid" "$out/cairn-csi.log"
wait_for_socket "$work/hostpath/csi.sock" "$hostpath_pid" "$out/hostpathplugin.log"

result=0
for w in ${workers//,/ }; do
    report="$out/bench-w$w"
    {
        echo "cairn-bench: workers $w, count $count, sweep $sweep, rounds $rounds, volume size $volume_size"
        echo "load before: $(cat /proc/loadavg)"
    } >"$report.txt"
    rc=0
    "$cairn_bench" \
        --endpoint "unix://$work/cairn/csi.sock" --label cairn --driver-pid "$cairn_pid" \
        --staging-dir "$work/cairn/kubelet/plugins" --target-dir "$work/cairn/kubelet/pods" \
        --versus "unix://$work/hostpath/csi.sock" --versus-label hostpath --versus-pid "$hostpath_pid" \
        --versus-staging-dir "$work/hostpath/kubelet/plugins" \
        --versus-target-dir "$work/hostpath/kubelet/pods" \
        --volume-size "$volume_size" --workers "$w" --count "$count" --sweep "$sweep" \
        --rounds "$rounds" --baseline "$baseline" \
        --json "$report.json" --svg "$report.svg" 2>>"$report.txt" || rc=$?
    echo "load after: $(cat /proc/loadavg)" >>"$report.txt"
    cat "$report.txt" >&2
    if [ "$rc" != 0 ]; then
        echo "bench-vs-reference: cairn-bench exited $rc at $w workers" >&2
        result=$rc
    fi
done
echo "reports in $out" >&2
exit "$result"
