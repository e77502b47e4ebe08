//! The simulated world pvusb's tests, benches, `pvusb demo` and `pvusb
//! bench` run in: one place that builds it, so each of them says only what
//! is particular to it.
//!
//! Two layers:
//!
//! * Building blocks that return errors, for the `pvusb` commands as much
//!   as for tests, with no feature: the world's directory ([`dir`]), the
//!   embedded xenstore ([`xenstore`]), guest domains ([`domain`]), a
//!   controller's nodes in libxl's layout ([`controller`]), waits
//!   bounded by one liveness bound ([`wait`]), and threads that run beside
//!   a test until it drops them ([`background`]); and what a program run
//!   to its end said ([`run`]).
//! * With feature `world`, for tests (it panics with the reason instead of
//!   returning errors): `World` — a directory, xenstore, dom0 and guests,
//!   an emulated USB bus described in a fake sysfs (`devices`), and in it
//!   the real backend daemon (`daemon`: controllers as threads, or as
//!   confined worker processes with fault injection), real frontends
//!   (`frontend`) and the real toolstack (`toolstack`).
//!
//! Around the world, what several test files share: the raw-ring guest
//! driver of the backend's tests (`driver`, with `bot` for its disk and
//! [`rng`] for data), the scripted backend of the frontend's tests
//! (`scripted`, feature `scripted`), the toolstack's stand-ins (`peer`,
//! `host`) and the ready-made worlds of the frontend's and the cross-crate
//! tests (`rig`, `machine`).
//!
//! Every module says why it exists in its first lines; `docs/testing.md`
//! says which tests use what.
#![forbid(unsafe_code)]

pub mod background;
pub mod controller;
pub mod dir;
pub mod domain;
pub mod rng;
pub mod run;
pub mod wait;
pub mod xenstore;

#[cfg(feature = "world")]
pub mod bot;
#[cfg(feature = "world")]
pub mod daemon;
#[cfg(feature = "world")]
pub mod devices;
#[cfg(feature = "world")]
pub mod driver;
#[cfg(feature = "world")]
pub mod frontend;
#[cfg(feature = "world")]
pub mod host;
#[cfg(feature = "world")]
pub mod machine;
#[cfg(feature = "world")]
pub mod peer;
#[cfg(feature = "world")]
pub mod rig;
#[cfg(feature = "scripted")]
pub mod scripted;
#[cfg(feature = "world")]
pub mod toolstack;
#[cfg(feature = "world")]
pub mod world;

pub use controller::Controller;
pub use wait::{wait_for, LIVENESS};
pub use xenstore::Xenstore;

#[cfg(feature = "world")]
pub use daemon::wait_stats;
#[cfg(feature = "world")]
pub use driver::Driver;
#[cfg(feature = "world")]
pub use toolstack::Ts;
#[cfg(feature = "world")]
pub use world::World;
