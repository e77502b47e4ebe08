//! [`Server`]: every device of one controller served to vhci-hcd, one
//! [`Bridge`] per device, following the frontend's port events. The
//! `pvusb front serve` daemon is this plus signals and the connect.
//!
//! WHY here and not in the CLI: the per-port life-cycle (enumerate, socket
//! pair, attach, bridge; on unplug stop and detach) is tested against the
//! simulated backend with a fake [`VhciPorts`], which the CLI crate cannot
//! reach.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use pvusb_support::Chain;
use thiserror::Error;
use tracing::{debug, info, warn};

use super::attach::{devid, AttachError, VhciPorts, VhciSpeed};
use super::{Bridge, BridgeEnd, BridgeError, BridgeOptions, BridgeReport, DeviceTarget};
use crate::error::FrontendError;
use crate::frontend::Frontend;
use crate::ports::PortEvent;

/// Why a device could not be served.
#[derive(Debug, Error)]
pub enum ServeError {
    /// vhci-hcd refused it.
    #[error(transparent)]
    Attach(#[from] AttachError),
    /// The bridge could not start.
    #[error("cannot start the bridge")]
    Bridge(#[from] BridgeError),
    /// Enumerating the device failed.
    #[error("cannot enumerate the device on port {port}")]
    Enumerate {
        /// Root-hub port of the frontend.
        port: u8,
        /// Why.
        #[source]
        source: FrontendError,
    },
    /// The device has no speed vhci knows (it left).
    #[error("the device on port {0} has no speed (it left)")]
    NoSpeed(u8),
    /// The socket pair could not be made.
    #[error("cannot create a socket pair")]
    Socket(#[source] std::io::Error),
}

/// What the daemon loop does after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Keep going.
    Continue,
    /// The controller died: stop everything and exit with this reason.
    Dead(crate::error::BackendViolation),
}

/// One served device.
#[derive(Debug)]
struct Served {
    vhci_port: u32,
    /// The usbif address the device was given when served.
    address: u8,
    bridge: Bridge,
}

/// The devices of one controller, each served to vhci-hcd.
pub struct Server<V: VhciPorts> {
    front: Arc<Frontend>,
    vhci: V,
    controller: u32,
    options: BridgeOptions,
    served: HashMap<u8, Served>,
}

impl<V: VhciPorts> std::fmt::Debug for Server<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("controller", &self.controller)
            .field("served", &self.served())
            .finish()
    }
}

impl<V: VhciPorts> Server<V> {
    /// A server for `front` (controller `controller`, used in the devid
    /// vhci echoes) attaching through `vhci`. Serves nothing until
    /// [`Server::serve_all`] or an event.
    pub fn new(front: Arc<Frontend>, vhci: V, controller: u32, options: BridgeOptions) -> Self {
        Self {
            front,
            vhci,
            controller,
            options,
            served: HashMap::new(),
        }
    }

    /// The vhci port of each served frontend port, sorted.
    pub fn served(&self) -> Vec<(u8, u32)> {
        let mut v: Vec<_> = self.served.iter().map(|(&p, s)| (p, s.vhci_port)).collect();
        v.sort_unstable();
        v
    }

    /// The vhci side, for tests.
    pub fn vhci(&self) -> &V {
        &self.vhci
    }

    /// Serves every connected device not served yet, and lets go of served
    /// ports whose device left (after [`PortEvent::Lagged`] too).
    pub fn serve_all(&mut self) {
        for p in self.front.ports() {
            match (p.connected(), self.served.contains_key(&p.port)) {
                (true, false) => self.serve_logged(p.port),
                (false, true) => self.release(p.port),
                _ => {}
            }
        }
    }

    /// Serves the device on `port`: enumerate (reset and address), a socket
    /// pair, one end attached to vhci, a bridge on the other.
    pub fn serve(&mut self, port: u8) -> Result<u32, ServeError> {
        let device = self
            .front
            .enumerate(port)
            .map_err(|source| ServeError::Enumerate { port, source })?;
        let speed = VhciSpeed::of(device.speed).ok_or(ServeError::NoSpeed(port))?;
        let (ours, theirs) = UnixStream::pair().map_err(ServeError::Socket)?;
        let vhci_port = self
            .vhci
            .attach(theirs.as_fd(), devid(self.controller, port), speed)?;
        // The kernel holds its own reference now (sockfd_lookup).
        drop(theirs);
        let target = DeviceTarget::of(&device);
        let bridge = match Bridge::spawn(Arc::clone(&self.front), target, ours, self.options) {
            Ok(b) => b,
            Err(e) => {
                self.detach(vhci_port);
                return Err(e.into());
            }
        };
        info!(
            port,
            vhci_port,
            address = device.address,
            ?speed,
            "serving device to vhci-hcd"
        );
        self.served.insert(
            port,
            Served {
                vhci_port,
                address: device.address,
                bridge,
            },
        );
        Ok(vhci_port)
    }

    fn serve_logged(&mut self, port: u8) {
        if let Err(e) = self.serve(port) {
            warn!(port, "cannot serve the device: {}", Chain(&e));
        }
    }

    /// Each served device's bridge as it is now: (usbif port, vhci port,
    /// the bridge's table).
    pub fn report(&self) -> Vec<(u8, u32, BridgeReport)> {
        let mut ports: Vec<_> = self
            .served
            .iter()
            .map(|(&port, s)| (port, s.vhci_port, s.bridge.report()))
            .collect();
        ports.sort_by_key(|(port, _, _)| *port);
        ports
    }

    /// Stops the bridge of `port` (if any) and detaches its vhci port.
    pub fn release(&mut self, port: u8) {
        let Some(served) = self.served.remove(&port) else {
            return;
        };
        served.bridge.stop();
        let end = served.bridge.join();
        info!(port, vhci_port = served.vhci_port, %end, "device released");
        // vhci detaches by itself when the socket closes; this makes sure.
        self.detach(served.vhci_port);
    }

    fn detach(&self, vhci_port: u32) {
        if let Err(e) = self.vhci.detach(vhci_port) {
            // Usually: vhci already detached it (EINVAL, not connected).
            debug!(vhci_port, "detach: {}", Chain(&e));
        }
    }

    /// Follows one port event.
    pub fn on_event(&mut self, event: PortEvent) -> Next {
        match event {
            PortEvent::Connected { port, .. } if self.still_served(port) => {
                // Queued before the device was served (the conn events
                // right after connecting): nothing changed.
                debug!(port, "connect event for the device already served");
            }
            PortEvent::Connected { port, .. } => {
                // A new device replaces whatever was served there.
                self.release(port);
                self.serve_logged(port);
            }
            PortEvent::Disconnected { port } => self.release(port),
            PortEvent::ControllerConnected | PortEvent::Lagged { .. } => self.serve_all(),
            PortEvent::ControllerDisconnected => self.release_all(),
            PortEvent::ControllerDead { reason } => {
                self.release_all();
                return Next::Dead(reason);
            }
            PortEvent::Reset { .. } => {}
        }
        Next::Continue
    }

    /// True if `port`'s device is the one served: a new device starts
    /// without an address, so a served address still there means no
    /// replug happened since.
    fn still_served(&self, port: u8) -> bool {
        let Some(served) = self.served.get(&port) else {
            return false;
        };
        let here = self
            .front
            .port(port)
            .map(|p| p.connected() && p.address == Some(served.address))
            .unwrap_or(false);
        here && !served.bridge.is_finished()
    }

    /// Lets go of devices whose bridge ended by itself (vhci detached the
    /// port, or a protocol error): they stay unserved until replugged, so
    /// a device that keeps failing does not loop.
    pub fn reap(&mut self) {
        let ended: Vec<u8> = self
            .served
            .iter()
            .filter(|(_, s)| s.bridge.is_finished())
            .map(|(&p, _)| p)
            .collect();
        for port in ended {
            if let Some(served) = self.served.remove(&port) {
                let end = served.bridge.join();
                if !matches!(end, BridgeEnd::Stopped) {
                    warn!(port, %end, "vhci bridge ended; replug the device to serve it again");
                }
                self.detach(served.vhci_port);
            }
        }
    }

    /// Stops every bridge and detaches every port (SIGTERM, exit).
    pub fn release_all(&mut self) {
        let ports: Vec<u8> = self.served.keys().copied().collect();
        for port in ports {
            self.release(port);
        }
    }
}

impl<V: VhciPorts> Drop for Server<V> {
    fn drop(&mut self) {
        self.release_all();
    }
}
