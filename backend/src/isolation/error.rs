//! Why the monitor refused or failed a worker's request, or could not start
//! a worker.

use std::path::PathBuf;

use pvusb_protocol::BusIdError;

use crate::error::BackendError;
use crate::usb::{BusId, UsbError};
use crate::xenbus::RecordVerdict;

/// Why [`super::broker::Broker`] did not open what a worker asked for. The
/// worker may be compromised: each refusal is the monitor's own check.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The worker's busid does not parse.
    #[error("not a busid")]
    NotABusid(#[source] BusIdError),
    /// The daemon runs without host USB (`--no-host-usb`).
    #[error("this daemon serves no host USB devices")]
    NoHostUsb,
    /// The toolstack put the device in none of the controller's ports.
    #[error("{0} is in none of this controller's ports")]
    NotInAPort(BusId),
    /// The controller's ports or the device's record could not be read.
    #[error("cannot read the controller's configuration")]
    Xenstore(#[source] BackendError),
    /// The toolstack's record of the device keeps it from the backend.
    #[error("the toolstack's record of {busid} withholds it ({verdict:?})")]
    Withheld {
        /// The device.
        busid: BusId,
        /// What the record says.
        verdict: RecordVerdict,
    },
    /// Opening the device node failed.
    #[error("cannot open the device")]
    Open(#[source] UsbError),
    /// The transport has no event-channel device (the simulation).
    #[error("no event-channel device with this transport")]
    NoEvtchnDevice,
    /// The worker used up its event-channel devices.
    #[error("worker asked for more than {0} event-channel devices")]
    EvtchnBudget(u32),
    /// Opening the event-channel device failed.
    #[error("cannot open {}", path.display())]
    OpenEvtchn {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why the monitor could not start a worker process.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The link or the proxy's socket pair.
    #[error("cannot create a socket pair")]
    Socketpair(#[source] std::io::Error),
    /// The worker's xenstore proxy.
    #[error("cannot start the worker's xenstore proxy")]
    Proxy(#[source] pvusb_xenstore::XsError),
    /// The worker's own gntdev.
    #[error("cannot open {}", path.display())]
    Gntdev {
        /// The device.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An emulated disk's backing could not be handed on.
    #[error("cannot pass on the backing of {spec}")]
    Backing {
        /// The emulated device.
        spec: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The worker binary did not start.
    #[error("cannot run {}", exe.display())]
    Exec {
        /// The binary.
        exe: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The link's write timeout.
    #[error("cannot set the link's write timeout")]
    LinkTimeout(#[source] std::io::Error),
    /// The setup did not reach the worker.
    #[error("cannot send the worker its setup")]
    Setup(#[source] super::link::LinkError),
}

/// Why a worker process could not build its controller from its setup.
#[derive(Debug, thiserror::Error)]
pub enum WorkerSetupError {
    /// The setup carried fewer descriptors than it describes.
    #[error("the setup carried no {0}")]
    MissingDescriptor(&'static str),
    /// An emulated disk without its backing.
    #[error("the setup carried no backing for {0}")]
    MissingBacking(String),
    /// The link could not be shared with the link thread.
    #[error("cannot clone the link")]
    Link(#[source] std::io::Error),
    /// An emulated device could not be made.
    #[error("cannot make the emulated device")]
    Emulated(#[source] crate::usb::emulated::spec::SpecError),
    /// An emulated device could not be put on the bus.
    #[error("cannot put the emulated device on the bus")]
    Bus(#[source] UsbError),
    /// Host USB asked for by a build without libusb.
    #[error("host USB asked for, but this build has no libusb")]
    NoLibusb,
    /// The device rules the monitor passed on do not load.
    #[error("cannot load the device rules")]
    Rules(#[source] pvusb_policy::LoadError),
}
