//! `pvusb backend`: the backend daemon (a userspace usbback) for dom0 or a USB
//! driver domain. A thin adapter: parses flags, builds the host (libusb plus
//! emulated devices) and the transport (real Xen or the simulation), starts
//! [`pvusb_backend::Daemon`] and waits for SIGTERM/SIGINT.
//!
//! It also runs the toolstack's reaper ([`Toolstack::run_reaper`]) on
//! `@releaseDomain`: when a guest dies, its controllers are removed and its
//! devices given back to their host drivers (through `--sysfs-root`, default
//! `/sys`). The daemon itself only stops the dead guest's workers; giving the
//! devices back needs the records and sysfs, which are the toolstack's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pvusb_backend::isolation::restart::RestartPolicy;
use pvusb_backend::isolation::{ConfineSetup, ProcessModel, TransportSetup};
use pvusb_backend::usb::emulated::{EmulatedHost, EmulatedSpec};
use pvusb_backend::usb::libusb::LibusbHost;
use pvusb_backend::usb::NodeOpener;
use pvusb_backend::usb::UsbHost;
use pvusb_backend::{CompositeHost, Daemon, DaemonConfig};
use pvusb_support::Chain;
use pvusb_toolstack::{Sysfs, SysfsRoot, Toolstack};
use pvusb_xenstore::{Tx, XsClient};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::signals::StopSignals;
use nix::sys::signal::Signal;

/// Which grant/event-channel implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// /dev/xen/gntdev and /dev/xen/evtchn.
    Xen,
    /// The simulated transport (needs --sim-dir or PVUSB_SIM_DIR).
    Sim,
}

/// Flags of `pvusb backend`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// This domain's id (default: xenstore's `domid` key, else 0).
    #[arg(long)]
    pub domid: Option<u16>,
    /// Grant and event-channel transport.
    #[arg(long, value_enum, default_value_t = Transport::Xen)]
    pub transport: Transport,
    /// Directory of the simulated transport (also PVUSB_SIM_DIR).
    #[arg(long)]
    pub sim_dir: Option<PathBuf>,
    /// Emulated device, repeatable: `storage:FILE[:SIZE]`, `storage-mem:SIZE`,
    /// `keyboard[:TEXT]`, `loopback`, `audio`, `stall`, `slow`, `vanish`.
    #[arg(long = "emulate", value_name = "SPEC")]
    pub emulate: Vec<String>,
    /// Do not use host USB devices (libusb) at all.
    #[arg(long)]
    pub no_host_usb: bool,
    /// Sysfs root the reaper restores drivers through (also PVUSB_SYSFS_ROOT).
    #[arg(long)]
    pub sysfs_root: Option<PathBuf>,
    /// Simulate driver binding in the sysfs tree (tests, demo; also
    /// PVUSB_SYSFS_SIMULATED=1).
    #[arg(long, hide = true)]
    pub simulate_binding: bool,
    /// Device rules checked each time a device is opened for a guest
    /// (USBGuard's rule language; default: $PVUSB_RULES, else
    /// /etc/pvusb/rules.conf; no file: every device but hubs is served).
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Longest time (µs) a controller keeps polling its ring after answering,
    /// so a guest that sends its next URB within it needs no event and no
    /// wake-up. Adaptive: it only grows while the guest keeps coming back
    /// within it, so idle controllers cost nothing. The default, 50, keeps the
    /// window fixed at 50 µs; raise it only where dom0 has CPUs to spare (a
    /// spinning worker on a dom0 with one vCPU starves its USB stack); 0
    /// turns polling off.
    #[arg(long, value_name = "US", default_value_t = pvusb_backend::polling::DEFAULT_MAX.as_micros() as u64)]
    pub poll_max_us: u64,
    /// Bulk URBs of at least this many bytes run on the guest's pages mapped
    /// into the backend (one map and unmap per URB) instead of being
    /// grant-copied into a buffer (one copy per URB); only page-contiguous
    /// data of real devices. 0 never maps. The default is what measured
    /// best (docs/perf/2026-12-06-map-vs-copy.md).
    #[arg(long, value_name = "BYTES", default_value_t = pvusb_backend::engine::DEFAULT_MAP_MIN_BYTES)]
    pub map_min_bytes: usize,
    /// Control socket that `pvusb stats` reads (mode 0600). Default:
    /// /run/pvusb/control.sock; with --transport sim, control.sock in the
    /// simulation directory.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Also serve the counters in the Prometheus text format (GET /metrics)
    /// on a loopback address (127.0.0.1:9477) or a UNIX socket (unix:PATH).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Do not count per-port statistics (only to measure what counting costs).
    #[arg(long, hide = true)]
    pub no_port_stats: bool,
    /// How controllers run: each in a confined worker process of its own
    /// (another user, no capabilities, seccomp, Landlock; a crash or a
    /// compromise stays in it), or as threads of the daemon.
    #[arg(long, value_enum, default_value_t = Isolation::Process)]
    pub isolation: Isolation,
    /// The user worker processes run as (default: the `pvusb` system user
    /// if it exists, else `nobody`).
    #[arg(long, value_name = "USER")]
    pub worker_user: Option<String>,
    /// Workers keep the daemon's user and skip seccomp, Landlock and
    /// namespaces (only to measure what confinement costs).
    #[arg(long, hide = true)]
    pub unconfined_workers: bool,
    /// Workers obey `pvusb stats --fault` requests (tests only).
    #[arg(long, hide = true)]
    pub test_faults: bool,
}

/// How controllers run (`--isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Isolation {
    /// One confined worker process per controller, supervised.
    Process,
    /// Threads of the daemon.
    Thread,
}

/// Where the control socket of a daemon started with `args` listens.
pub fn control_path(transport: Transport, sim_dir: Option<&std::path::Path>) -> PathBuf {
    match (transport, sim_dir) {
        (Transport::Sim, Some(dir)) => dir.join("control.sock"),
        _ => PathBuf::from(DEFAULT_CONTROL),
    }
}

/// The control socket of a daemon in dom0 or a driver domain.
pub const DEFAULT_CONTROL: &str = "/run/pvusb/control.sock";

/// How often the reaper re-checks whether the daemon is stopping.
const REAPER_POLL: Duration = Duration::from_millis(200);

/// Starts the dead-domain reaper in a thread; it ends when `stop` is set.
/// WHY its own xenstore connection: the reaper blocks in toolstack commands
/// (`ctrl-detach` waits for the backend to reach Closed) that the daemon's
/// own connection must keep serving meanwhile.
pub fn start_reaper(
    backend_domid: u16,
    sysfs: SysfsRoot,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let store = XsClient::connect_default()
        .map_err(|e| format!("reaper: cannot reach xenstore: {e}", e = Chain(&e)))?;
    let ts = Toolstack::new(store, sysfs, backend_domid);
    std::thread::Builder::new()
        .name("pvusb-reaper".into())
        .spawn(move || {
            if let Err(e) = ts.run_reaper(REAPER_POLL, || !stop.load(Ordering::SeqCst)) {
                tracing::error!("the dead-domain reaper stopped: {e}", e = Chain(&e));
            }
        })
        .map_err(|e| format!("cannot start the reaper thread: {e}", e = Chain(&e)))
}

fn sysfs_of(args: &Args) -> SysfsRoot {
    crate::cmd_toolstack::host_sysfs(
        args.sysfs_root.clone(),
        args.simulate_binding,
        args.rules.clone(),
    )
}

/// Loads the device rules (the toolstack's file: [`Sysfs::rules_path`]) and
/// installs them for every controller; a file that does not parse stops the
/// start, so the daemon never runs with less policy than written.
fn load_rules(sysfs: &SysfsRoot) -> Result<Option<Arc<pvusb_policy::Policy>>, String> {
    let path = sysfs.rules_path();
    let policy = pvusb_policy::Policy::load(&path).map_err(|e| Chain(&e).to_string())?;
    match &policy {
        Some(p) => {
            tracing::info!(rules = p.rules.len(), path = %path.display(), "device rules in force")
        }
        None => {
            tracing::info!(path = %path.display(), "no device rules: every device but hubs is served")
        }
    }
    Ok(policy.map(Arc::new))
}

/// The worker processes' model: what each gets and how it is confined.
fn process_model(
    args: &Args,
    xs: &XsClient,
    emulated: Vec<(EmulatedSpec, Option<std::fs::File>)>,
    libusb: Option<Arc<LibusbHost>>,
    policy: Option<&pvusb_policy::Policy>,
) -> Result<ProcessModel, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find this binary for the worker processes: {e}"))?;
    let xenstore = xs
        .endpoint()
        .ok_or("the xenstore connection has no path the workers' proxies could reach")?
        .to_owned();
    let (transport, xen_devices) = match args.transport {
        Transport::Xen => (
            TransportSetup::Xen,
            Some((
                PathBuf::from(pvusb_xen::linux::GNTDEV_PATH),
                PathBuf::from(pvusb_xen::linux::EVTCHN_PATH),
            )),
        ),
        Transport::Sim => {
            let dir =
                sim_dir_of(args).ok_or("--transport sim needs --sim-dir DIR (or PVUSB_SIM_DIR)")?;
            (TransportSetup::Sim { dir }, None)
        }
    };
    let rules = match policy {
        Some(p) => Some((
            p.path.clone(),
            std::fs::read_to_string(&p.path).map_err(|e| format!("{}: {e}", p.path.display()))?,
        )),
        None => None,
    };
    let mut confine = ConfineSetup::full();
    confine.user = args.worker_user.clone();
    if args.unconfined_workers {
        confine = ConfineSetup {
            user: None,
            keep_user: true,
            seccomp: false,
            landlock: false,
            namespaces: false,
        };
    }
    Ok(ProcessModel {
        exe,
        worker_args: vec!["backend-worker".into()],
        xenstore,
        transport,
        xen_devices,
        emulated,
        nodes: libusb.map(|h| h as Arc<dyn NodeOpener>),
        rules,
        confine,
        fault_hooks: args.test_faults,
        restart: RestartPolicy::default(),
        stuck_after: Duration::from_secs(10),
    })
}

fn sim_dir_of(args: &Args) -> Option<PathBuf> {
    args.sim_dir
        .clone()
        .or_else(|| std::env::var_os("PVUSB_SIM_DIR").map(PathBuf::from))
}

fn own_domid(args: &Args, xs: &XsClient) -> u16 {
    args.domid.unwrap_or_else(|| {
        xs.read(Tx::NONE, "domid")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(args: Args) -> Result<(), String> {
    // Before any thread starts, so only the wait below receives them.
    let signals = StopSignals::block_with(&[Signal::SIGUSR1])?;
    if let (Isolation::Process, Some(user)) = (args.isolation, &args.worker_user) {
        // A user that does not exist would make every worker fail to start:
        // refuse it here, once, with the fix.
        pvusb_confine::resolve_user(&pvusb_confine::UserChoice::Named(user.clone()))
            .map_err(|e| format!("--worker-user: {e}", e = Chain(&e)))?;
    }
    let policy = load_rules(&sysfs_of(&args))?;

    let mut specs = Vec::new();
    for spec in &args.emulate {
        let spec = EmulatedSpec::parse(spec).map_err(|e| Chain(&e).to_string())?;
        let backing = spec.open_backing().map_err(|e| Chain(&e).to_string())?;
        specs.push((spec, backing));
    }
    let emulated = EmulatedHost::new();
    for (n, (spec, backing)) in specs.iter().enumerate() {
        let busid = EmulatedHost::busid(u8::try_from(n + 1).unwrap_or(u8::MAX))
            .ok_or("too many emulated devices")?;
        if args.isolation == Isolation::Thread {
            let backing = backing
                .as_ref()
                .map(|f| f.try_clone())
                .transpose()
                .map_err(|e| format!("{}: {e}", spec.describe()))?;
            let f = spec.factory(backing).map_err(|e| Chain(&e).to_string())?;
            emulated.add(busid, f).map_err(|e| Chain(&e).to_string())?;
        }
        println!("emulated {} at busid {busid}", spec.describe());
    }
    let libusb: Option<Arc<LibusbHost>> = if args.no_host_usb {
        None
    } else {
        match LibusbHost::new() {
            Ok(h) => Some(Arc::new(h)),
            Err(e) => {
                // The message starts with "no host USB".
                tracing::warn!("{e}", e = Chain(&e));
                None
            }
        }
    };
    let real = libusb.clone().map(|h| h as Arc<dyn UsbHost>);
    let host: Arc<dyn UsbHost> = Arc::new(CompositeHost::new(emulated, real));
    let xs = Arc::new(
        XsClient::connect_default()
            .map_err(|e| format!("cannot reach xenstore: {e}", e = Chain(&e)))?,
    );
    let mut config = DaemonConfig::new(own_domid(&args, &xs));
    config.poll_max = Duration::from_micros(args.poll_max_us);
    config.port_stats = !args.no_port_stats;
    config.map_min_bytes = args.map_min_bytes;
    config.isolation = match args.isolation {
        Isolation::Thread => pvusb_backend::isolation::Isolation::Thread,
        Isolation::Process => pvusb_backend::isolation::Isolation::Process(Arc::new(
            process_model(&args, &xs, specs, libusb, policy.as_deref())?,
        )),
    };
    config.policy = policy;
    let metrics = args
        .metrics
        .as_deref()
        .map(pvusb_backend::control::MetricsAddr::parse)
        .transpose()
        .map_err(|e| Chain(&e).to_string())?;
    let sim_dir = sim_dir_of(&args);
    let control = args
        .control
        .clone()
        .unwrap_or_else(|| control_path(args.transport, sim_dir.as_deref()));
    let (own, sysfs) = (config.own_domid, sysfs_of(&args));
    let daemon = match args.transport {
        Transport::Xen => {
            let grants =
                pvusb_xen::linux::LinuxGrantMapper::open().map_err(|e| Chain(&e).to_string())?;
            let evtchns =
                pvusb_xen::linux::LinuxEventChannels::open().map_err(|e| Chain(&e).to_string())?;
            Daemon::start(xs, Arc::new(grants), Arc::new(evtchns), host, config)
        }
        Transport::Sim => {
            let dir = sim_dir.ok_or("--transport sim needs --sim-dir DIR (or PVUSB_SIM_DIR)")?;
            let sim = Arc::new(pvusb_xen::sim::SimXen::new(&dir, config.own_domid));
            Daemon::start(xs, Arc::clone(&sim), sim, host, config)
        }
    }
    .map_err(|e| Chain(&e).to_string())?;
    // The counters are for operators; a daemon that cannot offer them still
    // serves its guests.
    let _control = pvusb_backend::control::serve_control(&control, daemon.reporter())
        .map_err(|e| {
            tracing::warn!(
                "no control socket, `pvusb stats` will not reach this daemon: {e}",
                e = Chain(&e)
            )
        })
        .ok();
    let _metrics = match &metrics {
        Some(addr) => Some(
            pvusb_backend::control::serve_metrics(addr, daemon.reporter())
                .map_err(|e| format!("--metrics: {e}", e = Chain(&e)))?,
        ),
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let reaper = start_reaper(own, sysfs, Arc::clone(&stop))?;
    let sig = loop {
        match signals.wait()? {
            Signal::SIGUSR1 => log_stats(&daemon),
            sig => break sig,
        }
    };
    tracing::info!(signal = ?sig, "shutting down");
    stop.store(true, Ordering::SeqCst);
    let _ = reaper.join();
    daemon.shutdown();
    Ok(())
}

/// `kill -USR1`: one log line of counters per controller, for an operator
/// asking what a guest is doing (and for the test-bed's measurements).
fn log_stats(daemon: &pvusb_backend::DaemonHandle) {
    let ids = daemon.controllers();
    if ids.is_empty() {
        tracing::info!("stats: no controller is being served");
    }
    for id in ids {
        let Some(s) = daemon.stats(id.domid, id.devid) else {
            continue;
        };
        let mean_device_us = s.device_us.checked_div(s.completed).unwrap_or(0);
        tracing::info!(ctl = %id, mean_device_us, "stats: {s:?}");
    }
}
