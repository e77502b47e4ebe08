//! How long a controller's worker keeps polling the ring after the last work
//! it found: the adaptive window and the polling loop live in
//! [`pvusb_ring::polling`] (shared with the frontend); the bound is the
//! backend's policy and lives here.
//!
//! WHY poll at all, on this side: while the worker polls, the frontend sees
//! `req_event` unarmed and sends no event; the next request costs no
//! hypercall in the guest, no event delivery and no wake-up of a sleeping dom0
//! thread. When the guest is synchronous (a control transfer loop, usb-storage
//! sending one 4 KiB page per URB and the next only after the answer), each of
//! those is on the URB's round trip, and on a slow or busy host they dominate
//! it. An idle controller costs nothing, and a busy one at most one CPU for
//! `max` after each answer.

use std::time::Duration;

pub use pvusb_ring::polling::{spin, PollWindow, SpinEnd, BASE};

/// Default upper bound of the window (`pvusb backend --poll-max-us`): no
/// growth, the fixed [`BASE`] window.
///
/// WHY not more: polling only pays where the polling thread has a CPU of its
/// own. In the Xen test-bed (dom0 with one vCPU, under TCG) a 4 ms bound made
/// the stick 2-5× slower: the spinning worker starved dom0's own USB stack and
/// the libusb event thread all controllers then shared, and the device time
/// per URB rose from 1.3 to 5.6 ms (`tests/xen/scenarios/anatomy.sh` with
/// `PVUSB_BACKEND_ARGS`). Operators
/// with dom0 CPUs to spare raise it.
pub const DEFAULT_MAX: Duration = BASE;
