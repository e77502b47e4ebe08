//! The xenbus life-cycle of one controller (spec 6) and the glue between its
//! xenstore nodes, its ports, its URB engine and its rings. Runs on the
//! controller's worker thread only.
//!
//! States as written to the backend's `state` node:
//! * InitWait (2) once `usb-ver`/`num-ports` are valid (invalid: logged, the
//!   state is left alone, re-checked on every change of the directory);
//! * Connected (4) when the frontend is Initialised (3) or Connected (4) — a
//!   jump straight from Initialising is the normal xen-hcd path — and both
//!   rings are mapped and the event channel bound;
//! * Closing (5) mirrors a closing frontend, follows `online = 0` and marks a
//!   ring the frontend broke; Closed (6) once the frontend is Closed (or gone);
//! * back to InitWait when a frontend returns to Initialising after Closed.
//!
//! A restarted daemon finds state 4 with a Connected frontend and reconnects
//! without going through InitWait.
//!
//! Ports and the toolstack's device records (toolstack/src/record.rs): the
//! busid in `port/N` is opened only while its record
//! `/pvusb/usbback/<busid-key>/state` is `claimed` or `assigned`, or when there
//! is no record at all — a port written by another toolstack (libxl
//! `type=pv`, a script, `xenstore-write` by hand) must still work, and those
//! keep no record. When the record moves to `detach-releasing` (the toolstack
//! withdrew its claim), the device is released while the port still lists it:
//! its requests are cancelled and answered, speed 0 is posted, and the device
//! is closed so the kernel drivers can be bound again. The daemon watches the
//! records and forwards changes as [`xenbus::RECORD_CHANGED`] paths.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pvusb_protocol::xenstore::{self as xsp, keys};
use pvusb_protocol::{Status, UrbRequest, UrbResponse, XenbusState};
use pvusb_xen::{EventChannel, EventChannels, GrantMapper};
use pvusb_xenstore::XsClient;

use crate::connection::{Connection, RingWait};
use crate::engine::UrbEngine;
use crate::error::BackendError;
use crate::guest::GrantedMemory;
use crate::guest_warn;
use crate::mailbox::Mailbox;
use crate::ports::Ports;
use crate::ratelimit::{PortNotes, RateLimiter};
use crate::stats::Stats;
use crate::usb::{
    BusId, Completion, CompletionSink, DeviceIo, HotplugEvent, IoFd, Speed, TransferId, UsbHost,
};
use crate::xenbus::{self, ControllerConfig, ControllerId};

/// Responses are published (and the frontend notified if it asked) after
/// this many, so that a busy frontend overlaps with us; see `service`.
const PUBLISH_EVERY: usize = 4;

/// Backend-directory key holding the guest address table ("addr:port,...").
pub const ADDRESS_MAP_KEY: &str = "pvusb-addresses";

/// Passes over the rings one [`Controller::service`] call makes at most (each
/// takes up to a ring's worth of requests).
const SERVICE_PASSES: usize = 8;

/// Shortest time between two saves of the address table
/// ([`Controller::save_addresses`]).
pub const ADDRESS_SAVE_INTERVAL: Duration = Duration::from_millis(500);

/// The address table waiting to be saved, and when the last save went.
#[derive(Debug, Default)]
struct AddressSave {
    pending: Option<String>,
    last: Option<Instant>,
}

/// What every controller of a daemon shares.
pub struct Context<G, E> {
    /// The xenstore connection.
    pub xs: Arc<XsClient>,
    /// Grant copies and ring mapping.
    pub grants: Arc<G>,
    /// Event channel binding.
    pub evtchns: Arc<E>,
    /// Host devices (libusb, emulated, or both).
    pub host: Arc<dyn UsbHost>,
    /// The backend domain's own id.
    pub own_domid: u16,
    /// Upper bound of each worker's adaptive ring-polling window
    /// ([`crate::polling::PollWindow`]).
    pub poll_max: Duration,
    /// Per-port statistics on ([`UrbEngine::set_port_stats`]).
    pub port_stats: bool,
    /// Device rules checked when a device is opened ([`crate::device_policy`]).
    pub policy: Option<Arc<pvusb_policy::Policy>>,
}

impl<G, E> std::fmt::Debug for Context<G, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("own_domid", &self.own_domid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Unconfigured,
    InitWait,
    Connected,
    Closing,
    Closed,
}

struct Setup {
    config: ControllerConfig,
    ports: Ports,
    engine: UrbEngine,
}

type Conn<G, E> = Connection<<G as GrantMapper>::Mapping, <E as EventChannels>::Channel>;

/// One controller's state, owned by its worker thread.
pub struct Controller<G: GrantMapper, E: EventChannels> {
    id: ControllerId,
    ctx: Arc<Context<G, E>>,
    be: String,
    fe: String,
    mailbox: Arc<Mailbox>,
    stats: Arc<Stats>,
    phase: Phase,
    setup: Option<Setup>,
    /// The I/O of this controller's devices (their completions run on its
    /// thread); declared after `setup`, whose devices close first.
    io: Box<dyn DeviceIo>,
    conn: Option<Conn<G, E>>,
    fe_watch: Option<pvusb_xenstore::XsNotifyWatch>,
    limiter: RateLimiter,
    /// Repeated attach failures of a port are logged once (toolstack and
    /// hotplug retries must not flood the log).
    port_notes: PortNotes,
    /// Budget for port lines that are new (a toolstack cycling busids).
    port_limiter: RateLimiter,
    completions: Vec<(TransferId, Completion)>,
    requests: Vec<UrbRequest>,
    responses: Vec<UrbResponse>,
    last_config_error: Option<String>,
    /// Started on a controller that was Connected (daemon restart): keep
    /// devices as they are and restore the address table.
    resuming: bool,
    address_save: AddressSave,
}

impl<G: GrantMapper, E: EventChannels> std::fmt::Debug for Controller<G, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("id", &self.id)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl<G: GrantMapper, E: EventChannels> Controller<G, E> {
    /// A controller for backend directory `be`, not started.
    pub fn new(
        id: ControllerId,
        be: String,
        ctx: Arc<Context<G, E>>,
        mailbox: Arc<Mailbox>,
        stats: Arc<Stats>,
    ) -> Self {
        let fe = xsp::frontend_dir(id.domid, id.devid);
        let io = ctx.host.device_io();
        Self {
            id,
            io,
            ctx,
            be,
            fe,
            mailbox,
            stats,
            phase: Phase::Unconfigured,
            setup: None,
            conn: None,
            fe_watch: None,
            limiter: RateLimiter::default(),
            port_notes: PortNotes::default(),
            port_limiter: RateLimiter::default(),
            completions: Vec::with_capacity(32),
            requests: Vec::with_capacity(16),
            responses: Vec::with_capacity(32),
            last_config_error: None,
            resuming: false,
            address_save: AddressSave::default(),
        }
    }

    /// Whether the rings are connected.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Upper bound of the worker's ring-polling window.
    pub fn poll_max(&self) -> Duration {
        self.ctx.poll_max
    }

    /// Appends the descriptors of the devices' I/O to poll.
    pub fn device_fds<'a>(&'a self, out: &mut Vec<IoFd<'a>>) {
        self.io.poll_fds(out);
    }

    /// Whether the devices' I/O has descriptors (a real device was opened).
    pub fn has_device_io(&self) -> bool {
        self.io.polls()
    }

    /// Runs the devices' ready I/O (their completions are queued in the
    /// mailbox, for the next [`Self::service`]), waiting at most `wait`.
    pub fn run_device_io(&mut self, wait: Duration) {
        self.io.run_ready(wait);
    }

    /// The event channel to poll, when connected.
    pub fn evtchn(&self) -> Option<&<E as EventChannels>::Channel> {
        self.conn.as_ref().map(|c| c.evtchn())
    }

    /// Reads the frontend path, starts watching it, and runs the state machine
    /// once (this is also how a restarted daemon resumes).
    pub fn start(&mut self) {
        let path = xsp::join(&self.be, keys::FRONTEND);
        match xenbus::read(&self.ctx.xs, &path) {
            Ok(Some(fe)) if fe.starts_with('/') && fe.len() < 256 && !fe.contains("//") => {
                self.fe = fe.trim_end_matches('/').to_owned()
            }
            Ok(Some(fe)) => {
                tracing::warn!(ctl = %self.id, "ignoring malformed frontend path {fe:?}; using {}", self.fe)
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(ctl = %self.id, "{e}"),
        }
        self.watch_frontend();
        let own = xenbus::read_state(&self.ctx.xs, &self.be).ok().flatten();
        self.phase = match own {
            Some(XenbusState::Closing) => Phase::Closing,
            Some(XenbusState::Closed) => Phase::Closed,
            _ => Phase::Unconfigured,
        };
        let resume = own == Some(XenbusState::Connected);
        self.resuming = resume;
        if self.configure() && resume {
            // Daemon restart: reconnect without going back to InitWait.
            self.phase = Phase::InitWait;
            if matches!(
                self.frontend_state(),
                Some(XenbusState::Connected | XenbusState::Initialised)
            ) {
                tracing::info!(ctl = %self.id, "resuming a connected controller after a daemon restart");
            } else {
                self.write_state(XenbusState::InitWait);
            }
        }
        self.reconcile();
    }

    /// Watches the frontend's directory. Its events are turned into
    /// [`Control::FrontendChanged`](crate::mailbox::Control) on xenstore's
    /// reader thread: no thread of this controller waits for them.
    fn watch_frontend(&mut self) {
        let mailbox = Arc::clone(&self.mailbox);
        let notify: pvusb_xenstore::WatchNotify =
            Arc::new(move |_| mailbox.send(crate::mailbox::Control::FrontendChanged));
        match self.ctx.xs.watch_notify(&self.fe, notify) {
            Ok(w) => self.fe_watch = Some(w),
            Err(e) => {
                tracing::error!(ctl = %self.id, "cannot watch the frontend at {}: {e}", self.fe)
            }
        }
    }

    /// Reads and validates the configuration if not done yet. Returns whether
    /// the controller is configured.
    fn configure(&mut self) -> bool {
        if self.setup.is_some() {
            return true;
        }
        match xenbus::read_config(&self.ctx.xs, &self.be) {
            Ok(config) => {
                self.last_config_error = None;
                let mut engine =
                    UrbEngine::new(config.num_ports, self.id.domid, Arc::clone(&self.stats));
                engine.set_port_stats(self.ctx.port_stats);
                engine.reset_addresses();
                self.setup = Some(Setup {
                    config,
                    ports: Ports::new(config.num_ports, config.usb_ver),
                    engine,
                });
                tracing::info!(ctl = %self.id, usb_ver = %config.usb_ver, num_ports = config.num_ports, "controller configured");
                for p in 1..=config.num_ports {
                    self.port_changed(p);
                }
                true
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_config_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(ctl = %self.id, "controller not usable, state left unchanged: {msg}");
                    self.last_config_error = Some(msg);
                }
                false
            }
        }
    }

    fn frontend_state(&mut self) -> Option<XenbusState> {
        match xenbus::read_state(&self.ctx.xs, &self.fe) {
            Ok(s) => s,
            Err(e) => {
                guest_warn!(self.limiter, ctl = %self.id, "frontend state unreadable, treated as Unknown: {e}");
                Some(XenbusState::Unknown)
            }
        }
    }

    fn write_state(&mut self, state: XenbusState) {
        match xenbus::write_state(&self.ctx.xs, &self.be, state) {
            Ok(true) => tracing::debug!(ctl = %self.id, "backend state {state}"),
            Ok(false) => {
                tracing::debug!(ctl = %self.id, "backend directory gone; state {state} not written")
            }
            Err(e) => tracing::error!(ctl = %self.id, "cannot write backend state {state}: {e}"),
        }
    }

    /// Runs the state machine until it is stable.
    pub fn reconcile(&mut self) {
        for _ in 0..4 {
            if !self.step() {
                break;
            }
        }
    }

    /// One transition; returns whether the phase changed.
    fn step(&mut self) -> bool {
        let before = self.phase;
        let online = xenbus::read_online(&self.ctx.xs, &self.be).unwrap_or(true);
        if self.phase == Phase::Unconfigured {
            if !online || !self.configure() {
                return false;
            }
            self.phase = Phase::InitWait;
            self.write_state(XenbusState::InitWait);
            return true;
        }
        let fe = self.frontend_state();
        let fe_gone = matches!(fe, None | Some(XenbusState::Unknown | XenbusState::Closed));
        match self.phase {
            Phase::Unconfigured => {}
            Phase::InitWait => {
                if !online {
                    self.phase = Phase::Closed;
                    self.write_state(XenbusState::Closed);
                } else if matches!(fe, Some(XenbusState::Initialised | XenbusState::Connected)) {
                    self.connect();
                }
            }
            Phase::Connected => {
                if !online || fe == Some(XenbusState::Closing) {
                    self.disconnect(Status::Shutdown, true);
                    self.phase = Phase::Closing;
                    self.write_state(XenbusState::Closing);
                } else if fe_gone || fe == Some(XenbusState::Initialising) {
                    self.disconnect(Status::Shutdown, true);
                    self.phase = Phase::Closed;
                    self.write_state(XenbusState::Closed);
                }
            }
            Phase::Closing => {
                if fe_gone || fe == Some(XenbusState::Initialising) {
                    self.phase = Phase::Closed;
                    self.write_state(XenbusState::Closed);
                }
            }
            Phase::Closed => {
                if online && fe == Some(XenbusState::Initialising) {
                    tracing::info!(ctl = %self.id, "frontend is initialising again: re-handshake");
                    self.phase = Phase::InitWait;
                    self.write_state(XenbusState::InitWait);
                }
            }
        }
        self.phase != before
    }

    fn connect(&mut self) {
        let domid = self.id.domid;
        let result =
            (|| {
                let refs = xenbus::read_refs(&self.ctx.xs, &self.fe)?;
                let grants = &self.ctx.grants;
                let urb = grants.map(domid, &[refs.urb], true).map_err(|source| {
                    BackendError::MapRing {
                        ring: "urb",
                        gref: refs.urb,
                        domid,
                        source,
                    }
                })?;
                let conn = grants.map(domid, &[refs.conn], true).map_err(|source| {
                    BackendError::MapRing {
                        ring: "conn",
                        gref: refs.conn,
                        domid,
                        source,
                    }
                })?;
                let ch = self
                    .ctx
                    .evtchns
                    .bind_interdomain(domid, refs.evtchn)
                    .map_err(|source| BackendError::BindEvtchn {
                        port: refs.evtchn,
                        domid,
                        source,
                    })?;
                Connection::new(urb, conn, ch, Arc::clone(&self.stats))
            })();
        let mut conn = match result {
            Ok(c) => c,
            Err(e) => {
                guest_warn!(self.limiter, ctl = %self.id, "cannot connect, staying in InitWait: {e}");
                return;
            }
        };
        let saved_path = xsp::join(&self.be, ADDRESS_MAP_KEY);
        let saved = if self.resuming {
            xenbus::read(&self.ctx.xs, &saved_path).ok().flatten()
        } else {
            None
        };
        let resumed = std::mem::take(&mut self.resuming);
        let Some(setup) = self.setup.as_mut() else {
            return;
        };
        setup.engine.reset_addresses();
        if let Some(saved) = saved {
            setup.engine.restore_addresses(&saved);
            tracing::info!(ctl = %self.id, "guest address table restored: {saved}");
        }
        for p in setup.ports.numbers() {
            let speed = setup.ports.speed(p);
            // After a daemon restart the guest still believes in the ports
            // the last daemon posted: one whose device is not served now
            // (unplugged, detached or refused by the rules meanwhile) is
            // posted empty, which a port the guest knew empty takes as a
            // connection change with nothing behind it.
            if speed != Speed::None || resumed {
                if let Err(e) = conn.post(p, speed) {
                    tracing::error!(ctl = %self.id, "conn ring unusable at connect: {e}");
                    self.stats
                        .ring_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.phase = Phase::Closing;
                    self.write_state(XenbusState::Closing);
                    return;
                }
            }
        }
        self.conn = Some(conn);
        self.phase = Phase::Connected;
        Stats::inc(&self.stats.connects);
        self.write_state(XenbusState::Connected);
        tracing::info!(ctl = %self.id, "connected");
    }

    /// Answers every in-flight request (cancelling it in its device first),
    /// then releases the rings and the event channel. `push`: whether the
    /// rings are still usable for the answers.
    fn disconnect(&mut self, status: Status, push: bool) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if let Some(setup) = self.setup.as_mut() {
            // Devices may complete cancelled transfers synchronously.
            for p in setup.ports.numbers().collect::<Vec<_>>() {
                if setup.ports.is_attached(p) && setup.engine.in_flight() > 0 {
                    setup.engine.cancel_port(p, &mut setup.ports);
                }
            }
        }
        self.drain_completions();
        if let Some(setup) = self.setup.as_mut() {
            setup.engine.abort_all(status, &mut self.responses);
        }
        if push {
            if let Err(e) = conn.respond(&self.responses) {
                tracing::warn!(ctl = %self.id, "could not deliver the final answers: {e}");
            }
        }
        self.responses.clear();
        drop(conn);
        tracing::info!(ctl = %self.id, "disconnected; rings unmapped, event channel unbound");
    }

    /// Stops the controller for good (daemon shutdown or removal): answers
    /// everything, closes every device, stops the frontend watch. Xenstore is
    /// left as it is, so a restarted daemon picks a connected controller up.
    pub fn stop(&mut self) {
        // What a restarted daemon must find: the table as it is now.
        self.save_addresses();
        self.write_addresses();
        self.disconnect(Status::Shutdown, true);
        if let Some(setup) = self.setup.as_mut() {
            let held: Vec<BusId> = setup
                .ports
                .numbers()
                .filter(|&p| setup.ports.is_attached(p))
                .filter_map(|p| setup.ports.busid(p).cloned())
                .collect();
            setup.ports.detach_all();
            for busid in held {
                self.mark_closed(&busid);
            }
        }
        self.fe_watch = None;
    }

    /// A control message.
    pub fn on_backend_changed(&mut self, rel: &str) {
        if rel == ADDRESS_MAP_KEY {
            return;
        }
        if let Some(key) = rel.strip_prefix(xenbus::RECORD_CHANGED) {
            self.record_changed(key);
            return;
        }
        if let Some(n) = rel.strip_prefix("port/") {
            if let Ok(port) = n.parse::<u8>() {
                if self
                    .setup
                    .as_ref()
                    .is_some_and(|s| port >= 1 && port <= s.config.num_ports)
                {
                    self.port_changed(port);
                }
                return;
            }
        }
        self.reconcile();
    }

    /// A device record changed: re-check the ports holding that busid (every
    /// port when the key is empty or not a busid key).
    fn record_changed(&mut self, key: &str) {
        let Some(setup) = self.setup.as_ref() else {
            return;
        };
        let ports: Vec<u8> = match BusId::from_key(key.split('/').next().unwrap_or("")) {
            Ok(b) => setup.ports.ports_of(&b),
            Err(_) => setup
                .ports
                .numbers()
                .filter(|&p| setup.ports.busid(p).is_some())
                .collect(),
        };
        for p in ports {
            self.port_changed(p);
        }
    }

    /// Whether the toolstack's record lets the backend open `busid`.
    fn record_permits(&mut self, busid: &BusId, port: u8) -> bool {
        match xenbus::read_record(&self.ctx.xs, busid) {
            Ok(v) if v.permits_open() => true,
            Ok(v) => {
                let msg = format!("device {busid} not opened or released: the toolstack's record withholds it ({v:?})");
                self.port_note(port, false, msg);
                false
            }
            Err(e) => {
                let msg = format!("device {busid} record unreadable, device not opened: {e}");
                self.port_note(port, true, msg);
                false
            }
        }
    }

    /// Logs `msg` about `port` unless it is what was said last about that
    /// port (then only at debug level); new lines share a budget.
    fn port_note(&mut self, port: u8, warn: bool, msg: String) {
        if !self.port_notes.is_new(port, &msg) {
            tracing::debug!(ctl = %self.id, port, "(repeated) {msg}");
            return;
        }
        if let crate::ratelimit::Verdict::Log { suppressed } = self.port_limiter.check() {
            if suppressed > 0 {
                tracing::warn!(ctl = %self.id, suppressed, "suppressed {suppressed} port log lines");
            }
            if warn {
                tracing::warn!(ctl = %self.id, port, "{msg}");
            } else {
                tracing::info!(ctl = %self.id, port, "{msg}");
            }
        }
    }

    fn port_changed(&mut self, port: u8) {
        let new = match xenbus::read_port(&self.ctx.xs, &self.be, port) {
            Ok(b) => b,
            Err(e) => {
                self.port_note(port, true, format!("port left empty: {e}"));
                None
            }
        };
        if new.is_none() {
            self.port_notes.clear(port);
        }
        let permitted = new.as_ref().is_some_and(|b| self.record_permits(b, port));
        let Some(setup) = self.setup.as_mut() else {
            return;
        };
        let old = setup.ports.busid(port).cloned();
        let attached = setup.ports.is_attached(port);
        if old == new && attached == permitted {
            return;
        }
        if attached && (old != new || !permitted) {
            self.detach_port(port);
        }
        if let Some(setup) = self.setup.as_mut() {
            setup.ports.set_busid(port, new);
        }
        let attached = self
            .setup
            .as_ref()
            .is_some_and(|s| s.ports.is_attached(port));
        if permitted && !attached {
            self.attach_port(port);
        }
    }

    fn attach_port(&mut self, port: u8) {
        let Some(busid) = self
            .setup
            .as_ref()
            .and_then(|s| s.ports.busid(port).cloned())
        else {
            return;
        };
        // The mark goes first, in a transaction that re-reads the record: a
        // detach that withdrew the claim meanwhile either sees the mark (and
        // waits for its removal) or made this transaction see the withdrawal
        // (and nothing is opened). Marking after the open would leave a
        // moment when the device is open and the detach does not wait.
        match xenbus::mark_opened(&self.ctx.xs, &busid) {
            Ok(xenbus::RecordVerdict::Withheld(v)) => {
                let msg =
                    format!("device {busid} not opened: the toolstack's record withholds it ({v})");
                self.port_note(port, false, msg);
                return;
            }
            Ok(xenbus::RecordVerdict::Open | xenbus::RecordVerdict::NoRecord) => {}
            Err(e) => {
                tracing::warn!(ctl = %self.id, port, "cannot mark the device open in its record: {e}")
            }
        }
        let Some(setup) = self.setup.as_mut() else {
            return;
        };
        let sink: Arc<dyn CompletionSink> = self.mailbox.clone();
        match setup
            .ports
            .attach(port, &mut *self.io, sink, !self.resuming)
        {
            Ok(speed) => {
                // The device policy, on the device as it is now: also after a
                // re-plug that changed what the device says it is.
                let refusal = self.ctx.policy.clone().and_then(|policy| {
                    let mem = GrantedMemory {
                        grants: &*self.ctx.grants,
                        domid: self.id.domid,
                    };
                    let (engine, responses) = (&mut setup.engine, &mut self.responses);
                    let dev = crate::engine::Devices::device(&mut setup.ports, port)?;
                    crate::device_policy::check(
                        &policy,
                        dev,
                        &self.mailbox,
                        &self.ctx.xs,
                        self.id.domid,
                        &mut |tid, c| engine.complete(tid, c, &mem, responses),
                    )
                });
                if let Some(msg) = refusal {
                    setup.ports.detach(port);
                    Stats::inc(&self.stats.attach_refused);
                    self.flush_responses();
                    self.mark_closed(&busid);
                    self.port_note(port, true, msg);
                    return;
                }
                self.port_notes.clear(port);
                Stats::inc(&self.stats.attached);
                tracing::info!(ctl = %self.id, port, ?speed, %busid, "device attached");
                setup.engine.forget_port(port);
                self.post(port, speed);
            }
            Err(e) => {
                Stats::inc(&self.stats.attach_refused);
                self.mark_closed(&busid);
                self.port_note(port, true, format!("port left empty: {e}"));
            }
        }
    }

    /// Closes the device of `port`: its requests are cancelled and each
    /// answered, then speed 0 is posted.
    fn detach_port(&mut self, port: u8) {
        let Some(setup) = self.setup.as_mut() else {
            return;
        };
        setup.ports.detach(port);
        let busid = setup.ports.busid(port).cloned();
        self.drain_completions();
        if let Some(setup) = self.setup.as_mut() {
            setup
                .engine
                .abort_port(port, Status::NoDev, &mut self.responses);
            setup.engine.forget_port(port);
        }
        tracing::info!(ctl = %self.id, port, "device detached");
        self.flush_responses();
        self.post(port, Speed::None);
        // Closed and every request answered: acknowledge the release.
        if let Some(busid) = busid {
            self.mark_closed(&busid);
        }
    }

    fn mark_closed(&self, busid: &BusId) {
        if let Err(e) = xenbus::mark_closed(&self.ctx.xs, busid) {
            tracing::warn!(ctl = %self.id, %busid, "cannot acknowledge the release in the device's record: {e}");
        }
    }

    /// Hands every completion waiting in the mailbox to the engine; the
    /// answers collect in `self.responses`.
    fn drain_completions(&mut self) {
        let Some(setup) = self.setup.as_mut() else {
            return;
        };
        self.mailbox.take_completions(&mut self.completions);
        let mem = GrantedMemory {
            grants: &*self.ctx.grants,
            domid: self.id.domid,
        };
        for (tid, c) in self.completions.drain(..) {
            setup.engine.complete(tid, c, &mem, &mut self.responses);
        }
    }

    /// A host device arrived or left.
    pub fn on_hotplug(&mut self, ev: &HotplugEvent) {
        let Some(setup) = self.setup.as_ref() else {
            return;
        };
        match ev {
            HotplugEvent::Left(busid) => {
                for p in setup.ports.ports_of(busid) {
                    if self.setup.as_ref().is_some_and(|s| s.ports.is_attached(p)) {
                        tracing::info!(ctl = %self.id, port = p, %busid, "host device unplugged");
                        self.detach_port(p);
                    }
                }
            }
            HotplugEvent::Arrived(busid) => {
                for p in setup.ports.ports_of(busid) {
                    if self.setup.as_ref().is_some_and(|s| !s.ports.is_attached(p))
                        && self.record_permits(busid, p)
                    {
                        tracing::info!(ctl = %self.id, port = p, %busid, "configured host device plugged in again");
                        self.attach_port(p);
                    }
                }
            }
        }
    }

    fn post(&mut self, port: u8, speed: Speed) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.post(port, speed) {
            self.ring_failed(e);
        }
    }

    fn flush_responses(&mut self) {
        if self.responses.is_empty() {
            return;
        }
        let result = match self.conn.as_mut() {
            Some(conn) => conn.respond(&self.responses),
            None => Ok(()),
        };
        self.responses.clear();
        if let Err(e) = result {
            self.ring_failed(e);
        }
    }

    /// The frontend broke a ring: stop serving this controller (QEMU does the
    /// same), go Closing; other controllers are unaffected.
    fn ring_failed(&mut self, e: BackendError) {
        Stats::inc(&self.stats.ring_errors);
        tracing::error!(ctl = %self.id, "stopping the controller: {e}");
        self.disconnect(Status::Shutdown, false);
        self.phase = Phase::Closing;
        self.write_state(XenbusState::Closing);
    }

    /// An event arrived on the event channel (or the peer died).
    pub fn on_event(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        Stats::inc(&self.stats.events);
        if let Err(e) = conn.evtchn().ack() {
            tracing::warn!(ctl = %self.id, "event channel failed, frontend gone: {e}");
            self.disconnect(Status::Shutdown, false);
            self.phase = Phase::Closing;
            self.write_state(XenbusState::Closing);
            self.reconcile();
        }
    }

    /// Saves the address table in the backend directory when it changed, at
    /// most once per [`ADDRESS_SAVE_INTERVAL`]; a change inside the interval
    /// waits for its end ([`Self::save_due_in`] tells the worker when).
    ///
    /// WHY: every SET_ADDRESS may change the table, and each save is a
    /// transaction on the xenstored every domain shares: a guest toggling
    /// addresses drove ~94 transactions per second. A restarted daemon still
    /// finds the table as it was at most one interval before the crash (and a
    /// guest enumerates at a pace the first save catches at once).
    pub fn save_addresses(&mut self) {
        if let Some(setup) = self.setup.as_mut() {
            if let Some(map) = setup.engine.take_address_changes() {
                self.address_save.pending = Some(map);
            }
        }
        if self.save_due_in().is_some_and(|d| d.is_zero()) {
            self.write_addresses();
        }
    }

    /// How long until a deferred address-table save is due, if one waits.
    pub fn save_due_in(&self) -> Option<Duration> {
        self.address_save.pending.as_ref()?;
        Some(match self.address_save.last {
            Some(last) => ADDRESS_SAVE_INTERVAL.saturating_sub(last.elapsed()),
            None => Duration::ZERO,
        })
    }

    fn write_addresses(&mut self) {
        let Some(map) = self.address_save.pending.take() else {
            return;
        };
        self.address_save.last = Some(Instant::now());
        Stats::inc(&self.stats.address_saves);
        let path = xsp::join(&self.be, ADDRESS_MAP_KEY);
        let dir = self.be.clone();
        let xs = &self.ctx.xs;
        let r = xs.transaction(|tx| {
            if xs.exists(tx, &dir)? {
                xs.write(tx, &path, &map)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!(ctl = %self.id, "cannot save the address table: {e}");
        }
    }

    /// Does all pending ring and completion work, then (with
    /// [`RingWait::Arm`]) arms the ring's event index so that the next
    /// request notifies us, or (with [`RingWait::Poll`], while the worker
    /// keeps polling) leaves it alone.
    ///
    /// Returns whether there was any work. Returns true without arming the
    /// ring's event after [`SERVICE_PASSES`] passes that all found more to
    /// do, so that the worker (which never sleeps after a true return) reads
    /// its control messages between passes: a guest that keeps the ring full
    /// cannot starve a removal, a shutdown or a hotplug event.
    pub fn service(&mut self, wait: RingWait) -> bool {
        let mut work = false;
        for _ in 0..SERVICE_PASSES {
            let Some(setup) = self.setup.as_mut() else {
                return work;
            };
            let Some(conn) = self.conn.as_mut() else {
                return work;
            };
            let mem = GrantedMemory {
                grants: &*self.ctx.grants,
                domid: self.id.domid,
            };
            let mailbox = &self.mailbox;
            let completions = &mut self.completions;
            let responses = &mut self.responses;
            let requests = &mut self.requests;
            let mut had_completions = false;
            let result = (|| {
                // Responses go out every PUBLISH_EVERY, not once per batch: the
                // frontend starts on the first ones while we work on the rest
                // (the two sides overlap instead of taking turns).
                let finish = |responses: &mut Vec<UrbResponse>,
                              conn: &mut Connection<_, _>,
                              force: bool|
                 -> Result<(), BackendError> {
                    if responses.len() >= PUBLISH_EVERY || (force && !responses.is_empty()) {
                        conn.respond(responses)?;
                        responses.clear();
                    }
                    Ok(())
                };
                let mut complete = |engine: &mut UrbEngine,
                                    responses: &mut Vec<UrbResponse>,
                                    conn: &mut Connection<_, _>|
                 -> Result<bool, BackendError> {
                    mailbox.take_completions(completions);
                    let any = !completions.is_empty();
                    for (tid, c) in completions.drain(..) {
                        engine.complete(tid, c, &mem, responses);
                        finish(responses, conn, false)?;
                    }
                    Ok(any)
                };
                had_completions = complete(&mut setup.engine, responses, conn)?;
                let n = conn.take_requests(requests)?;
                for r in requests.drain(..) {
                    setup
                        .engine
                        .handle_request(&r, &mem, &mut setup.ports, responses);
                    // Emulated devices complete during the submit: their
                    // answers go out as they come. Bulk URBs waiting for the
                    // dispatch stay queued until the whole batch is in, so a
                    // burst is not split by a completion that happens to
                    // arrive meanwhile (`crate::coalesce`).
                    if mailbox.has_completions() {
                        complete(&mut setup.engine, responses, conn)?;
                    } else {
                        finish(responses, conn, false)?;
                    }
                }
                setup.engine.dispatch(&mem, &mut setup.ports, responses);
                while mailbox.has_completions() {
                    complete(&mut setup.engine, responses, conn)?;
                    setup.engine.dispatch(&mem, &mut setup.ports, responses);
                }
                finish(responses, conn, true)?;
                conn.flush_conn()?;
                Ok::<_, BackendError>(n)
            })();
            let n = match result {
                Ok(n) => n,
                Err(e) => {
                    self.requests.clear();
                    self.ring_failed(e);
                    return true;
                }
            };
            work |= n > 0 || had_completions;
            if self.mailbox.has_completions() {
                continue;
            }
            match conn.final_check(wait) {
                Ok(true) => continue,
                Ok(false) => return work,
                Err(e) => {
                    self.ring_failed(e);
                    return true;
                }
            }
        }
        true
    }
}

impl UrbEngine {
    /// Asks the device on `port` to cancel every in-flight transfer of it.
    pub(crate) fn cancel_port(&mut self, port: u8, ports: &mut Ports) {
        use crate::engine::Devices;
        let tids = self.tids_of(port);
        if let Some(dev) = ports.device(port) {
            for tid in tids {
                dev.cancel(tid);
            }
        }
    }
}
