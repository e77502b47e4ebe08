//! Error types: [`FrontendError`] for the controller's life-cycle and helpers,
//! and [`UrbStatus`], the small `Copy` outcome of one URB that maps one-to-one
//! onto the usbif statuses plus the outcomes only the frontend can produce.

use pvusb_protocol::{Status, XenbusState};
use pvusb_xen::{EvtchnError, GrantError};
use pvusb_xenstore::XsError;

/// How one URB ended. The first seven are the usbif statuses; the others are
/// decided locally (the backend never sends them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UrbStatus {
    /// Completed.
    Ok,
    /// No device (-ENODEV): the port is empty or the device went away.
    NoDev,
    /// Invalid request (-EINVAL).
    Inval,
    /// The endpoint stalled (-EPIPE).
    Stall,
    /// Transmission error (-EPROTO).
    IoError,
    /// The device sent more than asked (-EOVERFLOW).
    Babble,
    /// The controller is gone, dead or the backend answered nonsense
    /// (-ESHUTDOWN, also what xen-hcd makes of any undefined status).
    Shutdown,
    /// Cancelled by [`crate::UrbHandle::unlink`] (-ECONNRESET in Linux).
    Cancelled,
    /// Cancelled because a blocking call timed out (-ETIMEDOUT).
    TimedOut,
    /// Refused locally before submission: too large or malformed (-E2BIG / -EINVAL).
    Refused,
}

impl UrbStatus {
    /// The outcome for a status a backend sent; anything outside the seven
    /// defined values is [`UrbStatus::Shutdown`], exactly as xen-hcd does.
    pub fn from_wire(raw: i32) -> Self {
        match Status::translate(raw) {
            Status::Ok => Self::Ok,
            Status::NoDev => Self::NoDev,
            Status::Inval => Self::Inval,
            Status::Stall => Self::Stall,
            Status::IoError => Self::IoError,
            Status::Babble => Self::Babble,
            Status::Shutdown => Self::Shutdown,
        }
    }

    /// Whether the URB succeeded.
    pub fn is_ok(self) -> bool {
        self == Self::Ok
    }

    /// A short lower-case name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NoDev => "no device",
            Self::Inval => "invalid request",
            Self::Stall => "stall",
            Self::IoError => "I/O error",
            Self::Babble => "babble",
            Self::Shutdown => "shutdown",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed out",
            Self::Refused => "refused",
        }
    }
}

impl std::fmt::Display for UrbStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the frontend library.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The backend did not reach a state we wait for in time.
    #[error("backend state stayed {seen:?} for {waited_ms} ms while waiting for {wanted}")]
    BackendTimeout {
        /// What we were waiting for, in words.
        wanted: &'static str,
        /// The last state seen (`None`: the node was missing or unparsable).
        seen: Option<XenbusState>,
        /// How long we waited.
        waited_ms: u128,
    },
    /// The backend went to a state that ends the handshake.
    #[error("backend went to state {0:?} during the handshake")]
    BackendGone(XenbusState),
    /// The toolstack made no such controller for this domain.
    #[error(
        "controller {devid} of domain {domid} does not exist ({path} is missing): create it \
         from the backend domain (`pvusb ctrl-attach {domid}` or `xl usbctrl-attach`), or \
         name an existing one"
    )]
    NoController {
        /// This domain.
        domid: u16,
        /// The controller asked for.
        devid: u32,
        /// The node that would name its backend.
        path: String,
    },
    /// A xenstore value written by the toolstack or the backend is unusable.
    #[error("xenstore key {path} holds {value:?}, which is not {expected}")]
    BadXenstoreValue {
        /// The node.
        path: String,
        /// Its value.
        value: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// The controller is not connected (closed, or the backend went away).
    #[error("the controller is not connected to a backend")]
    Disconnected,
    /// Granting or releasing pages failed.
    #[error("grant operation failed")]
    Grant(#[from] GrantError),
    /// The backend still maps pages after the close timeout.
    #[error("the backend still maps {0} granted pages after the close timeout")]
    GrantsStillMapped(usize),
    /// An event-channel operation failed.
    #[error("event channel operation failed")]
    Evtchn(#[from] EvtchnError),
    /// Another frontend (the kernel's xen-hcd, or a frontend that was
    /// killed) has the controller Connected; taking it over would pull it
    /// from under that frontend.
    #[error("controller {devid} is already Connected by another frontend: unload it (`rmmod xen-hcd`) or take it over")]
    ControllerInUse {
        /// The controller.
        devid: u32,
    },
    /// A device answered something unusable.
    #[error("device on port {port}: {reason}")]
    Device {
        /// Root-hub port.
        port: u8,
        /// What was wrong.
        reason: String,
    },
    /// The request cannot be carried by usbif.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A mass-storage command failed.
    #[error("mass-storage command {command:#04x} failed: {reason}")]
    MassStorage {
        /// SCSI operation code.
        command: u8,
        /// What happened (sense data, CSW status).
        reason: String,
    },
    /// No device is connected to the port.
    #[error("no device on port {0}")]
    NoDevice(u8),
    /// The port number is outside 1..=num-ports.
    #[error("port {port} does not exist (the controller has {num_ports} ports)")]
    NoSuchPort {
        /// The port asked for.
        port: u8,
        /// Ports of the controller.
        num_ports: u8,
    },
    /// No free USB address (1..=127) is left.
    #[error("no free USB device address")]
    NoFreeAddress,
    /// A shared ring operation failed.
    #[error("ring operation failed")]
    Ring(#[from] pvusb_ring::RingError),
    /// A thread could not be started.
    #[error("cannot start the {0} thread")]
    Thread(&'static str, #[source] std::io::Error),
    /// Waiting for something timed out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// One URB failed.
    #[error("transfer failed: {0}")]
    Transfer(UrbStatus),
    /// A xenstore operation failed.
    #[error("xenstore operation failed")]
    Xenstore(#[from] XsError),
}

/// What a backend did that usbif forbids (spec 7.7). Any of these kills
/// the controller until the backend handshakes again: a backend that
/// breaks the protocol once cannot be trusted with the next URB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BackendViolation {
    /// A response names a request id beyond the ring's ids.
    #[error("response with request id {0}, which is not below {max}", max = crate::connection::NR_IDS)]
    IdOutOfRange(u16),
    /// A response names a request id that is not in flight.
    #[error("response for request id {0}, which is not in flight")]
    NotInFlight(u16),
    /// A ring's indexes are impossible.
    #[error("{0} ring")]
    Ring(&'static str, #[source] pvusb_ring::RingError),
    /// A conn ring response names a bad port or speed.
    #[error("illegal data on the conn ring")]
    Conn(#[source] crate::ports::ConnError),
}
