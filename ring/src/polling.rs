//! Polling a ring for a while after work instead of sleeping on its event
//! channel at once: the window ([`PollWindow`]) and the loop ([`spin`]), shared
//! by the backend's controller workers and the frontend's worker.
//!
//! WHY (NAPI-style polling): under load the peer publishes its next entries a
//! few microseconds after ours, and sleeping in between costs a wake-up per
//! batch on both sides (the cross-process event round trip is ~10 µs, more
//! than the ring work of 16 small URBs). While a side polls, its event index
//! stays unarmed, so the peer sends no event: the next entry costs no
//! hypercall, no event delivery and no wake-up of a sleeping thread. Polling
//! starts only after work was found and ends a window after the last work, so
//! an idle ring costs no CPU and a busy one at most the polling thread's CPU
//! while entries keep coming: CPU time traded for fewer wake-ups.
//!
//! The window may adapt to the peer's pace ([`PollWindow`]), after QEMU's
//! `AioContext` polling (`poll-max-ns`): it starts at [`BASE`], doubles each
//! time the peer's next entry arrived after the thread had gone to sleep but
//! within `max` (polling longer would have caught it), and falls back to
//! [`BASE`] as soon as a sleep lasts longer than `max` (the peer went quiet,
//! so polling is wasted).

use std::time::{Duration, Instant};

/// The window an idle ring starts from (and the whole window when adaptation
/// is off: `max <= BASE`). Covers a peer that answers within microseconds, as
/// pvusb's own frontend and backend do under load.
pub const BASE: Duration = Duration::from_micros(50);

/// The adaptive polling window of one polling thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollWindow {
    current: Duration,
    max: Duration,
}

impl PollWindow {
    /// A window that starts at [`BASE`] and may grow to `max` (no growth if
    /// `max` is at most [`BASE`]).
    pub fn new(max: Duration) -> Self {
        Self {
            current: BASE.min(max),
            max,
        }
    }

    /// How long to keep polling after the last work.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Adapts after the thread slept `slept` and was woken; `by_peer`: the
    /// peer's event woke it (not a local completion or a control message,
    /// which say nothing about the peer's pace).
    pub fn after_sleep(&mut self, slept: Duration, by_peer: bool) {
        if !by_peer {
            // A device (a mouse's interrupt URB may wait for seconds) or the
            // daemon woke us: the peer's pace is unknown.
            return;
        }
        if slept > self.max {
            self.current = BASE.min(self.max);
        } else {
            // Long enough to have caught this entry, and at least double.
            let grown = self.current.saturating_mul(2).max(slept);
            self.current = grown.min(self.max);
        }
    }
}

/// Why [`spin`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpinEnd {
    /// Nothing arrived for a whole window. Before it sleeps the caller must
    /// arm its event index again and service once more (the final check):
    /// whatever the peer published while events were suppressed raised no
    /// event and would otherwise wait for the next one.
    Quiet,
    /// `wake_pending` said the thread has something else to do; polling
    /// stopped at once, without servicing again.
    WakePending,
}

/// Calls `service` (which returns whether it found work) until it found
/// nothing for `window`, calling `idle` after each empty pass (typically
/// `std::thread::yield_now`: on 2 CPUs the thread that will produce the next
/// entry may have no other CPU to run on). `wake_pending` is asked before each
/// pass; when it says yes, `spin` returns [`SpinEnd::WakePending`] at once.
///
/// The caller suppresses the peer's events before (leaves its event index
/// unarmed) and re-arms after; see [`SpinEnd::Quiet`]. A zero window makes no
/// pass at all.
///
/// Bounded by time only while `service` keeps finding work: a peer that
/// produces forever keeps this thread polling (at most one CPU, by design);
/// `wake_pending` is the way out, e.g. a stop request.
pub fn spin(
    window: Duration,
    mut wake_pending: impl FnMut() -> bool,
    mut service: impl FnMut() -> bool,
    mut idle: impl FnMut(),
) -> SpinEnd {
    let mut last_work = Instant::now();
    while last_work.elapsed() < window {
        if wake_pending() {
            return SpinEnd::WakePending;
        }
        if service() {
            last_work = Instant::now();
        } else {
            idle();
        }
    }
    SpinEnd::Quiet
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: fn(u64) -> Duration = Duration::from_micros;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn grows_towards_a_peer_that_comes_back_within_max() {
        let mut w = PollWindow::new(US(4000));
        assert_eq!(w.current(), BASE);
        w.after_sleep(US(70), true);
        assert_eq!(w.current(), US(100));
        w.after_sleep(US(1500), true);
        assert_eq!(w.current(), US(1500));
        w.after_sleep(US(1500), true);
        assert_eq!(w.current(), US(3000));
        w.after_sleep(US(3900), true);
        assert_eq!(w.current(), US(4000), "never above max");
    }

    #[test]
    fn a_quiet_peer_resets_it_and_local_wakeups_do_not_grow_it() {
        let mut w = PollWindow::new(US(4000));
        w.after_sleep(US(3000), true);
        assert_eq!(w.current(), US(3000));
        w.after_sleep(US(200), false);
        assert_eq!(w.current(), US(3000), "a device completion says nothing");
        w.after_sleep(Duration::from_secs(10), false);
        assert_eq!(w.current(), US(3000), "nor does a long wait for a device");
        w.after_sleep(US(4001), true);
        assert_eq!(w.current(), BASE);
    }

    #[test]
    fn max_below_base_disables_growth() {
        let mut w = PollWindow::new(US(0));
        assert_eq!(w.current(), US(0));
        w.after_sleep(US(0), true);
        assert_eq!(w.current(), US(0));
        let mut w = PollWindow::new(US(20));
        w.after_sleep(US(10), true);
        assert_eq!(w.current(), US(20));
    }

    // The timing tests only assert lower bounds: a loaded machine may make a
    // spin last longer, never shorter.

    #[test]
    fn spin_ends_after_the_window_when_no_work_comes() {
        let start = Instant::now();
        let mut passes = 0u32;
        let end = spin(
            MS(5),
            || false,
            || {
                passes += 1;
                false
            },
            || {},
        );
        assert_eq!(end, SpinEnd::Quiet);
        assert!(start.elapsed() >= MS(5));
        assert!(passes > 0);
    }

    #[test]
    fn spin_keeps_going_while_work_comes() {
        let start = Instant::now();
        let mut last_work_at = Duration::ZERO;
        // A window long enough that the test thread being descheduled on a
        // loaded machine does not end the spin early (it did with 5 ms).
        let end = spin(
            MS(150),
            || false,
            || {
                // Work for 600 ms, then none: four windows and more.
                let now = start.elapsed();
                let work = now < MS(600);
                if work {
                    last_work_at = now;
                }
                work
            },
            || {},
        );
        assert_eq!(end, SpinEnd::Quiet);
        assert!(last_work_at >= MS(450), "stopped at {last_work_at:?}");
        assert!(start.elapsed() >= last_work_at + MS(150));
    }

    #[test]
    fn spin_stops_at_once_on_a_pending_wakeup() {
        let mut serviced = 0u32;
        let end = spin(
            Duration::from_secs(3600),
            || true,
            || {
                serviced += 1;
                true
            },
            || {},
        );
        assert_eq!(end, SpinEnd::WakePending);
        assert_eq!(serviced, 0, "no pass once a wake-up is pending");

        // A wake-up arriving while work still comes ends it just as fast.
        let mut asked = 0u32;
        let mut serviced = 0u32;
        let end = spin(
            Duration::from_secs(3600),
            || {
                asked += 1;
                asked > 3
            },
            || {
                serviced += 1;
                true
            },
            || {},
        );
        assert_eq!(end, SpinEnd::WakePending);
        assert_eq!(serviced, 3);
    }

    #[test]
    fn spin_calls_idle_after_each_empty_pass_only() {
        use std::cell::Cell;
        let mut pass = 0u32;
        let mut empty = 0u32;
        let mut idles = 0u32;
        let last_was_empty = Cell::new(false);
        let end = spin(
            MS(5),
            || false,
            || {
                assert!(!last_was_empty.get(), "no idle after an empty pass");
                pass += 1;
                // Every other pass finds work, for the first 100 passes.
                let work = pass % 2 == 0 && pass < 100;
                if !work {
                    empty += 1;
                    last_was_empty.set(true);
                }
                work
            },
            || {
                assert!(last_was_empty.get(), "idle after a pass that found work");
                last_was_empty.set(false);
                idles += 1;
            },
        );
        assert_eq!(end, SpinEnd::Quiet);
        assert_eq!(idles, empty);
        assert!(idles > 50);
    }

    #[test]
    fn a_zero_window_makes_no_pass() {
        let end = spin(
            Duration::ZERO,
            || true,
            || unreachable!(),
            || unreachable!(),
        );
        assert_eq!(end, SpinEnd::Quiet);
    }
}
