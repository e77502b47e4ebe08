//! When a crashed worker is started again, and when the monitor gives up.
//!
//! WHY back off: a worker that dies at once every time (a guest that
//! crashes it on every connect, a broken device) would otherwise be
//! restarted in a tight loop, costing dom0 CPU and flooding the log. The
//! first crash is restarted at once (the guest barely notices); crashes
//! that follow within the window wait longer each time; too many close the
//! controller, with the cause in one log line.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The restart rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Crashes within `window` after which the controller is closed.
    pub max_crashes: usize,
    /// The window crashes are counted in.
    pub window: Duration,
    /// Delay before the second restart within the window (doubling after).
    pub first_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_crashes: 5,
            window: Duration::from_secs(60),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// What to do after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Start a new worker after this delay.
    Restart(Duration),
    /// Close the controller: it crashed this many times within the window.
    GiveUp(usize),
}

/// The recent crashes of one controller's workers.
#[derive(Debug, Default)]
pub struct CrashHistory {
    crashes: VecDeque<Instant>,
}

impl CrashHistory {
    /// Records a crash at `now` and says what to do.
    pub fn record(&mut self, now: Instant, policy: &RestartPolicy) -> Verdict {
        while self
            .crashes
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > policy.window)
        {
            self.crashes.pop_front();
        }
        self.crashes.push_back(now);
        let n = self.crashes.len();
        if n >= policy.max_crashes {
            return Verdict::GiveUp(n);
        }
        if n <= 1 {
            return Verdict::Restart(Duration::ZERO);
        }
        let doublings = u32::try_from(n - 2).unwrap_or(u32::MAX).min(16);
        let delay = policy
            .first_delay
            .saturating_mul(1u32 << doublings)
            .min(policy.max_delay);
        Verdict::Restart(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_crash_restarts_at_once_then_backs_off_then_gives_up() {
        let p = RestartPolicy::default();
        let mut h = CrashHistory::default();
        let t = Instant::now();
        assert_eq!(h.record(t, &p), Verdict::Restart(Duration::ZERO));
        assert_eq!(
            h.record(t + Duration::from_secs(1), &p),
            Verdict::Restart(Duration::from_millis(100))
        );
        assert_eq!(
            h.record(t + Duration::from_secs(2), &p),
            Verdict::Restart(Duration::from_millis(200))
        );
        assert_eq!(
            h.record(t + Duration::from_secs(3), &p),
            Verdict::Restart(Duration::from_millis(400))
        );
        assert_eq!(h.record(t + Duration::from_secs(4), &p), Verdict::GiveUp(5));
    }

    #[test]
    fn crashes_outside_the_window_are_forgotten() {
        let p = RestartPolicy::default();
        let mut h = CrashHistory::default();
        let t = Instant::now();
        for i in 0..10u64 {
            // One crash every two minutes is always a first crash.
            assert_eq!(
                h.record(t + Duration::from_secs(120 * i), &p),
                Verdict::Restart(Duration::ZERO)
            );
        }
    }
}
