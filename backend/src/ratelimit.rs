//! Rate limiting of guest-triggerable log lines.
//!
//! WHY: a hostile guest can make every request invalid; logging each one
//! would let it fill the backend domain's disk and burn its CPU. Each
//! controller gets a budget of lines per second; what is over budget is
//! counted and reported once, as "suppressed K", when the next window opens.

use std::time::{Duration, Instant};

/// Lines per second a controller may log about guest behaviour by default.
pub const DEFAULT_LINES_PER_SECOND: u32 = 10;

/// A fixed-window rate limiter (one per controller).
#[derive(Debug)]
pub struct RateLimiter {
    per_window: u32,
    window: Duration,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
    suppressed_total: u64,
}

/// What the caller may do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` lines were dropped since the last line logged.
    Log {
        /// Lines dropped in the previous window(s).
        suppressed: u64,
    },
    /// Drop it (it was counted).
    Drop,
}

impl RateLimiter {
    /// At most `per_second` lines per second.
    pub fn new(per_second: u32) -> Self {
        Self::with_window(per_second, Duration::from_secs(1))
    }

    /// At most `per_window` lines per `window` (tests use long windows so that
    /// the outcome does not depend on timing).
    pub fn with_window(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            window_start: None,
            used: 0,
            suppressed: 0,
            suppressed_total: 0,
        }
    }

    /// Decides about one line, at time `now`.
    pub fn check_at(&mut self, now: Instant) -> Verdict {
        let expired = match self.window_start {
            None => true,
            Some(start) => now
                .checked_duration_since(start)
                .is_none_or(|d| d >= self.window),
        };
        if expired {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            let suppressed = std::mem::take(&mut self.suppressed);
            Verdict::Log { suppressed }
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            self.suppressed_total = self.suppressed_total.saturating_add(1);
            Verdict::Drop
        }
    }

    /// Decides about one line now.
    pub fn check(&mut self) -> Verdict {
        self.check_at(Instant::now())
    }

    /// Lines dropped since the limiter was created.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_total
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(DEFAULT_LINES_PER_SECOND)
    }
}

/// The last message logged about each root-hub port, so a retry that fails
/// the same way is not logged again.
///
/// WHY: every change of the backend directory or of a device record, and
/// every hotplug arrival, re-tries the ports; a device that cannot be opened
/// (a hub, a busy or missing device, a withheld record) would otherwise log
/// the same line each time, as fast as the toolstack or the host changes
/// things. A different message, or the same one after the port was attached
/// or emptied, is logged again.
#[derive(Debug, Default)]
pub struct PortNotes {
    last: std::collections::BTreeMap<u8, String>,
}

impl PortNotes {
    /// Whether `message` about `port` is new (and should be logged);
    /// remembers it.
    pub fn is_new(&mut self, port: u8, message: &str) -> bool {
        if self.last.get(&port).is_some_and(|m| m == message) {
            return false;
        }
        self.last.insert(port, message.to_owned());
        true
    }

    /// Forgets what was said about `port` (attached, emptied).
    pub fn clear(&mut self, port: u8) {
        self.last.remove(&port);
    }
}

/// Logs a guest-triggerable warning through a [`RateLimiter`].
#[macro_export]
#[doc(hidden)]
macro_rules! guest_warn {
    ($limiter:expr, $($arg:tt)+) => {
        if let $crate::ratelimit::Verdict::Log { suppressed } = $limiter.check() {
            if suppressed > 0 {
                tracing::warn!(suppressed, "suppressed {} guest-triggered log lines", suppressed);
            }
            tracing::warn!($($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_then_summary() {
        let mut r = RateLimiter::with_window(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(r.check_at(t0), Verdict::Log { suppressed: 0 });
        assert_eq!(r.check_at(t0), Verdict::Log { suppressed: 0 });
        for _ in 0..5 {
            assert_eq!(r.check_at(t0), Verdict::Drop);
        }
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(r.check_at(t1), Verdict::Log { suppressed: 5 });
        assert_eq!(r.check_at(t1), Verdict::Log { suppressed: 0 });
        assert_eq!(r.check_at(t1), Verdict::Drop);
        assert_eq!(r.suppressed_total(), 6);
    }

    #[test]
    fn port_notes_log_a_repeated_failure_once() {
        let mut n = PortNotes::default();
        assert!(n.is_new(1, "busy"));
        assert!(!n.is_new(1, "busy"));
        assert!(n.is_new(2, "busy"), "per port");
        assert!(n.is_new(1, "gone"), "a different message");
        assert!(!n.is_new(1, "gone"));
        n.clear(1);
        assert!(n.is_new(1, "gone"), "again after the port changed");
    }
}
