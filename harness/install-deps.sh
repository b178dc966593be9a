#!/bin/bash
# Installs every Debian 12 package the NFS test harness (crate cairn-harness) needs. Idempotent:
# when everything is already installed it returns in well under a second without touching apt.
#
#   nfs-ganesha nfs-ganesha-vfs  userspace NFS server for the controller tests (127.0.0.1 only)
#   rpcbind                      NFSv3 needs it; the harness runs it only inside an lo-only netns
#   iproute2                     `ip netns` for that namespace
#   qemu-system-x86              the TCG guest for real kernel NFS mounts (no usable KVM here)
#   linux-image-amd64            Debian's stock kernel: the guest boots it, and its
#                                /lib/modules/<version> (seen by the guest over 9p) supplies
#                                nfs, nfsd, sunrpc, lockd, 9p, loop, xfs, ext4 ... modules
#   initramfs-tools              the kernel package depends on an initramfs tool; the harness
#                                builds its own initramfs and never uses this one
#   busybox-static               the static shell/tools inside the harness's initramfs
#   kmod                         depmod/modprobe (host: modules.dep; guest: loading modules)
#   nfs-kernel-server nfs-common knfsd userland (rpc.nfsd, exportfs, mountd) and mount.nfs, used
#                                inside the guest only; their daemons are never started on the host
#   e2fsprogs xfsprogs           mkfs for loop-device filesystems in the guest
#
# Package scripts must not start daemons (rpcbind, nfs-*) on the host: a policy-rc.d that refuses
# everything is put in place for the install if none exists, and removed again afterwards.
set -euo pipefail
t0=$(date +%s%N)
PKGS=(nfs-ganesha nfs-ganesha-vfs rpcbind iproute2 qemu-system-x86 linux-image-amd64
      initramfs-tools busybox-static kmod nfs-kernel-server nfs-common e2fsprogs xfsprogs)

missing=()
for p in "${PKGS[@]}"; do
  s=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
  [ "${s:0:2}" = "ii" ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then echo "install-deps: must run as root" >&2; exit 1; fi
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# cairn-harness install-deps.sh: no daemons from package scripts\nexit 101\n' \
      > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  cleanup() { if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup EXIT
  export DEBIAN_FRONTEND=noninteractive
  # The kernel package's postinst would build a 30 MB /boot/initrd.img the guest never uses
  # (the harness builds its own): 15 s of a cold install. INITRD=No skips that step.
  export INITRD=No
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The kernel postinst normally runs depmod, but make sure modules.dep exists for every
  # Debian kernel present, because the guest's modprobe reads it from the host's /lib/modules.
  for d in /lib/modules/*-amd64; do
    [ -d "$d/kernel" ] || continue
    v=${d##*/}
    [ -s "$d/modules.dep" ] || depmod "$v"
  done
else
  echo "install-deps: all ${#PKGS[@]} packages already installed"
fi
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
printf 'install-deps: done in %d.%03d s\n' $((ms / 1000)) $((ms % 1000))
