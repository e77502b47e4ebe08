//! [`Frontend`]: one virtual host controller, as `cli/`, the tests and the
//! benches use it: connect, port status and events, submission, close.
//!
//! Behind it, each concern in a child module:
//!
//! | module | concern |
//! |---|---|
//! | `shared` | the state the caller's threads, the worker and the supervisor share |
//! | `subscribers` | bounded [`PortEvent`] channels ([`SUBSCRIBER_QUEUE`]) |
//! | `lifecycle` | the xenbus life-cycle: waiting for the backend, handshake, close, and the supervisor thread that tears down and re-handshakes as the backend goes and comes back (spec 6.1 step 3, 13.18) |
//! | `worker` | the worker thread: sleeps in `poll` on the event channel, consumes responses, polls the rings for a while after work |
//!
//! Everything else runs on the caller's thread.

mod lifecycle;
mod shared;
mod subscribers;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use pvusb_protocol::{Speed, XenbusState};
use pvusb_support::{lock_unpoisoned, Chain};
use pvusb_xenstore::XsClient;
use tracing::{debug, info};

use self::shared::Shared;
pub use self::subscribers::SUBSCRIBER_QUEUE;
use crate::engine::{Engine, EngineStats};
use crate::error::{BackendViolation, FrontendError, UrbStatus};
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
    /// Connect even if the controller's frontend state is already
    /// Connected. WHY off by default: that state means another frontend
    /// (the kernel's xen-hcd) drives the controller, and a new handshake
    /// would take its rings away; only a frontend known to be dead (killed
    /// without closing) should be taken over.
    pub take_over: bool,
    /// How long the worker keeps looking at the rings after the last
    /// response before it sleeps on the event channel again (zero: never
    /// polls). WHY adjustable: polling saves the peer's event and our
    /// wake-up while the peer answers within the window, which pays on a
    /// guest with a spare vCPU; on a single vCPU the polling thread takes
    /// turns with the very threads (the guest kernel's) that produce the
    /// next request.
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            unlink_grace: Duration::from_secs(5),
            reconnect: true,
            take_over: false,
            poll: pvusb_ring::polling::BASE,
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
        if !options.take_over && cfg.own_state(&xs)? == Some(XenbusState::Connected) {
            return Err(FrontendError::ControllerInUse { devid });
        }
        lifecycle::await_backend(&xs, &cfg, options.handshake_timeout)?;
        let (shared, kick_rx) = Shared::new(xs, transport, cfg, options)?;
        let shared = Arc::new(shared);
        lifecycle::handshake(&shared)?;
        let mut threads = vec![worker::spawn(&shared)?];
        if shared.options.reconnect {
            threads.push(lifecycle::spawn_supervisor(&shared, kick_rx)?);
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
            .ok_or(self.no_such_port(port))
    }

    /// A new channel of every [`PortEvent`] from now on. It holds at most
    /// [`SUBSCRIBER_QUEUE`] events; a subscriber that falls further behind
    /// gets [`PortEvent::Lagged`] in place of what it missed.
    pub fn subscribe(&self) -> Receiver<PortEvent> {
        self.shared.subscribe()
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
        .ok_or(self.no_such_port(port))
    }

    fn no_such_port(&self, port: u8) -> FrontendError {
        FrontendError::NoSuchPort {
            port,
            num_ports: self.shared.cfg.num_ports,
        }
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
            engine = self.shared.wait_changed(engine, left);
        }
    }

    /// Why the controller is dead, if a backend protocol error killed it.
    pub fn dead_reason(&self) -> Option<BackendViolation> {
        self.shared.engine().dead_reason()
    }

    /// Whether URBs can be submitted now.
    pub fn is_usable(&self) -> bool {
        self.shared.engine().usable()
    }

    /// Counters of the URB engine.
    pub fn stats(&self) -> EngineStats {
        self.shared.engine().stats()
    }

    /// A snapshot of the URB engine and its rings, for a stalled device's
    /// diagnosis.
    pub fn report(&self) -> crate::report::EngineReport {
        self.shared.engine().report()
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
                None => self.no_such_port(port),
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
        let from_batch = self.shared.on_worker_thread();
        let mut engine = self.shared.engine();
        let token = engine.submit(urb, callback, from_batch, &mut done);
        self.shared.deliver(&mut done, engine);
        UrbHandle {
            shared: Arc::downgrade(&self.shared),
            token,
        }
    }

    /// The timeouts this controller was connected with.
    pub(crate) fn options(&self) -> &Options {
        &self.shared.options
    }

    /// A free device address for enumeration.
    pub(crate) fn alloc_address(&self) -> Result<u8, FrontendError> {
        self.shared
            .engine()
            .alloc_address()
            .ok_or(FrontendError::NoFreeAddress)
    }

    /// Gives an address from [`Self::alloc_address`] back unused.
    pub(crate) fn release_address(&self, address: u8) {
        self.shared.engine().release_address(address);
    }

    /// Records the address the device on `port` now answers to.
    pub(crate) fn set_port_address(&self, port: u8, address: Option<u8>) {
        self.shared.engine().set_address(port, address);
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
        lifecycle::close(&self.shared)
    }

    /// Stops and joins the threads. A thread cannot join itself: when the last
    /// handle is dropped (or `close` called) inside a completion callback, the
    /// callback runs on one of these threads, which is left to finish on its
    /// own (it sees `stop` as soon as the callback returns).
    fn stop_threads(&self) {
        self.shared.request_stop();
        let me = std::thread::current().id();
        for t in lock_unpoisoned(&self.threads).drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }

    /// Refuses a blocking call on the worker thread (inside a completion
    /// callback): it would wait for a response only that thread can process.
    pub(crate) fn check_may_block(&self) -> Result<(), FrontendError> {
        if self.shared.on_worker_thread() {
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
                debug!("close on drop: {e}", e = Chain(&e));
            }
        }
    }
}
