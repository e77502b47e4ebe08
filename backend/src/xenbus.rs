//! Reading and writing one controller's xenstore nodes (spec 5.1). Every value
//! is treated as hostile: the frontend's keys are written by the guest, and
//! even the toolstack's are only trusted after parsing.

use pvusb_protocol::xenstore::{self as xsp, keys};
use pvusb_protocol::{UsbVer, XenbusState};
use pvusb_xenstore::{Tx, XsClient, XsError};

use crate::error::{AttachError, BackendError};
use crate::usb::BusId;

/// One controller: the frontend domain and the device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ControllerId {
    /// Frontend domain.
    pub domid: u16,
    /// Device id under `vusb/<domid>/`.
    pub devid: u32,
}

impl std::fmt::Display for ControllerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vusb {}/{}", self.domid, self.devid)
    }
}

/// What the toolstack configured (validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerConfig {
    /// 1 or 2.
    pub usb_ver: UsbVer,
    /// 1..=31.
    pub num_ports: u8,
}

/// What the frontend published for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingRefs {
    /// Grant of the urb ring page.
    pub urb: u32,
    /// Grant of the conn ring page.
    pub conn: u32,
    /// The frontend's event-channel port.
    pub evtchn: u32,
}

/// Longest value the backend reads; anything longer is refused unparsed.
const MAX_VALUE: usize = 256;

/// Reads a node; a missing node is `None`.
pub fn read(xs: &XsClient, path: &str) -> Result<Option<String>, BackendError> {
    xs.read(Tx::NONE, path)
        .map_err(|e| BackendError::xs("read", path, e))
}

fn read_required(xs: &XsClient, path: &str) -> Result<String, BackendError> {
    read(xs, path)?.ok_or_else(|| BackendError::MissingKey {
        path: path.to_owned(),
    })
}

fn bounded(path: &str, v: String) -> Result<String, BackendError> {
    if v.len() > MAX_VALUE {
        return Err(BackendError::BadValue {
            path: path.to_owned(),
            source: xsp::ValueError::NotDecimal(v.chars().take(32).collect()),
        });
    }
    Ok(v)
}

fn read_u32(xs: &XsClient, path: &str) -> Result<u32, BackendError> {
    let v = bounded(path, read_required(xs, path)?)?;
    xsp::parse_u32(v.trim_ascii()).map_err(|source| BackendError::BadValue {
        path: path.to_owned(),
        source,
    })
}

/// Reads and validates `usb-ver` and `num-ports` of a backend directory.
pub fn read_config(xs: &XsClient, be: &str) -> Result<ControllerConfig, BackendError> {
    let path = xsp::join(be, keys::USB_VER);
    let v = bounded(&path, read_required(xs, &path)?)?;
    let usb_ver = v
        .trim_ascii()
        .parse::<UsbVer>()
        .map_err(|source| BackendError::BadUsbVer { path, source })?;
    let path = xsp::join(be, keys::NUM_PORTS);
    let v = bounded(&path, read_required(xs, &path)?)?;
    let num_ports = xsp::parse_num_ports(v.trim_ascii())
        .map_err(|source| BackendError::BadValue { path, source })?;
    Ok(ControllerConfig { usb_ver, num_ports })
}

/// Reads the frontend's ring references and event channel.
pub fn read_refs(xs: &XsClient, fe: &str) -> Result<RingRefs, BackendError> {
    Ok(RingRefs {
        urb: read_u32(xs, &xsp::join(fe, keys::URB_RING_REF))?,
        conn: read_u32(xs, &xsp::join(fe, keys::CONN_RING_REF))?,
        evtchn: read_u32(xs, &xsp::join(fe, keys::EVENT_CHANNEL))?,
    })
}

/// Reads a `state` node; missing is `None`.
pub fn read_state(xs: &XsClient, dir: &str) -> Result<Option<XenbusState>, BackendError> {
    let path = xsp::join(dir, keys::STATE);
    match read(xs, &path)? {
        None => Ok(None),
        Some(v) => {
            let v = bounded(&path, v)?;
            v.parse::<XenbusState>()
                .map(Some)
                .map_err(|source| BackendError::BadState { path, source })
        }
    }
}

/// `online`: missing counts as online (older toolstacks), anything but "0" too.
pub fn read_online(xs: &XsClient, be: &str) -> Result<bool, BackendError> {
    let path = xsp::join(be, keys::ONLINE);
    Ok(match read(xs, &path)? {
        Some(v) => v.trim_ascii() != "0",
        None => true,
    })
}

/// `port/N`: `Ok(None)` for an empty port; a malformed busid is an error.
pub fn read_port(xs: &XsClient, be: &str, port: u8) -> Result<Option<BusId>, BackendError> {
    let path = xsp::join(be, &xsp::port_key(port));
    let Some(v) = read(xs, &path)? else {
        return Ok(None);
    };
    let v = v.trim_ascii();
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<BusId>()
        .map(Some)
        .map_err(|e| BackendError::Attach {
            port,
            busid: v.chars().take(64).collect(),
            why: AttachError::BadBusid(e),
        })
}

/// Writes `dir/state` if `dir` still exists (so a removed controller is
/// never resurrected by a late write). Returns whether it was written.
pub fn write_state(xs: &XsClient, dir: &str, state: XenbusState) -> Result<bool, BackendError> {
    let path = xsp::join(dir, keys::STATE);
    xs.transaction(|tx| {
        if !xs.exists(tx, dir)? {
            return Ok(false);
        }
        xs.write(tx, &path, &state.to_string())?;
        Ok(true)
    })
    .map_err(|e| BackendError::xs("write", &path, e))
}

/// Where the toolstack keeps its per-device records
/// (`/pvusb/usbback/<busid-key>/state`, toolstack/src/record.rs).
pub const RECORD_ROOT: &str = "/pvusb/usbback";

/// Prefix of the [`crate::mailbox::Control::BackendChanged`] path by which the
/// daemon tells a worker that a device record changed: `@record/<busid-key>`
/// (`@record/` alone: re-check every port). `@` cannot start a key the
/// toolstack writes into a backend directory, and a collision would only cause a
/// harmless re-check.
pub const RECORD_CHANGED: &str = "@record/";

/// Key of a device's record that the daemon writes while it holds the device
/// open (value: the daemon's pid) and removes once the device is closed and
/// every request on it answered. The toolstack's detach waits for the removal
/// before it gives the device back to the host drivers: the release handshake
/// (toolstack/src/detach.rs).
pub const RECORD_OPENED: &str = "opened";

/// Marks `busid` as held open by this daemon (before it is opened), if its
/// record gives it to the backend; in one transaction with the read of the
/// record's stage, so that a detach either sees the mark or withdrew the
/// claim first.
pub fn mark_opened(xs: &XsClient, busid: &BusId) -> Result<RecordVerdict, BackendError> {
    let dir = format!("{RECORD_ROOT}/{}", busid.to_key());
    let path = xsp::join(&dir, RECORD_OPENED);
    let pid = std::process::id().to_string();
    xs.transaction(|tx| {
        let verdict = record_verdict(xs, tx, &dir)?;
        if verdict == RecordVerdict::Open {
            xs.write(tx, &path, &pid)?;
        }
        Ok(verdict)
    })
    .map_err(|e| BackendError::xs("write", &path, e))
}

/// Removes the open mark of `busid` (the device is closed): the
/// acknowledgement the toolstack's detach waits for. Never creates a record.
pub fn mark_closed(xs: &XsClient, busid: &BusId) -> Result<(), BackendError> {
    let path = format!("{RECORD_ROOT}/{}/{RECORD_OPENED}", busid.to_key());
    xs.transaction(|tx| {
        if xs.exists(tx, &path)? {
            xs.rm(tx, &path)?;
        }
        Ok(())
    })
    .map_err(|e| BackendError::xs("rm", &path, e))
}

/// What the toolstack's record says about opening a device found in a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordVerdict {
    /// No record: the port was written by another toolstack (libxl `type=pv`,
    /// a script, by hand), which does not journal; the device is opened.
    NoRecord,
    /// `claimed` or `assigned`: the toolstack gave the device to the backend.
    Open,
    /// Any other stage (`attach-recorded`: interfaces may still be on host
    /// drivers; `detach-releasing`: claim withdrawn; `detach-rebinding`;
    /// missing or unknown: treated as "give back", as the toolstack does).
    Withheld(String),
}

impl RecordVerdict {
    /// Whether the device may be open.
    pub fn permits_open(&self) -> bool {
        matches!(self, RecordVerdict::NoRecord | RecordVerdict::Open)
    }
}

/// Reads the toolstack's record of `busid`.
pub fn read_record(xs: &XsClient, busid: &BusId) -> Result<RecordVerdict, BackendError> {
    let dir = format!("{RECORD_ROOT}/{}", busid.to_key());
    record_verdict(xs, Tx::NONE, &dir).map_err(|e| BackendError::xs("read", &dir, e))
}

/// The verdict of the record in `dir`, read in `tx` (shared by
/// [`read_record`] and [`mark_opened`], which must read it in the
/// transaction that writes the mark).
fn record_verdict(xs: &XsClient, tx: Tx, dir: &str) -> Result<RecordVerdict, XsError> {
    Ok(match xs.read(tx, &xsp::join(dir, "state"))? {
        Some(v) => match v.trim_ascii() {
            "claimed" | "assigned" => RecordVerdict::Open,
            other => RecordVerdict::Withheld(other.chars().take(32).collect()),
        },
        None if xs.exists(tx, dir)? => RecordVerdict::Withheld("(no state)".into()),
        None => RecordVerdict::NoRecord,
    })
}
