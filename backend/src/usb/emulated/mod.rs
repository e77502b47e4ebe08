//! Emulated USB devices on a fake bus ([`EmulatedHost`], bus 200), used by
//! `pvusb demo`, the tests and the benchmarks on machines without USB.
//!
//! A device implements only its behaviour ([`EmulatedDevice`]); the
//! framework answers standard requests from its [`DeviceSpec`](descriptors::DeviceSpec),
//! keeps FIFO queues per endpoint, retries pending transfers and handles cancel.

pub mod audio;
pub mod descriptors;
mod device;
pub mod faulty;
mod framework;
mod host;
pub mod keyboard;
pub mod loopback;
pub mod mass_storage;
pub mod spec;
mod standard;

#[cfg(test)]
mod tests;

pub use device::{ControlRequest, DataKind, DataRequest, EmulatedDevice, Kicker, Reply};
pub use framework::EmulatedUsbDevice;
pub use host::{DeviceFactory, EmulatedHost, EmulatedIo, EMULATED_BUS};
pub use spec::EmulatedSpec;
