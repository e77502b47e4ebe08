//! How long a controller's worker keeps polling the ring after the last work
//! it found, adapted to how the guest actually behaves.
//!
//! WHY: while the worker polls, the frontend sees `req_event` unarmed and
//! sends no event; the next request costs no hypercall in the guest, no event
//! delivery and no wake-up of a sleeping dom0 thread. When the guest is
//! synchronous (a control transfer loop, usb-storage sending one 4 KiB page
//! per URB and the next only after the answer), each of those is on the URB's
//! round trip, and on a slow or busy host they dominate it. Polling costs CPU,
//! so the window is adaptive, after QEMU's `AioContext` polling
//! (`poll-max-ns`): it starts at [`BASE`], doubles each time the guest's next
//! request arrived after the worker had gone to sleep but within `max`
//! (polling longer would have caught it), and falls back to [`BASE`] as soon
//! as a sleep lasts longer than `max` (the guest went quiet, so polling is
//! wasted). An idle controller therefore costs nothing, and a busy one at
//! most one CPU for `max` after each answer.

use std::time::Duration;

/// The window an idle controller starts from (and the whole window when
/// adaptation is off: `max <= BASE`). Covers a frontend that answers within
/// microseconds, as pvusb's own frontend does under load.
pub const BASE: Duration = Duration::from_micros(50);

/// Default upper bound of the window (`pvusb backend --poll-max-us`): no
/// growth, the fixed [`BASE`] window.
///
/// WHY not more: polling only pays where the polling thread has a CPU of its
/// own. In the Xen test-bed (dom0 with one vCPU, under TCG) a 4 ms bound made
/// the stick 2-5× slower: the spinning worker starved dom0's own USB stack and
/// libusb's event thread, and the device time per URB rose from 1.3 to 5.6 ms
/// (`tests/xen/scenarios/anatomy.sh` with `PVUSB_BACKEND_ARGS`). Operators
/// with dom0 CPUs to spare raise it.
pub const DEFAULT_MAX: Duration = BASE;

/// The adaptive polling window of one worker.
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

    /// Adapts after the worker slept `slept` in `poll` and was woken;
    /// `by_guest`: the frontend's event woke it (not a device completion or a
    /// control message, which say nothing about the guest's pace).
    pub fn after_sleep(&mut self, slept: Duration, by_guest: bool) {
        if !by_guest {
            // A device (a mouse's interrupt URB may wait for seconds) or the
            // daemon woke us: the guest's pace is unknown.
            return;
        }
        if slept > self.max {
            self.current = BASE.min(self.max);
        } else {
            // Long enough to have caught this request, and at least double.
            let grown = self.current.saturating_mul(2).max(slept);
            self.current = grown.min(self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: fn(u64) -> Duration = Duration::from_micros;

    #[test]
    fn grows_towards_a_guest_that_comes_back_within_max() {
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
    fn a_quiet_guest_resets_it_and_device_wakeups_do_not_grow_it() {
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
}
