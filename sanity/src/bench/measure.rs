//! Running lifecycles against one driver: preloading K volumes, one round of
//! N workers, and merging a point's rounds into one [`Point`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::lifecycle::{Driver, Published};
use super::procfs::{self, ProcUsage};
use super::Point;

/// How often a driver's RSS is sampled during a measurement.
const RSS_EVERY: Duration = Duration::from_millis(50);

/// Volumes a driver holds published while a point is measured.
pub type Held = Vec<Published>;

/// Creates and publishes `k` volumes; on failure hands back what it holds.
pub async fn preload(
    driver: &Arc<Driver>,
    prefix: &str,
    k: usize,
) -> Result<Held, (Held, tonic::Status)> {
    let mut held = Vec::with_capacity(k);
    for i in 0..k {
        match driver.bring_up(&format!("{prefix}-pre{i}")).await {
            Ok(up) => held.push(up),
            Err(status) => return Err((held, status)),
        }
    }
    Ok(held)
}

pub async fn release(driver: &Driver, held: Held) {
    for up in held {
        driver.tear_down(up).await;
    }
}

/// What one round asks of one driver.
pub struct RoundPlan<'a> {
    pub workers: usize,
    pub count: u64,
    pub duration: Option<Duration>,
    /// Volume names are `<prefix>-w<worker>-<n>`: unique per round.
    pub prefix: &'a str,
    pub pid: Option<u32>,
}

/// What one round cost, beside the samples it left in the driver.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundUsage {
    pub seconds: f64,
    pub cpu_seconds: Option<f64>,
    pub rss_max_kib: Option<u64>,
}

/// N workers run lifecycles until `count` are started or time is up. The
/// samples accumulate in `driver`, so rounds of one point merge.
pub async fn run_round(driver: &Arc<Driver>, plan: RoundPlan<'_>) -> RoundUsage {
    let cpu_before = plan.pid.and_then(|pid| procfs::cpu_seconds(pid).ok());
    let rss = plan.pid.map(RssWatch::start);

    let started = Instant::now();
    let deadline = plan.duration.map(|d| started + d);
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for w in 0..plan.workers.max(1) {
        let (driver, next) = (Arc::clone(driver), Arc::clone(&next));
        let (count, prefix) = (plan.count, plan.prefix.to_string());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                driver.lifecycle(&format!("{prefix}-w{w}-{i}")).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();

    let cpu_after = plan.pid.and_then(|pid| procfs::cpu_seconds(pid).ok());
    RoundUsage {
        seconds,
        cpu_seconds: cpu_after.zip(cpu_before).map(|(a, b)| a - b),
        rss_max_kib: rss.map(RssWatch::stop),
    }
}

/// One point from the samples its rounds left in `driver` and what each
/// round cost.
pub fn summarise(
    driver: &Driver,
    k: usize,
    workers: usize,
    rounds: &[RoundUsage],
    pid: Option<u32>,
) -> Point {
    let (lifecycle, rpcs) = driver.summaries();
    let seconds: f64 = rounds.iter().map(|r| r.seconds).sum();
    let usage = pid.map(|pid| ProcUsage {
        rss_max_kib: rounds
            .iter()
            .filter_map(|r| r.rss_max_kib)
            .max()
            .unwrap_or(0),
        rss_end_kib: procfs::rss_kib(pid).unwrap_or(0),
        cpu_seconds: rounds.iter().filter_map(|r| r.cpu_seconds).sum(),
    });
    let done = lifecycle.count - lifecycle.errors;
    Point {
        preloaded: k,
        workers: workers.max(1),
        rounds: rounds.len(),
        lifecycles: lifecycle.count,
        failed_lifecycles: lifecycle.errors,
        seconds,
        lifecycles_per_second: if seconds > 0.0 {
            done as f64 / seconds
        } else {
            0.0
        },
        lifecycle,
        rpcs,
        driver: usage,
        ratio_to_kernel_p50: None,
        ratio_to_durable_p50: None,
    }
}

/// Samples a pid's RSS in the background and keeps the maximum.
pub struct RssWatch {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
}

impl RssWatch {
    pub fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(procfs::rss_kib(pid).unwrap_or(0)));
        let (s, m) = (Arc::clone(&stop), Arc::clone(&max));
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Ok(kib) = procfs::rss_kib(pid) {
                    m.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(RSS_EVERY).await;
            }
        });
        Self { stop, max }
    }

    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.max.load(Ordering::Relaxed)
    }
}
