//! `pvusb front serve`: the guest's own USB stack drives the controller's
//! devices through vhci-hcd (USB/IP), with this process as the frontend.
//!
//! WHY a daemon around [`Server`]: devices come and go, and every vhci
//! port must be detached when the frontend goes (SIGTERM, SIGINT, the
//! controller dying); the per-port logic lives in the library and is
//! tested there.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args as ClapArgs;
use nix::sys::signal::Signal;
use pvusb_frontend::vhci::serve::{Next, Server};
use pvusb_frontend::vhci::{AttachError, BridgeOptions, VhciHcd};
use pvusb_frontend::{Frontend, Options};
use pvusb_support::Chain;
use tracing::{info, warn};

use crate::signals::StopSignals;

/// How often ended bridges are looked for.
const REAP: Duration = Duration::from_secs(1);

/// Arguments of `pvusb front serve`.
#[derive(Debug, Clone, ClapArgs)]
pub struct ServeArgs {
    /// Connect even if the controller is already Connected. Only for a
    /// pvusb frontend that was killed without closing: with the kernel's
    /// xen-hcd loaded this pulls the controller from under it.
    #[arg(long)]
    pub take_over: bool,
    /// The vhci-hcd sysfs directory (default: found under /sys/devices).
    #[arg(long, value_name = "DIR")]
    pub vhci_dir: Option<PathBuf>,
    /// Requests each bridge holds in flight at most.
    #[arg(long, default_value_t = pvusb_frontend::vhci::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Serve these controllers of this domain (comma-separated devids)
    /// from this one process, instead of the one --devid names.
    #[arg(long, value_delimiter = ',', value_name = "DEVID,...")]
    pub controllers: Vec<u32>,
    /// How long (µs) each controller's worker keeps polling its rings
    /// after the last answer before it sleeps on the event channel (0:
    /// never polls). Polling trades CPU for fewer wake-ups; on a guest with
    /// one vCPU it competes with the kernel threads that make the next
    /// request.
    #[arg(long, value_name = "US", default_value_t = pvusb_ring::polling::BASE.as_micros() as u64)]
    pub poll_us: u64,
}

/// The long help of `pvusb front serve` (and its man page).
pub const LONG_ABOUT: &str = "\
Serve every device of a pvUSB controller to the guest kernel's USB/IP \
virtual host controller (vhci-hcd), so the guest's own drivers \
(usb-storage, HID, audio) use them without the xen-hcd module.

pvusb connects as the frontend of controller --devid of this domain \
(or of every controller --controllers lists), enumerates each device, and attaches it to a free vhci-hcd port (the \
high-speed hub for low, full and high speed devices) over a UNIX socket \
pair, translating USB/IP to usbif. Devices plugged later are attached \
as they appear; an unplugged device's port is detached. On SIGTERM or \
SIGINT every port is detached and the controller closed. SIGUSR1 logs \
each controller's requests in flight and ring indexes, and each device's \
commands awaiting an answer (for a device that stalls).

Needs root and a controller no other frontend drives (rmmod xen-hcd \
first). Loads the vhci-hcd module if it is not loaded.";

/// How long the module's sysfs directory may take to appear after
/// `modprobe` returned.
const MODULE_SETTLE: Duration = Duration::from_secs(5);

/// vhci-hcd's sysfs directory, loading the module first if it is missing.
///
/// WHY here and not in the library: loading a kernel module is the
/// daemon's decision (the library is also used with a fake directory).
fn open_loading_module() -> Result<VhciHcd, AttachError> {
    match VhciHcd::open() {
        Err(AttachError::NotLoaded) => {}
        other => return other,
    }
    match std::process::Command::new("modprobe")
        .arg("vhci-hcd")
        .status()
    {
        Ok(status) if status.success() => info!("loaded vhci-hcd"),
        Ok(status) => warn!(%status, "modprobe vhci-hcd failed"),
        Err(e) => warn!(error = %Chain(&e), "cannot run modprobe"),
    }
    let deadline = std::time::Instant::now() + MODULE_SETTLE;
    loop {
        match VhciHcd::open() {
            Err(AttachError::NotLoaded) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// One served controller.
struct Served {
    devid: u32,
    front: Arc<Frontend>,
    server: Server<VhciHcd>,
    events: crossbeam_channel::Receiver<pvusb_frontend::PortEvent>,
}

/// Runs the daemon until a stop signal or a controller's death.
pub fn run(front_args: &super::cmd_front::Args, args: &ServeArgs) -> Result<(), String> {
    // Before any thread starts, so that only the waiting thread gets them.
    let signals = StopSignals::block_with(&[Signal::SIGUSR1])?;
    let vhci = match &args.vhci_dir {
        Some(dir) => VhciHcd::at(dir),
        None => open_loading_module(),
    }
    .map_err(|e| Chain(&e).to_string())?;
    let devids = if args.controllers.is_empty() {
        vec![front_args.devid()]
    } else {
        let mut d = args.controllers.clone();
        d.sort_unstable();
        d.dedup();
        d
    };
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    let (report_tx, report_rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            match signals.wait() {
                // A report already asked for covers this one too.
                Ok(Signal::SIGUSR1) => {
                    let _ = report_tx.try_send(());
                }
                other => {
                    let _ = stop_tx.send(other);
                    return;
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}", e = Chain(&e)))?;
    let bridge_options = BridgeOptions {
        max_in_flight: args.max_in_flight,
        ..BridgeOptions::default()
    };
    let mut served: Vec<Served> = Vec::with_capacity(devids.len());
    for devid in devids {
        let options = Options {
            take_over: args.take_over,
            poll: Duration::from_micros(args.poll_us),
            ..Options::default()
        };
        let front = match super::cmd_front::open_controller(front_args, devid, options) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                // The open's failure is the one to report.
                let _ = release(served);
                return Err(format!("controller {devid}: {e}"));
            }
        };
        let events = front.subscribe();
        // vhci-hcd's status is read at each attach: the servers share it.
        let server = Server::new(Arc::clone(&front), vhci.clone(), devid, bridge_options);
        served.push(Served {
            devid,
            front,
            server,
            events,
        });
    }
    // The conn events arrive right after the handshake.
    std::thread::sleep(Duration::from_millis(200));
    for s in &mut served {
        s.server.serve_all();
        info!(devid = s.devid, served = ?s.server.served(), "serving to vhci-hcd");
    }
    let result = serve(&mut served, &stop_rx, &report_rx);
    let closed = release(served);
    result.and(closed)
}

/// Waits for signals and each controller's port events.
fn serve(
    served: &mut [Served],
    stop_rx: &crossbeam_channel::Receiver<Result<Signal, String>>,
    report_rx: &crossbeam_channel::Receiver<()>,
) -> Result<(), String> {
    let events: Vec<_> = served.iter().map(|s| s.events.clone()).collect();
    let mut sel = crossbeam_channel::Select::new();
    let stop = sel.recv(stop_rx);
    let report = sel.recv(report_rx);
    for e in &events {
        sel.recv(e);
    }
    loop {
        let op = match sel.select_timeout(REAP) {
            Ok(op) => op,
            Err(_) => {
                served.iter_mut().for_each(|s| s.server.reap());
                continue;
            }
        };
        if op.index() == stop {
            return match op.recv(stop_rx) {
                Ok(Ok(s)) => {
                    info!(signal = ?s, "stopping");
                    Ok(())
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err("the signal thread ended".to_owned()),
            };
        }
        if op.index() == report {
            let _ = op.recv(report_rx);
            log_report(served);
            continue;
        }
        let i = op.index().saturating_sub(2);
        let (Some(s), Some(rx)) = (served.get_mut(i), events.get(i)) else {
            continue;
        };
        match op.recv(rx) {
            Ok(event) => {
                if let Next::Dead(reason) = s.server.on_event(event) {
                    return Err(format!(
                        "controller {} died: {reason}",
                        s.devid,
                        reason = Chain(&reason)
                    ));
                }
            }
            Err(_) => return Err(format!("controller {} went away", s.devid)),
        }
    }
}

/// SIGUSR1: each controller's URB engine and rings, and each bridge's
/// commands in flight, one log line each (for a device that stalls).
fn log_report(served: &[Served]) {
    for s in served {
        info!(devid = s.devid, "controller: {}", s.front.report());
        for (port, vhci_port, bridge) in s.server.report() {
            info!(devid = s.devid, port, vhci_port, "bridge: {bridge}");
        }
    }
}

/// Detaches every port and closes every controller; the first failure.
fn release(served: Vec<Served>) -> Result<(), String> {
    let mut result = Ok(());
    for mut s in served {
        s.server.release_all();
        drop(s.server);
        if let Err(e) = s.front.close() {
            result = result.and(Err(format!("controller {}: {}", s.devid, Chain(&e))));
        }
    }
    result
}
