//! libxl's own bookkeeping of pvusb's controllers: `/libxl/<domid>/device/vusb/<devid>`.
//!
//! WHY pvusb writes it: libxl finds a domain's USB controllers only there. `xl
//! usb-list` lists that directory (`libxl_device_usbctrl_list`, libxl_usb.c) and
//! reads `type` and `backend` from each entry (`libxl_device_usbctrl_getinfo`), `xl
//! usbdev-attach` refuses a device already in a port of a controller listed there
//! (`get_assigned_devices`), and `xl destroy` closes and removes every device listed
//! under `/libxl/<domid>/device` (`libxl__devices_destroy`, libxl_device.c). Without
//! it pvusb's controllers are invisible to every `xl` verb.
//!
//! What Xen 4.17 writes (`libxl__device_usbctrl_add_xenstore` → `libxl__device_generic_add`):
//! `frontend` and `backend` (the two paths), then a copy of every backend entry
//! except the backend's own `frontend` node: `frontend-id`, `online`, `state` (1),
//! `type` (`pv`), `usb-ver`, `num-ports`, `port` and `port/1..N` (all empty). The copy
//! is never updated afterwards (libxl's comment: "nothing reads those"), so pvusb
//! writes it once, in the transaction that creates the controller, and never again.
//!
//! Devices get no node here: libxl keeps a device only as the busid in the
//! backend's `port/N` (written in pvusb's assign transaction) and lists it from
//! there and sysfs. libxl's `/libxl/usbback/<busid>` driver record belongs to the
//! kernel `usbback` binding it drives; pvusb's own record (`/pvusb/usbback`) stays
//! the single authority on a device's original drivers.
//!
//! On `xl destroy` libxl now handles pvusb's controllers like its own: it empties
//! every port (`libxl__device_usbdev_remove`, which finds no usbback binding to
//! undo and no `/libxl/usbback` record), closes the controller (online 0, state 5,
//! waits for the daemon's Closed) and removes backend, frontend and this entry, then
//! `/libxl/<domid>`. The devices' pvusb records outlive that, so the daemon's
//! reaper (`@releaseDomain`) still gives each device back to its original drivers.
//!
//! Removal follows `libxl__device_destroy`: the entry, then every parent left
//! without value and children (`libxl__xs_path_cleanup`), but never above
//! `/libxl/<domid>`, which belongs to whoever created the domain.

use crate::paths::{libxl_dir, libxl_domain_dir, libxl_guest_dir};
use crate::store::{Store, StoreError};

/// The domain libxl runs in (`LIBXL_TOOLSTACK_DOMID`); it owns `/libxl`.
pub const TOOLSTACK_DOMID: u16 = 0;

/// libxl's `type` of a controller with a PV (`vusb`) backend.
pub const TYPE_PV: &str = "pv";

/// What libxl's copy of a controller holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CtrlNodes<'a> {
    /// The backend directory.
    pub backend: &'a str,
    /// The frontend directory.
    pub frontend: &'a str,
    /// The guest.
    pub domid: u16,
    /// `usb-ver`.
    pub version: u8,
    /// `num-ports`.
    pub ports: u32,
}

/// The `(key, value)` pairs of libxl's entry, in libxl's order.
pub(crate) fn entries(c: &CtrlNodes<'_>) -> Vec<(String, String)> {
    let mut kv = vec![
        ("frontend".to_owned(), c.frontend.to_owned()),
        ("backend".to_owned(), c.backend.to_owned()),
        ("frontend-id".to_owned(), c.domid.to_string()),
        ("online".to_owned(), "1".to_owned()),
        ("state".to_owned(), "1".to_owned()),
        ("type".to_owned(), TYPE_PV.to_owned()),
        ("usb-ver".to_owned(), c.version.to_string()),
        ("num-ports".to_owned(), c.ports.to_string()),
        ("port".to_owned(), String::new()),
    ];
    kv.extend((1..=c.ports).map(|p| (format!("port/{p}"), String::new())));
    kv
}

/// Write libxl's entry of controller `devid` inside the caller's transaction.
/// Every node is owned by the toolstack domain with no access for anyone else,
/// as the `/libxl/<domid>` it inherits from in libxl.
pub(crate) fn write<S: Store>(
    store: &S,
    tx: S::Tx,
    devid: u32,
    c: &CtrlNodes<'_>,
) -> Result<(), StoreError> {
    let dir = libxl_dir(c.domid, devid);
    store.write(tx, &dir, "")?;
    store.set_perms(tx, &dir, TOOLSTACK_DOMID, &[])?;
    for (k, v) in entries(c) {
        let p = format!("{dir}/{k}");
        store.write(tx, &p, &v)?;
        store.set_perms(tx, &p, TOOLSTACK_DOMID, &[])?;
    }
    Ok(())
}

/// Remove libxl's entry of controller `devid` and the parents it leaves empty, up
/// to and including `/libxl/<domid>` (libxl's `libxl__xs_path_cleanup`). Inside the
/// caller's transaction; a missing entry is not an error.
pub(crate) fn remove<S: Store>(
    store: &S,
    tx: S::Tx,
    domid: u16,
    devid: u32,
) -> Result<(), StoreError> {
    store.rm(tx, &libxl_dir(domid, devid))?;
    let domain = libxl_domain_dir(domid);
    for parent in [
        libxl_guest_dir(domid),
        format!("{domain}/device"),
        domain.clone(),
    ] {
        let empty = store.read(tx, &parent)?.is_some_and(|v| v.is_empty())
            && store.directory(tx, &parent)?.is_empty();
        if !empty {
            break;
        }
        store.rm(tx, &parent)?;
    }
    Ok(())
}
