//! XenStore wire-protocol client and an embedded xenstore server.
//!
//! Why a crate of its own: the toolstack, the backend and the frontend all talk to
//! xenstore, and the toolstack must do so without pulling in any ring or grant code;
//! and on machines without Xen the same protocol has to be served by someone, so the
//! server lives next to the client and both share one hardened parser ([`wire`]).
//!
//! * [`wire`]: the `xs_wire.h` framing and argument rules, shared by both sides.
//! * [`XsClient`]: the synchronous client the backend, frontend and toolstack use,
//!   over the xenstored socket or `/dev/xen/xenbus`.
//! * [`proxy`]: a filtering proxy that gives a confined worker a scoped view of
//!   xenstore instead of a dom0 connection ([`XsClient::from_stream`] is its
//!   client side).
//! * [`server`]: an embedded xenstored for machines without Xen (the simulation and
//!   the tests), speaking the same protocol over a UNIX socket.
//!
//! ```
//! use pvusb_xenstore::{ServerConfig, Tx, XsClient, XsServer};
//!
//! let dir = tempfile::tempdir()?;
//! let socket = dir.path().join("xenstored.sock");
//! let _server = XsServer::start_with(&socket, ServerConfig::simulation())?;
//! let dom0 = XsClient::connect(&socket)?; // or XsClient::connect_default()
//! let watch = dom0.watch("/local/domain/5/device")?;
//! assert_eq!(watch.receiver().recv()?, "/local/domain/5/device"); // initial fire
//! dom0.transaction(|tx| dom0.write(tx, "/local/domain/5/device/vusb/0/state", "1"))?;
//! assert_eq!(watch.receiver().recv()?, "/local/domain/5/device/vusb/0/state");
//! let guest = XsClient::connect_as(&socket, 5)?; // simulation only
//! assert!(guest.read(Tx::NONE, "/local/domain/5/device/vusb/0/state").is_err()); // dom0-owned
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod error;
pub mod perms;
pub mod proxy;
pub mod server;
mod transport;
pub mod wire;

pub use client::{
    Tx, WatchNotify, XsClient, XsNotifyWatch, XsWatch, DECLARE_DOMID_COMMAND, DEFAULT_SOCKET,
    PATH_ENV, TRANSACTION_RETRIES, XENBUS_DEVICE,
};
pub use error::XsError;
pub use perms::{Access, Perm};
pub use server::{ServerConfig, ServerError, XsServer, XsServerHandle};
pub use wire::WireError;
