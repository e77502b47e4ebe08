//! `dev-attach`: default placement, refusals, and the attach micro-states.
//!
//! See the crate documentation for the micro-state table; each `crash::point` below
//! is one row of it.

use pvusb_support::Chain;

use crate::controller::{Controller, DEFAULT_PORTS, DEFAULT_VERSION};
use crate::crash;
use crate::error::ToolError;
use crate::paths::{backend_dir, is_busid};
use crate::record::{self, DeviceRecord, Stage};
use crate::store::{in_transaction, Store, StoreError};
use crate::sysfs::{Sysfs, SysfsError};
use crate::Toolstack;

/// How the user names a host device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `hostbus.hostaddr` (`lsusb`'s Bus and Device numbers).
    BusAddr(u16, u16),
    /// Sysfs busid, e.g. `2-1.6`.
    BusId(String),
}

impl DeviceSpec {
    /// Parse `B.A` or a busid.
    pub fn parse(s: &str) -> Result<Self, ToolError> {
        if let Some((b, a)) = s.split_once('.') {
            if let (Ok(b), Ok(a)) = (b.parse(), a.parse()) {
                return Ok(DeviceSpec::BusAddr(b, a));
            }
        }
        if is_busid(s) {
            return Ok(DeviceSpec::BusId(s.to_owned()));
        }
        Err(ToolError::InvalidArgument(format!(
            "{s:?} names no device: use BUS.ADDR (lsusb numbers, e.g. 1.6), \
             hostbus=B hostaddr=A, or a busid such as 2-1.6"
        )))
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::BusAddr(b, a) => write!(f, "{b}.{a}"),
            DeviceSpec::BusId(s) => f.write_str(s),
        }
    }
}

/// Where a device sits: a port of a controller of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Place {
    /// Backend domain serving the controller.
    pub backend: u16,
    /// Guest.
    pub domid: u16,
    /// Controller devid.
    pub ctrl: u32,
    /// Port (1-based).
    pub port: u32,
}

/// Result of `dev-attach`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attached {
    /// Device.
    pub busid: String,
    /// Guest.
    pub domid: u16,
    /// Controller.
    pub ctrl: u32,
    /// Port.
    pub port: u32,
    /// A controller was created for it.
    pub created_controller: bool,
    /// An interrupted attach was finished rather than a new one started.
    pub resumed: bool,
    /// It was already there; nothing was done.
    pub already: bool,
}

/// Upper bound on controllers/ports scanned per guest in the assignment scan.
const MAX_SCAN: usize = 4096;

/// How often a default placement is chosen again after concurrent commands
/// took the chosen port.
const PLACEMENT_ROUNDS: usize = 16;

/// Outcome of writing a new attach's record.
enum Reserve {
    /// Written.
    Done,
    /// The device got a record meanwhile.
    DeviceTaken,
    /// The port holds, or is reserved for, this other device.
    PortTaken(String),
}

impl<S: Store, F: Sysfs> Toolstack<S, F> {
    /// The busid a spec names (checking the device exists).
    pub fn resolve_device(&self, spec: &DeviceSpec) -> Result<String, ToolError> {
        match spec {
            DeviceSpec::BusId(b) => {
                self.sysfs.device(b).map_err(|e| match e {
                    SysfsError::NoDevice(_) => ToolError::NoSuchDevice(b.clone()),
                    e => e.into(),
                })?;
                Ok(b.clone())
            }
            DeviceSpec::BusAddr(bus, addr) => {
                for busid in self.sysfs.busids()? {
                    let d = self.sysfs.device(&busid)?;
                    if d.busnum == *bus && d.devnum == *addr {
                        return Ok(busid);
                    }
                }
                Err(ToolError::NoSuchDevice(spec.to_string()))
            }
        }
    }

    /// Every busid in any port of any controller of any backend domain (kinds
    /// `vusb` and `qusb`), so one device is never given to two guests.
    pub fn assignments(&self) -> Result<Vec<(String, Place)>, ToolError> {
        let mut out = Vec::new();
        let st = &self.store;
        for backend in self.domains()? {
            for kind in ["vusb", "qusb"] {
                let base = format!("/local/domain/{backend}/backend/{kind}");
                for guest in st.directory(S::NO_TX, &base)?.iter().take(MAX_SCAN) {
                    let Ok(domid) = guest.parse::<u16>() else {
                        continue;
                    };
                    for dev in st
                        .directory(S::NO_TX, &format!("{base}/{guest}"))?
                        .iter()
                        .take(MAX_SCAN)
                    {
                        let Ok(ctrl) = dev.parse::<u32>() else {
                            continue;
                        };
                        let pdir = format!("{base}/{guest}/{dev}/port");
                        for p in st.directory(S::NO_TX, &pdir)?.iter().take(MAX_SCAN) {
                            let Ok(port) = p.parse::<u32>() else { continue };
                            let v = st
                                .read(S::NO_TX, &format!("{pdir}/{p}"))?
                                .unwrap_or_default();
                            if !v.is_empty() {
                                out.push((
                                    v,
                                    Place {
                                        backend,
                                        domid,
                                        ctrl,
                                        port,
                                    },
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Ports reserved by unfinished attaches: `(domid, ctrl, port, busid)`.
    fn reserved_ports(&self) -> Result<Vec<(u16, u32, u32, String)>, ToolError> {
        let mut v = Vec::new();
        for busid in record::busids(&self.store, S::NO_TX)? {
            if let Some(r) = record::read(&self.store, S::NO_TX, &busid)? {
                if let (Some(d), Some(c), Some(p), Some(Stage::AttachRecorded | Stage::Claimed)) =
                    (r.domid, r.ctrl, r.port, r.stage)
                {
                    v.push((d, c, p, busid));
                }
            }
        }
        Ok(v)
    }

    fn free_port(c: &Controller, domid: u16, reserved: &[(u16, u32, u32, String)]) -> Option<u32> {
        (1..=c.num_ports).find(|&p| {
            c.port(p).is_none()
                && !reserved
                    .iter()
                    .any(|r| r.0 == domid && r.1 == c.devid && r.2 == p)
        })
    }

    /// `dev-attach`: give a host device to a guest (see the crate doc for the
    /// placement rules and micro-states). Re-running it after an interruption
    /// finishes the interrupted attach.
    pub fn dev_attach(
        &self,
        domid: u16,
        spec: &DeviceSpec,
        ctrl: Option<u32>,
        port: Option<u32>,
    ) -> Result<Attached, ToolError> {
        let _lock = self.exclusive()?;
        if !self.domain_exists(domid)? {
            return Err(ToolError::NoSuchDomain(domid.to_string()));
        }
        let busid = self.resolve_device(spec)?;
        let device = self.sysfs.device(&busid)?;
        if device.is_hub() {
            return Err(ToolError::IsHub(busid));
        }
        self.check_policy(domid, &device)?;
        let mut result = Attached {
            busid: busid.clone(),
            domid,
            ctrl: 0,
            port: 0,
            created_controller: false,
            resumed: false,
            already: false,
        };
        if let Some(rec) = record::read(&self.store, S::NO_TX, &busid)? {
            return self.attach_with_record(rec, domid, ctrl, port, result);
        }
        if let Some((_, at)) = self.assignments()?.into_iter().find(|(b, _)| *b == busid) {
            return Err(ToolError::AlreadyAssigned {
                busid,
                domid: at.domid,
                ctrl: at.ctrl,
                port: at.port,
            });
        }
        let drivers: Vec<_> = device
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), i.driver.clone()))
            .collect();
        // The placement is computed from reads outside any transaction, then
        // re-checked inside the one that writes the record: a port another
        // command filled or reserved meanwhile sends a default placement round
        // again, and an explicit one out with PortBusy.
        let mut placed = None;
        for _ in 0..PLACEMENT_ROUNDS {
            let (c, p) = self.place(domid, ctrl, port, &mut result)?;
            let rec = DeviceRecord {
                busid: busid.clone(),
                stage: Some(Stage::AttachRecorded),
                domid: Some(domid),
                ctrl: Some(c),
                port: Some(p),
                drivers: drivers.clone(),
            };
            // Record the original drivers BEFORE touching any binding.
            match self.record_if_free(&rec)? {
                Reserve::Done => {
                    placed = Some((c, p));
                    break;
                }
                Reserve::DeviceTaken => return Err(ToolError::Concurrent { busid }),
                Reserve::PortTaken(holder) if ctrl.is_some() && port.is_some() => {
                    return Err(ToolError::PortBusy {
                        domid,
                        ctrl: c,
                        port: p,
                        busid: holder,
                    })
                }
                Reserve::PortTaken(_) => continue,
            }
        }
        let Some((c, p)) = placed else {
            return Err(ToolError::Concurrent { busid });
        };
        crash::point("attach-recorded");
        result.ctrl = c;
        result.port = p;
        self.finish_attach(&busid, domid, c, p)?;
        Ok(result)
    }

    /// Where an attach goes (see the crate doc's placement rules), from the
    /// ports and reservations seen now; [`Self::record_if_free`] re-checks it.
    fn place(
        &self,
        domid: u16,
        ctrl: Option<u32>,
        port: Option<u32>,
        result: &mut Attached,
    ) -> Result<(u32, u32), ToolError> {
        let reserved = self.reserved_ports()?;
        let (c, p) = match ctrl {
            Some(c) => {
                let ctl = self.our_controller(domid, c)?;
                let p = match port {
                    None => Self::free_port(&ctl, domid, &reserved)
                        .ok_or(ToolError::NoFreePort { domid, ctrl: c })?,
                    Some(p) => {
                        if p == 0 || p > ctl.num_ports {
                            return Err(ToolError::NoSuchPort {
                                domid,
                                ctrl: c,
                                port: p,
                                num_ports: ctl.num_ports,
                            });
                        }
                        let holder = ctl.port(p).map(str::to_owned).or_else(|| {
                            reserved
                                .iter()
                                .find(|r| r.0 == domid && r.1 == c && r.2 == p)
                                .map(|r| r.3.clone())
                        });
                        if let Some(holder) = holder {
                            return Err(ToolError::PortBusy {
                                domid,
                                ctrl: c,
                                port: p,
                                busid: holder,
                            });
                        }
                        p
                    }
                };
                (c, p)
            }
            None => {
                if port.is_some() {
                    return Err(ToolError::InvalidArgument(
                        "port= needs controller=: give both, or neither for the first free port"
                            .into(),
                    ));
                }
                let found = self
                    .controllers(domid)?
                    .iter()
                    .filter(|c| c.ours)
                    .find_map(|c| Self::free_port(c, domid, &reserved).map(|p| (c.devid, p)));
                match found {
                    Some(cp) => cp,
                    None => {
                        let devid =
                            self.create_controller(domid, None, DEFAULT_VERSION, DEFAULT_PORTS)?;
                        self.wait_connected(domid, devid)?;
                        result.created_controller = true;
                        (devid, 1)
                    }
                }
            }
        };
        Ok((c, p))
    }

    /// Writes `rec` (a new attach's record) in one transaction that re-checks,
    /// on the nodes it reads, that the device has no record and that its port
    /// is neither filled nor reserved by another record; a concurrent command
    /// that writes any of them makes the commit conflict and the check run
    /// again.
    fn record_if_free(&self, rec: &DeviceRecord) -> Result<Reserve, ToolError> {
        let (Some(domid), Some(c), Some(p)) = (rec.domid, rec.ctrl, rec.port) else {
            return Err(ToolError::Concurrent {
                busid: rec.busid.clone(),
            });
        };
        let port_path = format!("{}/port/{p}", backend_dir(self.backend_domid, domid, c));
        let outcome = in_transaction(&self.store, |tx| {
            if record::read(&self.store, tx, &rec.busid)?.is_some() {
                return Ok(Reserve::DeviceTaken);
            }
            let holder = self.store.read(tx, &port_path)?.unwrap_or_default();
            if !holder.is_empty() {
                return Ok(Reserve::PortTaken(holder));
            }
            for other in record::busids(&self.store, tx)? {
                if let Some(r) = record::read(&self.store, tx, &other)? {
                    if (r.domid, r.ctrl, r.port) == (Some(domid), Some(c), Some(p)) {
                        return Ok(Reserve::PortTaken(other));
                    }
                }
            }
            record::write_new(&self.store, tx, rec)?;
            Ok::<_, StoreError>(Reserve::Done)
        })?;
        Ok(outcome)
    }

    /// Attach of a device that already has a record: resume, no-op or refuse.
    fn attach_with_record(
        &self,
        rec: DeviceRecord,
        domid: u16,
        ctrl: Option<u32>,
        port: Option<u32>,
        mut result: Attached,
    ) -> Result<Attached, ToolError> {
        let busid = rec.busid.clone();
        let matches = rec.domid == Some(domid)
            && ctrl.is_none_or(|c| rec.ctrl == Some(c))
            && port.is_none_or(|p| rec.port == Some(p));
        let (Some(rd), Some(rc), Some(rp)) = (rec.domid, rec.ctrl, rec.port) else {
            return Err(ToolError::Pending {
                busid,
                op: "attach",
                domid,
            });
        };
        match rec.stage {
            Some(Stage::Assigned) => {
                if matches {
                    result.ctrl = rc;
                    result.port = rp;
                    result.already = true;
                    return Ok(result);
                }
                Err(ToolError::AlreadyAssigned {
                    busid,
                    domid: rd,
                    ctrl: rc,
                    port: rp,
                })
            }
            Some(Stage::AttachRecorded | Stage::Claimed) if matches => {
                // Resume only if the target still exists and is free for us.
                let c = self
                    .our_controller(domid, rc)
                    .map_err(|_| ToolError::Pending {
                        busid: busid.clone(),
                        op: "attach",
                        domid: rd,
                    })?;
                if rp == 0 || rp > c.num_ports || c.port(rp).is_some_and(|b| b != busid) {
                    return Err(ToolError::Pending {
                        busid,
                        op: "attach",
                        domid: rd,
                    });
                }
                tracing::info!(%busid, domid, ctrl = rc, port = rp, "resuming interrupted attach");
                result.ctrl = rc;
                result.port = rp;
                result.resumed = true;
                self.finish_attach(&busid, domid, rc, rp)?;
                Ok(result)
            }
            Some(st) => Err(ToolError::Pending {
                busid,
                op: st.op().unwrap_or("attach"),
                domid: rd,
            }),
            None => Err(ToolError::Pending {
                busid,
                op: "detach",
                domid: rd,
            }),
        }
    }

    /// Steps after the record exists: unbind every interface, claim, assign.
    /// Idempotent: each step checks what is already done.
    fn finish_attach(
        &self,
        busid: &str,
        domid: u16,
        ctrl: u32,
        port: u32,
    ) -> Result<(), ToolError> {
        let rec =
            record::read(&self.store, S::NO_TX, busid)?.ok_or_else(|| ToolError::Pending {
                busid: busid.to_owned(),
                op: "attach",
                domid,
            })?;
        if rec.stage == Some(Stage::AttachRecorded) {
            let device = self.sysfs.device(busid)?;
            let bound: Vec<_> = device
                .interfaces
                .iter()
                .filter(|i| i.driver.is_some())
                .collect();
            for (n, intf) in bound.iter().enumerate() {
                if let Some(drv) = &intf.driver {
                    self.sysfs.unbind(&intf.name, drv).map_err(|e| {
                        ToolError::InvalidArgument(format!(
                            "attach of {busid} stopped: unbinding {} from {drv} failed ({e}); \
                         re-run the same dev-attach, or `pvusb recover {busid}` to give it back",
                            intf.name,
                            e = Chain(&e)
                        ))
                    })?;
                }
                if n == 0 && bound.len() > 1 {
                    crash::point("attach-unbound-1");
                }
            }
            crash::point("attach-unbound");
            record::set_stage(&self.store, S::NO_TX, busid, Stage::Claimed)?;
            crash::point("attach-claimed");
        }
        let port_path = format!(
            "{}/port/{port}",
            backend_dir(self.backend_domid, domid, ctrl)
        );
        in_transaction(&self.store, |tx| {
            // The port must still exist and be empty (or ours, on a resume),
            // and the record still ours at Claimed: a command that changed
            // either meanwhile wins, and this attach stops short of the port.
            let cur = self.store.read(tx, &port_path)?;
            if !cur.as_deref().is_some_and(|b| b.is_empty() || b == busid) {
                return Ok(false);
            }
            let now = record::read(&self.store, tx, busid)?;
            if now.as_ref().and_then(|r| r.stage) != Some(Stage::Claimed)
                || now.as_ref().map(|r| (r.domid, r.ctrl, r.port))
                    != Some((Some(domid), Some(ctrl), Some(port)))
            {
                return Ok(false);
            }
            self.store.write(tx, &port_path, busid)?;
            record::set_stage(&self.store, tx, busid, Stage::Assigned)?;
            Ok::<_, StoreError>(true)
        })?
        .then_some(())
        .ok_or_else(|| ToolError::Pending {
            busid: busid.to_owned(),
            op: "attach",
            domid,
        })?;
        tracing::info!(busid, domid, ctrl, port, "device assigned");
        Ok(())
    }
}
