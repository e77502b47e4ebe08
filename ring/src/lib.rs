//! The Xen shared-ring engine (`xen/include/public/io/ring.h` semantics) over
//! bounds-checked shared memory.
//!
//! A ring is one shared page: a 64-byte header with four free-running u32 indexes
//! (`req_prod`, `req_event`, `rsp_prod`, `rsp_event`) and a power-of-two array of
//! slots, each big enough for a request or a response ([`sring`]). The front
//! ([`FrontRing`]) produces requests and consumes responses; the back ([`BackRing`])
//! does the opposite. Producers write privately, then publish with a release and a
//! full fence and learn whether the peer wants an event (notification suppression);
//! consumers run a final check before sleeping. [`polling`] is how long a side
//! keeps polling its ring after work before it sleeps on the event channel.
//!
//! Why a crate of its own, generic over the entry types: the urb ring and the conn
//! ring of usbif (and any other `DEFINE_RING_TYPES` ring) share all of this, and the
//! hostile-index checks must be written once.
//!
//! Hardening: entries are `bytemuck::Pod` values copied in and out through
//! [`SharedMem`] (never a reference into the page), each request is copied exactly
//! once, every index the peer writes is checked before use ([`RingError`]), and no
//! method loops more than one ring's worth, whatever the page says.
//!
//! ```
//! use pvusb_ring::{BackRing, FrontRing, HeapMem};
//! use std::sync::Arc;
//!
//! let page = Arc::new(HeapMem::page());
//! let mut front = FrontRing::<[u32; 2], [u32; 2], _>::new(Arc::clone(&page))?;
//! front.init_shared()?;
//! let mut back = BackRing::<[u32; 2], [u32; 2], _>::new(page)?;
//!
//! front.push_request(&[7, 42])?;
//! assert!(front.push_requests_and_check_notify()?); // the back asked for an event
//! let [id, value] = back.take_request()?.expect("published");
//! back.push_response(&[id, value + 1])?;
//! assert!(back.push_responses_and_check_notify()?);
//! assert_eq!(front.take_response()?, Some([7, 43]));
//! assert!(!front.final_check_for_responses()?); // nothing left: may sleep
//! # Ok::<(), pvusb_ring::RingError>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Hostile guest input flows through this crate: a silent `as` truncation or sign
// flip could turn an out-of-range length or index into a plausible one. Every
// remaining cast carries `#[allow]` and a `// CAST:` comment saying why it is exact.
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub mod back;
pub mod error;
pub mod front;
#[cfg(any(test, feature = "test-utils"))]
pub mod mock;
pub mod polling;
pub mod shared;
pub mod sring;

#[cfg(test)]
mod tests;

pub use back::BackRing;
pub use error::RingError;
pub use front::FrontRing;
pub use shared::{HeapMem, MemError, SharedMem};
pub use sring::{entry_size, notify_needed, ring_size, ring_size_for, Sring, HEADER_SIZE};
