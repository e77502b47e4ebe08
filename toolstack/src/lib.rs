//! pvUSB toolstack: controllers, devices and the crash-only assignment life-cycle.
//!
//! All logic of `pvusb ctrl-attach`, `ctrl-detach`, `dev-attach`, `dev-detach`,
//! `list`, `assignable-list`, `recover` and `config-apply` (and of xl's verbs
//! `usbctrl-attach` … `usb-list`: [`xl_args`], [`xl_list`]) lives here, as methods
//! of [`Toolstack`], generic over xenstore ([`store::Store`], implemented for
//! [`pvusb_xenstore::XsClient`]) and sysfs ([`sysfs::Sysfs`], implemented by
//! [`sysfs::SysfsRoot`] over `/sys` or a fake tree).
//!
//! # Default placement (`dev-attach`)
//! * no controller given: the first free port of our controllers in devid order;
//!   none free (or none at all): create a controller with the defaults (version 2,
//!   8 ports), wait for it to connect and use port 1;
//! * controller given without port: its first free port;
//! * both given: that port must exist and be free.
//!
//! A port is taken when `port/N` holds a busid or an unfinished attach has reserved
//! it in its record. Refused: hubs (class 9), devices in any port of any backend
//! domain, controllers served by another backend domain, and devices the device
//! rules refuse for the guest ([`device_policy`]: USBGuard's rule language in
//! `/etc/pvusb/rules.conf`, `--rules`, `PVUSB_RULES`; no file, no check).
//!
//! # Commands at once
//! Every command that changes ports, records or bindings holds the host's
//! command lock ([`lock`], `flock` on `/run/pvusb/toolstack.lock`) from start to
//! end, so two `pvusb` processes (or the daemon's reaper and an operator) run
//! their steps one after another; a command that waits longer than three times
//! `--timeout` fails with a one-line error. Independently, the transaction that
//! writes a new attach's record re-checks that the device has no record and the
//! port is neither filled nor reserved (a default placement then picks again),
//! and the final transaction assigns the port only if it is still empty and the
//! record still at `claimed` (tests/concurrency.rs races every pair).
//!
//! # Micro-states (crash-only)
//! Every step writes durable state before the next; `PVUSB_CRASH_AT=<step>` aborts
//! right after the named step (see [`crash`]). "list shows" is what [`Toolstack::list`]
//! and [`Toolstack::assignable_list`] report there; "recovers" is the one command that
//! brings the device to a consistent end state.
//!
//! ## `dev-attach` of device D to (dom, C, P)
//! | step (crash point) | written so far | list shows | recovers |
//! |---|---|---|---|
//! | — (before any write) | nothing | host (drivers) | nothing to do; re-run |
//! | `ctrl-attach-written` (only when a controller is created) | controller nodes, state 1 | controller Initialising, D host | re-run `dev-attach` (uses the new controller) |
//! | `attach-recorded` | record `state=attach-recorded`, target, every interface's original driver | host (drivers) + "attach interrupted" | `recover D` → host; re-run `dev-attach` → assigned |
//! | `attach-unbound-1` (≥2 bound interfaces) | first interface unbound | wedged: partially claimed | same |
//! | `attach-unbound` | every interface unbound | no driver + "attach interrupted" | same |
//! | `attach-claimed` | `state=claimed` (backend may open it) | claimed but unassigned | same |
//! | done | `port/P=D` and `state=assigned`, one transaction | assigned | — |
//!
//! ## `dev-detach` of D at (dom, C, P) (also `recover` and roll-backs join here)
//! | step (crash point) | written so far | list shows | recovers |
//! |---|---|---|---|
//! | `detach-releasing` | `state=detach-releasing` (claim withdrawn; backend releases D) | releasing, still in port P | `recover D` or re-run `dev-detach` → host |
//! | `detach-released` | nothing new: the daemon removed the record's `opened` mark (it answered every request on D and closed it), or none held D, or the wait (`--timeout`) ended | releasing, still in port P | same |
//! | `detach-port-cleared` | `port/P=""` and `state=detach-rebinding`, one transaction | no driver + "detach interrupted" | `recover D` (or `dev-detach dom D`) |
//! | `detach-rebound-1` (≥2 interfaces) | first interface back on its driver | wedged: partially claimed | same |
//! | `detach-rebound` | every interface back | host (drivers) + "detach interrupted" | same |
//! | done | record removed | host (drivers) | — |
//!
//! A rebind that fails leaves the record at `detach-rebinding` and returns
//! [`ToolError::Rebind`] naming each failed interface; `recover D` retries.
//!
//! ## `ctrl-attach` / `ctrl-detach` of controller C
//! | step (crash point) | written so far | list shows | recovers |
//! |---|---|---|---|
//! | `ctrl-attach-written` | both nodes and libxl's entry (`/libxl/<dom>/device/vusb/C`, see [`libxl_nodes`]) in one transaction, state 1 | controller, Initialising | consistent: connects when backend and guest run; `ctrl-detach` removes it |
//! | (devices) | each device's detach micro-states | as above | re-run `ctrl-detach` |
//! | `ctrl-detach-devices-done` | every port empty, records gone | controller with no devices | re-run `ctrl-detach` |
//! | `ctrl-detach-closing` | `online=0`, `state=5`, one transaction | controller offline, Closing | re-run `ctrl-detach` |
//! | `ctrl-detach-closed` | backend reached Closed | offline, Closed | re-run `ctrl-detach` |
//! | done | both nodes and libxl's entry removed, one transaction | — | — |
//!
//! Nothing ever points at nothing: a port names D only while D's record exists (the
//! record is written before and removed after), and a record's target controller is
//! checked before every resume.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attach;
pub mod config;
pub mod controller;
pub mod crash;
pub mod detach;
pub mod device_policy;
mod domain;
pub mod error;
pub mod libxl_nodes;
pub mod listing;
pub mod lock;
pub mod paths;
pub mod reaper;
pub mod record;
pub mod store;
pub mod sysfs;
pub mod xl_args;
pub mod xl_list;

use std::time::Duration;

pub use attach::{Attached, DeviceSpec, Place};
pub use config::{Applied, UsbConfig};
pub use controller::{Controller, CtrlAttached, CtrlDetached};
pub use detach::{Detached, ReapOutcome, RecoverOutcome, Recovered, Release};
pub use error::ToolError;
pub use listing::{DeviceState, DeviceStatus, DomainListing};
pub use store::Store;
pub use sysfs::{Sysfs, SysfsRoot};
pub use xl_list::XlUsbList;

/// Default wait for xenbus state changes (libxl's `LIBXL_INIT_TIMEOUT`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The toolstack: a xenstore connection, a sysfs view and the backend domain whose
/// controllers it manages.
#[derive(Debug)]
pub struct Toolstack<S: Store, F: Sysfs> {
    /// Xenstore.
    pub store: S,
    /// Sysfs.
    pub sysfs: F,
    /// The domain the pvusb backend daemon runs in (0 unless a driver domain).
    pub backend_domid: u16,
    /// How long to wait for xenbus state changes.
    pub timeout: Duration,
}

impl<S: Store, F: Sysfs> Toolstack<S, F> {
    /// Takes the command lock ([`lock`]) for a command that changes ports,
    /// records or bindings; nested calls on one thread share it.
    pub(crate) fn exclusive(&self) -> Result<lock::CommandLock, ToolError> {
        // A command may hold it while waiting for a controller to connect.
        lock::CommandLock::acquire(
            &self.sysfs.command_lock_path(),
            self.timeout.saturating_mul(3),
        )
    }

    /// A toolstack with the default timeout.
    pub fn new(store: S, sysfs: F, backend_domid: u16) -> Self {
        Self {
            store,
            sysfs,
            backend_domid,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}
