# Shell functions for guest scripts (`. "$CAIRN_HARNESS/knfsd.sh"`): the guest kernel's NFS server
# (knfsd) on the guest's loopback. The guest has no network card, so the daemons' wildcard
# sockets are reachable from inside the guest only.

# knfsd_start DIR: mounts a fresh tmpfs at DIR (knfsd can't export overlayfs or 9p) and serves it
# over NFSv3 and NFSv4.0-4.2 to 127.0.0.1, ready for mounts without waiting out grace periods.
# DIR must be a new top-level directory such as /export: NFSv4 clients walk the pseudo-root from
# / down to DIR, which fails (ENOENT) through the host directories' overlays (/srv, /mnt, ...);
# the guest's / itself is a tmpfs, which works.
knfsd_start() {
  dir=$1
  case "$dir" in
    /*/* | /) echo "knfsd_start: $dir is not a top-level directory" >&2; return 1 ;;
  esac
  if [ -e "$dir" ]; then echo "knfsd_start: $dir exists (on the host?)" >&2; return 1; fi
  mkdir -p "$dir" && mount -t tmpfs -o size=64m cairn-export "$dir" || return 1
  mount -t nfsd nfsd /proc/fs/nfsd || return 1
  # A fresh /var/lib/nfs: the host's copy may hold v4recovery/, which makes nfsd pick legacy
  # client tracking with a 90 s grace period; nfsdcld with an empty database skips the grace.
  mount -t tmpfs cairn-var-lib-nfs /var/lib/nfs || return 1
  mkdir -p /var/lib/nfs/nfsdcld /var/lib/nfs/sm /var/lib/nfs/sm.bak /run/rpc_pipefs
  touch /var/lib/nfs/etab /var/lib/nfs/rmtab /var/lib/nfs/state
  if id statd >/dev/null 2>&1; then
    chown statd /var/lib/nfs/sm /var/lib/nfs/sm.bak /var/lib/nfs/state
  fi
  # Debian's /etc/nfs.conf puts rpc_pipefs at /run/rpc_pipefs; nfsdcld exits if it isn't there.
  mount -t rpc_pipefs sunrpc /run/rpc_pipefs || return 1
  rpcbind -w || return 1
  nfsdcld || return 1
  exportfs -o rw,no_root_squash,no_subtree_check,insecure,fsid=1 "127.0.0.1:$dir" || return 1
  rpc.mountd || return 1
  rpc.statd --no-notify || return 1
  # lockd's own grace period (nlm_timeout * 5 = 50 s) would block NFSv3 locks after start.
  echo 3 > /proc/sys/fs/nfs/nlm_timeout
  echo 3 > /proc/sys/fs/nfs/nlm_grace_period
  rpc.nfsd 4 || return 1
}

# knfsd_stop: stops serving and unexports everything.
knfsd_stop() {
  rpc.nfsd 0
  exportfs -ua
}
