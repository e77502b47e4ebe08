//! Errors of the backend's own layers (life-cycle, rings, devices). Each
//! message says what was wrong and, where there is one, the fix.

use pvusb_protocol::xenstore::ValueError;
use pvusb_protocol::{BusIdError, Speed, UsbVer, UsbVerError, XenbusStateError};
use pvusb_ring::RingError;
use pvusb_xen::{EvtchnError, GrantError};
use pvusb_xenstore::XsError;

use crate::usb::UsbError;

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A xenstore operation failed (connection lost, permission denied).
    #[error("xenstore {op} on {path} failed")]
    Xenstore {
        /// What was being done.
        op: &'static str,
        /// The node.
        path: String,
        /// The client's error.
        #[source]
        source: XsError,
    },
    /// A required xenstore key is missing.
    #[error("xenstore key {path} is missing; the toolstack or the frontend must write it")]
    MissingKey {
        /// The node.
        path: String,
    },
    /// A xenstore value does not parse.
    #[error("xenstore key {path} holds an invalid value")]
    BadValue {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: ValueError,
    },
    /// `usb-ver` is not 1 or 2.
    #[error("xenstore key {path} holds an invalid usb-ver")]
    BadUsbVer {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: UsbVerError,
    },
    /// A xenbus state value does not parse.
    #[error("xenstore key {path} holds an invalid xenbus state")]
    BadState {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: XenbusStateError,
    },
    /// Mapping the ring pages failed (bad or revoked grant).
    #[error("cannot map the {ring} ring page (grant {gref}) of domain {domid}")]
    MapRing {
        /// "urb" or "conn".
        ring: &'static str,
        /// The grant reference the frontend published.
        gref: u32,
        /// The frontend domain.
        domid: u16,
        /// Why.
        #[source]
        source: GrantError,
    },
    /// Binding the event channel failed.
    #[error("cannot bind event channel port {port} of domain {domid}")]
    BindEvtchn {
        /// The port the frontend published.
        port: u32,
        /// The frontend domain.
        domid: u16,
        /// Why.
        #[source]
        source: EvtchnError,
    },
    /// The frontend broke a shared ring; it is unusable until a reconnect.
    #[error("the {ring} ring is unusable")]
    Ring {
        /// "urb" or "conn".
        ring: &'static str,
        /// What the frontend did.
        #[source]
        source: RingError,
    },
    /// The event channel failed (peer gone).
    #[error("event channel failed")]
    Evtchn(#[from] EvtchnError),
    /// A host device could not be attached.
    #[error("cannot attach {busid} to port {port}")]
    Attach {
        /// Root-hub port.
        port: u8,
        /// Host busid (empty when the port has none).
        busid: String,
        /// Why.
        #[source]
        why: AttachError,
    },
    /// The host USB layer failed.
    #[error(transparent)]
    Usb(#[from] UsbError),
    /// An OS call (eventfd, poll, thread spawn) failed.
    #[error("{op} failed")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a port's device could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The port is outside the controller's ports.
    #[error("the controller has no such port")]
    NoSuchPort,
    /// The toolstack has not written a busid for the port.
    #[error("no busid is configured for the port")]
    NoBusid,
    /// The busid the toolstack wrote does not parse.
    #[error("the port's busid is invalid")]
    BadBusid(#[source] BusIdError),
    /// Opening the host device failed (the USB error says what and the fix).
    #[error(transparent)]
    Open(UsbError),
    /// Hubs are never passed through.
    #[error("it is a hub; hubs cannot be passed through, assign the devices behind it")]
    IsHub,
    /// The controller's usb-ver cannot report the device's speed.
    #[error(
        "its speed {speed:?} cannot be reported by a usb-ver {usb_ver} controller; use usb-ver 2"
    )]
    Speed {
        /// The device's speed.
        speed: Speed,
        /// The controller's version.
        usb_ver: UsbVer,
    },
}

impl BackendError {
    /// Wraps a xenstore error with the operation and path.
    pub(crate) fn xs(op: &'static str, path: &str, source: XsError) -> Self {
        Self::Xenstore {
            op,
            path: path.to_owned(),
            source,
        }
    }
}
