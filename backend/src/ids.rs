//! The two identities of a piece of work: the guest's ring id of a URB and
//! the engine's id of a device transfer.
//!
//! WHY two types: a coalesced transfer carries several URBs, and a requeued
//! URB travels in a second transfer, so one is not the other. As plain
//! integers they were easy to mix up (and a transfer id was built by
//! shifting a ring id into a counter in two places); as newtypes the
//! compiler keeps them apart, and [`TransferIds`] is the one place that makes
//! transfer ids.

use std::fmt;

/// The id the guest gave a request (the usbif `id` field). The guest picks
/// it, so it is unique only as far as the engine checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RingId(u16);

impl RingId {
    /// The ring id of a request whose `id` field is `raw`.
    pub const fn new(raw: u16) -> Self {
        Self(raw)
    }

    /// The value for the response's `id` field.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for RingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The engine's handle for one submitted device transfer; unique among the
/// transfers in flight on one device. Only [`TransferIds`] makes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(u64);

impl TransferId {
    /// Any id, for unit tests of devices that are driven without an engine.
    #[cfg(test)]
    pub(crate) const fn for_tests(raw: u64) -> Self {
        Self(raw)
    }

    /// The value [`TransferId::for_tests`] took.
    #[cfg(test)]
    pub(crate) const fn raw_for_tests(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Start of the range [`TransferIds::for_probes`] hands out: far above the
/// engine's counter (2^63 submissions away), so a late probe completion
/// is never mistaken for an engine transfer and the other way round.
const PROBE_BASE: u64 = 1 << 63;

/// Makes transfer ids: a counter, so ids never repeat within one owner.
#[derive(Debug, Clone)]
pub struct TransferIds {
    next: u64,
}

impl Default for TransferIds {
    fn default() -> Self {
        Self::new()
    }
}

impl TransferIds {
    /// The engine's ids (1, 2, ...).
    pub const fn new() -> Self {
        Self { next: 1 }
    }

    /// Ids for the device policy's descriptor reads, which share the device
    /// (and its completion mailbox) with the engine: disjoint from
    /// [`TransferIds::new`]'s.
    pub const fn for_probes() -> Self {
        Self { next: PROBE_BASE }
    }

    /// A fresh id. Wraps after 2^64 (never, in practice).
    #[allow(clippy::should_implement_trait)] // not an iterator: it never ends
    pub fn next(&mut self) -> TransferId {
        let id = TransferId(self.next);
        self.next = self.next.wrapping_add(1);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_probes_stay_apart() {
        let mut engine = TransferIds::new();
        let (a, b) = (engine.next(), engine.next());
        assert_ne!(a, b);
        assert!(a < b);
        let mut probes = TransferIds::for_probes();
        let p = probes.next();
        assert!(p > b);
        assert_eq!(p.to_string(), PROBE_BASE.to_string());
        assert_eq!(RingId::new(7).get(), 7);
        assert_eq!(RingId::new(7).to_string(), "7");
    }
}
