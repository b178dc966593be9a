//! The physical floor: the same kernel work a lifecycle causes (mkdir,
//! bind mount twice, stat, umount twice, rmdir) with no gRPC and no driver.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use sys_mount::{unmount, Mount, MountFlags, UnmountFlags};

use super::stats::Samples;

/// Runs `iterations` bare lifecycles under `base` (which must exist and be
/// writable; mounting needs root). Each iteration's wall time is a sample.
pub fn baseline(base: &Path, iterations: usize) -> io::Result<Samples> {
    let volume = base.join("volume");
    std::fs::create_dir_all(&volume)?;
    let mut samples = Samples::default();
    for i in 0..iterations {
        let started = Instant::now();
        let result = one(base, &volume, i);
        samples.record(started.elapsed(), result.is_ok());
        result?;
    }
    std::fs::remove_dir(&volume)?;
    Ok(samples)
}

fn bind(source: &Path, target: &Path) -> io::Result<()> {
    // "none" skips sys-mount's filesystem probing: bind ignores the type.
    Mount::builder()
        .fstype("none")
        .flags(MountFlags::BIND)
        .mount(source, target)
        .map(drop)
}

fn one(base: &Path, volume: &Path, i: usize) -> io::Result<()> {
    let staging = base.join(format!("staging-{i}"));
    let target = base.join(format!("target-{i}"));
    std::fs::create_dir(&staging)?;
    bind(volume, &staging)?;
    std::fs::create_dir(&target)?;
    let mounted = bind(&staging, &target).and_then(|()| std::fs::metadata(&target).map(drop));
    let undone = unmount(&target, UnmountFlags::empty());
    std::fs::remove_dir(&target)?;
    unmount(&staging, UnmountFlags::empty())?;
    std::fs::remove_dir(&staging)?;
    mounted.and(undone)
}

/// Mean of successful samples, for quick ratios.
pub fn mean(samples: &Samples) -> Option<Duration> {
    let n = u32::try_from(samples.ok.len()).ok().filter(|n| *n > 0)?;
    Some(samples.ok.iter().sum::<Duration>() / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_runs_and_leaves_nothing_mounted() {
        let base =
            std::env::temp_dir().join(format!("cairn-bench-kernel-test-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        match baseline(&base, 3) {
            Ok(samples) => {
                assert_eq!(samples.summary().count, 3);
                assert!(mean(&samples).is_some());
            }
            // Mounting needs root (CAP_SYS_ADMIN); elsewhere there is nothing to measure.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
            Err(e) => panic!("baseline failed: {e}"),
        }
        assert!(crate::cleanup::mounts_under(&base).unwrap().is_empty());
        crate::cleanup::remove_dir(&base).unwrap();
    }
}
