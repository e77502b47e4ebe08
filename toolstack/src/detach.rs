//! `dev-detach` and `recover`: the detach micro-states, and the roll-back of
//! interrupted attaches (which joins the detach path at its rebinding step).
//!
//! Detach order (the micro-state table in lib.rs): withdraw the claim so the
//! backend releases the device while it is still listed, then empty `port/N`,
//! then give every interface back to its original driver — trying all of them
//! even if one fails — and only then drop the record.

use pvusb_support::Chain;

use crate::crash;
use crate::error::ToolError;
use crate::paths::backend_dir;
use crate::record::{self, DeviceRecord, Stage};
use crate::store::{in_transaction, Store, StoreError};
use crate::sysfs::{Sysfs, SysfsError};
use crate::Toolstack;

/// Result of `dev-detach`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Detached {
    /// Device given back.
    pub busid: String,
    /// Interfaces rebound to their original drivers.
    pub rebound: Vec<String>,
    /// How the backend let go of it (`None`: its port was already empty).
    pub release: Option<Release>,
}

/// How the backend daemon let go of a device before detach gave it back to
/// the host drivers (the release handshake: the daemon marks the record
/// `opened` while it holds the device and removes the mark once it has
/// answered every request on it and closed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Release {
    /// The daemon acknowledged: the device is closed.
    Confirmed,
    /// No daemon held it open (none runs, or the port's device never opened).
    NotOpen,
    /// The daemon that held it (this pid) no longer runs: nothing to wait for.
    DaemonGone(u32),
    /// No acknowledgement within the timeout: given back anyway.
    TimedOut,
}

impl Release {
    /// A line for the user when the handshake did not confirm the release.
    pub fn warning(self, busid: &str) -> Option<String> {
        match self {
            Release::Confirmed | Release::NotOpen => None,
            Release::DaemonGone(pid) => Some(format!(
                "note: the backend daemon that held {busid} (pid {pid}) is not running; gave it back without its acknowledgement"
            )),
            Release::TimedOut => Some(format!(
                "warning: the backend daemon did not acknowledge releasing {busid} in time; gave it back anyway (check the daemon's log)"
            )),
        }
    }
}

/// What `recover` did to one device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Recovered {
    /// Nothing was half-done.
    Consistent,
    /// An interrupted attach was rolled back: the device is back on the host.
    AttachRolledBack,
    /// An interrupted detach was finished: the device is back on the host.
    DetachFinished,
    /// A record pointing at a port that no longer holds the device was cleared.
    StaleRecordCleared,
}

/// One device's (or dead domain's) outcome in `recover --all`.
pub type RecoverOutcome = (String, Result<Recovered, ToolError>);

/// One dead domain's outcome in `reap_dead_domains`: the devices given back.
pub type ReapOutcome = (u16, Result<Vec<String>, ToolError>);

impl<S: Store, F: Sysfs> Toolstack<S, F> {
    /// `dev-detach DOM CTRL PORT`.
    pub fn dev_detach(&self, domid: u16, ctrl: u32, port: u32) -> Result<Detached, ToolError> {
        let _lock = self.exclusive()?;
        let c = self.our_controller(domid, ctrl)?;
        let busid = match c.port(port) {
            Some(b) => b.to_owned(),
            None => {
                // Port already emptied by an interrupted detach: find its record.
                let mut pending = None;
                for b in record::busids(&self.store, S::NO_TX)? {
                    if let Some(r) = record::read(&self.store, S::NO_TX, &b)? {
                        if r.stage == Some(Stage::DetachRebinding)
                            && (r.domid, r.ctrl, r.port) == (Some(domid), Some(ctrl), Some(port))
                        {
                            pending = Some(b);
                        }
                    }
                }
                pending.ok_or(ToolError::PortEmpty { domid, ctrl, port })?
            }
        };
        if !crate::paths::is_busid(&busid) {
            return Err(ToolError::InvalidArgument(format!(
                "port {port} of controller {ctrl} of domain {domid} holds {busid:?}, which is not a busid: \
                 clear it with xenstore-write {}/port/{port} \"\"",
                backend_dir(self.backend_domid, domid, ctrl)
            )));
        }
        self.detach_device(&busid, Some((domid, ctrl, port)))
    }

    /// `dev-detach DOM BUSID`.
    pub fn dev_detach_busid(&self, domid: u16, busid: &str) -> Result<Detached, ToolError> {
        let _lock = self.exclusive()?;
        if let Some(r) = record::read(&self.store, S::NO_TX, busid)? {
            if r.domid == Some(domid) {
                let place = match (r.ctrl, r.port) {
                    (Some(c), Some(p)) => Some((domid, c, p)),
                    _ => None,
                };
                return self.detach_device(busid, place);
            }
        }
        for (b, at) in self.assignments()? {
            if b == busid && at.domid == domid && at.backend == self.backend_domid {
                return self.detach_device(busid, Some((domid, at.ctrl, at.port)));
            }
        }
        Err(ToolError::InvalidArgument(format!(
            "device {busid} is not assigned to domain {domid}: see `pvusb list {domid}`"
        )))
    }

    /// Drive a device from any stage to the host. `place` is where it is assigned
    /// when there is no record (a port written by another tool).
    pub(crate) fn detach_device(
        &self,
        busid: &str,
        place: Option<(u16, u32, u32)>,
    ) -> Result<Detached, ToolError> {
        let rec = match record::read(&self.store, S::NO_TX, busid)? {
            Some(r) => r,
            None => {
                // Assigned without a pvusb record: original drivers are unknown, so
                // the device ends without a driver (state 2), which we report.
                let (d, c, p) = place.ok_or_else(|| {
                    ToolError::InvalidArgument(format!(
                        "device {busid} has no pvusb record and no port: nothing to detach"
                    ))
                })?;
                let r = DeviceRecord {
                    busid: busid.to_owned(),
                    stage: Some(Stage::Assigned),
                    domid: Some(d),
                    ctrl: Some(c),
                    port: Some(p),
                    drivers: Vec::new(),
                };
                in_transaction(&self.store, |tx| record::write_new(&self.store, tx, &r))?;
                r
            }
        };
        let mut stage = rec.stage.unwrap_or(Stage::DetachRebinding);
        if stage == Stage::Assigned {
            record::set_stage(&self.store, S::NO_TX, busid, Stage::DetachReleasing)?;
            stage = Stage::DetachReleasing;
            tracing::info!(busid, "claim withdrawn; backend releases the device");
            crash::point("detach-releasing");
        }
        let mut release = None;
        if stage == Stage::DetachReleasing {
            let r = self.wait_released(busid)?;
            if let Some(w) = r.warning(busid) {
                tracing::warn!(busid, "{w}");
            }
            release = Some(r);
            crash::point("detach-released");
            let port_path = match (rec.domid, rec.ctrl, rec.port) {
                (Some(d), Some(c), Some(p)) => Some(format!(
                    "{}/port/{p}",
                    backend_dir(self.backend_domid, d, c)
                )),
                _ => None,
            };
            in_transaction(&self.store, |tx| {
                if let Some(pp) = &port_path {
                    // Only empty the port if it still names this device.
                    if self.store.read(tx, pp)?.as_deref() == Some(busid) {
                        self.store.write(tx, pp, "")?;
                    }
                }
                record::set_stage(&self.store, tx, busid, Stage::DetachRebinding)
            })?;
            crash::point("detach-port-cleared");
        }
        // Attach stages join here: nothing was ever in a port.
        let rec = record::read(&self.store, S::NO_TX, busid)?.unwrap_or(rec);
        if rec.stage != Some(Stage::DetachRebinding) {
            record::set_stage(&self.store, S::NO_TX, busid, Stage::DetachRebinding)?;
        }
        let rebound = self.rebind_all(&rec)?;
        crash::point("detach-rebound");
        record::remove(&self.store, S::NO_TX, busid)?;
        tracing::info!(busid, "device given back to the host");
        Ok(Detached {
            busid: busid.to_owned(),
            rebound,
            release,
        })
    }

    /// Waits (at most the toolstack's timeout) until the daemon holding
    /// `busid` open acknowledges its release by removing the record's
    /// `opened` mark; returns at once when no daemon holds it.
    fn wait_released(&self, busid: &str) -> Result<Release, ToolError> {
        let path = format!("{}/{}", crate::paths::record_dir(busid), record::OPENED);
        let deadline = std::time::Instant::now() + self.timeout;
        let mut waited = false;
        loop {
            let Some(holder) = self.store.read(S::NO_TX, &path)? else {
                return Ok(if waited {
                    Release::Confirmed
                } else {
                    Release::NotOpen
                });
            };
            if let Ok(pid) = holder.trim().parse::<u32>() {
                if !std::path::Path::new("/proc").join(pid.to_string()).exists() {
                    return Ok(Release::DaemonGone(pid));
                }
            }
            if std::time::Instant::now() >= deadline {
                return Ok(Release::TimedOut);
            }
            waited = true;
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Give every recorded interface back to its original driver, trying all of
    /// them; the error names every failure.
    fn rebind_all(&self, rec: &DeviceRecord) -> Result<Vec<String>, ToolError> {
        let busid = &rec.busid;
        match self.sysfs.device(busid) {
            Err(SysfsError::NoDevice(_)) => {
                // Unplugged: a replug gets fresh host drivers from the kernel.
                tracing::info!(busid, "device is gone from the host; nothing to rebind");
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        let mut rebound = Vec::new();
        let mut failed = Vec::new();
        let mut done = 0usize;
        for (intf, original) in &rec.drivers {
            let current = match self.sysfs.interface_driver(intf) {
                Ok(c) => c,
                Err(e) => {
                    failed.push((intf.clone(), original.clone(), Chain(&e).to_string()));
                    continue;
                }
            };
            if current == *original {
                continue;
            }
            let step = (|| -> Result<(), SysfsError> {
                if let Some(cur) = &current {
                    // Typically usbfs, left by a backend that has not released yet.
                    self.sysfs.unbind(intf, cur)?;
                }
                if let Some(orig) = original {
                    self.sysfs.bind(intf, orig)?;
                }
                Ok(())
            })();
            match step {
                Ok(()) => {
                    rebound.push(intf.clone());
                    done += 1;
                    if done == 1 && rec.drivers.len() > 1 {
                        crash::point("detach-rebound-1");
                    }
                }
                Err(e) => failed.push((intf.clone(), original.clone(), Chain(&e).to_string())),
            }
        }
        if failed.is_empty() {
            return Ok(rebound);
        }
        let list: Vec<String> = failed
            .iter()
            .map(|(i, d, why)| format!("{i} ({}: {why})", d.as_deref().unwrap_or("no driver")))
            .collect();
        let mods: Vec<&str> = failed.iter().filter_map(|(_, d, _)| d.as_deref()).collect();
        Err(ToolError::Rebind {
            busid: busid.clone(),
            failed: list.join(", "),
            hint: if mods.is_empty() {
                "retry".to_owned()
            } else {
                format!("load the driver (modprobe {}) or retry", mods.join(" "))
            },
        })
    }

    /// `recover DEVICE`: bring one device to a stable state. Interrupted attaches
    /// are rolled back (re-run `dev-attach` to finish one instead); interrupted
    /// detaches are finished; records left without their port are cleared.
    pub fn recover_device(&self, busid: &str) -> Result<Recovered, ToolError> {
        let _lock = self.exclusive()?;
        let Some(rec) = record::read(&self.store, S::NO_TX, busid)? else {
            return Ok(Recovered::Consistent);
        };
        let outcome = match rec.stage {
            Some(Stage::Assigned) => {
                if self.record_port_holds(&rec)? {
                    return Ok(Recovered::Consistent);
                }
                // Its port is gone or holds something else: nothing points at it.
                record::set_stage(&self.store, S::NO_TX, busid, Stage::DetachRebinding)?;
                Recovered::StaleRecordCleared
            }
            Some(Stage::AttachRecorded | Stage::Claimed) => {
                record::set_stage(&self.store, S::NO_TX, busid, Stage::DetachRebinding)?;
                Recovered::AttachRolledBack
            }
            Some(Stage::DetachReleasing | Stage::DetachRebinding) | None => {
                Recovered::DetachFinished
            }
        };
        self.detach_device(busid, None)?;
        Ok(outcome)
    }

    fn record_port_holds(&self, rec: &DeviceRecord) -> Result<bool, StoreError> {
        let (Some(d), Some(c), Some(p)) = (rec.domid, rec.ctrl, rec.port) else {
            return Ok(false);
        };
        let path = format!("{}/port/{p}", backend_dir(self.backend_domid, d, c));
        Ok(self.store.read(S::NO_TX, &path)?.as_deref() == Some(rec.busid.as_str()))
    }

    /// `recover --all`: every device with a record, after reaping dead domains.
    /// Every device is tried; each gets its own outcome.
    pub fn recover_all(&self) -> Result<Vec<RecoverOutcome>, ToolError> {
        let _lock = self.exclusive()?;
        let mut out = Vec::new();
        for (domid, res) in self.reap_dead_domains()? {
            if let Err(e) = res {
                out.push((format!("domain {domid}"), Err(e)));
            }
        }
        for busid in record::busids(&self.store, S::NO_TX)? {
            let r = self.recover_device(&busid);
            out.push((busid, r));
        }
        Ok(out)
    }

    /// For every guest with controllers on our backend whose `/local/domain/<id>` is
    /// gone: give its devices back to the host and remove its controllers (forced).
    /// Half-done attaches aimed at dead guests are rolled back too. The backend
    /// daemon calls this on `@releaseDomain`.
    pub fn reap_dead_domains(&self) -> Result<Vec<ReapOutcome>, ToolError> {
        let _lock = self.exclusive()?;
        let mut out = Vec::new();
        let base = format!("/local/domain/{}/backend/vusb", self.backend_domid);
        let mut guests: Vec<u16> = self
            .store
            .directory(S::NO_TX, &base)?
            .iter()
            .filter_map(|g| g.parse().ok())
            .collect();
        for busid in record::busids(&self.store, S::NO_TX)? {
            if let Some(d) = record::read(&self.store, S::NO_TX, &busid)?.and_then(|r| r.domid) {
                if !guests.contains(&d) {
                    guests.push(d);
                }
            }
        }
        guests.sort_unstable();
        for domid in guests {
            if self.domain_exists(domid)? {
                continue;
            }
            out.push((domid, self.reap_domain(domid)));
        }
        Ok(out)
    }

    fn reap_domain(&self, domid: u16) -> Result<Vec<String>, ToolError> {
        tracing::info!(domid, "domain is gone: removing its controllers");
        let mut devices = Vec::new();
        for busid in record::busids(&self.store, S::NO_TX)? {
            if record::read(&self.store, S::NO_TX, &busid)?.is_some_and(|r| r.domid == Some(domid))
            {
                self.recover_any(&busid)?;
                devices.push(busid);
            }
        }
        for c in self.controllers(domid)?.into_iter().filter(|c| c.ours) {
            let cd = self.ctrl_detach(domid, c.devid, true)?;
            devices.extend(cd.devices);
        }
        Ok(devices)
    }

    /// Give a device back whatever its stage (used when its guest is gone).
    fn recover_any(&self, busid: &str) -> Result<(), ToolError> {
        if let Some(r) = record::read(&self.store, S::NO_TX, busid)? {
            if r.stage == Some(Stage::Assigned) {
                self.detach_device(busid, None)?;
                return Ok(());
            }
        }
        self.recover_device(busid).map(|_| ())
    }
}
