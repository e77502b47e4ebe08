//! `pvusb bench`: URB throughput of the whole stack, frontend and backend in
//! two processes over the simulated transport, measured against the machine's
//! own limits (memcpy, the cross-process event round trip) in the same run.
//!
//! | module | concern |
//! |---|---|
//! | [`session`] | the bench process: xenstore, backend child, controller, frontend, the figures |
//! | [`child`] | the backend process (hidden `--role backend`) |
//! | [`load`] | keeping N URBs in flight, timing single round trips |
//! | [`refs`] | memcpy and event round-trip references |
//! | [`device`] | `--device BUS.ADDR`: a real device and native libusb |
//! | [`scale`] | `--scale GxC`: many guests' worker processes at once |
//! | [`stats`], [`cpu`], [`report`] | medians, getrusage, table and JSON |

pub mod child;
pub mod cpu;
pub mod device;
pub mod load;
pub mod refs;
pub mod report;
pub mod scale;
pub mod session;
pub mod stats;
