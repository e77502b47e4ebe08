//! Repeated runs and their summaries: every figure is the median of several
//! runs after a warm-up, shown with min and max.

use std::time::{Duration, Instant};

use serde::Serialize;

/// How long and how often each figure is measured.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Runs per figure (the median of these is reported).
    pub runs: usize,
    /// Length of one run.
    pub run: Duration,
    /// Unreported warm-up before the runs.
    pub warm_up: Duration,
}

impl Plan {
    /// `--quick`: a few seconds in total.
    pub const QUICK: Plan = Plan {
        runs: 3,
        run: Duration::from_millis(80),
        warm_up: Duration::from_millis(30),
    };
    /// The default: well under a minute in total.
    pub const DEFAULT: Plan = Plan {
        runs: 5,
        run: Duration::from_millis(400),
        warm_up: Duration::from_millis(150),
    };
}

/// Median, min and max of a figure's runs.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    /// Median of the runs.
    pub median: f64,
    /// Smallest run.
    pub min: f64,
    /// Largest run.
    pub max: f64,
}

impl Summary {
    /// Summarise `values` (NaN-free; an empty list gives zeros).
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Summary {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Summary {
            median,
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

/// The `q`-quantile (0..=1) of `sorted` by nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Calls `op(duration)` once for the warm-up and `plan.runs` times after it,
/// and summarises what the runs returned.
pub fn repeat<E>(
    plan: &Plan,
    mut op: impl FnMut(Duration) -> Result<f64, E>,
) -> Result<Summary, E> {
    op(plan.warm_up)?;
    let mut values = Vec::with_capacity(plan.runs);
    for _ in 0..plan.runs {
        values.push(op(plan.run)?);
    }
    Ok(Summary::of(&values))
}

/// Run `step` until `budget` has passed; returns (iterations, elapsed).
pub fn for_duration<E>(
    budget: Duration,
    mut step: impl FnMut() -> Result<(), E>,
) -> Result<(u64, Duration), E> {
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        // Check the clock every 16 steps: cheap steps would otherwise measure it.
        for _ in 0..16 {
            step()?;
            n += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return Ok((n, elapsed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_takes_the_median_and_the_extremes() {
        assert_eq!(
            Summary::of(&[3.0, 1.0, 2.0]),
            Summary {
                median: 2.0,
                min: 1.0,
                max: 3.0
            }
        );
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Summary::of(&[]).median, 0.0);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }
}
