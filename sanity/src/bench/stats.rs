//! Latency summaries: count, errors and nearest-rank percentiles.

use std::time::Duration;

use serde::Serialize;

/// One RPC's (or one lifecycle's) latencies, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub count: usize,
    pub errors: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Raw samples collected while a run goes.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub ok: Vec<Duration>,
    pub errors: usize,
}

impl Samples {
    pub fn record(&mut self, took: Duration, ok: bool) {
        if ok {
            self.ok.push(took);
        } else {
            self.errors += 1;
        }
    }

    /// Percentiles over successful calls; errors are only counted (a fast
    /// refusal would otherwise flatter the latency).
    pub fn summary(&self) -> Stats {
        let mut sorted = self.ok.clone();
        sorted.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let total: Duration = sorted.iter().sum();
        Stats {
            count: sorted.len() + self.errors,
            errors: self.errors,
            mean_ms: if sorted.is_empty() {
                0.0
            } else {
                ms(total) / sorted.len() as f64
            },
            p50_ms: percentile(&sorted, 50.0).map_or(0.0, ms),
            p90_ms: percentile(&sorted, 90.0).map_or(0.0, ms),
            p99_ms: percentile(&sorted, 99.0).map_or(0.0, ms),
            max_ms: sorted.last().copied().map_or(0.0, ms),
        }
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], pct: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn nearest_rank() {
        let sorted: Vec<_> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(ms(50)));
        assert_eq!(percentile(&sorted, 90.0), Some(ms(90)));
        assert_eq!(percentile(&sorted, 99.0), Some(ms(99)));
        assert_eq!(percentile(&sorted, 100.0), Some(ms(100)));
        assert_eq!(percentile(&[ms(7)], 99.0), Some(ms(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_counts_errors_apart() {
        let mut s = Samples::default();
        for n in [3, 1, 2] {
            s.record(ms(n), true);
        }
        s.record(ms(1000), false);
        let st = s.summary();
        assert_eq!(st.count, 4);
        assert_eq!(st.errors, 1);
        assert_eq!(st.p50_ms, 2.0);
        assert_eq!(st.max_ms, 3.0);
        assert!((st.mean_ms - 2.0).abs() < 1e-9);
        assert_eq!(Samples::default().summary().count, 0);
    }
}
