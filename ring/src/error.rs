//! Errors of the ring engine.
//!
//! The overflow variants mean the *peer* published an index that no well-behaved
//! peer can publish. They are not transient: callers should treat the ring as broken
//! (QEMU sets `ring_error` and stops serving the controller; xen-hcd declares a
//! protocol error) instead of retrying. The variants carry the observed indexes so the
//! log line says what the peer did.

use crate::shared::MemError;

/// What went wrong on a shared ring. Variants are kept sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// A typed entry is larger than one ring slot.
    #[error("an entry of {entry} bytes does not fit in a ring slot of {slot} bytes")]
    EntryTooLarge {
        /// Size of the entry type.
        entry: usize,
        /// Size of one slot of this ring.
        slot: usize,
    },
    /// The front tried to push a request while all slots are in use.
    #[error("the ring is full: all {size} slots hold outstanding requests")]
    Full {
        /// Number of slots.
        size: u32,
    },
    /// Access to the shared page failed (the region is smaller than the layout says).
    #[error("shared ring memory access failed")]
    Mem(#[from] MemError),
    /// The back tried to push a response without an unanswered consumed request.
    #[error(
        "no consumed request is waiting for a response (rsp_prod_pvt {rsp_prod_pvt} = req_cons)"
    )]
    NoRequestToAnswer {
        /// The back's private response producer (equal to its request consumer).
        rsp_prod_pvt: u32,
    },
    /// The shared region cannot hold the header and at least one slot.
    #[error("a region of {region} bytes cannot hold a ring of {entry}-byte entries")]
    RegionTooSmall {
        /// Size of the shared region.
        region: usize,
        /// Slot size the ring needs.
        entry: usize,
    },
    /// The front published a `req_prod` that claims more requests than can exist:
    /// more than `size` ahead of our `rsp_prod_pvt` (`RING_REQUEST_PROD_OVERFLOW`), or
    /// behind our `req_cons`.
    #[error(
        "the frontend published req_prod {req_prod}, impossible with req_cons {req_cons}, \
         rsp_prod_pvt {rsp_prod_pvt} and {size} slots"
    )]
    RequestOverflow {
        /// The `req_prod` read from the shared page.
        req_prod: u32,
        /// Our request consumer.
        req_cons: u32,
        /// Our private response producer.
        rsp_prod_pvt: u32,
        /// Number of slots.
        size: u32,
    },
    /// The back published a `rsp_prod` that claims more responses than requests
    /// were published (`RING_RESPONSE_PROD_OVERFLOW`, tightened to the published,
    /// unanswered count).
    #[error(
        "the backend published rsp_prod {rsp_prod}, impossible with rsp_cons {rsp_cons}, \
         published req_prod {req_prod} and {size} slots"
    )]
    ResponseOverflow {
        /// The `rsp_prod` read from the shared page.
        rsp_prod: u32,
        /// Our response consumer.
        rsp_cons: u32,
        /// The `req_prod` we last published (requests the back can have seen).
        req_prod: u32,
        /// Number of slots.
        size: u32,
    },
}
