//! The worker thread of one controller: a poll loop over the event channel,
//! the mailbox's eventfd and the descriptors of its devices' I/O (libusb's
//! completions run here, between two services of the ring). Faults stay
//! inside: a panic is caught at the thread boundary, logged, and only this
//! controller stops.

use std::os::fd::AsFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pvusb_support::Chain;
use pvusb_xen::{EventChannels, GrantMapper};

use crate::connection::RingWait;
use crate::controller::{Context, Controller};
use crate::mailbox::{Control, Mailbox};
use crate::polling::{self, PollWindow, SpinEnd};
use crate::stats::Stats;
use crate::xenbus::ControllerId;

/// Whether a worker's loop makes progress: read by a worker process's
/// heartbeat, so that its monitor can tell a busy controller (turns keep
/// rising) and an idle one (asleep) from a stuck one (neither).
#[derive(Debug, Default)]
pub struct Liveness {
    turns: AtomicU64,
    asleep: AtomicBool,
}

impl Liveness {
    /// Turns of the loop so far.
    pub fn turns(&self) -> u64 {
        self.turns.load(Ordering::Relaxed)
    }

    /// Whether the loop sleeps waiting for work.
    pub fn asleep(&self) -> bool {
        self.asleep.load(Ordering::Relaxed)
    }

    fn turn(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs a controller until it is told to stop. Never panics (a panic inside
/// is caught and logged). `finished` is set when the thread is done.
/// Returns false if the controller crashed (a panic).
pub fn run<G: GrantMapper + 'static, E: EventChannels + 'static>(
    id: ControllerId,
    be: String,
    ctx: Arc<Context<G, E>>,
    mailbox: Arc<Mailbox>,
    stats: Arc<Stats>,
    finished: Arc<AtomicBool>,
    liveness: Arc<Liveness>,
) -> bool {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // The event loop services the controller (which drains completions)
        // after everything that can complete a transfer and before it sleeps,
        // so completions made on this thread need no wake-up.
        mailbox.set_worker(std::thread::current().id());
        let mut ctl = Controller::new(id, be, ctx, Arc::clone(&mailbox), stats.clone());
        ctl.start();
        event_loop(&mut ctl, &mailbox, &stats, &liveness);
    }));
    let clean = result.is_ok();
    if let Err(panic) = result {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!(ctl = %id, "controller worker crashed and was stopped (other controllers are unaffected): {what}");
    }
    finished.store(true, Ordering::SeqCst);
    clean
}

/// Services the controller (ring and completions: shared-memory loads and an
/// uncontended lock, no syscall) until nothing arrived for `window`.
///
/// WHY (NAPI-style polling): under load the frontend publishes the next
/// requests a few microseconds after our responses, and sleeping in between
/// costs a wake-up per batch on both sides (the cross-process event round trip
/// is ~10 µs, more than the work of 16 small URBs). Spinning starts only after
/// work was found and ends `window` after the last work, so an idle controller
/// costs no CPU and a busy one at most this thread's CPU while requests keep
/// coming: CPU time traded for fewer wake-ups and syscalls. The window adapts
/// to the guest's pace ([`PollWindow`]). Returns
/// false early if the mailbox has a wake-up pending (a control message or a
/// device thread's completion), which the main loop handles first. Events the
/// frontend sent meanwhile stay pending on the channel for the next `poll`.
fn spin<G: GrantMapper, E: EventChannels>(
    ctl: &mut Controller<G, E>,
    mailbox: &Mailbox,
    window: Duration,
) -> bool {
    // Whether real devices are open; opening one takes a control message,
    // which ends the spin first.
    let reap = ctl.has_device_io();
    let end = polling::spin(
        window,
        || mailbox.wake_pending(),
        || {
            if ctl.service(RingWait::Poll) {
                ctl.save_addresses();
                return true;
            }
            if reap {
                // Reap what the devices finished (one non-blocking poll);
                // the completions are serviced on the next pass.
                ctl.run_device_io(Duration::ZERO);
            }
            false
        },
        || {
            if !reap {
                // Give the CPU to any other runnable thread (on 2 CPUs the
                // thread waiting for this completion may have none).
                std::thread::yield_now();
            }
        },
    );
    // Arm req_event again (and catch what arrived just before).
    let late = ctl.service(RingWait::Arm);
    if late {
        ctl.save_addresses();
    }
    end == SpinEnd::Quiet && !late
}

/// Longest sleep of a connected controller without looking at its ring.
///
/// WHY not until the next event: a notification can be lost while a
/// restarted backend binds the event channel again (the frontend may publish
/// and notify while no backend holds the other end), and a worker that sleeps
/// until the next event then never sees requests already in its ring: the
/// guest's storage stack resets the device in a loop. One empty pass a second
/// costs nothing; a lost notification costs at most a second.
const LOST_EVENT_CHECK: Duration = Duration::from_secs(1);

fn event_loop<G: GrantMapper, E: EventChannels>(
    ctl: &mut Controller<G, E>,
    mailbox: &Mailbox,
    stats: &Stats,
    liveness: &Liveness,
) {
    let mut event = false;
    let mut window = PollWindow::new(ctl.poll_max());
    loop {
        liveness.turn();
        mailbox.clear_wake();
        for msg in mailbox.take_control() {
            match msg {
                Control::Shutdown | Control::Remove => {
                    ctl.stop();
                    return;
                }
                Control::BackendChanged(rel) => ctl.on_backend_changed(&rel),
                Control::FrontendChanged => ctl.reconcile(),
                Control::Hotplug(ev) => ctl.on_hotplug(&ev),
                Control::Fault(fault) => crate::isolation::commit(fault),
            }
        }
        let work = ctl.service(RingWait::Arm);
        ctl.save_addresses();
        if event && !work {
            Stats::inc(&stats.spurious_events);
        }
        if work && !spin(ctl, mailbox, window.current()) {
            // Something for the main loop (a control message or a completion
            // from a device thread): go round without sleeping.
            event = false;
            continue;
        }
        let slept;
        let (woke_evtchn, woke_io) = {
            let evtchn = ctl.evtchn();
            let mut io = Vec::new();
            ctl.device_fds(&mut io);
            let mut fds = Vec::with_capacity(2 + io.len());
            fds.push(PollFd::new(mailbox.fd(), PollFlags::POLLIN));
            let io_start = match evtchn {
                Some(ch) => {
                    fds.push(PollFd::new(ch.as_fd(), PollFlags::POLLIN));
                    2
                }
                None => 1,
            };
            fds.extend(
                io.iter()
                    .map(|f| PollFd::new(f.fd, PollFlags::from_bits_truncate(f.events))),
            );
            // A deferred address-table save wakes us when it is due; a
            // connected ring is looked at every second whatever happens
            // ([`LOST_EVENT_CHECK`]).
            let check = ctl.is_connected().then_some(LOST_EVENT_CHECK);
            let wait = match (ctl.save_due_in(), check) {
                (Some(due), Some(check)) => Some(due.min(check)),
                (due, check) => due.or(check),
            };
            let timeout = match wait {
                Some(due) => PollTimeout::try_from(due.as_millis().saturating_add(1))
                    .unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            let asleep = Instant::now();
            liveness.asleep.store(true, Ordering::Relaxed);
            let polled = poll(&mut fds, timeout);
            liveness.asleep.store(false, Ordering::Relaxed);
            slept = asleep.elapsed();
            match polled {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("poll failed: {e}", e = Chain(&e));
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (
                io_start == 2 && fds.get(1).is_some_and(ready),
                fds.get(io_start..).is_some_and(|io| io.iter().any(ready)),
            )
        };
        if woke_io {
            ctl.run_device_io(Duration::ZERO);
        }
        event = woke_evtchn;
        window.after_sleep(slept, woke_evtchn);
        if woke_evtchn {
            ctl.on_event();
        }
    }
}
