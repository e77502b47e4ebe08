//! The protocol crate's types the USB layer uses, in one place.

pub use pvusb_protocol::{BusId, BusIdError, SetupPacket, Speed, TransferOutcome};
