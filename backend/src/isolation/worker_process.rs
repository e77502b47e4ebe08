//! The worker process's side (`pvusb backend-worker`): take the setup from
//! the link on standard input, confine itself, then run one controller
//! exactly as a daemon thread would ([`crate::worker::run`]).
//!
//! Threads: the controller's (this process's main thread) and the link's
//! (`pvusb-link`: control messages into the mailbox, the monitor's answers
//! to the openers, a heartbeat every second); xenstore's reader.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use pvusb_support::{lock_unpoisoned, Chain};
use pvusb_xen::{EventChannels, GrantMapper};
use pvusb_xenstore::XsClient;

use super::error::WorkerSetupError;
use super::link::{self, LinkError, MAX_TO_WORKER};
use super::messages::{Heartbeat, LinkControl, ToMonitor, ToWorker, TransportSetup, WorkerSetup};
use crate::controller::Context;
use crate::host::CompositeHost;
use crate::mailbox::{Control, Mailbox};
use crate::stats::Stats;
use crate::usb::emulated::EmulatedHost;
use crate::usb::{BusId, HotplugEvent, UsbError, UsbHost};
use crate::usb::{NodeOpener, OpenedNode};
use crate::worker::{self, Liveness};
use crate::xenbus::ControllerId;

/// Exit status of a worker that could not start (EX_CONFIG).
pub const EXIT_SETUP: i32 = 78;
/// Exit status of a worker whose controller thread panicked (EX_SOFTWARE).
pub const EXIT_CRASHED: i32 = 70;

/// How often the worker reports its counters and liveness.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long an open waits for the monitor.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The link's sending half, shared by the controller thread (requests) and
/// the link thread (heartbeats).
type Writer = Arc<Mutex<UnixStream>>;

fn send(writer: &Writer, msg: &ToMonitor) -> Result<(), LinkError> {
    link::send(&lock_unpoisoned(writer), msg, &[])
}

/// Exit status of a worker whose monitor was gone before it could ask to
/// die with it.
pub const EXIT_ORPHAN: i32 = 75;

/// Runs the worker on `link` (standard input); returns the exit status.
///
/// WHY the worker dies with its monitor (`PR_SET_PDEATHSIG`, SIGKILL)
/// rather than stopping gracefully: a monitor that died (`kill -9`, a
/// crash) is restarted by the service manager, and the new monitor's worker
/// maps the same rings at their current indexes. An old worker still
/// answering its URBs meanwhile would be a second producer on the response
/// ring, and would mark the devices closed after the new one opened them.
/// Requests it leaves unanswered are the restart path's to answer (the
/// daemon-restart fence), exactly as when the whole daemon was one process.
pub fn run(link: UnixStream) -> i32 {
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL) {
        tracing::error!("cannot ask to die with the monitor: {e}");
        return EXIT_SETUP;
    }
    let (setup, fds) = match link::recv::<ToWorker>(&link, MAX_TO_WORKER) {
        Ok((ToWorker::Setup(setup), fds)) => (*setup, fds),
        Ok(_) => {
            tracing::error!("the first message on the link was not the setup");
            return EXIT_SETUP;
        }
        Err(e) => {
            tracing::error!("no setup from the monitor: {e}", e = Chain(&e));
            return EXIT_SETUP;
        }
    };
    if std::os::unix::process::parent_id() != setup.monitor_pid {
        tracing::warn!(
            monitor = setup.monitor_pid,
            "the monitor died before the worker started; stopping"
        );
        return EXIT_ORPHAN;
    }
    // Everything that needs the file system (libusb's context) is made
    // before the confinement; nothing that starts a thread is.
    let worker = match Worker::build(setup, fds, link) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!("worker setup failed: {e}", e = Chain(&e));
            return EXIT_SETUP;
        }
    };
    // Nothing a guest wrote has been read yet, and no other thread runs.
    let report = match pvusb_confine::confine(&confinement(&worker.setup)) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot confine the worker: {e}", e = Chain(&e));
            return EXIT_SETUP;
        }
    };
    worker.serve(report.to_string())
}

fn confinement(setup: &WorkerSetup) -> pvusb_confine::Confinement {
    let c = &setup.confine;
    pvusb_confine::Confinement {
        user: match (&c.user, c.keep_user) {
            (_, true) => pvusb_confine::UserChoice::Keep,
            (Some(name), false) => pvusb_confine::UserChoice::Named(name.clone()),
            (None, false) => pvusb_confine::UserChoice::Default,
        },
        seccomp: c.seccomp,
        landlock: c.landlock,
        namespaces: c.namespaces,
    }
}

/// The monitor's answers the link thread routes to a waiting opener.
struct Replies {
    opened: Receiver<(
        String,
        Result<crate::usb::DeviceInfo, String>,
        Option<OwnedFd>,
    )>,
    evtchn: Receiver<Result<OwnedFd, String>>,
}

struct Worker {
    setup: WorkerSetup,
    fds: std::vec::IntoIter<OwnedFd>,
    /// The xenstore proxy's socket (its client starts a thread: connected
    /// after the confinement).
    proxy: UnixStream,
    host: Arc<dyn UsbHost>,
    policy: Option<Arc<pvusb_policy::Policy>>,
    reader: UnixStream,
    writer: Writer,
    replies: Arc<Replies>,
    opened_tx: Sender<(
        String,
        Result<crate::usb::DeviceInfo, String>,
        Option<OwnedFd>,
    )>,
    evtchn_tx: Sender<Result<OwnedFd, String>>,
}

impl Worker {
    fn build(
        setup: WorkerSetup,
        fds: Vec<OwnedFd>,
        link: UnixStream,
    ) -> Result<Self, WorkerSetupError> {
        let mut fds = fds.into_iter();
        let proxy = UnixStream::from(
            fds.next()
                .ok_or(WorkerSetupError::MissingDescriptor("xenstore socket"))?,
        );
        let writer: Writer = Arc::new(Mutex::new(
            link.try_clone().map_err(WorkerSetupError::Link)?,
        ));
        let (opened_tx, opened_rx) = crossbeam_channel::bounded(4);
        let (evtchn_tx, evtchn_rx) = crossbeam_channel::bounded(4);
        let replies = Arc::new(Replies {
            opened: opened_rx,
            evtchn: evtchn_rx,
        });
        // Xen's gntdev comes before the disks' backing (WorkerSetup).
        let mut gntdev = None;
        if matches!(setup.transport, TransportSetup::Xen) {
            gntdev = Some(
                fds.next()
                    .ok_or(WorkerSetupError::MissingDescriptor("gntdev"))?,
            );
        }
        let emulated = EmulatedHost::new();
        for spec in &setup.emulated {
            let backing = if spec.needs_backing() {
                Some(File::from(fds.next().ok_or_else(|| {
                    WorkerSetupError::MissingBacking(spec.describe())
                })?))
            } else {
                None
            };
            let factory = spec.factory(backing).map_err(WorkerSetupError::Emulated)?;
            emulated.add_next(factory).map_err(WorkerSetupError::Bus)?;
        }
        let real = if setup.host_usb {
            brokered_host(LinkOpener {
                writer: Arc::clone(&writer),
                replies: Arc::clone(&replies),
            })?
        } else {
            None
        };
        let policy = match &setup.rules {
            Some((path, text)) => Some(Arc::new(
                pvusb_policy::Policy::from_text(path.clone(), text)
                    .map_err(WorkerSetupError::Rules)?,
            )),
            None => None,
        };
        let mut rest: Vec<OwnedFd> = gntdev.into_iter().collect();
        rest.extend(fds);
        Ok(Self {
            setup,
            fds: rest.into_iter(),
            proxy,
            host: Arc::new(CompositeHost::new(emulated, real)),
            policy,
            reader: link,
            writer,
            replies,
            opened_tx,
            evtchn_tx,
        })
    }

    fn serve(mut self, confinement: String) -> i32 {
        let xs = match self.proxy.try_clone().map(XsClient::from_stream) {
            Ok(Ok(xs)) => Arc::new(xs),
            Ok(Err(e)) => {
                tracing::error!("xenstore proxy: {e}", e = Chain(&e));
                return EXIT_SETUP;
            }
            Err(e) => {
                tracing::error!("xenstore proxy: {e}");
                return EXIT_SETUP;
            }
        };
        match self.setup.transport.clone() {
            TransportSetup::Xen => {
                let Some(gntdev) = self.fds.next() else {
                    return EXIT_SETUP;
                };
                let grants = pvusb_xen::linux::LinuxGrantMapper::from_file(File::from(gntdev));
                let (writer, replies) = (Arc::clone(&self.writer), Arc::clone(&self.replies));
                let evtchns =
                    pvusb_xen::linux::LinuxEventChannels::with_device_source(Arc::new(move || {
                        open_evtchn(&writer, &replies)
                    }));
                self.run_controller(xs, Arc::new(grants), Arc::new(evtchns), confinement)
            }
            TransportSetup::Sim { dir } => {
                let sim = Arc::new(pvusb_xen::sim::SimXen::new(&dir, self.setup.own_domid));
                self.run_controller(xs, Arc::clone(&sim), sim, confinement)
            }
        }
    }

    fn run_controller<G, E>(
        self,
        xs: Arc<XsClient>,
        grants: Arc<G>,
        evtchns: Arc<E>,
        confinement: String,
    ) -> i32
    where
        G: GrantMapper + 'static,
        E: EventChannels + 'static,
    {
        let s = &self.setup;
        let id = ControllerId {
            domid: s.domid,
            devid: s.devid,
        };
        let ctx = Arc::new(Context {
            xs,
            grants,
            evtchns,
            host: Arc::clone(&self.host),
            own_domid: s.own_domid,
            poll_max: Duration::from_micros(s.poll_max_us),
            port_stats: s.port_stats,
            map_min_bytes: s.map_min_bytes,
            policy: self.policy.clone(),
        });
        let mailbox = match Mailbox::new() {
            Ok(m) => Arc::new(m),
            Err(e) => {
                tracing::error!("{e}", e = Chain(&e));
                return EXIT_SETUP;
            }
        };
        let stats = Arc::new(Stats::default());
        let liveness = Arc::new(Liveness::default());
        let finished = Arc::new(AtomicBool::new(false));
        let link_thread = LinkThread {
            reader: self.reader,
            writer: Arc::clone(&self.writer),
            mailbox: Arc::clone(&mailbox),
            stats: Arc::clone(&stats),
            liveness: Arc::clone(&liveness),
            opened: self.opened_tx,
            evtchn: self.evtchn_tx,
            fault_hooks: s.fault_hooks,
        };
        if let Err(e) = std::thread::Builder::new()
            .name("pvusb-link".into())
            .spawn(move || link_thread.run())
        {
            tracing::error!("cannot start the link thread: {e}");
            return EXIT_SETUP;
        }
        if send(&self.writer, &ToMonitor::Ready(confinement)).is_err() {
            return EXIT_SETUP;
        }
        let be = s.be.clone();
        let clean = worker::run(
            id,
            be,
            ctx,
            mailbox,
            Arc::clone(&stats),
            finished,
            Arc::clone(&liveness),
        );
        let _ = send(
            &self.writer,
            &ToMonitor::Heartbeat(Box::new(heartbeat(&stats, &liveness))),
        );
        if clean {
            0
        } else {
            EXIT_CRASHED
        }
    }
}

/// Host USB through the monitor, its libusb context made now.
#[cfg(feature = "libusb")]
fn brokered_host(opener: LinkOpener) -> Result<Option<Arc<dyn UsbHost>>, WorkerSetupError> {
    Ok(Some(Arc::new(crate::usb::libusb::BrokeredHost::new(
        Arc::new(opener),
    ))))
}

/// Without libusb there is no host USB to serve.
#[cfg(not(feature = "libusb"))]
fn brokered_host(_: LinkOpener) -> Result<Option<Arc<dyn UsbHost>>, WorkerSetupError> {
    Err(WorkerSetupError::NoLibusb)
}

fn heartbeat(stats: &Stats, liveness: &Liveness) -> Heartbeat {
    Heartbeat {
        totals: stats.snapshot(),
        ports: stats
            .ports
            .iter()
            .zip(1u8..)
            .map(|(p, n)| (n, p.snapshot()))
            .filter(|(_, s)| !s.is_idle())
            .collect(),
        turns: liveness.turns(),
        asleep: liveness.asleep(),
    }
}

fn open_evtchn(writer: &Writer, replies: &Replies) -> std::io::Result<File> {
    while replies.evtchn.try_recv().is_ok() {} // a late answer to an abandoned ask
    send(writer, &ToMonitor::OpenEvtchn).map_err(std::io::Error::other)?;
    match replies.evtchn.recv_timeout(OPEN_TIMEOUT) {
        Ok(Ok(fd)) => Ok(File::from(fd)),
        Ok(Err(why)) => Err(std::io::Error::other(why)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the monitor did not answer",
        )),
    }
}

/// Opens device nodes by asking the monitor.
struct LinkOpener {
    writer: Writer,
    replies: Arc<Replies>,
}

impl NodeOpener for LinkOpener {
    fn open_node(&self, busid: &BusId) -> Result<OpenedNode, UsbError> {
        let want = busid.to_string();
        while self.replies.opened.try_recv().is_ok() {}
        send(&self.writer, &ToMonitor::Open(want.clone()))
            .map_err(|e| UsbError::NoHostUsb(format!("link to the monitor: {e}")))?;
        let deadline = std::time::Instant::now() + OPEN_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.replies.opened.recv_timeout(left) {
                Ok((b, _, _)) if b != want => continue,
                Ok((_, Ok(info), Some(fd))) if info.busid == *busid => {
                    return Ok(OpenedNode { info, fd })
                }
                Ok((_, Ok(_), _)) => {
                    return Err(UsbError::NoHostUsb(format!(
                        "the monitor's answer for {busid} was malformed"
                    )))
                }
                Ok((_, Err(why), _)) => {
                    return Err(UsbError::NoHostUsb(format!("the monitor refused: {why}")))
                }
                Err(_) => {
                    return Err(UsbError::NoHostUsb(format!(
                        "the monitor did not answer the open of {busid}"
                    )))
                }
            }
        }
    }
}

/// The link's reading side, in its own thread.
struct LinkThread {
    reader: UnixStream,
    writer: Writer,
    mailbox: Arc<Mailbox>,
    stats: Arc<Stats>,
    liveness: Arc<Liveness>,
    opened: Sender<(
        String,
        Result<crate::usb::DeviceInfo, String>,
        Option<OwnedFd>,
    )>,
    evtchn: Sender<Result<OwnedFd, String>>,
    fault_hooks: bool,
}

impl LinkThread {
    fn run(self) {
        if let Err(e) = self.reader.set_read_timeout(Some(HEARTBEAT)) {
            tracing::error!("link: {e}");
        }
        let mut next_beat = std::time::Instant::now();
        loop {
            if std::time::Instant::now() >= next_beat {
                next_beat += HEARTBEAT;
                if send(
                    &self.writer,
                    &ToMonitor::Heartbeat(Box::new(heartbeat(&self.stats, &self.liveness))),
                )
                .is_err()
                {
                    self.monitor_gone();
                    return;
                }
            }
            match link::recv::<ToWorker>(&self.reader, MAX_TO_WORKER) {
                Ok((msg, fds)) => self.on_message(msg, fds),
                Err(e) if link::is_timeout(&e) => {}
                Err(e) => {
                    if !matches!(e, LinkError::Closed) {
                        tracing::error!("link to the monitor failed: {e}", e = Chain(&e));
                    }
                    self.monitor_gone();
                    return;
                }
            }
        }
    }

    /// The monitor died or hung up: stop serving (answer everything, leave
    /// xenstore as it is) so a restarted daemon takes the controller over.
    fn monitor_gone(&self) {
        self.mailbox.send(Control::Shutdown);
    }

    fn on_message(&self, msg: ToWorker, fds: Vec<OwnedFd>) {
        let mut fds = fds.into_iter();
        match msg {
            ToWorker::Setup(_) => tracing::warn!("ignoring a second setup"),
            ToWorker::Control(c) => {
                let control = match c {
                    LinkControl::BackendChanged(rel) => Control::BackendChanged(rel),
                    LinkControl::Shutdown => Control::Shutdown,
                    LinkControl::Remove => Control::Remove,
                    LinkControl::Arrived(b) => match b.parse() {
                        Ok(b) => Control::Hotplug(HotplugEvent::Arrived(b)),
                        Err(_) => return,
                    },
                    LinkControl::Left(b) => match b.parse() {
                        Ok(b) => Control::Hotplug(HotplugEvent::Left(b)),
                        Err(_) => return,
                    },
                };
                self.mailbox.send(control);
            }
            ToWorker::Opened { busid, result } => {
                let _ = self.opened.try_send((busid, result, fds.next()));
            }
            ToWorker::EvtchnOpened(result) => {
                let answer = result.and_then(|()| fds.next().ok_or_else(|| "no descriptor".into()));
                let _ = self.evtchn.try_send(answer);
            }
            ToWorker::Fault(f) if self.fault_hooks => self.mailbox.send(Control::Fault(f)),
            ToWorker::Fault(_) => tracing::warn!("ignoring a fault request: no fault hooks"),
        }
    }
}
