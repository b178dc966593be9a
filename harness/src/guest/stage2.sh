# Stage 2 of the cairn-harness guest: PID 1, inside the guest's root (the host's / with tmpfs
# overlays). Prepares the guest, runs the caller's script with its output in
# /run/harness/output.log and its exit status in /run/harness/exit_code (both seen by the host
# at once: the share is uncached 9p), copies the output to the console, and powers off.
H=/run/harness
up() { cut -d' ' -f1 /proc/uptime; }
ip link set lo up || echo "cairn-stage2: cannot bring lo up"
for m in $(cat "$H/modules"); do
  modprobe "$m" || echo "cairn-stage2: modprobe $m failed"
done
echo "cairn-stage2: running the script after $(up)s"
cd /tmp
CAIRN_HARNESS=$H /bin/sh "$H/script.sh" > "$H/output.log" 2>&1 < /dev/null
rc=$?
echo "$rc" > "$H/exit_code"
echo "cairn-stage2: script exited $rc after $(up)s; its output:"
sed 's/^/| /' "$H/output.log"
sync
exec /bin/busybox poweroff -f
