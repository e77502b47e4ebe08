//! Errors of the backend's own layers (life-cycle, rings, devices). Each
//! message says what was wrong and, where there is one, the fix.

use pvusb_protocol::xenstore::ValueError;
use pvusb_protocol::{UsbVerError, XenbusStateError};
use pvusb_ring::RingError;
use pvusb_xen::{EvtchnError, GrantError};
use pvusb_xenstore::XsError;

use crate::usb::UsbError;

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A xenstore operation failed (connection lost, permission denied).
    #[error("xenstore {op} on {path} failed: {source}")]
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
    #[error("xenstore key {path} holds an invalid value: {source}")]
    BadValue {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: ValueError,
    },
    /// `usb-ver` is not 1 or 2.
    #[error("xenstore key {path}: {source}")]
    BadUsbVer {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: UsbVerError,
    },
    /// A xenbus state value does not parse.
    #[error("xenstore key {path}: {source}")]
    BadState {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: XenbusStateError,
    },
    /// Mapping the ring pages failed (bad or revoked grant).
    #[error("cannot map the {ring} ring page (grant {gref}) of domain {domid}: {source}")]
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
    #[error("cannot bind event channel port {port} of domain {domid}: {source}")]
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
    #[error("the {ring} ring is unusable: {source}")]
    Ring {
        /// "urb" or "conn".
        ring: &'static str,
        /// What the frontend did.
        #[source]
        source: RingError,
    },
    /// The event channel failed (peer gone).
    #[error("event channel failed: {0}")]
    Evtchn(#[from] EvtchnError),
    /// A host device could not be attached.
    #[error("cannot attach {busid} to port {port}: {reason}")]
    Attach {
        /// Root-hub port.
        port: u8,
        /// Host busid.
        busid: String,
        /// Why.
        reason: String,
    },
    /// The host USB layer failed.
    #[error(transparent)]
    Usb(#[from] UsbError),
    /// An OS call (eventfd, poll, thread spawn) failed.
    #[error("{op} failed: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
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
