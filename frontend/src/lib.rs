//! pvUSB frontend: a virtual USB host controller in userspace, the guest side
//! of usbif, behaving like Linux xen-hcd towards any backend.
//!
//! | module | concern |
//! |---|---|
//! | [`transport`] | [`Transport`]: granted pages and an unbound event channel (real Xen or the simulation) |
//! | [`xenbus`] | [`ControllerConfig`]: xenstore probe, backend state, the key writes of the handshake |
//! | `connection` | rings, event channel, per-slot granted pages, URB ↔ pages |
//! | `engine` | request ids, local queue, unlink (spec 7.6), response validation (spec 7.7) |
//! | [`frontend`] | [`Frontend`]: the public API (connect, ports, submission, close); its children hold the shared state, the xenbus life-cycle and reconnect, and the worker thread |
//! | `transfer` | blocking transfers with timeout + unlink, bulk splitting |
//! | [`ports`] | [`RootHub`], [`PortStatus`], [`PortEvent`] |
//! | [`urb`] | [`Urb`], [`Completion`] |
//! | [`device`] | enumeration and the [`Device`] handle |
//! | [`mass_storage`] | a bulk-only-transport client ([`MassStorage`]) |
//! | [`vhci`] | the bridge serving a device to the guest kernel's vhci-hcd over USB/IP |
//!
//! Everything the backend writes (ring indexes, ids, lengths, statuses, conn
//! events, xenstore values) is hostile: it is copied once, validated, and a
//! violation kills the controller with a reason ([`Frontend::dead_reason`]),
//! failing every URB with [`UrbStatus::Shutdown`], never a panic or a hang.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use pvusb_frontend::{Frontend, Options};
//! use pvusb_xen::sim::SimXen;
//! use pvusb_xenstore::XsClient;
//! # let (dir, sock) = (std::path::Path::new("/tmp/sim"), std::path::Path::new("/tmp/xs"));
//! let xs = Arc::new(XsClient::connect_as(sock, 1)?);
//! let front = Frontend::connect(xs, Arc::new(SimXen::new(dir, 1)), 1, 0, Options::default())?;
//! front.wait_for_device(1, Duration::from_secs(5))?;
//! let dev = front.enumerate(1)?;
//! println!("{:04x}:{:04x} {:?}", dev.descriptor.id_vendor, dev.descriptor.id_product, dev.product);
//! front.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
// Hostile guest input flows through this crate: a silent `as` truncation or sign
// flip could turn an out-of-range length or index into a plausible one. Every
// remaining cast carries `#[allow]` and a `// CAST:` comment saying why it is exact.
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

mod connection;
pub mod device;
mod engine;
pub mod error;
pub mod frontend;
#[doc(hidden)]
pub mod fuzzing;
pub mod mass_storage;
pub mod ports;
pub mod report;
mod transfer;
pub mod transport;
pub mod urb;
pub mod vhci;
pub mod xenbus;

pub use device::Device;
pub use engine::EngineStats;
pub use error::{FrontendError, UrbStatus};
pub use frontend::{Frontend, Options, UrbHandle};
pub use mass_storage::MassStorage;
pub use ports::{PortEvent, PortStatus, RootHub};
pub use transport::{LinuxXen, Transport};
pub use urb::{Callback, Completion, IsoPacketResult, Urb, UrbKind, BULK_CHUNK, MAX_URB_DATA};
pub use xenbus::ControllerConfig;
