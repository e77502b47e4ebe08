//! A log budget: refusals are logged at most a few lines per second per proxy.
//!
//! Why: the worker chooses how many requests it sends, so a compromised one
//! could otherwise turn the monitor's log into its own disk-filling channel.
//! Lines over budget are counted and the count rides on the next line logged.

use std::time::{Duration, Instant};

/// Lines per window.
pub(super) const LINES_PER_WINDOW: u32 = 5;
/// The window.
pub(super) const WINDOW: Duration = Duration::from_secs(1);

/// A fixed-window line budget.
#[derive(Debug)]
pub(super) struct LogBudget {
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    pub(super) fn new() -> Self {
        Self {
            window_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// `Some(lines dropped since the last one logged)` if a line may be logged
    /// at `now`; `None` (and the line is counted) if over budget.
    pub(super) fn admit(&mut self, now: Instant) -> Option<u64> {
        let expired = self.window_start.is_none_or(|start| {
            now.checked_duration_since(start)
                .is_none_or(|d| d >= WINDOW)
        });
        if expired {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < LINES_PER_WINDOW {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_lines_are_counted_and_reported_next_window() {
        let mut b = LogBudget::new();
        let t0 = Instant::now();
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(b.admit(t0), Some(0));
        }
        assert_eq!(b.admit(t0), None);
        assert_eq!(b.admit(t0 + WINDOW / 2), None);
        assert_eq!(b.admit(t0 + WINDOW), Some(2));
        assert_eq!(b.admit(t0 + WINDOW), Some(0));
    }
}
