//! The simulated world pvusb's tests, benches, `pvusb demo` and `pvusb
//! bench` run in: one place that builds it, so each of them says only what
//! is particular to it.
//!
//! Two layers:
//!
//! * Building blocks that return errors, for the `pvusb` commands as much
//!   as for tests: the world's directory ([`dir`]), the embedded xenstore
//!   ([`xenstore`]), guest domains ([`domain`]) and a controller's nodes in
//!   libxl's layout ([`controller`]).
//! * [`World`], for tests (it panics with the reason instead of returning
//!   errors): a directory, xenstore, dom0 and guests, an emulated USB bus
//!   described in a fake sysfs ([`devices`]), and in it the real backend
//!   daemon ([`daemon`]: controllers as threads, or as confined worker
//!   processes with fault injection), real frontends ([`frontend`]) and the
//!   real toolstack ([`toolstack`]). Every wait is bounded by one liveness
//!   bound ([`wait`]).
//!
//! Around the world, what several test files share: the raw-ring guest
//! driver of the backend's tests ([`driver`], with [`bot`] for its disk and
//! [`rng`] for data), the scripted backend of the frontend's tests
//! ([`scripted`]), the toolstack's stand-ins ([`peer`], [`host`]) and the
//! ready-made worlds of the frontend's and the cross-crate tests ([`rig`],
//! [`machine`]).
//!
//! Every module says why it exists in its first lines; `docs/testing.md`
//! says which tests use what.
#![forbid(unsafe_code)]

pub mod bot;
pub mod controller;
pub mod daemon;
pub mod devices;
pub mod dir;
pub mod domain;
pub mod driver;
pub mod frontend;
pub mod host;
pub mod machine;
pub mod peer;
pub mod rig;
pub mod rng;
#[cfg(feature = "scripted")]
pub mod scripted;
pub mod toolstack;
pub mod wait;
pub mod world;
pub mod xenstore;

pub use controller::Controller;
pub use daemon::wait_stats;
pub use driver::Driver;
pub use toolstack::Ts;
pub use wait::{wait_for, LIVENESS};
pub use world::World;
pub use xenstore::Xenstore;
