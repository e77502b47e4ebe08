//! The backend process of `pvusb bench` (hidden `pvusb bench --role backend`):
//! the backend daemon library over the simulated transport with the emulated
//! loopback device (or libusb for `--device`), plus an event-channel echo for
//! the round-trip reference. It is driven over stdin/stdout by the bench
//! process: `cpu` answers `cpu <seconds>` (its own getrusage), `quit` or EOF
//! stops it.
//!
//! Why a role of the bench and not `pvusb backend`: the bench must plug its
//! own emulated device and answer CPU queries, which the daemon subcommand
//! has no reason to offer.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use pvusb_backend::usb::emulated::loopback::LoopbackDevice;
use pvusb_backend::usb::emulated::{DeviceFactory, EmulatedHost};
use pvusb_backend::usb::UsbHost;
use pvusb_backend::{CompositeHost, Daemon, DaemonConfig};
use pvusb_support::Chain;
use pvusb_xen::sim::SimXen;
use pvusb_xen::{EventChannel, EventChannels};
use pvusb_xenstore::XsClient;

use super::cpu;
use super::session::Backend;
use pvusb_backend::isolation::restart::RestartPolicy;
use pvusb_backend::isolation::{ConfineSetup, Isolation, ProcessModel, TransportSetup};
use pvusb_backend::usb::emulated::EmulatedSpec;
use pvusb_backend::usb::NodeOpener;

/// Domain id of the frontend (the bench process).
pub const FRONT_DOMID: u16 = 1;
/// Root port of the emulated bus the loopback device is plugged into.
pub const LOOPBACK_PORT: u8 = 1;
/// Bytes of OUT data the loopback device keeps (one maximal URB).
pub const LOOPBACK_CAPACITY: usize = 64 * 1024;

/// Serve until told to stop.
pub fn run(sim_dir: &Path, xs_path: &Path, echo_port: u32, backend: Backend) -> Result<(), String> {
    let xen = Arc::new(SimXen::new(sim_dir, 0));
    let echo = xen
        .bind_interdomain(FRONT_DOMID, echo_port)
        .map_err(|e| format!("cannot bind the echo event channel: {e}", e = Chain(&e)))?;
    std::thread::Builder::new()
        .name("bench-echo".into())
        .spawn(move || {
            // Ends when the bench process goes away (PeerGone).
            while let Ok(got) = echo.wait(None) {
                if got && echo.notify().is_err() {
                    break;
                }
            }
        })
        .map_err(|e| format!("cannot start the echo thread: {e}", e = Chain(&e)))?;

    let emulated = EmulatedHost::new();
    let libusb = if backend.real_usb {
        let host =
            pvusb_backend::usb::libusb::LibusbHost::new().map_err(|e| Chain(&e).to_string())?;
        Some(Arc::new(host))
    } else {
        None
    };
    let real = libusb.clone().map(|h| h as Arc<dyn UsbHost>);
    let isolation = if backend.threads {
        for port in LOOPBACK_PORT..LOOPBACK_PORT.saturating_add(backend.loopbacks) {
            let busid = EmulatedHost::busid(port).ok_or("no busid for a loopback port")?;
            let factory: DeviceFactory =
                Arc::new(|| Box::new(LoopbackDevice::new(LOOPBACK_CAPACITY)));
            emulated
                .add(busid, factory)
                .map_err(|e| format!("cannot plug a loopback device: {e}", e = Chain(&e)))?;
        }
        Isolation::Thread
    } else {
        // The workers build their devices from specs: the loopbacks come
        // first, from LOOPBACK_PORT on.
        Isolation::Process(Arc::new(ProcessModel {
            exe: std::env::current_exe()
                .map_err(|e| format!("cannot find my own executable: {e}"))?,
            worker_args: vec!["backend-worker".into()],
            xenstore: xs_path.to_owned(),
            transport: TransportSetup::Sim {
                dir: sim_dir.to_owned(),
            },
            xen_devices: None,
            emulated: (0..backend.loopbacks)
                .map(|_| (EmulatedSpec::Loopback, None))
                .collect(),
            nodes: libusb.map(|h| h as Arc<dyn NodeOpener>),
            rules: None,
            confine: ConfineSetup::full(),
            fault_hooks: false,
            restart: RestartPolicy::default(),
            stuck_after: std::time::Duration::from_secs(10),
        }))
    };
    let host: Arc<dyn UsbHost> = Arc::new(CompositeHost::new(emulated, real));
    let xs = Arc::new(
        XsClient::connect(xs_path)
            .map_err(|e| format!("cannot reach xenstore: {e}", e = Chain(&e)))?,
    );
    let mut config = DaemonConfig::new(0);
    config.port_stats = backend.port_stats;
    if let Some(us) = backend.poll_max_us {
        config.poll_max = std::time::Duration::from_micros(us);
    }
    config.isolation = isolation;
    let daemon = Daemon::start(xs, Arc::clone(&xen), xen, host, config)
        .map_err(|e| format!("the backend daemon did not start: {e}", e = Chain(&e)))?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .map_err(|e| Chain(&e).to_string())?;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "cpu" => {
                let (seconds, switches) = workers_usage(&daemon);
                writeln!(
                    out,
                    "cpu {} {}",
                    cpu::self_seconds() + seconds,
                    cpu::self_switches() + switches
                )
                .and_then(|()| out.flush())
                .map_err(|e| Chain(&e).to_string())?;
            }
            "quit" => break,
            _ => {}
        }
    }
    daemon.shutdown();
    Ok(())
}

/// CPU seconds and context switches of every controller's worker process
/// (none with threads).
fn workers_usage(daemon: &pvusb_backend::DaemonHandle) -> (f64, u64) {
    daemon
        .controllers()
        .iter()
        .filter_map(|id| daemon.worker_pid(id.domid, id.devid))
        .map(|pid| {
            (
                cpu::process_seconds(pid).unwrap_or(f64::NAN),
                cpu::process_switches(pid),
            )
        })
        .fold((0.0, 0), |(s, n), (ds, dn)| (s + ds, n + dn))
}

/// The command that starts the bench's backend process (this binary's
/// hidden `bench --role backend`) over the simulation in `sim_dir`.
pub fn command(
    sim_dir: &Path,
    xs_path: &Path,
    echo_port: u32,
    backend: &Backend,
) -> Result<std::process::Command, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find my own executable: {e}", e = Chain(&e)))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", "--role", "backend", "--sim-dir"])
        .arg(sim_dir)
        .arg("--xs-path")
        .arg(xs_path)
        .args(["--echo-port", &echo_port.to_string()])
        .args(["--loopbacks", &backend.loopbacks.to_string()]);
    if backend.real_usb {
        cmd.arg("--real-usb");
    }
    if !backend.port_stats {
        cmd.arg("--no-port-stats");
    }
    if backend.threads {
        cmd.arg("--threads");
    }
    if let Some(us) = backend.poll_max_us {
        cmd.args(["--poll-max-us", &us.to_string()]);
    }
    // The backend's per-controller info lines would tear the progress line.
    if std::env::var_os("PVUSB_LOG").is_none() && std::env::var_os("RUST_LOG").is_none() {
        cmd.env("PVUSB_LOG", "warn");
    }
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    Ok(cmd)
}

/// Starts `cmd` (from [`command`]) and waits for its `ready` line; its pipes.
pub fn spawn_ready(
    mut cmd: std::process::Command,
) -> Result<
    (
        std::process::Child,
        std::process::ChildStdin,
        std::io::BufReader<std::process::ChildStdout>,
    ),
    String,
> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the backend process: {e}", e = Chain(&e)))?;
    let (Some(input), Some(out)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("the backend process has no pipes".into());
    };
    let mut output = std::io::BufReader::new(out);
    let mut line = String::new();
    let read = output
        .read_line(&mut line)
        .map_err(|e| Chain(&e).to_string())?;
    if read == 0 || line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err("the backend process exited before it was ready".into());
    }
    Ok((child, input, output))
}
