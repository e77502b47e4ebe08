//! pvUSB toolstack: controllers, devices and the crash-only assignment life-cycle
#![forbid(unsafe_code)]
