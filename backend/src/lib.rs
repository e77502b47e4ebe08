//! pvUSB backend: xenbus life-cycle, URB processing, libusb and emulated devices
//!
//! Unsafe code is denied crate-wide; the only exception is the libusb FFI
//! module (`usb::libusb::ffi`), which needs libusb's asynchronous transfer API.
//!
//! Layout (one concern per module):
//! * [`daemon`]: watches the backend directory, one worker (thread or
//!   process) per controller;
//! * [`isolation`]: controllers as confined worker processes, supervised;
//! * [`worker`]: the per-controller thread and its poll loop (ring, mailbox,
//!   the devices' libusb descriptors), panic boundary;
//! * [`polling`]: the bound of the worker's adaptive ring-polling window;
//! * [`controller`]: one controller: its xenbus life-cycle, port policy, the
//!   pump between ring, engine and devices, the saved address table;
//! * [`xenbus`]: reading/writing the controller's xenstore nodes;
//! * [`connection`]: the mapped rings and the event channel;
//! * [`engine`]: requests → device transfers → responses (per-endpoint queues);
//! * [`addr`]: address virtualisation and intercepted standard requests;
//! * [`ids`]: ring ids and transfer ids (the one maker of transfer ids);
//! * [`guest`]: grant copies over request segments;
//! * [`ports`]: root-hub ports, attach policy;
//! * [`mailbox`]: completions and control messages into a worker;
//! * [`pool`], [`ratelimit`], [`stats`], [`host`], [`error`].
#![deny(unsafe_code)]
// Hostile guest input flows through this crate: a silent `as` truncation or sign
// flip could turn an out-of-range length or index into a plausible one. Every
// remaining cast carries `#[allow]` and a `// CAST:` comment saying why it is exact.
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub mod addr;
pub mod coalesce;
pub mod connection;
pub mod control;
pub mod controller;
pub mod daemon;
pub mod device_policy;
pub mod engine;
pub mod error;
pub mod guest;
pub mod host;
pub mod ids;
pub mod isolation;
pub mod mailbox;
pub mod polling;
pub mod pool;
pub mod port_stats;
pub mod ports;
pub mod ratelimit;
pub mod report;
pub mod stats;
pub mod usb;
pub mod worker;
pub mod xenbus;

pub use daemon::{Daemon, DaemonConfig, DaemonHandle};
pub use engine::{Devices, UrbEngine};
pub use error::BackendError;
pub use guest::{GrantedMemory, GuestMemory};
pub use host::CompositeHost;
pub use stats::{Stats, StatsSnapshot};
pub use xenbus::ControllerId;
