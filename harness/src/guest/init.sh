#!/bin/busybox sh
# PID 1 of the cairn-harness guest, from the initramfs (busybox only until the host's / is up).
#
# 1. Loads the few modules needed to reach the host (virtio, 9p, overlay; list in load-order).
# 2. Mounts the host's / read-only over 9p and builds the guest's root: a tmpfs (so knfsd can
#    export paths under it: overlayfs and 9p are not exportable, and NFSv4's pseudo-root needs an
#    exportable /) with one overlay per top-level host directory (lower: 9p, upper: tmpfs), so
#    the host's files are all there and writable, with writes kept in guest memory.
# 3. Mounts the harness's read-write share at /run/harness (script in, output and exit code out)
#    and, if the caller gave one, a second read-write share at /share.
# 4. chroots *itself* (not a child) into the new root and runs stage2.sh there: PID 1 shares its
#    root with the kernel's helper threads, so the kernel's own modprobe calls find the host's
#    /sbin/modprobe and /lib/modules too. stage2 powers the guest off.
/bin/busybox --install -s /bin
export PATH=/bin
say() { echo "cairn-init: $*"; }
die() { say "$*"; sync; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do
  insmod "/lib/modules/$m" || say "insmod $m failed"
done < /lib/modules/load-order

mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot /lower \
  || die "cannot mount the host's / (9p tag hostroot)"
mount -t tmpfs -o mode=755,size=45% cairn-root /newroot || die "tmpfs /newroot"
mount -t tmpfs -o mode=755,size=45% cairn-upper /upper || die "tmpfs /upper"
for entry in /lower/* /lower/.[!.]*; do
  [ -e "$entry" ] || [ -L "$entry" ] || continue
  name=${entry#/lower/}
  if [ -L "$entry" ]; then
    ln -s "$(readlink "$entry")" "/newroot/$name"
  elif [ -d "$entry" ]; then
    mkdir -p "/newroot/$name"
    case "$name" in proc|sys|dev|run|tmp|lost+found) continue ;; esac
    mkdir -p "/upper/$name/data" "/upper/$name/work"
    mount -t overlay -o "lowerdir=$entry,upperdir=/upper/$name/data,workdir=/upper/$name/work" \
      "cairn-$name" "/newroot/$name" || say "overlay for /$name failed"
  fi
done

mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
mount -t tmpfs -o mode=755 run /newroot/run
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mkdir -p /newroot/run/harness
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 harness /newroot/run/harness \
  || die "cannot mount the harness share (9p tag harness)"
if [ "${cairn_share:-0}" = 1 ]; then
  mkdir -p /newroot/share
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 share /newroot/share \
    || die "cannot mount the caller's share (9p tag share)"
fi
say "root ready after $(cut -d' ' -f1 /proc/uptime 2>/dev/null || cut -d' ' -f1 /newroot/proc/uptime)s"
cd /newroot
exec chroot /newroot /usr/bin/env -i \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb \
  /bin/sh /run/harness/stage2.sh
