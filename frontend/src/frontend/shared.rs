//! [`Shared`]: what the caller's threads, the worker and the supervisor of one
//! controller share. The engine is behind its own mutex; the rest is either
//! fixed at connect (configuration, xenstore, transport) or a flag with one
//! writer.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};
use pvusb_support::{lock_unpoisoned, Chain};
use pvusb_xenstore::XsClient;
use tracing::{debug, warn};

use super::subscribers::Subscriber;
use super::Options;
use crate::engine::{Done, Engine};
use crate::error::FrontendError;
use crate::ports::PortEvent;
use crate::transport::Transport;
use crate::xenbus::ControllerConfig;

pub(super) struct Shared {
    engine: Mutex<Engine>,
    /// Signalled whenever ports or the connection change.
    changed: Condvar,
    /// Wakes the worker out of `poll` (a new connection, a stop request).
    wake: EventFd,
    stop: AtomicBool,
    pub(super) xs: Arc<XsClient>,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) cfg: ControllerConfig,
    pub(super) options: Options,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Tells the supervisor to look again: the worker saw the backend die, or
    /// a stop was requested.
    kick: Sender<()>,
    /// The worker thread: completions of ring responses run on it, so a
    /// blocking call made there could never see its own response.
    worker: OnceLock<ThreadId>,
}

// Every lock of the controller ignores poison (`lock_unpoisoned`): user callbacks run
// outside every lock, so their panics never poison one, and a controller must still
// be able to close after any other panic.
impl Shared {
    /// The state of a controller not yet connected; also returns the
    /// supervisor's end of the kick channel.
    pub(super) fn new(
        xs: Arc<XsClient>,
        transport: Arc<dyn Transport>,
        cfg: ControllerConfig,
        options: Options,
    ) -> Result<(Self, Receiver<()>), FrontendError> {
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| FrontendError::Thread("wake-up eventfd", e.into()))?;
        let (kick, kick_rx) = crossbeam_channel::unbounded();
        let shared = Self {
            engine: Mutex::new(Engine::new(cfg.num_ports)),
            changed: Condvar::new(),
            wake,
            stop: AtomicBool::new(false),
            xs,
            transport,
            cfg,
            options,
            subscribers: Mutex::new(Vec::new()),
            kick,
            worker: OnceLock::new(),
        };
        Ok((shared, kick_rx))
    }

    pub(super) fn engine(&self) -> MutexGuard<'_, Engine> {
        lock_unpoisoned(&self.engine)
    }

    /// Waits for a change of ports or connection (or `timeout`), giving the
    /// engine lock back meanwhile.
    pub(super) fn wait_changed<'a>(
        &self,
        engine: MutexGuard<'a, Engine>,
        timeout: Duration,
    ) -> MutexGuard<'a, Engine> {
        self.changed
            .wait_timeout(engine, timeout)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }

    /// A new port-event channel, fed from the next [`Self::deliver`] on.
    pub(super) fn subscribe(&self) -> Receiver<PortEvent> {
        let (sub, rx) = Subscriber::new();
        lock_unpoisoned(&self.subscribers).push(sub);
        rx
    }

    /// Releases the engine lock, then notifies the backend if what was
    /// published asks for it, publishes port events and runs completions.
    /// Every path that changes the engine under its lock ends here, so no
    /// notification is left behind.
    pub(super) fn deliver(&self, done: &mut Done, mut engine: MutexGuard<'_, Engine>) {
        let events = engine.take_events();
        let notify = engine.take_notify();
        drop(engine);
        if let Some(ch) = notify {
            if let Err(e) = ch.notify() {
                debug!("notify failed: {e}", e = Chain(&e));
            }
        }
        if !events.is_empty() {
            let mut subs = lock_unpoisoned(&self.subscribers);
            for ev in &events {
                subs.retain_mut(|s| s.offer(ev));
            }
            drop(subs);
            self.changed.notify_all();
        }
        for (callback, completion) in done.drain(..) {
            // A panicking user callback must not take the worker down with it.
            let run = std::panic::AssertUnwindSafe(|| callback(completion));
            if std::panic::catch_unwind(run).is_err() {
                warn!("a URB completion callback panicked");
            }
        }
    }

    /// Makes the worker's `poll` return.
    pub(super) fn wake_worker(&self) {
        let _ = self.wake.write(1);
    }

    /// The fd [`Self::wake_worker`] makes readable.
    pub(super) fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Clears the wake-up once the worker saw it.
    pub(super) fn clear_wake(&self) {
        let _ = self.wake.read();
    }

    /// Has the supervisor look at the backend's state again.
    pub(super) fn kick_supervisor(&self) {
        let _ = self.kick.send(());
    }

    /// Asks both threads to end, and wakes them to see it.
    pub(super) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake_worker();
        self.kick_supervisor();
    }

    /// Whether [`Self::request_stop`] was called.
    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Records which thread is the worker (once, when it is spawned).
    pub(super) fn set_worker_thread(&self, id: ThreadId) {
        let _ = self.worker.set(id);
    }

    /// Whether the calling thread is the worker.
    pub(super) fn on_worker_thread(&self) -> bool {
        self.worker.get() == Some(&std::thread::current().id())
    }
}
