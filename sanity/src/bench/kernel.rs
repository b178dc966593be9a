//! The physical floors: the kernel work a lifecycle causes (mkdir, bind
//! mount twice, stat, umount twice, rmdir) with no gRPC and no driver, and
//! the same plus the durable writes of a crash-safe driver (see
//! [`super::durable`]). Each step is timed under the name of the RPC that
//! has to do it, so an RPC can be set beside its share of the floor.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sys_mount::{unmount, Mount, MountFlags, UnmountFlags};

use super::durable::Records;
use super::stats::Samples;

/// Which floor to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// Mounts only; every iteration binds one shared directory.
    Kernel,
    /// Mounts plus, per iteration, a fresh volume directory and record made
    /// durable at create and removed durably at delete.
    Durable,
}

/// One floor's samples: whole iterations, and each step by the RPC it
/// stands for.
#[derive(Debug, Default)]
pub struct FloorSamples {
    pub lifecycle: Samples,
    pub steps: BTreeMap<&'static str, Samples>,
}

/// Runs `iterations` bare kernel lifecycles under `base` (which must exist
/// and be writable; mounting needs root). Each iteration's wall time is a
/// sample.
pub fn baseline(base: &Path, iterations: usize) -> io::Result<Samples> {
    measure(Floor::Kernel, base, iterations).map(|floor| floor.lifecycle)
}

/// Runs `iterations` lifecycles of `floor` under `base`.
pub fn measure(floor: Floor, base: &Path, iterations: usize) -> io::Result<FloorSamples> {
    let shared = base.join("volume");
    let volumes = match floor {
        Floor::Kernel => {
            std::fs::create_dir_all(&shared)?;
            None
        }
        Floor::Durable => Some(Records::open(&base.join("volumes"))?),
    };
    let mut samples = FloorSamples::default();
    for i in 0..iterations {
        let started = Instant::now();
        let mut laps = Laps::new(&mut samples.steps, started);
        let result = match &volumes {
            None => one(base, &shared, i, &mut laps),
            Some(records) => durable_one(base, records, i, &mut laps),
        };
        samples.lifecycle.record(started.elapsed(), result.is_ok());
        result?;
    }
    match floor {
        Floor::Kernel => std::fs::remove_dir(&shared)?,
        Floor::Durable => std::fs::remove_dir(base.join("volumes"))?,
    }
    Ok(samples)
}

/// Times consecutive steps of one iteration.
struct Laps<'a> {
    steps: &'a mut BTreeMap<&'static str, Samples>,
    last: Instant,
}

impl<'a> Laps<'a> {
    fn new(steps: &'a mut BTreeMap<&'static str, Samples>, started: Instant) -> Self {
        Self {
            steps,
            last: started,
        }
    }

    /// Ends the step that began at the previous lap.
    fn lap(&mut self, step: &'static str) {
        let now = Instant::now();
        self.steps
            .entry(step)
            .or_default()
            .record(now - self.last, true);
        self.last = now;
    }
}

fn bind(source: &Path, target: &Path) -> io::Result<()> {
    // "none" skips sys-mount's filesystem probing: bind ignores the type.
    Mount::builder()
        .fstype("none")
        .flags(MountFlags::BIND)
        .mount(source, target)
        .map(drop)
}

/// The durable floor's iteration: create, the kernel work, delete.
fn durable_one(base: &Path, records: &Records, i: usize, laps: &mut Laps) -> io::Result<()> {
    let name = format!("v{i}");
    let volume = records.create(&name)?;
    laps.lap("CreateVolume");
    let mounted = one(base, &volume, i, laps);
    // Never delete a volume that may still be mounted somewhere.
    mounted?;
    records.delete(&name)?;
    laps.lap("DeleteVolume");
    Ok(())
}

/// The kernel floor's iteration: stage, publish, stats, unpublish,
/// unstage. Unmounts are attempted even when a later step failed.
fn one(base: &Path, volume: &Path, i: usize, laps: &mut Laps) -> io::Result<()> {
    let staging = base.join(format!("staging-{i}"));
    let target = base.join(format!("target-{i}"));
    std::fs::create_dir(&staging)?;
    bind(volume, &staging)?;
    laps.lap("NodeStageVolume");
    std::fs::create_dir(&target)?;
    let published = bind(&staging, &target);
    laps.lap("NodePublishVolume");
    let mounted = published.and_then(|()| std::fs::metadata(&target).map(drop));
    laps.lap("NodeGetVolumeStats");
    let undone = unmount(&target, UnmountFlags::empty());
    std::fs::remove_dir(&target)?;
    laps.lap("NodeUnpublishVolume");
    unmount(&staging, UnmountFlags::empty())?;
    std::fs::remove_dir(&staging)?;
    laps.lap("NodeUnstageVolume");
    mounted.and(undone)
}

/// Mean of successful samples, for quick ratios.
pub fn mean(samples: &Samples) -> Option<Duration> {
    let n = u32::try_from(samples.ok.len()).ok().filter(|n| *n > 0)?;
    Some(samples.ok.iter().sum::<Duration>() / n)
}

/// Where a floor runs under the bench's staging base.
pub fn work_dir(base: &Path, floor: Floor) -> PathBuf {
    base.join(match floor {
        Floor::Kernel => "cairn-bench-kernel",
        Floor::Durable => "cairn-bench-durable",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let base = std::env::temp_dir().join(format!("cairn-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        base
    }

    #[test]
    fn baseline_runs_and_leaves_nothing_mounted() {
        let base = scratch("kernel-test");
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

    #[test]
    fn durable_floor_times_every_rpc_and_leaves_nothing() {
        let base = scratch("durable-test");
        match measure(Floor::Durable, &base, 3) {
            Ok(floor) => {
                assert_eq!(floor.lifecycle.summary().count, 3);
                let steps: Vec<&str> = floor.steps.keys().copied().collect();
                assert_eq!(
                    steps,
                    [
                        "CreateVolume",
                        "DeleteVolume",
                        "NodeGetVolumeStats",
                        "NodePublishVolume",
                        "NodeStageVolume",
                        "NodeUnpublishVolume",
                        "NodeUnstageVolume",
                    ]
                );
                for (step, samples) in &floor.steps {
                    assert_eq!(samples.summary().count, 3, "{step}");
                }
                // The steps are the iteration, cut into pieces.
                let parts: Duration = floor.steps.values().flat_map(|s| s.ok.iter()).sum();
                let whole: Duration = floor.lifecycle.ok.iter().sum();
                assert!(parts <= whole, "{parts:?} > {whole:?}");
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
            Err(e) => panic!("durable floor failed: {e}"),
        }
        assert!(crate::cleanup::mounts_under(&base).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
        crate::cleanup::remove_dir(&base).unwrap();
    }

    #[test]
    fn kernel_floor_has_no_create_or_delete_step() {
        let base = scratch("kernel-steps");
        if let Ok(floor) = measure(Floor::Kernel, &base, 2) {
            assert!(!floor.steps.contains_key("CreateVolume"));
            assert!(!floor.steps.contains_key("DeleteVolume"));
            assert_eq!(floor.steps["NodeStageVolume"].summary().count, 2);
        }
        assert!(crate::cleanup::mounts_under(&base).unwrap().is_empty());
        crate::cleanup::remove_dir(&base).unwrap();
    }
}
