//! One boot of the QEMU guest (~15 s under TCG): real kernel NFS (knfsd and the kernel client) on
//! the guest's loopback, the kernel modules the node tests need, and host-built binaries running
//! inside with results written back through the shared directory.

use std::fs;

use cairn_harness::guest::target_dir;
use cairn_harness::{require, require_guest, Guest, GuestOptions};

#[test]
fn guest_mounts_kernel_nfs_and_runs_host_binaries() {
    require!(require_guest());
    let prepared = std::time::Instant::now();
    let guest = Guest::prepare().expect("prepare guest");
    let (initramfs, built) = guest.initramfs();
    eprintln!(
        "guest kernel {}, initramfs {} ({}) in {:?}",
        guest.kernel_version(),
        initramfs.display(),
        if built { "built" } else { "cached" },
        prepared.elapsed()
    );

    let share = tempfile::Builder::new()
        .prefix("cairn-guest-share-")
        .tempdir()
        .unwrap();
    let probe = env!("CARGO_BIN_EXE_cairn-harness-probe");
    let csi = target_dir().join("debug/cairn-csi");
    let script = format!(
        r#"set -eu
. "$CAIRN_HARNESS/knfsd.sh"
echo "guest kernel $(uname -r)"
# explicit loads; NFS modules load on demand (the kernel's modprobe calls work in the guest)
for m in xfs ext4 quota_v2; do modprobe "$m"; done
echo "modules OK"

# ext4 with quota on a loop device over a sparse file in the guest's tmpfs
truncate -s 32M /tmp/ext4.img
mkfs.ext4 -q -F -O quota /tmp/ext4.img
mkdir -p /mnt/ext4
mount -o loop /tmp/ext4.img /mnt/ext4
grep -q ' /mnt/ext4 ext4 ' /proc/mounts
umount /mnt/ext4
echo "loop ext4 quota OK"

knfsd_start /cairn-export
mkdir -p /mnt/nfs
for v in 4.2 3; do
  mount -t nfs -o vers=$v 127.0.0.1:/cairn-export /mnt/nfs
  echo "hello over NFS $v" > /mnt/nfs/file-$v
  sync
  [ "$(cat /cairn-export/file-$v)" = "hello over NFS $v" ]
  umount /mnt/nfs
  mount -t nfs -o vers=$v,ro 127.0.0.1:/cairn-export /mnt/nfs
  [ "$(cat /mnt/nfs/file-$v)" = "hello over NFS $v" ]
  umount /mnt/nfs
  echo "kernel NFS vers=$v OK"
done
knfsd_stop

{probe} > /share/probe.txt
if [ -x {csi} ]; then {csi} --version > /share/cairn-csi-version.txt; fi
echo "ALL OK"
"#,
        probe = probe,
        csi = csi.display(),
    );
    let options = GuestOptions {
        share: Some(share.path().to_path_buf()),
        ..GuestOptions::default()
    };
    let out = guest.run(&script, &options).expect("run guest");
    eprintln!("{out}");
    assert!(out.success(), "{out}");
    for line in [
        "modules OK",
        "loop ext4 quota OK",
        "kernel NFS vers=4.2 OK",
        "kernel NFS vers=3 OK",
        "ALL OK",
    ] {
        assert!(out.output.contains(line), "missing {line:?}:\n{out}");
    }

    let probe_out = fs::read_to_string(share.path().join("probe.txt")).expect("probe output");
    assert_eq!(
        probe_out.trim(),
        format!(
            "cairn-harness-probe running on kernel {}",
            guest.kernel_version()
        )
    );
    if csi.exists() {
        let version = fs::read_to_string(share.path().join("cairn-csi-version.txt"))
            .expect("cairn-csi --version output");
        assert!(version.contains("cairn"), "{version}");
        eprintln!("cairn-csi in the guest: {}", version.trim());
    } else {
        eprintln!(
            "note: {} not built; only the probe binary ran",
            csi.display()
        );
    }
}

/// The hard timeout kills QEMU by pid; costs a few seconds, not a boot.
#[test]
fn guest_timeout_kills_qemu() {
    require!(require_guest());
    let guest = Guest::prepare().expect("prepare guest");
    let share = tempfile::Builder::new()
        .prefix("cairn-guest-timeout-")
        .tempdir()
        .unwrap();
    let options = GuestOptions {
        timeout: std::time::Duration::from_secs(3),
        share: Some(share.path().to_path_buf()),
        ..GuestOptions::default()
    };
    let out = guest.run("sleep 1000", &options).expect("run guest");
    assert!(out.timed_out, "{out}");
    assert_eq!(out.exit_code, None);
    assert!(out.elapsed < std::time::Duration::from_secs(10), "{out}");
    // No process is left whose command line names this run's share.
    let marker = share.path().to_string_lossy().into_owned();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(&marker),
                "QEMU left running: pid {:?}",
                entry.file_name()
            );
        }
    }
}
