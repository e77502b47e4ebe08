//! Controllers (vusb devices): reading them, `ctrl-attach`, `ctrl-detach`.
//!
//! Trust: the backend directory is owned by the backend domain, so its contents
//! (`num-ports`, `port/N`) are what the toolstack acts on; the frontend directory is
//! owned by the guest and is only used to *see* controllers served by another
//! backend domain, never to decide where to write.

use std::time::Instant;

use crate::crash;
use crate::error::ToolError;
use crate::libxl_nodes::{self, CtrlNodes};
use crate::paths::{backend_dir, backend_guest_dir, frontend_dir, frontend_guest_dir, libxl_dir};
use crate::store::{in_transaction, NodeAccess, Store, StoreWatch};
use crate::sysfs::Sysfs;
use crate::Toolstack;

/// Xenbus states used here (spec 2.6).
pub mod xenbus {
    /// Initialising.
    pub const INITIALISING: u32 = 1;
    /// Connected.
    pub const CONNECTED: u32 = 4;
    /// Closing.
    pub const CLOSING: u32 = 5;
    /// Closed.
    pub const CLOSED: u32 = 6;

    /// A state's name for messages.
    pub fn name(state: Option<u32>) -> &'static str {
        match state {
            None => "absent",
            Some(0) => "Unknown",
            Some(1) => "Initialising",
            Some(2) => "InitWait",
            Some(3) => "Initialised",
            Some(4) => "Connected",
            Some(5) => "Closing",
            Some(6) => "Closed",
            Some(7) => "Reconfiguring",
            Some(8) => "Reconfigured",
            Some(_) => "invalid",
        }
    }
}

/// Most ports a controller can have (usbif `USB_MAXCHILDREN`).
pub const MAX_PORTS: u32 = 31;
/// Default number of ports.
pub const DEFAULT_PORTS: u32 = 8;
/// Default USB version.
pub const DEFAULT_VERSION: u8 = 2;
/// Highest devid considered (guest-written frontend dirs cannot make scans unbounded).
const MAX_DEVID: u32 = 1024;

/// One controller as the toolstack sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Controller {
    /// Index within the domain.
    pub devid: u32,
    /// Whether this toolstack's backend domain serves it (else: foreign, read-only).
    pub ours: bool,
    /// `backend-id` as the frontend node states it (informational).
    pub frontend_backend_id: Option<String>,
    /// `usb-ver` (1 or 2), if readable.
    pub version: Option<u8>,
    /// `num-ports`, clamped to 1..=31 (0 when unreadable).
    pub num_ports: u32,
    /// `port/1..=num_ports`; `None` is an empty port.
    pub ports: Vec<Option<String>>,
    /// Backend xenbus state.
    pub backend_state: Option<u32>,
    /// Frontend xenbus state.
    pub frontend_state: Option<u32>,
    /// Backend `online`.
    pub online: bool,
}

impl Controller {
    /// The busid in port `port` (1-based).
    pub fn port(&self, port: u32) -> Option<&str> {
        let i = usize::try_from(port.checked_sub(1)?).ok()?;
        self.ports.get(i)?.as_deref()
    }
}

/// Result of `ctrl-attach`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CtrlAttached {
    /// Guest.
    pub domid: u16,
    /// The new controller's devid.
    pub devid: u32,
}

/// Result of `ctrl-detach`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CtrlDetached {
    /// Devices given back to the host first.
    pub devices: Vec<String>,
}

fn parse_u32(v: Option<String>) -> Option<u32> {
    v?.trim().parse().ok()
}

impl<S: Store, F: Sysfs> Toolstack<S, F> {
    /// Every controller of `domid`: ours (from our backend dir) and foreign ones
    /// (only visible in the guest's frontend dir), sorted by devid.
    pub fn controllers(&self, domid: u16) -> Result<Vec<Controller>, ToolError> {
        let mut devids: Vec<u32> = Vec::new();
        for dir in [
            backend_guest_dir(self.backend_domid, domid),
            frontend_guest_dir(domid),
        ] {
            for k in self.store.directory(S::NO_TX, &dir)? {
                if let Ok(d) = k.parse::<u32>() {
                    if d <= MAX_DEVID && !devids.contains(&d) {
                        devids.push(d);
                    }
                }
            }
        }
        devids.sort_unstable();
        devids
            .into_iter()
            .map(|d| self.controller_unchecked(domid, d))
            .collect()
    }

    /// One controller, whether or not it exists (check `ours` / states).
    fn controller_unchecked(&self, domid: u16, devid: u32) -> Result<Controller, ToolError> {
        let be = backend_dir(self.backend_domid, domid, devid);
        let fe = frontend_dir(domid, devid);
        let rd = |p: String| self.store.read(S::NO_TX, &p);
        let ours = rd(be.clone())?.is_some();
        let num_ports = if ours {
            parse_u32(rd(format!("{be}/num-ports"))?)
                .filter(|n| (1..=MAX_PORTS).contains(n))
                .unwrap_or(0)
        } else {
            0
        };
        let mut ports = Vec::new();
        for p in 1..=num_ports {
            let v = rd(format!("{be}/port/{p}"))?.unwrap_or_default();
            ports.push((!v.is_empty()).then_some(v));
        }
        Ok(Controller {
            devid,
            ours,
            frontend_backend_id: rd(format!("{fe}/backend-id"))?,
            version: parse_u32(rd(format!("{be}/usb-ver"))?).and_then(|v| u8::try_from(v).ok()),
            num_ports,
            ports,
            backend_state: parse_u32(rd(format!("{be}/state"))?),
            frontend_state: parse_u32(rd(format!("{fe}/state"))?),
            online: rd(format!("{be}/online"))?.as_deref() == Some("1"),
        })
    }

    /// One of our controllers, or the error naming why it cannot be used.
    pub fn our_controller(&self, domid: u16, devid: u32) -> Result<Controller, ToolError> {
        let c = self.controller_unchecked(domid, devid)?;
        if c.ours {
            return Ok(c);
        }
        match c.frontend_backend_id {
            Some(backend) if c.frontend_state.is_some() => Err(ToolError::ForeignBackend {
                domid,
                ctrl: devid,
                backend,
                ours: self.backend_domid,
            }),
            _ => Err(ToolError::NoSuchController { domid, ctrl: devid }),
        }
    }

    /// `ctrl-attach`: create a controller and wait until both ends are Connected.
    pub fn ctrl_attach(
        &self,
        domid: u16,
        version: u8,
        ports: u32,
    ) -> Result<CtrlAttached, ToolError> {
        let _lock = self.exclusive()?;
        let devid = self.create_controller(domid, None, version, ports)?;
        self.wait_connected(domid, devid)?;
        Ok(CtrlAttached { domid, devid })
    }

    /// Write both nodes of a new controller in one transaction (devid `want`, or the
    /// first free one). Does not wait.
    pub(crate) fn create_controller(
        &self,
        domid: u16,
        want: Option<u32>,
        version: u8,
        ports: u32,
    ) -> Result<u32, ToolError> {
        if !(1..=2).contains(&version) {
            return Err(ToolError::InvalidArgument(format!(
                "version={version} is not a USB controller version: use version=1 or version=2"
            )));
        }
        if !(1..=MAX_PORTS).contains(&ports) {
            return Err(ToolError::InvalidArgument(format!(
                "ports={ports} is out of range: use ports=1..{MAX_PORTS}"
            )));
        }
        if !self.domain_exists(domid)? {
            return Err(ToolError::NoSuchDomain(domid.to_string()));
        }
        let back = self.backend_domid;
        let devid = in_transaction(&self.store, |tx| {
            // libxl's entry counts too: it may hold a controller of another kind
            // (an HVM guest's emulated one has no backend or frontend node).
            let used = |d: u32| -> Result<bool, _> {
                Ok(self.store.read(tx, &backend_dir(back, domid, d))?.is_some()
                    || self.store.read(tx, &frontend_dir(domid, d))?.is_some()
                    || self.store.read(tx, &libxl_dir(domid, d))?.is_some())
            };
            // Never write over existing nodes: a wanted devid must be unused, and
            // when every devid up to MAX_DEVID is taken there is none to pick.
            let devid = match want {
                Some(d) => d,
                None => {
                    let mut d = 0;
                    while d < MAX_DEVID && used(d)? {
                        d += 1;
                    }
                    d
                }
            };
            if used(devid)? {
                return Ok(Err(devid));
            }
            let be = backend_dir(back, domid, devid);
            let fe = frontend_dir(domid, devid);
            // Every node gets its permissions explicitly, so nothing depends on the
            // server's inheritance rules: backend owned by the backend domain and
            // readable by the guest; frontend owned by the guest, readable by us.
            let bperm = [(domid, NodeAccess::Read)];
            let fperm = [(back, NodeAccess::Read)];
            let bw = |key: &str, val: &str| -> Result<(), _> {
                let p = if key.is_empty() {
                    be.clone()
                } else {
                    format!("{be}/{key}")
                };
                self.store.write(tx, &p, val)?;
                self.store.set_perms(tx, &p, back, &bperm)
            };
            bw("", "")?;
            bw("frontend", &fe)?;
            bw("frontend-id", &domid.to_string())?;
            bw("online", "1")?;
            bw("state", &xenbus::INITIALISING.to_string())?;
            // "pv" is libxl's name for a vusb-kind backend: stock `xl usb-list` can
            // read it, and neither xen-hcd nor our daemon interprets it.
            bw("type", "pv")?;
            bw("usb-ver", &version.to_string())?;
            bw("num-ports", &ports.to_string())?;
            bw("port", "")?;
            for p in 1..=ports {
                bw(&format!("port/{p}"), "")?;
            }
            // The frontend node last, in the same transaction: usb-ver and num-ports
            // are visible no later than it (xen-hcd reads them at probe).
            let fw = |key: &str, val: &str| -> Result<(), _> {
                let p = if key.is_empty() {
                    fe.clone()
                } else {
                    format!("{fe}/{key}")
                };
                self.store.write(tx, &p, val)?;
                self.store.set_perms(tx, &p, domid, &fperm)
            };
            fw("", "")?;
            fw("backend", &be)?;
            fw("backend-id", &back.to_string())?;
            fw("state", &xenbus::INITIALISING.to_string())?;
            // libxl's bookkeeping, so `xl usb-list` and `xl destroy` see it; in the
            // same transaction, so it exists exactly while the controller does.
            let nodes = CtrlNodes {
                backend: &be,
                frontend: &fe,
                domid,
                version,
                ports,
            };
            libxl_nodes::write(&self.store, tx, devid, &nodes)?;
            Ok(Ok(devid))
        })?
        .map_err(|ctrl| ToolError::ControllerIndexInUse { domid, ctrl })?;
        tracing::info!(domid, devid, version, ports, "controller nodes written");
        crash::point("ctrl-attach-written");
        Ok(devid)
    }

    /// Wait until backend and frontend of a controller are both Connected.
    pub fn wait_connected(&self, domid: u16, devid: u32) -> Result<(), ToolError> {
        let be = format!("{}/state", backend_dir(self.backend_domid, domid, devid));
        let fe = format!("{}/state", frontend_dir(domid, devid));
        let ok = self.wait_states(&be, &fe, |b, f| {
            b == Some(xenbus::CONNECTED) && f == Some(xenbus::CONNECTED)
        })?;
        ok.map_err(|saw| ToolError::Timeout {
            what: format!("controller {devid} of domain {domid} Connected"),
            secs: self.timeout.as_secs(),
            saw,
            hint: format!(
                "the controller exists; check that `pvusb backend` runs and the guest has \
                 xen-hcd, or remove it with `pvusb ctrl-detach {domid} {devid}`"
            ),
        })
    }

    /// Wait until `done(backend state, frontend state)`; `Ok(Err(seen))` on timeout.
    fn wait_states(
        &self,
        be: &str,
        fe: &str,
        done: impl Fn(Option<u32>, Option<u32>) -> bool,
    ) -> Result<Result<(), String>, ToolError> {
        let wb = self.store.watch(be)?;
        let wf = self.store.watch(fe)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let b = parse_u32(self.store.read(S::NO_TX, be)?);
            let f = parse_u32(self.store.read(S::NO_TX, fe)?);
            if done(b, f) {
                return Ok(Ok(()));
            }
            if Instant::now() >= deadline {
                let saw = format!("backend {}, frontend {}", xenbus::name(b), xenbus::name(f));
                return Ok(Err(saw));
            }
            // Two watches, one thread: wait briefly on each in turn; the states are
            // re-read after every wake-up, so a missed event only costs a slice.
            let slice = Instant::now() + std::time::Duration::from_millis(25);
            let until = slice.min(deadline);
            if !wb.wait_until(until) {
                wf.wait_until(
                    (Instant::now() + std::time::Duration::from_millis(25)).min(deadline),
                );
            }
        }
    }

    /// `ctrl-detach`: give every device back, then close and remove the controller.
    /// `force` removes the nodes without waiting for Closed (dead or stuck guests).
    pub fn ctrl_detach(
        &self,
        domid: u16,
        devid: u32,
        force: bool,
    ) -> Result<CtrlDetached, ToolError> {
        let _lock = self.exclusive()?;
        let c = self.our_controller(domid, devid)?;
        let mut devices = Vec::new();
        // Half-done attaches aimed at this controller would point at nothing.
        for busid in crate::record::busids(&self.store, S::NO_TX)? {
            if let Some(r) = crate::record::read(&self.store, S::NO_TX, &busid)? {
                let attaching = matches!(r.stage.and_then(|s| s.op()), Some("attach"));
                if attaching && r.domid == Some(domid) && r.ctrl == Some(devid) {
                    self.recover_device(&busid)?;
                    devices.push(busid);
                }
            }
        }
        for (i, slot) in c.ports.iter().enumerate() {
            if slot.is_some() {
                let port = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
                let d = self.dev_detach(domid, devid, port)?;
                devices.push(d.busid);
            }
        }
        crash::point("ctrl-detach-devices-done");
        let be = backend_dir(self.backend_domid, domid, devid);
        in_transaction(&self.store, |tx| {
            self.store.write(tx, &format!("{be}/online"), "0")?;
            self.store
                .write(tx, &format!("{be}/state"), &xenbus::CLOSING.to_string())
        })?;
        crash::point("ctrl-detach-closing");
        if !force && self.domain_exists(domid)? {
            let fe = format!("{}/state", frontend_dir(domid, devid));
            let waited = self.wait_states(&format!("{be}/state"), &fe, |b, _| {
                b == Some(xenbus::CLOSED)
            })?;
            waited.map_err(|saw| ToolError::Timeout {
                what: format!("controller {devid} of domain {domid} Closed"),
                secs: self.timeout.as_secs(),
                saw,
                hint: format!(
                    "its devices are detached and it is closing; re-run the same command, or \
                     `pvusb ctrl-detach {domid} {devid} --force` to remove it anyway"
                ),
            })?;
        }
        crash::point("ctrl-detach-closed");
        self.remove_controller_nodes(domid, devid)?;
        tracing::info!(domid, devid, "controller removed");
        Ok(CtrlDetached { devices })
    }

    /// Remove both nodes of a controller and libxl's entry of it (and the guest's
    /// empty backend dir), in one transaction.
    pub(crate) fn remove_controller_nodes(&self, domid: u16, devid: u32) -> Result<(), ToolError> {
        let back = self.backend_domid;
        in_transaction(&self.store, |tx| {
            self.store.rm(tx, &backend_dir(back, domid, devid))?;
            self.store.rm(tx, &frontend_dir(domid, devid))?;
            libxl_nodes::remove(&self.store, tx, domid, devid)?;
            let guest = backend_guest_dir(back, domid);
            if self.store.directory(tx, &guest)?.is_empty() {
                self.store.rm(tx, &guest)?;
            }
            Ok(())
        })?;
        Ok(())
    }
}
