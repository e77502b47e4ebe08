//! One controller, owned by its worker thread: its xenstore nodes, its
//! ports, its URB engine, its rings and its devices' I/O. One concern per
//! file:
//! * this file: the state, start/stop and the messages the worker routes in;
//! * `lifecycle`: the xenbus state machine (spec 6), connect/disconnect;
//! * `port_policy`: what is opened on which port, and the toolstack's
//!   device records;
//! * `pump`: requests from the ring through the engine, completions and
//!   responses back;
//! * `addresses`: the guest address table saved for a restarted daemon.

mod addresses;
mod lifecycle;
mod port_policy;
mod pump;

pub use addresses::{ADDRESS_MAP_KEY, ADDRESS_SAVE_INTERVAL};

use std::sync::Arc;
use std::time::Duration;

use pvusb_protocol::xenstore::{self as xsp, keys};
use pvusb_protocol::{Status, UrbRequest, UrbResponse, XenbusState};
use pvusb_support::Chain;
use pvusb_xen::{EventChannel, EventChannels, GrantMapper};
use pvusb_xenstore::XsClient;

use crate::connection::Connection;
use crate::engine::UrbEngine;
use crate::mailbox::Mailbox;
use crate::ports::Ports;
use crate::ratelimit::{PortNotes, RateLimiter};
use crate::stats::Stats;
use crate::usb::{BusId, Completion, DeviceIo, HotplugEvent, IoFd, TransferId, UsbHost};
use crate::xenbus::{self, ControllerConfig, ControllerId};

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
    /// Smallest bulk URB run on mapped guest pages
    /// ([`UrbEngine::set_map_min_bytes`]).
    pub map_min_bytes: usize,
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

/// Where the controller is in the xenbus life-cycle ([`lifecycle`]).
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
    address_save: addresses::AddressSave,
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
            address_save: addresses::AddressSave::default(),
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
            Err(e) => tracing::warn!(ctl = %self.id, "{e}", e = Chain(&e)),
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
                tracing::error!(ctl = %self.id, "cannot watch the frontend at {}: {e}", self.fe, e = Chain(&e))
            }
        }
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

    /// An event arrived on the event channel (or the peer died).
    pub fn on_event(&mut self) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        Stats::inc(&self.stats.events);
        if let Err(e) = conn.evtchn().ack() {
            tracing::warn!(ctl = %self.id, "event channel failed, frontend gone: {e}", e = Chain(&e));
            self.disconnect(Status::Shutdown, false);
            self.phase = Phase::Closing;
            self.write_state(XenbusState::Closing);
            self.reconcile();
        }
    }
}
