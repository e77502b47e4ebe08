//! [`Frontend`]: one virtual host controller, its threads and its life-cycle.
//!
//! Threads: a worker that sleeps in `poll` on the event channel (and a wake-up
//! eventfd) and consumes responses, and a supervisor that follows the
//! backend's xenbus state to tear down and re-handshake (spec 6.1 step 3,
//! 13.18). Everything else runs on the caller's thread.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use pvusb_protocol::{Speed, XenbusState};
use pvusb_xen::EvtchnError;
use pvusb_xenstore::XsClient;
use tracing::{debug, info, warn};

use crate::connection::Connection;
use crate::engine::{Done, Engine, EngineStats, RspEvent};
use crate::error::{FrontendError, UrbStatus};
use crate::ports::{PortEvent, PortStatus};
use crate::transport::Transport;
use crate::urb::{Callback, Urb};
use crate::xenbus::ControllerConfig;

/// Timeouts of the life-cycle.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long `connect` waits for the backend to reach InitWait.
    pub handshake_timeout: Duration,
    /// How long `close` waits for the backend to reach Closed and to unmap.
    pub close_timeout: Duration,
    /// After a blocking call timed out and unlinked its URB, how long it waits
    /// for the URB's own response before giving up on it.
    pub unlink_grace: Duration,
    /// Follow the backend going away and coming back (re-handshake).
    pub reconnect: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            unlink_grace: Duration::from_secs(5),
            reconnect: true,
        }
    }
}

/// Where the xenbus life-cycle stands, from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Initialising,
    Connected,
    Closed,
}

/// Events a subscriber's channel holds before it counts as lagging.
pub const SUBSCRIBER_QUEUE: usize = 256;

/// One [`Frontend::subscribe`] channel.
struct Subscriber {
    tx: Sender<PortEvent>,
    /// Events dropped since the channel was last full.
    missed: u64,
}

impl Subscriber {
    /// Sends `ev` unless the channel is full (then counts it as missed, and
    /// reports the count once there is room). Returns false when the
    /// receiver is gone.
    fn offer(&mut self, ev: &PortEvent) -> bool {
        use crossbeam_channel::TrySendError;
        if self.missed > 0 {
            match self.tx.try_send(PortEvent::Lagged {
                missed: self.missed,
            }) {
                Ok(()) => self.missed = 0,
                Err(TrySendError::Full(_)) => {
                    self.missed += 1;
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        match self.tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.missed += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) engine: Mutex<Engine>,
    /// Signalled whenever ports or the connection change.
    pub(crate) changed: Condvar,
    wake: EventFd,
    stop: AtomicBool,
    pub(crate) xs: Arc<XsClient>,
    transport: Arc<dyn Transport>,
    pub(crate) cfg: ControllerConfig,
    pub(crate) options: Options,
    subscribers: Mutex<Vec<Subscriber>>,
    kick: Sender<()>,
    phase: Mutex<Phase>,
    /// The worker thread: completions of ring responses run on it, so a
    /// blocking call made there could never see its own response.
    worker: OnceLock<ThreadId>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        lock(&self.engine)
    }

    fn wake_worker(&self) {
        let _ = self.wake.write(1);
    }

    /// Runs completions and publishes events after the engine lock is gone.
    pub(crate) fn deliver(&self, done: &mut Done, mut engine: MutexGuard<'_, Engine>) {
        let events = engine.take_events();
        drop(engine);
        if !events.is_empty() {
            let mut subs = lock(&self.subscribers);
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
}

/// A virtual USB host controller connected to a pvUSB backend.
///
/// `Send + Sync`: share it between threads with an `Arc`.
pub struct Frontend {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Frontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend")
            .field("config", &self.shared.cfg)
            .finish()
    }
}

/// Handle of a submitted URB, to cancel it.
#[derive(Debug, Clone)]
pub struct UrbHandle {
    shared: std::sync::Weak<Shared>,
    token: u64,
}

impl UrbHandle {
    /// Cancels the URB (spec 7.6). It completes exactly once either way: with
    /// `status` if the cancel took effect (at once if it was still queued
    /// locally, else when its own response arrives), or normally if it had
    /// already finished. Returns false if it had already completed.
    pub fn unlink(&self, status: UrbStatus) -> bool {
        let Some(shared) = self.shared.upgrade() else {
            return false;
        };
        let mut done = Vec::new();
        let mut engine = shared.engine();
        let found = engine.unlink(self.token, status, &mut done);
        shared.deliver(&mut done, engine);
        found
    }
}

impl Frontend {
    /// Connects controller `devid` of domain `domid` (spec 6.1, xen-hcd): reads
    /// and validates the configuration, waits for the backend to offer a
    /// connection, sets up rings and event channel, writes the keys in one
    /// transaction, posts all conn requests and switches to Connected.
    pub fn connect(
        xs: Arc<XsClient>,
        transport: Arc<dyn Transport>,
        domid: u16,
        devid: u32,
        options: Options,
    ) -> Result<Self, FrontendError> {
        let cfg = ControllerConfig::read(&xs, domid, devid)?;
        // A previous session on this controller left our node Closed (or anything
        // but Initialising): announce a new session first, as spec 13.18 describes
        // the re-handshake; the backend answers Closed -> InitWait.
        if !matches!(cfg.own_state(&xs)?, Some(XenbusState::Initialising)) {
            cfg.set_state(&xs, XenbusState::Initialising)?;
        }
        cfg.wait_backend(
            &xs,
            "InitWait, Initialised or Connected",
            options.handshake_timeout,
            |s| {
                matches!(
                    s,
                    Some(XenbusState::InitWait | XenbusState::Initialised | XenbusState::Connected)
                )
            },
        )?;
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| FrontendError::Thread("wake-up eventfd", e.into()))?;
        let (kick, kick_rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
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
            phase: Mutex::new(Phase::Initialising),
            worker: OnceLock::new(),
        });
        handshake(&shared)?;
        let mut threads = Vec::new();
        let s = Arc::clone(&shared);
        let worker_thread = std::thread::Builder::new()
            .name("pvusb-front-worker".into())
            .spawn(move || worker(&s))
            .map_err(|e| FrontendError::Thread("worker", e))?;
        let _ = shared.worker.set(worker_thread.thread().id());
        threads.push(worker_thread);
        if shared.options.reconnect {
            let watch = shared.xs.watch(&shared.cfg.backend_state_path())?;
            let s = Arc::clone(&shared);
            threads.push(
                std::thread::Builder::new()
                    .name("pvusb-front-xenbus".into())
                    .spawn(move || supervisor(&s, watch.receiver(), &kick_rx))
                    .map_err(|e| FrontendError::Thread("supervisor", e))?,
            );
        }
        info!(
            devid,
            domid,
            num_ports = shared.cfg.num_ports,
            "pvUSB frontend connected"
        );
        Ok(Self {
            shared,
            threads: Mutex::new(threads),
            closed: AtomicBool::new(false),
        })
    }

    /// The controller's configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.shared.cfg
    }

    /// Ports of the root hub.
    pub fn num_ports(&self) -> u8 {
        self.shared.cfg.num_ports
    }

    /// Every port's status.
    pub fn ports(&self) -> Vec<PortStatus> {
        self.shared.engine().hub().ports().to_vec()
    }

    /// One port's status.
    pub fn port(&self, port: u8) -> Result<PortStatus, FrontendError> {
        self.shared
            .engine()
            .hub()
            .port(port)
            .copied()
            .ok_or(FrontendError::NoSuchPort {
                port,
                num_ports: self.shared.cfg.num_ports,
            })
    }

    /// A new channel of every [`PortEvent`] from now on. It holds at most
    /// [`SUBSCRIBER_QUEUE`] events; a subscriber that falls further behind
    /// gets [`PortEvent::Lagged`] in place of what it missed.
    pub fn subscribe(&self) -> Receiver<PortEvent> {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_QUEUE);
        lock(&self.shared.subscribers).push(Subscriber { tx, missed: 0 });
        rx
    }

    /// Waits until `port` has a device, returning its speed.
    pub fn wait_for_device(&self, port: u8, timeout: Duration) -> Result<Speed, FrontendError> {
        self.wait_port(port, timeout, |p| p.connected())
            .map(|p| p.speed)
    }

    /// Waits until `port` is empty.
    pub fn wait_for_disconnect(&self, port: u8, timeout: Duration) -> Result<(), FrontendError> {
        self.wait_port(port, timeout, |p| !p.connected()).map(drop)
    }

    fn wait_port(
        &self,
        port: u8,
        timeout: Duration,
        ok: impl Fn(&PortStatus) -> bool,
    ) -> Result<PortStatus, FrontendError> {
        // `Some(None)`: the port does not exist, no use waiting.
        self.wait_engine(timeout, "a port change", |engine| {
            match engine.hub().port(port) {
                None => Some(None),
                Some(p) if ok(p) => Some(Some(*p)),
                Some(_) => None,
            }
        })?
        .ok_or(FrontendError::NoSuchPort {
            port,
            num_ports: self.shared.cfg.num_ports,
        })
    }

    /// Waits until the controller is connected (again) and usable.
    pub fn wait_connected(&self, timeout: Duration) -> Result<(), FrontendError> {
        self.wait_engine(timeout, "the controller to connect", |engine| {
            engine.usable().then_some(())
        })
    }

    /// Re-evaluates `ready` under the engine lock at every change until it
    /// yields a value or `timeout` passes (`Duration::MAX` waits forever).
    fn wait_engine<T>(
        &self,
        timeout: Duration,
        what: &'static str,
        mut ready: impl FnMut(&Engine) -> Option<T>,
    ) -> Result<T, FrontendError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut engine = self.shared.engine();
        loop {
            if let Some(v) = ready(&engine) {
                return Ok(v);
            }
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Err(FrontendError::Timeout(what));
            }
            engine = self
                .shared
                .changed
                .wait_timeout(engine, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Why the controller is dead, if a backend protocol error killed it.
    pub fn dead_reason(&self) -> Option<String> {
        self.shared.engine().dead_reason().map(str::to_owned)
    }

    /// Whether URBs can be submitted now.
    pub fn is_usable(&self) -> bool {
        self.shared.engine().usable()
    }

    /// Counters of the URB engine.
    pub fn stats(&self) -> EngineStats {
        self.shared.engine().stats()
    }

    /// URBs in flight plus queued locally.
    pub fn outstanding(&self) -> usize {
        self.shared.engine().outstanding()
    }

    /// A local port reset (spec 9, xen-hcd): nothing goes to the backend; the
    /// device must be enumerated again from address 0.
    pub fn reset_port(&self, port: u8) -> Result<(), FrontendError> {
        // The reset gives the port's address back to the hub's pool.
        let mut engine = self.shared.engine();
        if !engine.reset_port(port) {
            return Err(match engine.hub().port(port) {
                None => FrontendError::NoSuchPort {
                    port,
                    num_ports: self.shared.cfg.num_ports,
                },
                Some(_) => FrontendError::NoDevice(port),
            });
        }
        self.shared.deliver(&mut Vec::new(), engine);
        Ok(())
    }

    /// Submits a URB; `callback` runs exactly once with its completion.
    pub fn submit(
        &self,
        urb: Urb,
        callback: impl FnOnce(crate::Completion) + Send + 'static,
    ) -> UrbHandle {
        self.submit_boxed(urb, Box::new(callback))
    }

    /// [`Self::submit`] with an already boxed callback.
    pub fn submit_boxed(&self, urb: Urb, callback: Callback) -> UrbHandle {
        let mut done = Vec::new();
        let mut engine = self.shared.engine();
        let token = engine.submit(urb, callback, &mut done);
        self.shared.deliver(&mut done, engine);
        UrbHandle {
            shared: Arc::downgrade(&self.shared),
            token,
        }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub(crate) fn alloc_address(&self) -> Result<u8, FrontendError> {
        self.shared
            .engine()
            .alloc_address()
            .ok_or(FrontendError::NoFreeAddress)
    }

    pub(crate) fn release_address(&self, address: u8) {
        self.shared.engine().release_address(address);
    }

    /// Closes the controller (xen-hcd remove): state Closing, wait for the
    /// backend to disconnect (Closing or Closed: usbback only goes Closed after
    /// the frontend did), fail every URB with shutdown, end access to every
    /// granted page (retrying while the backend still maps them), state Closed.
    pub fn close(&self) -> Result<(), FrontendError> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.stop_threads();
        let s = &self.shared;
        let timeout = s.options.close_timeout;
        // The toolstack already removed the controller (ctrl-detach after the
        // backend closed): as when xenbus unregisters xen-hcd's device, there is
        // no state left to write, and writing would recreate removed nodes.
        let removed = matches!(
            s.xs.exists(pvusb_xenstore::Tx::NONE, &s.cfg.frontend_dir),
            Ok(false)
        );
        let mut result = if removed {
            Ok(())
        } else {
            s.cfg.set_state(&s.xs, XenbusState::Closing)
        };
        if result.is_ok() && !removed {
            result = s
                .cfg
                .wait_backend(&s.xs, "Closing or Closed", timeout, |st| {
                    matches!(st, Some(XenbusState::Closing | XenbusState::Closed) | None)
                })
                .map(drop);
        }
        let mut done = Vec::new();
        let mut engine = s.engine();
        let conn = engine.teardown(&mut done);
        s.deliver(&mut done, engine);
        if let Some(conn) = conn {
            let left = conn.release_grants(deadline_after(timeout));
            if left > 0 && result.is_ok() {
                result = Err(FrontendError::GrantsStillMapped(left));
            }
        }
        if removed {
            return result;
        }
        let closed = s.cfg.set_state(&s.xs, XenbusState::Closed);
        result.and(closed)
    }

    /// Stops and joins the threads. A thread cannot join itself: when the last
    /// handle is dropped (or `close` called) inside a completion callback, the
    /// callback runs on one of these threads, which is left to finish on its
    /// own (it sees `stop` as soon as the callback returns).
    fn stop_threads(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake_worker();
        let _ = self.shared.kick.send(());
        let me = std::thread::current().id();
        for t in lock(&self.threads).drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }

    /// Refuses a blocking call on the worker thread (inside a completion
    /// callback): it would wait for a response only that thread can process.
    pub(crate) fn check_may_block(&self) -> Result<(), FrontendError> {
        if self.shared.worker.get() == Some(&std::thread::current().id()) {
            return Err(FrontendError::InvalidRequest(
                "a blocking transfer cannot run inside a completion callback; use submit".into(),
            ));
        }
        Ok(())
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::SeqCst) {
            if let Err(e) = self.close() {
                debug!("close on drop: {e}");
            }
        }
    }
}

/// `timeout` from now, saturating far in the future instead of overflowing.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Fresh rings, keys, conn requests, Connected.
fn handshake(shared: &Shared) -> Result<(), FrontendError> {
    let mut conn = Connection::new(Arc::clone(&shared.transport), shared.cfg.backend_domid)?;
    shared.cfg.publish(&shared.xs, &mut conn)?;
    let mut engine = shared.engine();
    engine.attach(conn);
    *lock(&shared.phase) = Phase::Connected;
    shared.deliver(&mut Vec::new(), engine);
    shared.wake_worker();
    Ok(())
}

/// Fails everything and drops the connection (its grants end as the backend
/// unmaps them).
fn teardown(shared: &Shared) {
    let mut done = Vec::new();
    let mut engine = shared.engine();
    let conn = engine.teardown(&mut done);
    shared.deliver(&mut done, engine);
    if let Some(conn) = conn {
        let left = conn.release_grants(Instant::now());
        if left > 0 {
            debug!("{left} pages still mapped by the departed backend; released when it unmaps");
        }
    }
}

/// Follows the backend's state (and the worker's "peer gone" kicks).
fn supervisor(shared: &Shared, watch: &Receiver<String>, kick: &Receiver<()>) {
    while !shared.stop.load(Ordering::SeqCst) {
        crossbeam_channel::select! {
            recv(watch) -> m => if m.is_err() { warn!("xenstore watch ended; no more reconnects"); return; },
            recv(kick) -> _ => {},
        }
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let state = match shared.cfg.backend_state(&shared.xs) {
            Ok(s) => s,
            Err(e) => {
                debug!("reading backend state: {e}");
                continue;
            }
        };
        let peer_gone = !shared.engine().is_attached();
        step(shared, state, peer_gone);
    }
}

/// One step of the reconnect state machine.
fn step(shared: &Shared, state: Option<XenbusState>, lost: bool) {
    use XenbusState as S;
    let phase = *lock(&shared.phase);
    let xs = &shared.xs;
    match phase {
        Phase::Connected if lost || matches!(state, Some(S::Closing | S::Closed) | None) => {
            info!(?state, "backend went away; tearing the controller down");
            teardown(shared);
            let _ = shared.cfg.set_state(xs, S::Closed);
            *lock(&shared.phase) = Phase::Closed;
            step(shared, state, false);
        }
        Phase::Closed if !matches!(state, Some(S::Closing) | None) => {
            let _ = shared.cfg.set_state(xs, S::Initialising);
            *lock(&shared.phase) = Phase::Initialising;
            step(shared, state, false);
        }
        Phase::Initialising
            if matches!(state, Some(S::InitWait | S::Initialised | S::Connected)) =>
        {
            match handshake(shared) {
                Ok(()) => info!("re-handshake with the backend done"),
                Err(e) => warn!("re-handshake failed: {e}"),
            }
        }
        _ => {}
    }
}

/// The worker: sleeps in poll on the event channel, consumes responses.
fn worker(shared: &Shared) {
    let mut done: Done = Vec::with_capacity(32);
    while !shared.stop.load(Ordering::SeqCst) {
        let ch = shared.engine().event_channel();
        let (event, woken) = {
            // No allocation per wake-up: a fixed array, the second entry only
            // used while a connection exists.
            let wake_fd = shared.wake.as_fd();
            let ch_fd = ch.as_ref().map_or(wake_fd, |c| c.as_fd());
            let mut all = [
                PollFd::new(wake_fd, PollFlags::POLLIN),
                PollFd::new(ch_fd, PollFlags::POLLIN),
            ];
            let used = if ch.is_some() { 2 } else { 1 };
            let fds = &mut all[..used];
            if let Err(e) = poll(fds, PollTimeout::NONE) {
                if e != nix::errno::Errno::EINTR {
                    warn!("poll failed: {e}");
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
            let _ = shared.wake.read();
        }
        if event {
            if let Some(ch) = &ch {
                match ch.ack() {
                    Ok(_) => {}
                    Err(EvtchnError::PeerGone) => {
                        info!("event channel peer gone: the backend died");
                        let mut engine = shared.engine();
                        let conn = engine.teardown(&mut done);
                        shared.deliver(&mut done, engine);
                        drop(conn);
                        let _ = shared.kick.send(());
                        continue;
                    }
                    Err(e) => debug!("event channel ack: {e}"),
                }
            }
        }
        if (event || woken) && process_and_deliver(shared, &mut done, RspEvent::Arm) {
            spin(shared, &mut done);
        }
    }
}

/// How long the worker keeps looking at the ring after the last response it
/// found before it sleeps in `poll` again.
///
/// WHY (NAPI-style polling): under load the next responses arrive a few
/// microseconds after the last, and sleeping in between costs a wake-up per
/// batch (a context switch on both sides: the cross-process event round trip
/// is ~10 µs, more than the ring work of 16 small URBs). Spinning only starts
/// after work was found and ends 50 µs after the last work, so an idle
/// controller costs no CPU; a busy one costs at most one CPU while responses
/// keep coming, which is the trade: CPU time for fewer wake-ups.
const SPIN: Duration = Duration::from_micros(50);

/// Responses handled per [`process_and_deliver`]: small enough that the
/// backend gets resubmitted URBs while we still work through a full ring (the
/// two sides overlap instead of taking turns), large enough to amortise the
/// engine lock and the publish.
const DELIVER_EVERY: usize = 4;

/// Consumes up to [`DELIVER_EVERY`] responses and runs their callbacks; URBs
/// the callbacks submit are published together after the last one (one
/// notification per batch).
/// Returns whether there was any work.
fn process_and_deliver(shared: &Shared, done: &mut Done, rsp_event: RspEvent) -> bool {
    let mut engine = shared.engine();
    let worked = engine.process(done, DELIVER_EVERY, rsp_event);
    engine.start_batch();
    shared.deliver(done, engine);
    shared.engine().finish_batch();
    worked
}

/// Polls the rings (shared-memory loads, no syscall) for up to [`SPIN`] after
/// the last work, processing whatever arrives. Events the backend sends
/// meanwhile stay pending on the channel and are consumed by the next `poll`.
fn spin(shared: &Shared, done: &mut Done) {
    loop {
        let mut last_work = Instant::now();
        while !shared.stop.load(Ordering::Relaxed) && last_work.elapsed() < SPIN {
            if shared.engine().responses_pending() {
                if process_and_deliver(shared, done, RspEvent::LeaveUnarmed) {
                    last_work = Instant::now();
                }
            } else {
                // Give the CPU to any other runnable thread (on 2 CPUs the
                // thread waiting for this completion may have none).
                std::thread::yield_now();
            }
        }
        // Arm rsp_event again before sleeping (and take what slipped in).
        if !process_and_deliver(shared, done, RspEvent::Arm) || shared.stop.load(Ordering::Relaxed)
        {
            return;
        }
    }
}

#[cfg(test)]
mod subscriber_tests {
    use super::*;

    /// A backend flipping a port at ring speed must not grow a slow
    /// subscriber's queue without bound.
    #[test]
    fn a_lagging_subscriber_gets_a_count_instead_of_an_unbounded_queue() {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_QUEUE);
        let mut sub = Subscriber { tx, missed: 0 };
        let flip = |i: usize| PortEvent::Reset {
            port: u8::try_from(i % 8).unwrap_or(1),
        };
        for i in 0..SUBSCRIBER_QUEUE + 44 {
            assert!(sub.offer(&flip(i)));
        }
        assert_eq!(rx.len(), SUBSCRIBER_QUEUE);
        let _: Vec<_> = rx.try_iter().collect();
        assert!(sub.offer(&PortEvent::ControllerConnected));
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            vec![
                PortEvent::Lagged { missed: 44 },
                PortEvent::ControllerConnected
            ]
        );
        drop(rx);
        assert!(!sub.offer(&PortEvent::ControllerConnected), "receiver gone");
    }
}
