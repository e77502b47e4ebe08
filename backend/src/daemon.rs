//! The daemon: finds every controller under `/local/domain/<own>/backend/vusb`
//! (one watch covers every guest's `<domid>/<devid>`), runs one worker per
//! controller (a thread, or a confined process under a supervisor thread:
//! [`crate::isolation`]), routes xenstore changes and host hot-plug events to them,
//! and stops a worker when its directory or its guest disappears. It also
//! watches the toolstack's device records (`/pvusb/usbback`) and tells the
//! workers when one changes, so a device whose claim is withdrawn is released.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use pvusb_protocol::xenstore::{backend_dir_of_type, BACKEND_TYPE_VUSB};
use pvusb_support::{lock_unpoisoned, Chain};
use pvusb_xen::{EventChannels, GrantMapper};
use pvusb_xenstore::{Tx, XsClient};

use crate::controller::Context;
use crate::error::BackendError;
use crate::isolation::supervisor::{Supervisor, WorkerProcessInfo, WorkerSettings};
use crate::isolation::{Fault, Isolation};
use crate::mailbox::{Control, Mailbox};
use crate::report::{ControllerReport, PortReport, Reporter};
use crate::stats::{Stats, StatsSnapshot};
use crate::usb::UsbHost;
use crate::worker;
use crate::xenbus::{ControllerId, RECORD_CHANGED, RECORD_ROOT};

/// Most controllers the daemon serves (bounds work on a flooded directory).
const MAX_CONTROLLERS: usize = 1024;

/// How to run the daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The backend domain's own id (0 in dom0).
    pub own_domid: u16,
    /// The backend type directory (`vusb`).
    pub backend_type: String,
    /// Upper bound of each controller worker's adaptive ring-polling window
    /// (see [`crate::polling`]); at most [`crate::polling::BASE`] turns the
    /// adaptation off.
    pub poll_max: Duration,
    /// Count per-port statistics (on unless a benchmark measures their cost).
    pub port_stats: bool,
    /// Bulk URBs of at least this many bytes run on the guest's mapped pages
    /// instead of a grant copy (`UrbEngine::set_map_min_bytes`; 0: never).
    pub map_min_bytes: usize,
    /// The device rules every controller checks when it opens a device
    /// (`None`: every device but hubs is served).
    pub policy: Option<Arc<pvusb_policy::Policy>>,
    /// Controllers as threads of the daemon, or as confined worker
    /// processes ([`crate::isolation`]).
    pub isolation: Isolation,
}

impl DaemonConfig {
    /// `vusb` controllers of domain `own_domid`.
    pub fn new(own_domid: u16) -> Self {
        Self {
            own_domid,
            backend_type: BACKEND_TYPE_VUSB.to_owned(),
            poll_max: crate::polling::DEFAULT_MAX,
            port_stats: true,
            map_min_bytes: crate::engine::DEFAULT_MAP_MIN_BYTES,
            policy: None,
            isolation: Isolation::Thread,
        }
    }

    /// The watched directory.
    pub fn root(&self) -> String {
        format!(
            "/local/domain/{}/backend/{}",
            self.own_domid, self.backend_type
        )
    }
}

/// How long shutdown waits for the workers to finish.
const SHUTDOWN_JOIN: Duration = Duration::from_secs(5);

struct Worker {
    mailbox: Arc<Mailbox>,
    stats: Arc<Stats>,
    finished: Arc<AtomicBool>,
    /// The controller's thread, or its worker process's supervisor.
    thread: Option<JoinHandle<()>>,
    /// With worker processes: the pid and the restarts.
    process: Option<Arc<WorkerProcessInfo>>,
}

#[derive(Default)]
struct Registry {
    workers: Mutex<HashMap<ControllerId, Worker>>,
    retired: Mutex<Vec<JoinHandle<()>>>,
}

impl Registry {
    /// Sends a test fault to a controller's worker process.
    fn inject(&self, id: ControllerId, fault: Fault) -> bool {
        match lock_unpoisoned(&self.workers).get(&id) {
            Some(w) if w.process.is_some() => {
                w.mailbox.send(Control::Fault(fault));
                true
            }
            _ => false,
        }
    }
}

/// A running daemon. Dropping it shuts it down like [`DaemonHandle::shutdown`].
pub struct DaemonHandle {
    registry: Arc<Registry>,
    /// Worker processes obey test faults ([`crate::isolation::Fault`]).
    fault_hooks: bool,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DaemonHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonHandle")
            .field("controllers", &self.controllers())
            .finish()
    }
}

/// The backend daemon.
#[derive(Debug)]
pub struct Daemon;

impl Daemon {
    /// Starts the daemon in background threads.
    pub fn start<G, E>(
        xs: Arc<XsClient>,
        grants: Arc<G>,
        evtchns: Arc<E>,
        host: Arc<dyn UsbHost>,
        config: DaemonConfig,
    ) -> Result<DaemonHandle, BackendError>
    where
        G: GrantMapper + 'static,
        E: EventChannels + 'static,
    {
        let ctx = Arc::new(Context {
            xs: Arc::clone(&xs),
            grants,
            evtchns,
            host: Arc::clone(&host),
            own_domid: config.own_domid,
            poll_max: config.poll_max,
            port_stats: config.port_stats,
            map_min_bytes: config.map_min_bytes,
            policy: config.policy.clone(),
        });
        let registry = Arc::new(Registry::default());
        let weak: Weak<Registry> = Arc::downgrade(&registry);
        host.set_hotplug_handler(Arc::new(move |ev| {
            if let Some(reg) = weak.upgrade() {
                for w in lock_unpoisoned(&reg.workers).values() {
                    w.mailbox.send(Control::Hotplug(ev.clone()));
                }
            }
        }));
        let root = config.root();
        let root_watch = xs
            .watch(&root)
            .map_err(|e| BackendError::xs("watch", &root, e))?;
        let release = xs
            .watch("@releaseDomain")
            .map_err(|e| BackendError::xs("watch", "@releaseDomain", e))?;
        let records = xs
            .watch(RECORD_ROOT)
            .map_err(|e| BackendError::xs("watch", RECORD_ROOT, e))?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        let isolation = config.isolation.clone();
        let fault_hooks = matches!(&isolation, Isolation::Process(m) if m.fault_hooks);
        let reg = Arc::clone(&registry);
        let thread = std::thread::Builder::new()
            .name("pvusb-daemon".into())
            .spawn(move || {
                let d = Dispatcher {
                    ctx,
                    registry: reg,
                    root,
                    isolation,
                };
                d.run(
                    root_watch.receiver(),
                    release.receiver(),
                    records.receiver(),
                    &stop_rx,
                );
                drop((root_watch, release, records));
            })
            .map_err(|source| BackendError::Os {
                op: "spawn the daemon thread",
                source,
            })?;
        tracing::info!(own_domid = config.own_domid, "pvusb backend daemon started");
        Ok(DaemonHandle {
            registry,
            fault_hooks,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl DaemonHandle {
    /// Controllers with a live worker.
    pub fn controllers(&self) -> Vec<ControllerId> {
        let mut v: Vec<_> = lock_unpoisoned(&self.registry.workers)
            .iter()
            .filter(|(_, w)| !w.finished.load(Ordering::SeqCst))
            .map(|(id, _)| *id)
            .collect();
        v.sort();
        v
    }

    /// The counters of a controller (also after its worker stopped, until it
    /// is removed).
    pub fn stats(&self, domid: u16, devid: u32) -> Option<StatsSnapshot> {
        lock_unpoisoned(&self.registry.workers)
            .get(&ControllerId { domid, devid })
            .map(|w| w.stats.snapshot())
    }

    /// A handle that takes a report of every controller's counters, for the
    /// control socket and the metrics listener ([`crate::report`]).
    pub fn reporter(&self) -> Reporter {
        let registry = Arc::downgrade(&self.registry);
        let faults = Arc::downgrade(&self.registry);
        let reporter = Reporter::new(move || {
            let Some(registry) = registry.upgrade() else {
                return Vec::new();
            };
            let workers = lock_unpoisoned(&registry.workers);
            let mut out: Vec<ControllerReport> = workers
                .iter()
                .map(|(id, w)| ControllerReport {
                    domid: id.domid,
                    devid: id.devid,
                    running: !w.finished.load(Ordering::SeqCst),
                    worker_pid: w
                        .process
                        .as_ref()
                        .map(|p| p.pid.load(Ordering::Relaxed))
                        .filter(|&pid| pid != 0),
                    worker_restarts: w
                        .process
                        .as_ref()
                        .map_or(0, |p| p.restarts.load(Ordering::Relaxed)),
                    totals: w.stats.snapshot(),
                    ports: w
                        .stats
                        .ports
                        .iter()
                        .zip(1u8..)
                        .map(|(p, n)| (n, p.snapshot()))
                        .filter(|(_, s)| !s.is_idle())
                        .map(|(n, s)| PortReport::new(n, s))
                        .collect(),
                })
                .collect();
            drop(workers);
            out.sort_by_key(|r| (r.domid, r.devid));
            out
        });
        if !self.fault_hooks {
            return reporter;
        }
        reporter.with_faults(Arc::new(move |domid, devid, fault| {
            faults
                .upgrade()
                .is_some_and(|reg| reg.inject(ControllerId { domid, devid }, fault))
        }))
    }

    /// The pid of a controller's worker process (`None` with threads, or
    /// while none runs).
    pub fn worker_pid(&self, domid: u16, devid: u32) -> Option<u32> {
        lock_unpoisoned(&self.registry.workers)
            .get(&ControllerId { domid, devid })
            .and_then(|w| w.process.as_ref())
            .map(|p| p.pid.load(Ordering::Relaxed))
            .filter(|&pid| pid != 0)
    }

    /// How many times a controller's worker process was started again.
    pub fn worker_restarts(&self, domid: u16, devid: u32) -> u64 {
        lock_unpoisoned(&self.registry.workers)
            .get(&ControllerId { domid, devid })
            .and_then(|w| w.process.as_ref())
            .map_or(0, |p| p.restarts.load(Ordering::Relaxed))
    }

    /// Asks a controller's worker process to commit `fault` (obeyed only
    /// when the process model has fault hooks; tests).
    pub fn inject_fault(&self, domid: u16, devid: u32, fault: Fault) -> bool {
        self.registry.inject(ControllerId { domid, devid }, fault)
    }

    /// Whether the worker of a controller is running.
    pub fn is_running(&self, domid: u16, devid: u32) -> bool {
        lock_unpoisoned(&self.registry.workers)
            .get(&ControllerId { domid, devid })
            .is_some_and(|w| !w.finished.load(Ordering::SeqCst))
    }

    /// Stops everything: every worker answers its in-flight requests, releases
    /// its grants and devices, and exits; xenstore states are left as they are
    /// so that a restarted daemon resumes.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(stop) = self.stop.take() else {
            return; // already stopped
        };
        let _ = stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let workers: Vec<Worker> = lock_unpoisoned(&self.registry.workers)
            .drain()
            .map(|(_, w)| w)
            .collect();
        for w in &workers {
            w.mailbox.send(Control::Shutdown);
        }
        let mut threads: Vec<(String, JoinHandle<()>)> = workers
            .into_iter()
            .filter_map(|mut w| w.thread.take())
            .chain(lock_unpoisoned(&self.registry.retired).drain(..))
            .map(|t| (t.thread().name().unwrap_or("worker").to_owned(), t))
            .collect();
        // A worker stuck in a device call must not hold the daemon's exit:
        // wait a bounded time, then leave it to the process's end.
        let deadline = std::time::Instant::now() + SHUTDOWN_JOIN;
        while threads.iter().any(|(_, t)| !t.is_finished()) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        for (name, t) in threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::error!(
                    "thread {name} did not stop within {}s of shutdown; exiting without it",
                    SHUTDOWN_JOIN.as_secs()
                );
            }
        }
        tracing::info!("pvusb backend daemon stopped");
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

struct Dispatcher<G, E> {
    ctx: Arc<Context<G, E>>,
    registry: Arc<Registry>,
    root: String,
    isolation: Isolation,
}

impl<G: GrantMapper + 'static, E: EventChannels + 'static> Dispatcher<G, E> {
    fn run(
        &self,
        root: &Receiver<String>,
        release: &Receiver<String>,
        records: &Receiver<String>,
        stop: &Receiver<()>,
    ) {
        loop {
            crossbeam_channel::select! {
                recv(records) -> p => match p {
                    Ok(p) => self.on_record(&p),
                    Err(_) => return,
                },
                recv(root) -> p => match p {
                    Ok(p) => self.on_path(&p),
                    Err(_) => { tracing::error!("xenstore connection lost; the daemon stops watching"); return; }
                },
                recv(release) -> p => match p {
                    Ok(_) => self.check_domains(),
                    Err(_) => return,
                },
                recv(stop) -> _ => return,
            }
        }
    }

    /// A toolstack device record changed: every running worker re-checks the
    /// ports holding that device (see [`crate::controller`]).
    fn on_record(&self, path: &str) {
        let key = path
            .strip_prefix(RECORD_ROOT)
            .map(|r| r.trim_start_matches('/'))
            .and_then(|r| r.split('/').next())
            .unwrap_or("");
        let msg = format!("{RECORD_CHANGED}{key}");
        for w in lock_unpoisoned(&self.registry.workers).values() {
            if !w.finished.load(Ordering::SeqCst) {
                w.mailbox.send(Control::BackendChanged(msg.clone()));
            }
        }
    }

    fn xs(&self) -> &XsClient {
        &self.ctx.xs
    }

    fn on_path(&self, path: &str) {
        let Some(rel) = path.strip_prefix(&self.root) else {
            return;
        };
        let rel = rel.trim_start_matches('/');
        let mut parts = rel.splitn(3, '/');
        let (Some(d), Some(v)) = (parts.next().filter(|s| !s.is_empty()), parts.next()) else {
            return self.rescan();
        };
        let (Ok(domid), Ok(devid)) = (d.parse::<u16>(), v.parse::<u32>()) else {
            return;
        };
        let id = ControllerId { domid, devid };
        let rest = parts.next().unwrap_or("").to_owned();
        let dir = self.dir(id);
        let exists = self.xs().exists(Tx::NONE, &dir).unwrap_or(false);
        if !exists {
            return self.remove(id, "backend directory removed");
        }
        let running = lock_unpoisoned(&self.registry.workers)
            .get(&id)
            .map(|w| (Arc::clone(&w.mailbox), w.finished.load(Ordering::SeqCst)));
        match running {
            Some((mailbox, false)) => mailbox.send(Control::BackendChanged(rest)),
            Some((_, true)) => {} // crashed worker: stays stopped until its directory is recreated
            None => self.spawn(id),
        }
    }

    fn dir(&self, id: ControllerId) -> String {
        backend_dir_of_type(&self.root_type(), self.ctx.own_domid, id.domid, id.devid)
    }

    fn root_type(&self) -> String {
        self.root
            .rsplit('/')
            .next()
            .unwrap_or(BACKEND_TYPE_VUSB)
            .to_owned()
    }

    fn rescan(&self) {
        let mut found = Vec::new();
        let domids = self
            .xs()
            .directory(Tx::NONE, &self.root)
            .unwrap_or_default();
        for d in domids.iter().take(MAX_CONTROLLERS) {
            let Ok(domid) = d.parse::<u16>() else {
                continue;
            };
            let devs = self
                .xs()
                .directory(Tx::NONE, &format!("{}/{d}", self.root))
                .unwrap_or_default();
            for v in devs.iter().take(MAX_CONTROLLERS) {
                if let Ok(devid) = v.parse::<u32>() {
                    found.push(ControllerId { domid, devid });
                }
            }
        }
        found.truncate(MAX_CONTROLLERS);
        let known: Vec<ControllerId> = lock_unpoisoned(&self.registry.workers)
            .keys()
            .copied()
            .collect();
        for id in &known {
            if !found.contains(id) {
                self.remove(*id, "backend directory removed");
            }
        }
        for id in found {
            if !lock_unpoisoned(&self.registry.workers).contains_key(&id) {
                self.spawn(id);
            }
        }
    }

    fn spawn(&self, id: ControllerId) {
        // A dead guest's backend directory lingers until the toolstack
        // cleans up: do not serve it again.
        let home = format!("/local/domain/{}", id.domid);
        if let Ok(false) = self.xs().exists(Tx::NONE, &home) {
            return;
        }
        if lock_unpoisoned(&self.registry.workers).len() >= MAX_CONTROLLERS {
            tracing::error!(ctl = %id, "too many controllers; not serving this one");
            return;
        }
        let mailbox = match Mailbox::new() {
            Ok(m) => Arc::new(m),
            Err(e) => return tracing::error!(ctl = %id, "{e}", e = Chain(&e)),
        };
        let stats = Arc::new(Stats::default());
        let finished = Arc::new(AtomicBool::new(false));
        let (mb, st, fin, be) = (
            Arc::clone(&mailbox),
            Arc::clone(&stats),
            Arc::clone(&finished),
            self.dir(id),
        );
        let (thread, process) = match &self.isolation {
            Isolation::Thread => {
                let ctx = Arc::clone(&self.ctx);
                let thread = std::thread::Builder::new()
                    .name(format!("vusb-{}-{}", id.domid, id.devid))
                    .spawn(move || {
                        worker::run(id, be, ctx, mb, st, fin, Arc::default());
                    });
                (thread, None)
            }
            Isolation::Process(model) => {
                let info = Arc::new(WorkerProcessInfo::default());
                let sup = Supervisor {
                    id,
                    be,
                    xs: Arc::clone(&self.ctx.xs),
                    model: Arc::clone(model),
                    settings: WorkerSettings {
                        own_domid: self.ctx.own_domid,
                        poll_max_us: u64::try_from(self.ctx.poll_max.as_micros())
                            .unwrap_or(u64::MAX),
                        port_stats: self.ctx.port_stats,
                        map_min_bytes: self.ctx.map_min_bytes,
                    },
                    mailbox: mb,
                    stats: st,
                    finished: fin,
                    info: Arc::clone(&info),
                };
                let thread = std::thread::Builder::new()
                    .name(format!("pvusb-sup-{}-{}", id.domid, id.devid))
                    .spawn(move || sup.run());
                (thread, Some(info))
            }
        };
        match thread {
            Ok(t) => {
                tracing::info!(ctl = %id, "serving controller");
                lock_unpoisoned(&self.registry.workers).insert(
                    id,
                    Worker {
                        mailbox,
                        stats,
                        finished,
                        thread: Some(t),
                        process,
                    },
                );
            }
            Err(e) => {
                tracing::error!(ctl = %id, "cannot start a worker thread: {e}", e = Chain(&e))
            }
        }
    }

    fn remove(&self, id: ControllerId, why: &str) {
        let Some(mut w) = lock_unpoisoned(&self.registry.workers).remove(&id) else {
            return;
        };
        tracing::info!(ctl = %id, "stopping controller: {why}");
        w.mailbox.send(Control::Remove);
        if let Some(t) = w.thread.take() {
            let mut retired = lock_unpoisoned(&self.registry.retired);
            retired.retain(|t| !t.is_finished());
            retired.push(t);
        }
    }

    /// `@releaseDomain` fired: a guest died. Its controllers stop (their
    /// backend directories may linger until the toolstack cleans up).
    fn check_domains(&self) {
        let ids: Vec<ControllerId> = lock_unpoisoned(&self.registry.workers)
            .keys()
            .copied()
            .collect();
        for id in ids {
            let home = format!("/local/domain/{}", id.domid);
            if let Ok(false) = self.xs().exists(Tx::NONE, &home) {
                self.remove(id, "its domain is gone");
            }
        }
    }
}
