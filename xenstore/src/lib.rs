//! XenStore wire-protocol client and an embedded xenstore server.
//!
//! * [`wire`]: the `xs_wire.h` framing and argument rules, shared by both sides.
//! * [`XsClient`]: the synchronous client the backend, frontend and toolstack use,
//!   over the xenstored socket or `/dev/xen/xenbus`.
//! * [`server`]: an embedded xenstored for machines without Xen (the simulation and
//!   the tests), speaking the same protocol over a UNIX socket.
#![forbid(unsafe_code)]

mod client;
mod error;
pub mod perms;
pub mod server;
pub mod wire;

pub use client::{
    Tx, XsClient, XsWatch, DECLARE_DOMID_COMMAND, DEFAULT_SOCKET, PATH_ENV, TRANSACTION_RETRIES,
    XENBUS_DEVICE,
};
pub use error::XsError;
pub use perms::{Access, Perm};
pub use server::{ServerConfig, ServerError, XsServer, XsServerHandle};
pub use wire::WireError;
