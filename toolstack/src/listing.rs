//! `list` and `assignable-list`: what each device's state truly is, derived from
//! sysfs (interface drivers) and xenstore (ports, records) every time — never
//! cached — so an interrupted command's leftovers are shown as they are.

use crate::attach::Place;
use crate::controller::{xenbus, Controller};
use crate::error::ToolError;
use crate::record::{self, DeviceRecord, Stage};
use crate::store::Store;
use crate::sysfs::{Sysfs, SysfsError, UsbDevice};
use crate::Toolstack;

/// One of the four assignment states, or a visible state in between.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum DeviceState {
    /// 1: bound to host drivers (the list may be empty for a driverless device).
    Host {
        /// Drivers bound now.
        drivers: Vec<String>,
    },
    /// 2: no interface has a driver.
    NoDriver,
    /// Between 1/2 and 3: some interfaces unbound, others still on host drivers.
    Wedged {
        /// Interfaces without a driver.
        unbound: usize,
        /// Interfaces in all.
        of: usize,
    },
    /// 3: claimed for the pvusb backend, in no port.
    Claimed,
    /// 4: in a port of a guest's controller.
    Assigned(Place),
    /// Leaving 4: claim withdrawn, still in its port.
    Releasing(Place),
    /// Named in xenstore but not present on the host.
    Absent,
}

impl std::fmt::Display for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceState::Host { drivers } if drivers.is_empty() => f.write_str("host (no driver)"),
            DeviceState::Host { drivers } => write!(f, "host ({})", drivers.join(",")),
            DeviceState::NoDriver => f.write_str("no driver"),
            DeviceState::Wedged { unbound, of } => {
                write!(
                    f,
                    "wedged: partially claimed ({unbound} of {of} interfaces unbound)"
                )
            }
            DeviceState::Claimed => f.write_str("claimed but unassigned"),
            DeviceState::Assigned(p) => {
                write!(
                    f,
                    "assigned to domain {} controller {} port {}",
                    p.domid, p.ctrl, p.port
                )
            }
            DeviceState::Releasing(p) => write!(
                f,
                "releasing from domain {} controller {} port {}",
                p.domid, p.ctrl, p.port
            ),
            DeviceState::Absent => f.write_str("absent from the host"),
        }
    }
}

/// One device with its state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceStatus {
    /// Sysfs name.
    pub busid: String,
    /// What sysfs says about it (absent devices have none).
    pub device: Option<UsbDevice>,
    /// The state.
    pub state: DeviceState,
    /// The pvusb record's stage, if any.
    pub stage: Option<Stage>,
    /// What to do when the state is in between.
    pub hint: Option<String>,
}

impl std::fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<10}", self.busid)?;
        if let Some(d) = &self.device {
            write!(
                f,
                " {:03}.{:03} {:04x}:{:04x} {} {}",
                d.busnum,
                d.devnum,
                d.vendor,
                d.product,
                d.manufacturer.as_deref().unwrap_or("-"),
                d.product_name.as_deref().unwrap_or("-")
            )?;
        }
        write!(f, "  [{}]", self.state)?;
        if let Some(h) = &self.hint {
            write!(f, " -- {h}")?;
        }
        Ok(())
    }
}

/// `list DOM` output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DomainListing {
    /// Guest.
    pub domid: u16,
    /// Its controllers with their ports.
    pub controllers: Vec<ControllerListing>,
    /// Devices with an unfinished attach/detach aimed at this guest and in no port.
    pub pending: Vec<DeviceStatus>,
}

/// One controller in `list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ControllerListing {
    /// The controller.
    pub controller: Controller,
    /// `(port, device)` for every occupied port.
    pub devices: Vec<(u32, DeviceStatus)>,
}

impl std::fmt::Display for DomainListing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "domain {}", self.domid)?;
        for cl in &self.controllers {
            let c = &cl.controller;
            if !c.ours {
                writeln!(
                    f,
                    "  controller {}: served by backend domain {} (not ours)",
                    c.devid,
                    c.frontend_backend_id.as_deref().unwrap_or("?")
                )?;
                continue;
            }
            writeln!(
                f,
                "  controller {}: usb-ver {} ports {} backend {} frontend {}{}",
                c.devid,
                c.version.map_or("?".to_owned(), |v| v.to_string()),
                c.num_ports,
                xenbus::name(c.backend_state),
                xenbus::name(c.frontend_state),
                if c.online { "" } else { " offline" }
            )?;
            for (port, d) in &cl.devices {
                writeln!(f, "    port {port}: {d}")?;
            }
        }
        for d in &self.pending {
            writeln!(f, "  unfinished: {d}")?;
        }
        Ok(())
    }
}

impl<S: Store, F: Sysfs> Toolstack<S, F> {
    /// The state of one device from sysfs, its record and the ports naming it.
    pub fn device_status(
        &self,
        busid: &str,
        ports: &[(String, Place)],
    ) -> Result<DeviceStatus, ToolError> {
        let device = match self.sysfs.device(busid) {
            Ok(d) => Some(d),
            Err(SysfsError::NoDevice(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let rec = record::read(&self.store, S::NO_TX, busid)?;
        let place = ports.iter().find(|(b, _)| b == busid).map(|(_, p)| *p);
        Ok(derive(busid, device, rec.as_ref(), place))
    }

    /// `list DOM`.
    pub fn list(&self, domid: u16) -> Result<DomainListing, ToolError> {
        let ports = self.assignments()?;
        let mut controllers = Vec::new();
        for c in self.controllers(domid)? {
            let mut devices = Vec::new();
            for (i, slot) in c.ports.iter().enumerate() {
                if let Some(b) = slot {
                    let port = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
                    devices.push((port, self.device_status(b, &ports)?));
                }
            }
            controllers.push(ControllerListing {
                controller: c,
                devices,
            });
        }
        let mut pending = Vec::new();
        for b in record::busids(&self.store, S::NO_TX)? {
            let Some(r) = record::read(&self.store, S::NO_TX, &b)? else {
                continue;
            };
            let in_port = ports.iter().any(|(pb, _)| *pb == b);
            if r.domid == Some(domid) && !in_port {
                pending.push(self.device_status(&b, &ports)?);
            }
        }
        Ok(DomainListing {
            domid,
            controllers,
            pending,
        })
    }

    /// `assignable-list`: host devices that are not hubs and not in any port,
    /// including those in between states (claimed, wedged).
    pub fn assignable_list(&self) -> Result<Vec<DeviceStatus>, ToolError> {
        let ports = self.assignments()?;
        let mut out = Vec::new();
        for busid in self.sysfs.busids()? {
            let st = self.device_status(&busid, &ports)?;
            let hub = st.device.as_ref().is_some_and(UsbDevice::is_hub);
            let in_port = matches!(
                st.state,
                DeviceState::Assigned(_) | DeviceState::Releasing(_)
            );
            if !hub && !in_port {
                out.push(st);
            }
        }
        Ok(out)
    }
}

fn derive(
    busid: &str,
    device: Option<UsbDevice>,
    rec: Option<&DeviceRecord>,
    place: Option<Place>,
) -> DeviceStatus {
    let stage = rec.and_then(|r| r.stage);
    let recover = format!("run `pvusb recover {busid}`");
    let mut hint = None;
    let state = match (&device, stage) {
        (None, _) => {
            if rec.is_some() {
                hint = Some(recover.clone());
            }
            DeviceState::Absent
        }
        (Some(_), Some(Stage::DetachReleasing)) if place.is_some() => {
            hint = Some(format!("detach interrupted: {recover}"));
            place.map_or(DeviceState::Claimed, DeviceState::Releasing)
        }
        (Some(_), Some(Stage::Assigned)) if place.is_some() => {
            place.map_or(DeviceState::Claimed, DeviceState::Assigned)
        }
        (Some(_), None) if place.is_some() => {
            hint = Some("assigned without a pvusb record (another toolstack?)".to_owned());
            place.map_or(DeviceState::Claimed, DeviceState::Assigned)
        }
        (Some(_), Some(Stage::Claimed)) => {
            let to = rec
                .and_then(|r| r.domid)
                .map_or(String::new(), |d| format!(" to domain {d}"));
            hint = Some(format!(
                "attach{to} interrupted: re-run dev-attach to finish, or {recover}"
            ));
            DeviceState::Claimed
        }
        (Some(d), _) => {
            let total = d.interfaces.len();
            let unbound = d.interfaces.iter().filter(|i| i.driver.is_none()).count();
            let drivers: Vec<String> = d
                .interfaces
                .iter()
                .filter_map(|i| i.driver.clone())
                .collect();
            match stage {
                Some(Stage::AttachRecorded) => {
                    let to = rec
                        .and_then(|r| r.domid)
                        .map_or(String::new(), |d| format!(" to domain {d}"));
                    hint = Some(format!(
                        "attach{to} interrupted: re-run dev-attach to finish, or {recover}"
                    ));
                }
                Some(Stage::DetachRebinding | Stage::DetachReleasing) => {
                    hint = Some(format!("detach interrupted: {recover}"));
                }
                Some(Stage::Assigned) => {
                    hint = Some(format!(
                        "record names a port that no longer holds it: {recover}"
                    ));
                }
                _ => {}
            }
            // A device whose interfaces the host left partly without drivers is
            // ordinary; "wedged" is only reported while an operation is unfinished.
            // Mixed means: some of the interfaces the operation must move have
            // moved and others have not.
            let current = |i: &str| {
                d.interfaces
                    .iter()
                    .find(|x| x.name == i)
                    .and_then(|x| x.driver.clone())
            };
            let recorded = rec.map_or(&[][..], |r| r.drivers.as_slice());
            let moved = |(i, orig): &&(String, Option<String>)| match stage {
                Some(Stage::AttachRecorded) => current(i).is_none(),
                _ => current(i) == *orig,
            };
            let movable: Vec<_> = recorded.iter().filter(|(_, o)| o.is_some()).collect();
            let done = movable.iter().filter(|x| moved(x)).count();
            let mixed = stage.is_some() && done > 0 && done < movable.len();
            if mixed {
                DeviceState::Wedged { unbound, of: total }
            } else if total > 0 && unbound == total {
                DeviceState::NoDriver
            } else {
                DeviceState::Host { drivers }
            }
        }
    };
    DeviceStatus {
        busid: busid.to_owned(),
        device,
        state,
        stage,
        hint,
    }
}
