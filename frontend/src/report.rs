//! Snapshots for an operator or a test-bed to read when a device stalls: a
//! controller's URB engine (what is in flight on which id, what waits in the
//! local queue, both rings' indexes as each side published them) and a vhci
//! bridge's table (which of vhci's commands await an answer).
//!
//! WHY: a stalled guest shows only its symptoms (resets in a loop); whether
//! a request sits unpublished, unanswered by the backend, or answered but
//! not consumed is visible only in these numbers, which nothing else logs.

use std::fmt;

use pvusb_protocol::Pipe;
use pvusb_support::Chain;

use crate::engine::EngineStats;
use crate::error::BackendViolation;

/// The first few of many things, and how many there were: a report's
/// length stays bounded however much is in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed<T> {
    /// The first ones, in order.
    pub shown: Vec<T>,
    /// How many there are in all.
    pub total: usize,
}

impl<T> Listed<T> {
    /// The first `limit` of `items`, and their count.
    pub fn first(limit: usize, items: impl IntoIterator<Item = T>) -> Self {
        let mut shown = Vec::new();
        let mut total = 0;
        for item in items {
            if shown.len() < limit {
                shown.push(item);
            }
            total += 1;
        }
        Self { shown, total }
    }
}

impl<T: fmt::Display> fmt::Display for Listed<T> {
    /// `; [first]; [second]` and `; ...` if some were left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.shown {
            write!(f, "; [{item}]")?;
        }
        if self.total > self.shown.len() {
            f.write_str("; ...")?;
        }
        Ok(())
    }
}

/// The engine as it was at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineReport {
    /// A connection is attached (live or dead).
    pub attached: bool,
    /// Why a protocol error killed the controller, if one did.
    pub dead: Option<BackendViolation>,
    /// Requests on the ring awaiting their response, by id (at most
    /// [`EngineReport::LISTED`] listed).
    pub in_flight: Listed<InFlightReport>,
    /// URBs waiting in the local queue for a free id.
    pub queued: usize,
    /// The urb ring's indexes.
    pub urb_ring: Option<RingIndexes>,
    /// The conn ring's indexes.
    pub conn_ring: Option<RingIndexes>,
    /// The counters.
    pub stats: EngineStats,
}

impl EngineReport {
    /// In-flight requests listed by name; the rest are counted.
    pub const LISTED: usize = 32;
}

/// One request id in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InFlightReport {
    /// A URB.
    Submit {
        /// Its request id.
        id: u16,
        /// The frontend's token for it (submission order).
        token: u64,
        /// Where it goes.
        pipe: Pipe,
        /// An unlink was asked for.
        unlinking: bool,
    },
    /// An unlink request.
    Unlink {
        /// Its request id.
        id: u16,
        /// The submit it cancels.
        target: u16,
    },
}

/// A front ring's indexes: ours and those in shared memory. A shared value
/// that could not be read is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingIndexes {
    /// Requests pushed (published or not).
    pub req_prod_pvt: u32,
    /// Requests published (shared).
    pub req_prod: Option<u32>,
    /// Where the backend wants its next request event (shared).
    pub req_event: Option<u32>,
    /// Responses consumed.
    pub rsp_cons: u32,
    /// Responses published by the backend (shared).
    pub rsp_prod: Option<u32>,
    /// Where we want our next response event (shared).
    pub rsp_event: Option<u32>,
}

struct Opt(Option<u32>);

impl fmt::Display for Opt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("?"),
        }
    }
}

impl fmt::Display for RingIndexes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "req_prod_pvt {} req_prod {} req_event {} rsp_cons {} rsp_prod {} rsp_event {}",
            self.req_prod_pvt,
            Opt(self.req_prod),
            Opt(self.req_event),
            self.rsp_cons,
            Opt(self.rsp_prod),
            Opt(self.rsp_event)
        )
    }
}

impl fmt::Display for InFlightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Submit {
                id,
                token,
                pipe,
                unlinking,
            } => {
                let p = pipe.fields();
                write!(
                    f,
                    "id {id} token {token} {:?} {:?} port {} dev {} ep {}{}",
                    p.transfer_type,
                    p.direction,
                    p.port,
                    p.device,
                    p.endpoint,
                    if *unlinking { " unlinking" } else { "" }
                )
            }
            Self::Unlink { id, target } => write!(f, "id {id} unlink of id {target}"),
        }
    }
}

impl fmt::Display for EngineReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.dead, self.attached) {
            (Some(why), _) => write!(f, "dead ({})", Chain(why))?,
            (None, true) => f.write_str("connected")?,
            (None, false) => f.write_str("not connected")?,
        }
        write!(
            f,
            "; {} in flight, {} queued",
            self.in_flight.total, self.queued
        )?;
        if let Some(r) = &self.urb_ring {
            write!(f, "; urb ring: {r}")?;
        }
        if let Some(r) = &self.conn_ring {
            write!(f, "; conn ring: {r}")?;
        }
        let s = &self.stats;
        write!(
            f,
            "; submitted {} completed {} notifications {} spurious events {}",
            s.submitted, s.completed, s.notifications, s.spurious_events
        )?;
        write!(f, "{}", self.in_flight)
    }
}

/// A bridge's table at one moment, for a stalled device's diagnosis: which
/// of vhci's commands await an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeReport {
    /// Commands read and not yet answered on the socket.
    pub credits_used: usize,
    /// Why the bridge is ending, if it is.
    pub ending: Option<String>,
    /// Submits in flight, lowest seqnum first (at most [`Self::LISTED`]).
    pub in_flight: Listed<String>,
}

impl BridgeReport {
    /// Submits listed by name; the rest are counted.
    pub const LISTED: usize = 16;
}

impl fmt::Display for BridgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in flight, {} credits used",
            self.in_flight.total, self.credits_used
        )?;
        if let Some(why) = &self.ending {
            write!(f, ", ending ({why})")?;
        }
        write!(f, "{}", self.in_flight)
    }
}
