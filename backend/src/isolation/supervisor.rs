//! The monitor's side of one controller's worker process: start it, feed it
//! its setup and control messages, answer its requests, mirror its
//! counters, notice its death at once (the link closes), and start it again
//! ([`super::restart`]).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pvusb_protocol::xenstore as xsp;
use pvusb_protocol::XenbusState;
use pvusb_support::Chain;
use pvusb_xenstore::proxy::{PrefixScope, Proxy, ProxyHandle};
use pvusb_xenstore::XsClient;

use super::broker::Broker;
use super::error::SpawnError;
use super::link::{self, LinkError, MAX_FROM_WORKER};
use super::log_relay::Relay;
use super::messages::{
    ConfineSetup, Heartbeat, LinkControl, ToMonitor, ToWorker, TransportSetup, WorkerSetup,
};
use super::restart::{CrashHistory, RestartPolicy, Verdict};
use crate::mailbox::{Control, Mailbox};
use crate::stats::Stats;
use crate::usb::emulated::EmulatedSpec;
use crate::usb::HotplugEvent;
use crate::usb::NodeOpener;
use crate::xenbus::{self, ControllerId, RECORD_ROOT};

/// How long a stopping worker may take to answer everything and exit.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A worker that sent nothing for this long is killed (it beats every
/// second).
const SILENCE_LIMIT: Duration = Duration::from_secs(5);

/// How long a dead worker's last log lines may take to be relayed.
const RELAY_GRACE: Duration = Duration::from_secs(1);

/// How long the monitor's sends to a worker may block.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// How the daemon starts and confines its worker processes; one for all
/// controllers.
pub struct ProcessModel {
    /// The `pvusb` binary.
    pub exe: PathBuf,
    /// Its arguments for the worker role.
    pub worker_args: Vec<String>,
    /// Where xenstore is (each worker's proxy connects there).
    pub xenstore: PathBuf,
    /// Grants and event channels.
    pub transport: TransportSetup,
    /// With [`TransportSetup::Xen`]: the gntdev and evtchn devices.
    pub xen_devices: Option<(PathBuf, PathBuf)>,
    /// Emulated devices and their backing (opened once, shared by every
    /// worker: a disk survives its worker).
    pub emulated: Vec<(EmulatedSpec, Option<File>)>,
    /// Host devices (`None`: no host USB).
    pub nodes: Option<Arc<dyn NodeOpener>>,
    /// The device rules' file and text.
    pub rules: Option<(PathBuf, String)>,
    /// How workers confine themselves.
    pub confine: ConfineSetup,
    /// Whether workers obey fault requests (tests only).
    pub fault_hooks: bool,
    /// When crashed workers are restarted.
    pub restart: RestartPolicy,
    /// A worker whose controller thread neither sleeps nor turns for this
    /// long is killed.
    pub stuck_after: Duration,
}

impl std::fmt::Debug for ProcessModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessModel")
            .field("exe", &self.exe)
            .field("transport", &self.transport)
            .field("confine", &self.confine)
            .finish_non_exhaustive()
    }
}

/// What the daemon's settings give every worker.
#[derive(Debug, Clone, Copy)]
pub struct WorkerSettings {
    /// The backend domain.
    pub own_domid: u16,
    /// Ring-polling window bound, µs.
    pub poll_max_us: u64,
    /// Per-port statistics.
    pub port_stats: bool,
    /// Mapped bulk threshold.
    pub map_min_bytes: usize,
}

/// What the daemon keeps of one supervised controller.
#[derive(Debug, Default)]
pub struct WorkerProcessInfo {
    /// The worker's pid now (0 while none runs).
    pub pid: AtomicU32,
    /// Workers started after the first.
    pub restarts: AtomicU64,
}

/// The signal seccomp kills with.
fn libc_sigsys() -> i32 {
    nix::sys::signal::Signal::SIGSYS as i32
}

/// Everything one supervisor thread works with.
pub struct Supervisor {
    /// The controller.
    pub id: ControllerId,
    /// Its backend directory.
    pub be: String,
    /// The daemon's xenstore connection (the monitor's own checks).
    pub xs: Arc<XsClient>,
    /// The process model.
    pub model: Arc<ProcessModel>,
    /// The daemon's settings.
    pub settings: WorkerSettings,
    /// Control messages from the daemon.
    pub mailbox: Arc<Mailbox>,
    /// The counters, mirrored from the worker.
    pub stats: Arc<Stats>,
    /// Set when supervision ends.
    pub finished: Arc<AtomicBool>,
    /// Pid and restarts.
    pub info: Arc<WorkerProcessInfo>,
}

/// How one worker ended.
struct Death {
    pid: u32,
    status: Option<ExitStatus>,
    /// Why the monitor killed it, if it did.
    killed_for: Option<String>,
}

impl Death {
    fn describe(&self) -> String {
        let mut s = match self.status {
            Some(st) => match (st.code(), st.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(sig)) if sig == libc_sigsys() => {
                    match pvusb_confine::violation::seccomp_syscall_of(
                        i32::try_from(self.pid).unwrap_or(0),
                    ) {
                        Some(v) => format!(
                            "killed by SIGSYS: seccomp forbade syscall {} ({})",
                            v.syscall, v.name
                        ),
                        None => "killed by SIGSYS: a syscall the seccomp allow-list forbids \
                                 (the kernel log names it: type=1326)"
                            .to_owned(),
                    }
                }
                (None, Some(sig)) => format!(
                    "killed by signal {sig} ({})",
                    nix::sys::signal::Signal::try_from(sig)
                        .map(|s| s.as_str())
                        .unwrap_or("?")
                ),
                (None, None) => "ended".to_owned(),
            },
            None => "could not be waited for".to_owned(),
        };
        if let Some(why) = &self.killed_for {
            s = format!("{s}, killed by the monitor: {why}");
        }
        s
    }
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// Supervises until the controller is stopped or given up. Runs on its
    /// own thread.
    pub fn run(self) {
        let mut history = CrashHistory::default();
        let mut stopping = false;
        let mut first = true;
        loop {
            if !first {
                self.info.restarts.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
            let death = self.run_one(&mut stopping);
            self.info.pid.store(0, Ordering::Relaxed);
            let Some(death) = death else {
                // Could not even start: counts as a crash.
                if stopping {
                    break;
                }
                if !self.after_crash(&mut history, "could not be started", &mut stopping) {
                    break;
                }
                continue;
            };
            let clean = death.status.is_some_and(|s| s.success()) && death.killed_for.is_none();
            if stopping && clean {
                tracing::debug!(ctl = %self.id, pid = death.pid, "worker exited");
                break;
            }
            let why = death.describe();
            if stopping {
                tracing::warn!(ctl = %self.id, pid = death.pid, "worker {why} while stopping");
                break;
            }
            tracing::error!(ctl = %self.id, pid = death.pid, "worker {why}; other controllers are unaffected");
            if !self.after_crash(&mut history, &why, &mut stopping) {
                break;
            }
        }
        self.finished.store(true, Ordering::SeqCst);
    }

    /// Records a crash; waits before the restart. Returns whether to start
    /// a new worker.
    fn after_crash(&self, history: &mut CrashHistory, why: &str, stopping: &mut bool) -> bool {
        match history.record(Instant::now(), &self.model.restart) {
            Verdict::Restart(delay) => {
                if !delay.is_zero() {
                    tracing::warn!(ctl = %self.id, "restarting its worker in {} ms", delay.as_millis());
                }
                self.wait_for_stop(delay, stopping);
                !*stopping
            }
            Verdict::GiveUp(n) => {
                tracing::error!(
                    ctl = %self.id,
                    "controller closed: its worker died {n} times within {} s; last: {why}",
                    self.model.restart.window.as_secs()
                );
                if let Err(e) = xenbus::write_state(&self.xs, &self.be, XenbusState::Closing) {
                    tracing::warn!(ctl = %self.id, "cannot write Closing: {e}", e = Chain(&e));
                }
                false
            }
        }
    }

    /// Sleeps `delay`, or less if the daemon stops the controller meanwhile.
    fn wait_for_stop(&self, delay: Duration, stopping: &mut bool) {
        let end = Instant::now() + delay;
        while !*stopping {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut fds = [PollFd::new(self.mailbox.fd(), PollFlags::POLLIN)];
            let ms = PollTimeout::try_from(left.as_millis().saturating_add(1))
                .unwrap_or(PollTimeout::MAX);
            let _ = poll(&mut fds, ms);
            self.mailbox.clear_wake();
            for msg in self.mailbox.take_control() {
                if matches!(msg, Control::Shutdown | Control::Remove) {
                    *stopping = true;
                }
            }
        }
    }

    /// The proxy's scope: read the controller's directories, the guest's
    /// name and the device records; write only what a backend writes.
    fn scope(&self) -> PrefixScope {
        let fe = xenbus::read(&self.xs, &xsp::join(&self.be, xsp::keys::FRONTEND))
            .ok()
            .flatten()
            .filter(|fe| fe.starts_with('/') && fe.len() < 256 && !fe.contains("//"))
            .map(|fe| fe.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| xsp::frontend_dir(self.id.domid, self.id.devid));
        // The guest's name: device rules may name the guest (`domain "web"`).
        let name = format!("/local/domain/{}/name", self.id.domid);
        let mut scope = PrefixScope::new()
            .read(&self.be)
            .read(&fe)
            .read(&name)
            .read(RECORD_ROOT)
            .write_leaf(RECORD_ROOT, xenbus::RECORD_OPENED);
        for key in Broker::writable_keys(&self.be) {
            scope = scope.write(&key);
        }
        scope
    }

    fn setup(&self) -> WorkerSetup {
        WorkerSetup {
            domid: self.id.domid,
            devid: self.id.devid,
            be: self.be.clone(),
            own_domid: self.settings.own_domid,
            poll_max_us: self.settings.poll_max_us,
            port_stats: self.settings.port_stats,
            map_min_bytes: self.settings.map_min_bytes,
            rules: self.model.rules.clone(),
            transport: self.model.transport.clone(),
            emulated: self.model.emulated.iter().map(|(s, _)| s.clone()).collect(),
            host_usb: self.model.nodes.is_some(),
            confine: self.model.confine.clone(),
            fault_hooks: self.model.fault_hooks,
            monitor_pid: std::process::id(),
        }
    }

    /// The descriptors the setup carries (see [`WorkerSetup`]).
    fn setup_fds(&self, proxy: UnixStream) -> Result<Vec<OwnedFd>, SpawnError> {
        let mut fds: Vec<OwnedFd> = vec![proxy.into()];
        if let Some((gntdev, _)) = &self.model.xen_devices {
            let dev = File::options()
                .read(true)
                .write(true)
                .open(gntdev)
                .map_err(|source| SpawnError::Gntdev {
                    path: gntdev.clone(),
                    source,
                })?;
            fds.push(dev.into());
        }
        for (spec, backing) in &self.model.emulated {
            if let Some(file) = backing {
                let dup =
                    file.as_fd()
                        .try_clone_to_owned()
                        .map_err(|source| SpawnError::Backing {
                            spec: spec.describe(),
                            source,
                        })?;
                fds.push(dup);
            }
        }
        Ok(fds)
    }

    /// Starts a worker process and sends it its setup: the child, the
    /// link and the worker's xenstore proxy.
    fn spawn(&self, label: &str) -> Result<(Child, UnixStream, ProxyHandle), SpawnError> {
        let (ours, theirs) = UnixStream::pair().map_err(SpawnError::Socketpair)?;
        let (proxy_ours, proxy_theirs) = UnixStream::pair().map_err(SpawnError::Socketpair)?;
        let proxy = Proxy::spawn(
            &self.model.xenstore,
            proxy_ours,
            Arc::new(self.scope()),
            label.to_owned(),
        )
        .map_err(SpawnError::Proxy)?;
        let fds = self.setup_fds(proxy_theirs)?;
        let mut child = Command::new(&self.model.exe)
            .args(&self.model.worker_args)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("PVUSB_LOG_FORMAT", "json")
            .spawn()
            .map_err(|source| SpawnError::Exec {
                exe: self.model.exe.clone(),
                source,
            })?;
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let sent = ours
            .set_write_timeout(Some(SEND_TIMEOUT))
            .map_err(SpawnError::LinkTimeout)
            .and_then(|()| {
                link::send(&ours, &ToWorker::Setup(Box::new(self.setup())), &raw)
                    .map_err(SpawnError::Setup)
            });
        if let Err(e) = sent {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok((child, ours, proxy))
    }

    /// Starts one worker and serves it until it dies. `None` if it could
    /// not be started.
    fn run_one(&self, stopping: &mut bool) -> Option<Death> {
        let label = format!("{}-{}", self.id.domid, self.id.devid);
        let started = self.spawn(&label);
        let (mut child, link, proxy) = match started {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(ctl = %self.id, "cannot start a worker process: {e}", e = Chain(&e));
                return None;
            }
        };
        let pid = child.id();
        self.info.pid.store(pid, Ordering::Relaxed);
        tracing::info!(ctl = %self.id, pid, "worker process started");
        let relay = child.stderr.take().and_then(|pipe| {
            Relay::spawn(pipe, self.id.to_string(), pid)
                .map_err(|e| tracing::error!(ctl = %self.id, "cannot relay the worker's log: {e}"))
                .ok()
        });
        let evtchn = self.model.xen_devices.as_ref().map(|(_, e)| e.clone());
        let mut broker = Broker::new(
            Arc::clone(&self.xs),
            self.be.clone(),
            self.model.nodes.clone(),
            evtchn,
        );
        let killed_for = self.serve(&mut child, &link, &mut broker, stopping);
        drop(link);
        let status = child.wait().ok();
        drop(proxy);
        if let Some(relay) = relay {
            relay.finish(RELAY_GRACE);
        }
        Some(Death {
            pid,
            status,
            killed_for,
        })
    }

    /// The link loop. Returns why the monitor killed the worker, if it did.
    fn serve(
        &self,
        child: &mut Child,
        link: &UnixStream,
        broker: &mut Broker,
        stopping: &mut bool,
    ) -> Option<String> {
        let mut last_message = Instant::now();
        let mut last_progress = Instant::now();
        let mut last_turns = 0u64;
        let mut stop_deadline: Option<Instant> = if *stopping {
            Some(Instant::now() + STOP_GRACE)
        } else {
            None
        };
        if *stopping {
            let _ = link::send(link, &ToWorker::Control(LinkControl::Shutdown), &[]);
        }
        let kill = |child: &mut Child, why: String| -> Option<String> {
            let _ = child.kill();
            Some(why)
        };
        loop {
            let (mail, readable) = {
                let mut fds = [
                    PollFd::new(self.mailbox.fd(), PollFlags::POLLIN),
                    PollFd::new(link.as_fd(), PollFlags::POLLIN),
                ];
                let _ = poll(&mut fds, PollTimeout::from(500u16));
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if mail {
                self.mailbox.clear_wake();
                for msg in self.mailbox.take_control() {
                    let out = match msg {
                        Control::Shutdown => {
                            *stopping = true;
                            LinkControl::Shutdown
                        }
                        Control::Remove => {
                            *stopping = true;
                            LinkControl::Remove
                        }
                        Control::BackendChanged(rel) => LinkControl::BackendChanged(rel),
                        Control::Hotplug(HotplugEvent::Arrived(b)) => {
                            LinkControl::Arrived(b.to_string())
                        }
                        Control::Hotplug(HotplugEvent::Left(b)) => LinkControl::Left(b.to_string()),
                        // The worker watches its frontend through its proxy.
                        Control::FrontendChanged => continue,
                        Control::Fault(f) => {
                            if self.model.fault_hooks {
                                if let Err(e) = link::send(link, &ToWorker::Fault(f), &[]) {
                                    return kill(child, format!("cannot send: {e}", e = Chain(&e)));
                                }
                            }
                            continue;
                        }
                    };
                    if *stopping && stop_deadline.is_none() {
                        stop_deadline = Some(Instant::now() + STOP_GRACE);
                    }
                    if let Err(e) = link::send(link, &ToWorker::Control(out), &[]) {
                        if matches!(e, LinkError::Closed) {
                            return None;
                        }
                        return kill(child, format!("cannot send: {e}", e = Chain(&e)));
                    }
                }
            }
            if readable {
                match link::recv::<ToMonitor>(link, MAX_FROM_WORKER) {
                    Ok((msg, fds)) => {
                        last_message = Instant::now();
                        if !fds.is_empty() {
                            return kill(child, "it sent descriptors".into());
                        }
                        if let Err(e) =
                            self.on_message(msg, link, broker, &mut last_turns, &mut last_progress)
                        {
                            return kill(child, format!("cannot send: {e}", e = Chain(&e)));
                        }
                    }
                    Err(LinkError::Closed) => return None,
                    Err(e) if link::is_timeout(&e) => {}
                    Err(e) => return kill(child, format!("bad message: {e}", e = Chain(&e))),
                }
            }
            let now = Instant::now();
            if let Some(deadline) = stop_deadline {
                if now > deadline {
                    return kill(
                        child,
                        format!("still running {} s after stop", STOP_GRACE.as_secs()),
                    );
                }
            } else if now.duration_since(last_message) > SILENCE_LIMIT {
                return kill(child, format!("silent for {} s", SILENCE_LIMIT.as_secs()));
            } else if now.duration_since(last_progress) > self.model.stuck_after {
                return kill(
                    child,
                    format!(
                        "its controller thread made no progress for {} s",
                        self.model.stuck_after.as_secs()
                    ),
                );
            }
        }
    }

    fn on_message(
        &self,
        msg: ToMonitor,
        link: &UnixStream,
        broker: &mut Broker,
        last_turns: &mut u64,
        last_progress: &mut Instant,
    ) -> Result<(), LinkError> {
        let send = |msg: &ToWorker, fds: &[RawFd]| link::send(link, msg, fds);
        match msg {
            ToMonitor::Ready(how) => {
                tracing::info!(ctl = %self.id, pid = self.info.pid.load(Ordering::Relaxed), "worker confined: {how}");
            }
            ToMonitor::Open(busid) => match broker.open_device(&busid) {
                Ok((info, fd)) => send(
                    &ToWorker::Opened {
                        busid,
                        result: Ok(info),
                    },
                    &[fd.as_raw_fd()],
                )?,
                Err(e) => {
                    // The worker gets the reason as text: the link carries
                    // no error types.
                    let why = Chain(&e).to_string();
                    tracing::warn!(ctl = %self.id, "refused to open {busid:.40} for the worker: {why}");
                    send(
                        &ToWorker::Opened {
                            busid,
                            result: Err(why),
                        },
                        &[],
                    )?
                }
            },
            ToMonitor::OpenEvtchn => match broker.open_evtchn() {
                Ok(file) => send(&ToWorker::EvtchnOpened(Ok(())), &[file.as_raw_fd()])?,
                Err(e) => send(&ToWorker::EvtchnOpened(Err(Chain(&e).to_string())), &[])?,
            },
            ToMonitor::Heartbeat(beat) => {
                self.mirror(&beat);
                if beat.asleep || beat.turns != *last_turns {
                    *last_progress = Instant::now();
                }
                *last_turns = beat.turns;
            }
        }
        Ok(())
    }

    fn mirror(&self, beat: &Heartbeat) {
        self.stats.restore(&beat.totals);
        for (port, snap) in beat.ports.iter().take(self.stats.ports.len()) {
            if let Some(p) = usize::from(*port)
                .checked_sub(1)
                .and_then(|i| self.stats.ports.get(i))
            {
                p.restore(snap);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(raw: i32, killed_for: Option<&str>) -> String {
        Death {
            pid: u32::MAX,
            status: Some(ExitStatus::from_raw(raw)),
            killed_for: killed_for.map(str::to_owned),
        }
        .describe()
    }

    #[test]
    fn a_death_is_described_with_its_cause() {
        assert_eq!(death(70 << 8, None), "exited with status 70");
        let sigsys = death(libc_sigsys(), None);
        assert!(sigsys.starts_with("killed by SIGSYS"), "{sigsys}");
        assert!(sigsys.contains("seccomp"), "{sigsys}");
        assert_eq!(death(6, None), "killed by signal 6 (SIGABRT)");
        assert_eq!(
            death(9, Some("silent for 5 s")),
            "killed by signal 9 (SIGKILL), killed by the monitor: silent for 5 s"
        );
    }
}
