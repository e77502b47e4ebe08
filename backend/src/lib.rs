//! pvUSB backend: xenbus life-cycle, URB processing, libusb and emulated devices
//!
//! Unsafe code is denied crate-wide; the only exception is the libusb FFI
//! module (`usb::libusb::ffi`), which needs libusb's asynchronous transfer API.
#![deny(unsafe_code)]

pub mod usb;
