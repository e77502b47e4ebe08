//! The Xen shared-ring engine (ring.h semantics) over bounds-checked shared memory.
#![forbid(unsafe_code)]

pub mod shared;

pub use shared::{HeapMem, MemError, SharedMem};
