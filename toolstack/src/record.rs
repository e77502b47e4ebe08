//! pvusb's per-device record in xenstore: the original drivers and the journal of
//! the operation in progress.
//!
//! Layout (keys encoded `.`→`_`, `:`→`@` as libxl does):
//!
//! ```text
//! /pvusb/usbback/<busid-enc>/state                 stage, see [`Stage`]
//! /pvusb/usbback/<busid-enc>/{domid,ctrl,port}     target (attach) or place (assigned, detach)
//! /pvusb/usbback/<busid-enc>/<intf-enc>/driver_path  "/sys/bus/usb/drivers/<drv>" or "" (none)
//! ```
//!
//! WHY xenstore: xenstored outlives every pvusb process, so a record written before
//! the first sysfs change survives any crash of the toolstack or the daemon. It is
//! written in ONE transaction with all interfaces' drivers before anything is
//! unbound, and removed only after every interface is back on its driver.
//!
//! Contract with the backend daemon: it opens the busid found in a `port/N` only while
//! this record's `state` is `claimed` or `assigned`; when the state becomes
//! `detach-releasing` (claim withdrawn) it releases the device while the port is
//! still listed, which is the "release from the backend first" step of the detach
//! order. The daemon writes only the [`OPENED`] key: set while it holds the
//! device open, removed once it has closed it, which is the acknowledgement
//! the detach waits for before it empties the port and rebinds the drivers.

/// Key the backend daemon writes into a record (its pid) while it holds the
/// device open, and removes once it has closed it: the release handshake
/// that `dev-detach` waits for ([`crate::detach::Release`]).
pub const OPENED: &str = "opened";

use crate::paths::{decode_key, driver_name_of, driver_path_key, driver_path_of, encode_key};
use crate::paths::{is_interface_of, record_dir, RECORD_ROOT};
use crate::store::{Store, StoreError};

/// Where a device is in its attach/detach life-cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Attach began: drivers recorded; interfaces may be partly unbound.
    AttachRecorded,
    /// Every interface unbound and claimed for the backend; no port yet.
    Claimed,
    /// In a controller's port.
    Assigned,
    /// Detach began: claim withdrawn, still in its port.
    DetachReleasing,
    /// Port emptied; interfaces being given back to their drivers.
    DetachRebinding,
}

impl Stage {
    /// The xenstore spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::AttachRecorded => "attach-recorded",
            Stage::Claimed => "claimed",
            Stage::Assigned => "assigned",
            Stage::DetachReleasing => "detach-releasing",
            Stage::DetachRebinding => "detach-rebinding",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Stage::AttachRecorded,
            Stage::Claimed,
            Stage::Assigned,
            Stage::DetachReleasing,
            Stage::DetachRebinding,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether the operation in progress is an attach (`Some(true)`), a detach
    /// (`Some(false)`), or none (`None`, assigned).
    pub fn op(self) -> Option<&'static str> {
        match self {
            Stage::AttachRecorded | Stage::Claimed => Some("attach"),
            Stage::Assigned => None,
            Stage::DetachReleasing | Stage::DetachRebinding => Some("detach"),
        }
    }
}

/// One device's record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceRecord {
    /// Device.
    pub busid: String,
    /// Stage; `None` when the stored value is unreadable (treated as "give back").
    pub stage: Option<Stage>,
    /// Guest.
    pub domid: Option<u16>,
    /// Controller devid.
    pub ctrl: Option<u32>,
    /// Port.
    pub port: Option<u32>,
    /// `(interface, original driver)` for every interface at attach time.
    pub drivers: Vec<(String, Option<String>)>,
}

/// Upper bound on interfaces read back from a record.
const MAX_INTERFACES: usize = 256;

/// Busids that have a record.
pub fn busids<S: Store>(store: &S, tx: S::Tx) -> Result<Vec<String>, StoreError> {
    let mut v: Vec<String> = store
        .directory(tx, RECORD_ROOT)?
        .iter()
        .map(|k| decode_key(k))
        .filter(|b| crate::paths::is_busid(b))
        .collect();
    v.sort();
    Ok(v)
}

/// Read a device's record.
pub fn read<S: Store>(
    store: &S,
    tx: S::Tx,
    busid: &str,
) -> Result<Option<DeviceRecord>, StoreError> {
    let dir = record_dir(busid);
    let children = store.directory(tx, &dir)?;
    if children.is_empty() {
        return Ok(None);
    }
    let num = |key: &str| -> Result<Option<String>, StoreError> {
        store.read(tx, &format!("{dir}/{key}"))
    };
    let stage = num("state")?.as_deref().and_then(Stage::parse);
    let domid = num("domid")?.and_then(|v| v.parse().ok());
    let ctrl = num("ctrl")?.and_then(|v| v.parse().ok());
    let port = num("port")?.and_then(|v| v.parse().ok());
    let mut drivers = Vec::new();
    for key in children
        .iter()
        .filter(|k| k.contains('@'))
        .take(MAX_INTERFACES)
    {
        let intf = decode_key(key);
        if !is_interface_of(&intf, busid) {
            continue;
        }
        let path = store
            .read(tx, &driver_path_key(busid, &intf))?
            .unwrap_or_default();
        drivers.push((intf, driver_name_of(&path).map(str::to_owned)));
    }
    drivers.sort();
    Ok(Some(DeviceRecord {
        busid: busid.to_owned(),
        stage,
        domid,
        ctrl,
        port,
        drivers,
    }))
}

/// Write a whole new record (inside the caller's transaction).
pub fn write_new<S: Store>(store: &S, tx: S::Tx, rec: &DeviceRecord) -> Result<(), StoreError> {
    let dir = record_dir(&rec.busid);
    store.rm(tx, &dir)?;
    for (intf, driver) in &rec.drivers {
        let value = driver.as_deref().map(driver_path_of).unwrap_or_default();
        store.write(tx, &driver_path_key(&rec.busid, intf), &value)?;
    }
    if let Some(d) = rec.domid {
        store.write(tx, &format!("{dir}/domid"), &d.to_string())?;
    }
    if let Some(c) = rec.ctrl {
        store.write(tx, &format!("{dir}/ctrl"), &c.to_string())?;
    }
    if let Some(p) = rec.port {
        store.write(tx, &format!("{dir}/port"), &p.to_string())?;
    }
    // The stage last: a reader inside the same transaction sees a complete record.
    let stage = rec.stage.unwrap_or(Stage::DetachRebinding);
    store.write(tx, &format!("{dir}/state"), stage.as_str())
}

/// Move a record to another stage.
pub fn set_stage<S: Store>(
    store: &S,
    tx: S::Tx,
    busid: &str,
    stage: Stage,
) -> Result<(), StoreError> {
    store.write(tx, &format!("{}/state", record_dir(busid)), stage.as_str())
}

/// Remove a record.
pub fn remove<S: Store>(store: &S, tx: S::Tx, busid: &str) -> Result<(), StoreError> {
    store.rm(tx, &record_dir(busid))
}

/// The encoded key of a busid (for callers building watch paths).
pub fn key_of(busid: &str) -> String {
    encode_key(busid)
}
