//! In what order two drivers are measured at one point: in rounds, with the
//! one that goes first alternating (A B, B A, A B, ...), so a machine that
//! gets busier or quieter during the run weighs on both drivers alike, and
//! neither always runs on caches the other just warmed.

use serde::Serialize;

/// Which of the two drivers a turn belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The driver under test (`--endpoint`).
    Driver,
    /// The driver it is compared with (`--versus`).
    Versus,
}

impl Side {
    /// Index into a `[driver, versus]` pair.
    pub fn index(self) -> usize {
        match self {
            Side::Driver => 0,
            Side::Versus => 1,
        }
    }
}

/// One driver's share of one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// Round number, from 0.
    pub round: usize,
    pub side: Side,
    /// Lifecycles this turn runs.
    pub count: u64,
}

/// Splits `total` lifecycles into `rounds` shares that differ by at most
/// one, larger shares first, summing to `total`.
pub fn split(total: u64, rounds: usize) -> Vec<u64> {
    let rounds = rounds.max(1);
    let n = rounds as u64;
    (0..n)
        .map(|r| total / n + u64::from(r < total % n))
        .collect()
}

/// Turns for two drivers, each running `count` lifecycles over `rounds`
/// rounds: even rounds start with the driver, odd rounds with the reference.
/// Rounds with nothing to run (count < rounds) are left out.
pub fn interleave(count: u64, rounds: usize) -> Vec<Turn> {
    let mut turns = Vec::new();
    for (round, share) in split(count, rounds).into_iter().enumerate() {
        if share == 0 {
            continue;
        }
        let order = if round % 2 == 0 {
            [Side::Driver, Side::Versus]
        } else {
            [Side::Versus, Side::Driver]
        };
        turns.extend(order.into_iter().map(|side| Turn {
            round,
            side,
            count: share,
        }));
    }
    turns
}

/// One driver alone: a single round of `count`.
pub fn alone(count: u64) -> Vec<Turn> {
    vec![Turn {
        round: 0,
        side: Side::Driver,
        count,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use Side::{Driver as A, Versus as B};

    fn order(turns: &[Turn]) -> Vec<(usize, Side, u64)> {
        turns.iter().map(|t| (t.round, t.side, t.count)).collect()
    }

    #[test]
    fn splits_evenly_and_keeps_the_total() {
        assert_eq!(split(300, 4), vec![75, 75, 75, 75]);
        assert_eq!(split(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(split(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split(7, 1), vec![7]);
        // Zero rounds is taken as one: every lifecycle still runs.
        assert_eq!(split(7, 0), vec![7]);
        for (total, rounds) in [(0, 3), (1, 5), (999, 7), (1_000_000, 13)] {
            assert_eq!(split(total, rounds).iter().sum::<u64>(), total);
        }
    }

    #[test]
    fn alternates_who_goes_first() {
        assert_eq!(
            order(&interleave(300, 4)),
            vec![
                (0, A, 75),
                (0, B, 75),
                (1, B, 75),
                (1, A, 75),
                (2, A, 75),
                (2, B, 75),
                (3, B, 75),
                (3, A, 75),
            ]
        );
    }

    #[test]
    fn both_sides_get_the_same_work() {
        for (count, rounds) in [(300, 4), (10, 3), (1, 4), (0, 4), (17, 1)] {
            let turns = interleave(count, rounds);
            let total = |side| -> u64 {
                turns
                    .iter()
                    .filter(|t| t.side == side)
                    .map(|t| t.count)
                    .sum()
            };
            assert_eq!(total(A), count, "{count} over {rounds}");
            assert_eq!(total(B), count, "{count} over {rounds}");
            assert!(turns.iter().all(|t| t.count > 0));
        }
    }

    #[test]
    fn empty_rounds_are_dropped() {
        assert_eq!(
            order(&interleave(2, 4)),
            vec![(0, A, 1), (0, B, 1), (1, B, 1), (1, A, 1)]
        );
        assert!(interleave(0, 4).is_empty());
    }

    #[test]
    fn alone_is_one_round_of_everything() {
        assert_eq!(order(&alone(5)), vec![(0, A, 5)]);
    }
}
