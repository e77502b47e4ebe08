//! The host-USB side of the backend: one narrow trait for "a USB device the
//! backend drives" ([`UsbDevice`]), a controller's own device I/O that opens
//! devices and runs their completions on the controller's thread
//! ([`DeviceIo`]), a host shared by the daemon that lists devices, reports
//! hot-plug and makes a controller's I/O ([`UsbHost`]), and its
//! implementations: real devices through libusb (`libusb::LibusbHost`, one
//! libusb context per controller, and `libusb::BrokeredHost`, a confined
//! worker's view whose device nodes the monitor opens; the `libusb` cargo
//! feature) and emulated devices ([`emulated::EmulatedHost`]).
//!
//! The URB engine is written only against the traits, so the demo, the tests
//! and the benchmarks run unchanged on machines without USB.

mod buffer;
mod error;
mod opener;
mod proto;
mod traits;
mod types;

pub mod emulated;
#[cfg(feature = "libusb")]
pub mod libusb;

pub use buffer::{TransferBuffer, SETUP_STAGE_LEN};
pub use error::{HighSpeedObstacle, UsbError};
pub use opener::{NodeOpener, OpenedNode};
pub use proto::{BusId, BusIdError, SetupPacket, Speed, TransferOutcome};
pub use traits::{CompletionSink, DeviceIo, IoFd, UsbDevice, UsbHost};
pub use types::{
    Completion, DeviceInfo, HotplugEvent, HotplugHandler, IsoPacket, IsoPacketResult, Transfer,
    TransferId, TransferKind,
};
