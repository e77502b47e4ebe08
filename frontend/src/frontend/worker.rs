//! The worker thread: sleeps in `poll` on the event channel (and the wake-up
//! eventfd), consumes responses, runs their completions, and after work polls
//! the rings for a while before it sleeps again.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pvusb_ring::polling::{self, SpinEnd};
use pvusb_support::Chain;
use pvusb_xen::EvtchnError;
use tracing::{debug, info, warn};

use super::shared::Shared;
use crate::engine::{Done, RspEvent};
use crate::error::FrontendError;

/// Starts the worker of `shared` and records its thread as the worker's.
pub(super) fn spawn(shared: &Arc<Shared>) -> Result<JoinHandle<()>, FrontendError> {
    let s = Arc::clone(shared);
    let thread = std::thread::Builder::new()
        .name("pvusb-front-worker".into())
        .spawn(move || run(&s))
        .map_err(|e| FrontendError::Thread("worker", e))?;
    shared.set_worker_thread(thread.thread().id());
    Ok(thread)
}

/// Longest sleep without looking at the rings.
///
/// WHY not forever: a notification can be lost when the backend restarts —
/// its event channel is closed and bound again, and a backend that answers
/// while the frontend's port is being rebound notifies nobody — and a
/// worker that sleeps until the next event then waits for good while the
/// answers sit in the ring (a guest's storage stack resetting a device that
/// answers fine). Looking every second costs one empty pass; a lost
/// notification costs at most a second.
const LOST_EVENT_CHECK_MS: u16 = 1000;

/// The worker's loop, until a stop is requested.
fn run(shared: &Shared) {
    let mut done: Done = Vec::with_capacity(32);
    let mut lost_events = 0u64;
    while !shared.stopping() {
        let ch = shared.engine().event_channel();
        let (event, woken) = {
            // No allocation per wake-up: a fixed array, the second entry only
            // used while a connection exists.
            let wake_fd = shared.wake_fd();
            let ch_fd = ch.as_ref().map_or(wake_fd, |c| c.as_fd());
            let mut all = [
                PollFd::new(wake_fd, PollFlags::POLLIN),
                PollFd::new(ch_fd, PollFlags::POLLIN),
            ];
            let used = if ch.is_some() { 2 } else { 1 };
            let fds = &mut all[..used];
            let timeout = if ch.is_some() {
                PollTimeout::from(LOST_EVENT_CHECK_MS)
            } else {
                PollTimeout::NONE
            };
            if let Err(e) = poll(fds, timeout) {
                if e != nix::errno::Errno::EINTR {
                    warn!("poll failed: {e}", e = Chain(&e));
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (
                fds.get(1).is_some_and(ready),
                fds.first().is_some_and(ready),
            )
        };
        if woken {
            shared.clear_wake();
        }
        if event {
            if let Some(ch) = &ch {
                match ch.ack() {
                    Ok(_) => {}
                    Err(EvtchnError::PeerGone) => {
                        let mut engine = shared.engine();
                        // The supervisor may have connected to a new backend
                        // since `ch` was taken: only the connection whose
                        // channel closed is gone.
                        if !engine.uses_channel(ch) {
                            continue;
                        }
                        info!("event channel peer gone: the backend died");
                        let conn = engine.teardown(&mut done);
                        shared.deliver(&mut done, engine);
                        drop(conn);
                        shared.kick_supervisor();
                        continue;
                    }
                    Err(e) => debug!("event channel ack: {e}", e = Chain(&e)),
                }
            }
        }
        let timed_out = !event && !woken && ch.is_some();
        if (event || woken || timed_out) && process_and_deliver(shared, &mut done, RspEvent::Arm) {
            if timed_out {
                lost_events += 1;
                // Once, then every 64th: a backend that never notifies
                // must not flood the log.
                if lost_events % 64 == 1 {
                    warn!(lost_events, "found answers without an event: a notification was lost (backend restart?)");
                }
            }
            if !shared.options.poll.is_zero() {
                spin(shared, &mut done);
            }
        }
    }
}

/// Responses handled per [`process_and_deliver`]: small enough that the
/// backend gets resubmitted URBs while we still work through a full ring (the
/// two sides overlap instead of taking turns), large enough to amortise the
/// engine lock and the publish.
const DELIVER_EVERY: usize = 4;

/// Consumes up to [`DELIVER_EVERY`] responses and runs their callbacks; URBs
/// the callbacks submit are published together after the last one (one
/// notification per batch). Returns whether there was any work.
fn process_and_deliver(shared: &Shared, done: &mut Done, rsp_event: RspEvent) -> bool {
    let mut engine = shared.engine();
    let worked = engine.process(done, DELIVER_EVERY, rsp_event);
    engine.start_batch();
    shared.deliver(done, engine);
    let mut engine = shared.engine();
    engine.finish_batch();
    shared.deliver(done, engine);
    worked
}

/// Polls the rings (shared-memory loads, no syscall) for up to the
/// [`crate::Options::poll`] window after the last work, processing whatever
/// arrives, with `rsp_event` unarmed (why poll at all:
/// [`pvusb_ring::polling`]).
///
/// WHY a fixed window, not a [`polling::PollWindow`]: how soon the next
/// response comes is the device's pace (a mouse's interrupt URB may wait
/// for seconds), not the backend's, so a window grown on it would burn CPU
/// for nothing. Under load responses follow each other within microseconds,
/// which [`polling::BASE`], the default, covers.
/// Events the backend sends meanwhile stay pending on the channel and are
/// consumed by the next `poll`.
fn spin(shared: &Shared, done: &mut Done) {
    loop {
        let end = polling::spin(
            shared.options.poll,
            || shared.stopping(),
            || {
                shared.engine().responses_pending()
                    && process_and_deliver(shared, done, RspEvent::LeaveUnarmed)
            },
            std::thread::yield_now,
        );
        // Arm rsp_event again before sleeping (and take what slipped in).
        let late = process_and_deliver(shared, done, RspEvent::Arm);
        if !late || end == SpinEnd::WakePending || shared.stopping() {
            return;
        }
    }
}
