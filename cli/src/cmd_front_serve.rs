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
use crossbeam_channel::select;
use pvusb_frontend::vhci::serve::{Next, Server};
use pvusb_frontend::vhci::{AttachError, BridgeOptions, VhciHcd};
use pvusb_frontend::Options;
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
}

/// The long help of `pvusb front serve` (and its man page).
pub const LONG_ABOUT: &str = "\
Serve every device of a pvUSB controller to the guest kernel's USB/IP \
virtual host controller (vhci-hcd), so the guest's own drivers \
(usb-storage, HID, audio) use them without the xen-hcd module.

pvusb connects as the frontend of controller --devid of this domain, \
enumerates each device, and attaches it to a free vhci-hcd port (the \
high-speed hub for low, full and high speed devices) over a UNIX socket \
pair, translating USB/IP to usbif. Devices plugged later are attached \
as they appear; an unplugged device's port is detached. On SIGTERM or \
SIGINT every port is detached and the controller closed.

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

/// Runs the daemon until a stop signal or the controller's death.
pub fn run(front_args: &super::cmd_front::Args, args: &ServeArgs) -> Result<(), String> {
    // Before any thread starts, so that only the waiting thread gets them.
    let signals = StopSignals::block()?;
    let vhci = match &args.vhci_dir {
        Some(dir) => VhciHcd::at(dir),
        None => open_loading_module(),
    }
    .map_err(|e| Chain(&e).to_string())?;
    let options = Options {
        take_over: args.take_over,
        ..Options::default()
    };
    let front = Arc::new(super::cmd_front::open(front_args, options)?);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let _ = stop_tx.send(signals.wait());
        })
        .map_err(|e| format!("cannot start the signal thread: {e}", e = Chain(&e)))?;
    let bridge_options = BridgeOptions {
        max_in_flight: args.max_in_flight,
        ..BridgeOptions::default()
    };
    let events = front.subscribe();
    let mut server = Server::new(Arc::clone(&front), vhci, front_args.devid(), bridge_options);
    // The conn events arrive right after the handshake.
    std::thread::sleep(Duration::from_millis(200));
    server.serve_all();
    info!(devid = front_args.devid(), served = ?server.served(), "serving to vhci-hcd");
    let result = loop {
        select! {
            recv(stop_rx) -> signal => match signal {
                Ok(Ok(s)) => {
                    info!(signal = ?s, "stopping");
                    break Ok(());
                }
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err("the signal thread ended".to_owned()),
            },
            recv(events) -> event => match event {
                Ok(event) => {
                    if let Next::Dead(reason) = server.on_event(event) {
                        break Err(format!("the controller died: {reason}"));
                    }
                }
                Err(_) => break Err("the controller went away".to_owned()),
            },
            default(REAP) => server.reap(),
        }
    };
    server.release_all();
    drop(server);
    let closed = front.close().map_err(|e| Chain(&e).to_string());
    result.and(closed)
}
