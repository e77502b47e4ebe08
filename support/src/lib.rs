//! # pvusb-support
//!
//! The few additions to `std` that every pvusb crate needs, kept in one place so
//! each crate does not grow its own copy: [`lock_unpoisoned`] ([`sync`]) and
//! [`Chain`], an error shown with its causes ([`error`]).
//!
//! It is a crate of its own because its users (`xen`, `xenstore`, `backend`,
//! `frontend`, `toolstack`, the `pvusb` binary) share no lower crate: `xenstore`
//! depends on no other pvusb crate, and `xen` not on `xenstore`.

#![forbid(unsafe_code)]

pub mod error;
pub mod sync;

pub use error::Chain;
pub use sync::lock_unpoisoned;
