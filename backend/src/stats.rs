//! Per-controller counters, shared between the worker (which writes them) and
//! whoever asks (tests, logs, `pvusb stats`). Relaxed atomics: they are
//! statistics, not synchronisation.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters of one controller.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
            /// Per root-hub port (index `port - 1`).
            pub ports: [PortStats; MAX_PORTS],
        }

        /// A copy of [`Stats`]' controller-wide counters at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            /// Copies every controller-wide counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }

            /// Sets every controller-wide counter to `s` (a worker
            /// process's counters mirrored in its daemon).
            pub fn restore(&self, s: &StatsSnapshot) {
                $(self.$name.store(s.$name, Ordering::Relaxed);)*
            }
        }
    };
}

pub use crate::port_stats::{PortSnapshot, PortStats, UrbType, MAX_PORTS};

counters! {
    /// Requests taken from the urb ring.
    requests,
    /// Responses pushed on the urb ring.
    responses,
    /// Submits handed to a device.
    submitted,
    /// Device transfers started (a coalesced transfer carries several
    /// submits; see `crate::coalesce`).
    transfers,
    /// Device completions answered (every submit ends in one or in an abort).
    completed,
    /// Bytes the device returned for IN transfers (actual lengths).
    bytes_in,
    /// Bytes the device accepted for OUT transfers (actual lengths).
    bytes_out,
    /// Sum over completed transfers of the time from submit to completion, in
    /// microseconds: `device_us / completed` is the mean time a URB spends in
    /// the device (libusb, the kernel, the bus), the rest of a URB's round
    /// trip is the guest and the rings.
    device_us,
    /// Unlink requests.
    unlinks,
    /// Unlinks whose target was in flight (a cancel was sent to the device).
    unlinks_hit,
    /// Requests refused by validation (answered -EINVAL).
    invalid,
    /// Requests whose id was already in flight (answered -EINVAL).
    duplicate_ids,
    /// Requests to an address or port without a device (answered -ENODEV).
    no_device,
    /// Requests refused by the address model (e.g. unknown request to address 0).
    refused,
    /// SET_ADDRESS requests emulated.
    set_address,
    /// Devices reset because the guest enumerated them again (its port
    /// reset, which stays in the guest; see `engine::port_reset`).
    device_resets,
    /// Address-table saves to xenstore (one transaction each; rate-limited,
    /// see `Controller::save_addresses`).
    address_saves,
    /// Grant copies that failed (bad, foreign or read-only grants).
    grant_errors,
    /// Bulk transfers that ran on the guest's mapped pages instead of a
    /// grant-copied buffer (see `UrbEngine::set_map_min_bytes`).
    mapped,
    /// Bulk transfers large enough to map that were copied instead (pages
    /// not contiguous, or the mapping failed).
    map_fallbacks,
    /// Isochronous descriptors pointing outside the data buffer or
    /// overlapping each other.
    bad_iso,
    /// Requests answered without a device completion (detach, close, shutdown).
    aborted,
    /// Completions that arrived for a request already answered.
    stale_completions,
    /// Event-channel events received.
    events,
    /// Events that brought no work.
    spurious_events,
    /// Notifications sent to the frontend.
    notifications,
    /// Conn-ring events posted.
    conn_events,
    /// Conn-ring events waiting for the frontend to post requests.
    conn_backlog_drops,
    /// Ring failures that stopped the controller.
    ring_errors,
    /// Devices attached.
    attached,
    /// Devices refused (hub, speed, open failure).
    attach_refused,
    /// Connections established.
    connects,
    /// Requests in flight now (a gauge).
    in_flight,
    /// Pooled buffers allocated in total (a gauge of pool growth).
    pool_allocated,
    /// Pooled buffers idle in the pool now (a gauge).
    pool_free,
}

impl Stats {
    /// Adds one to a counter.
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub(crate) fn set(c: &AtomicU64, v: u64) {
        c.store(v, Ordering::Relaxed);
    }
}
