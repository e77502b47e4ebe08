//! The host-USB side of the backend: one narrow trait for "a USB device the
//! backend drives" ([`UsbDevice`]), a host that lists and opens such devices
//! ([`UsbHost`]), and two implementations: real devices through libusb
//! ([`libusb::LibusbHost`]) and emulated devices ([`emulated::EmulatedHost`]).
//!
//! The URB engine is written only against the traits, so the demo, the tests
//! and the benchmarks run unchanged on machines without USB.

mod error;
mod proto;
mod traits;
mod types;

pub mod emulated;
pub mod libusb;

pub use error::UsbError;
pub use proto::{BusId, BusIdError, SetupPacket, Speed, TransferOutcome};
pub use traits::{CompletionSink, DeviceIo, IoFd, UsbDevice, UsbHost};
pub use types::{
    Completion, DeviceInfo, HotplugEvent, HotplugHandler, IsoPacket, IsoPacketResult, Transfer,
    TransferId, TransferKind,
};
