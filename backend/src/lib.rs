//! pvUSB backend: xenbus life-cycle, URB processing, libusb and emulated devices
#![forbid(unsafe_code)]
