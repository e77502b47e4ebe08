//! Per-port live statistics: URBs by transfer type, bytes, completions by
//! status, unlinks, device transfers and a latency histogram, written by the
//! controller's worker and read by `pvusb stats` and the metrics listener.
//!
//! WHY fixed arrays of relaxed atomics with one writer (the controller's
//! worker): counting sits on every URB's path, so it allocates nothing,
//! takes no lock and does no locked read-modify-write; a reader sees each counter on
//! its own (a snapshot is not one instant across counters, which statistics
//! do not need). URBs in flight are derived (accepted minus answered) rather
//! than kept as a gauge, so no path that answers a URB can forget to lower it.

use std::sync::atomic::{AtomicU64, Ordering};

use pvusb_protocol::Status;

/// Root-hub ports per controller at most (usbif: `USBIF_MAX_PORTNR`).
pub const MAX_PORTS: usize = 31;

/// Latency buckets: bucket `i` holds URBs that took `[2^i, 2^(i+1))`
/// microseconds (bucket 0 also below 1 µs); the last one everything longer.
pub const LATENCY_BUCKETS: usize = 32;

/// A URB's transfer type, the index into the per-type URB counters of [`PortStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrbType {
    /// Control.
    Control = 0,
    /// Bulk.
    Bulk = 1,
    /// Interrupt.
    Interrupt = 2,
    /// Isochronous.
    Isochronous = 3,
}

impl UrbType {
    /// Every type, in index order.
    pub const ALL: [UrbType; 4] = [
        UrbType::Control,
        UrbType::Bulk,
        UrbType::Interrupt,
        UrbType::Isochronous,
    ];

    /// Lower-case name (metrics labels, JSON keys).
    pub fn name(self) -> &'static str {
        match self {
            UrbType::Control => "control",
            UrbType::Bulk => "bulk",
            UrbType::Interrupt => "interrupt",
            UrbType::Isochronous => "isochronous",
        }
    }
}

/// Completion classes: the seven usbif statuses, then any other value.
const STATUS_SLOTS: usize = Status::ALL.len() + 1;

/// Live counters of one port.
#[derive(Debug, Default)]
pub struct PortStats {
    /// URBs accepted for the device, by [`UrbType`].
    urbs: [AtomicU64; 4],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Answers by status ([`Status::ALL`] order, then "other").
    completions: [AtomicU64; STATUS_SLOTS],
    unlinks: AtomicU64,
    transfers: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
    latency_us_sum: AtomicU64,
}

/// Adds `n` to a counter. Only the controller's worker writes these, so a
/// plain load and store suffice: no locked read-modify-write on every URB's
/// path (which cost a quarter of the small-URB rate in `pvusb bench`);
/// readers see each counter whole, as with any relaxed atomic.
fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl PortStats {
    /// A URB of type `t` was accepted for the device.
    pub fn urb(&self, t: UrbType) {
        if let Some(c) = self.urbs.get(t as usize) {
            add(c, 1);
        }
    }

    /// A device transfer started (a coalesced one carries several URBs).
    pub fn transfer(&self) {
        add(&self.transfers, 1);
    }

    /// The guest unlinked a URB of this port.
    pub fn unlink(&self) {
        add(&self.unlinks, 1);
    }

    /// A URB accepted by [`Self::urb`] was answered with wire `status` after
    /// `us` microseconds, moving `bytes` in direction `is_in`.
    pub fn answered(&self, status: i32, bytes: u64, is_in: bool, us: u64) {
        let slot = Status::ALL
            .iter()
            .position(|s| s.as_i32() == status)
            .unwrap_or(STATUS_SLOTS - 1);
        if let Some(c) = self.completions.get(slot) {
            add(c, 1);
        }
        add(
            if is_in {
                &self.bytes_in
            } else {
                &self.bytes_out
            },
            bytes,
        );
        let bucket = (u64::BITS - us.leading_zeros()).saturating_sub(1) as usize;
        if let Some(c) = self.latency.get(bucket.min(LATENCY_BUCKETS - 1)) {
            add(c, 1);
        }
        add(&self.latency_us_sum, us);
    }

    /// Sets every counter to `s`: a daemon whose controller runs in a
    /// worker process mirrors the worker's counters here.
    pub fn restore(&self, s: &PortSnapshot) {
        let store = |c: &AtomicU64, v: &u64| c.store(*v, Ordering::Relaxed);
        let store_all =
            |cs: &[AtomicU64], vs: &[u64]| cs.iter().zip(vs).for_each(|(c, v)| store(c, v));
        store_all(&self.urbs, &s.urbs);
        store(&self.bytes_in, &s.bytes_in);
        store(&self.bytes_out, &s.bytes_out);
        store_all(&self.completions, &s.completions);
        store(&self.unlinks, &s.unlinks);
        store(&self.transfers, &s.transfers);
        store_all(&self.latency, &s.latency);
        store(&self.latency_us_sum, &s.latency_us_sum);
    }

    /// Copies the counters.
    pub fn snapshot(&self) -> PortSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PortSnapshot {
            urbs: self.urbs.each_ref().map(load),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            completions: self.completions.each_ref().map(load),
            unlinks: load(&self.unlinks),
            transfers: load(&self.transfers),
            latency: self.latency.each_ref().map(load),
            latency_us_sum: load(&self.latency_us_sum),
        }
    }
}

/// A copy of one port's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortSnapshot {
    /// URBs accepted, by [`UrbType`].
    pub urbs: [u64; 4],
    /// Bytes the device returned (IN).
    pub bytes_in: u64,
    /// Bytes the device accepted (OUT).
    pub bytes_out: u64,
    /// Answers by status: [`Status::ALL`] order, then any other value.
    pub completions: [u64; STATUS_SLOTS],
    /// Unlink requests that named a URB of this port.
    pub unlinks: u64,
    /// Device transfers started.
    pub transfers: u64,
    /// Latency histogram (see [`LATENCY_BUCKETS`]).
    pub latency: [u64; LATENCY_BUCKETS],
    /// Sum of the latencies, µs.
    pub latency_us_sum: u64,
}

impl PortSnapshot {
    /// URBs accepted of every type.
    pub fn urbs_total(&self) -> u64 {
        self.urbs.iter().sum()
    }

    /// URBs answered.
    pub fn answered(&self) -> u64 {
        self.completions.iter().sum()
    }

    /// URBs accepted and not answered yet.
    pub fn in_flight(&self) -> u64 {
        self.urbs_total().saturating_sub(self.answered())
    }

    /// Whether nothing was ever counted.
    pub fn is_idle(&self) -> bool {
        self.urbs_total() == 0 && self.unlinks == 0
    }

    /// The latency below which a fraction `q` of the answered URBs lie, as
    /// the upper edge of the histogram bucket it falls in (µs); `None`
    /// before the first answer.
    pub fn latency_quantile_us(&self, q: f64) -> Option<u64> {
        let n: u64 = self.latency.iter().sum();
        if n == 0 {
            return None;
        }
        // Rank of the quantile, at least the first URB.
        // CAST: q is clamped to [0, 1], so the product lies in [0, n] (or is NaN
        // for a NaN q); float-to-int `as` saturates and maps NaN to 0.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.latency.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(1u64 << (i + 1).min(63));
            }
        }
        Some(u64::MAX)
    }

    /// The status names in [`Self::completions`] order.
    pub fn status_names() -> [&'static str; STATUS_SLOTS] {
        [
            "ok", "nodev", "inval", "stall", "ioerror", "babble", "shutdown", "other",
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_accepted_minus_answered() {
        let p = PortStats::default();
        p.urb(UrbType::Bulk);
        p.urb(UrbType::Bulk);
        p.urb(UrbType::Control);
        p.answered(0, 512, true, 100);
        p.answered(-32, 0, false, 3);
        let s = p.snapshot();
        assert_eq!(s.urbs, [1, 2, 0, 0]);
        assert_eq!(s.in_flight(), 1);
        assert_eq!((s.bytes_in, s.bytes_out), (512, 0));
        assert_eq!(s.completions[0], 1);
        assert_eq!(s.completions[3], 1, "stall");
    }

    #[test]
    fn latency_quantiles_come_from_the_histogram() {
        let p = PortStats::default();
        for _ in 0..98 {
            p.answered(0, 0, true, 10); // bucket 3: [8, 16)
        }
        p.answered(0, 0, true, 5000); // bucket 12: [4096, 8192)
        p.answered(0, 0, true, u64::MAX); // the last bucket
        let s = p.snapshot();
        assert_eq!(s.latency_quantile_us(0.5), Some(16));
        assert_eq!(s.latency_quantile_us(0.99), Some(8192));
        assert_eq!(s.latency_quantile_us(1.0), Some(1 << 32));
        assert_eq!(
            PortStats::default().snapshot().latency_quantile_us(0.5),
            None
        );
    }

    #[test]
    fn an_unknown_status_counts_as_other() {
        let p = PortStats::default();
        p.answered(-1234, 0, true, 0);
        assert_eq!(p.snapshot().completions[STATUS_SLOTS - 1], 1);
    }
}
