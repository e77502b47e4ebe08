//! A snapshot of a controller's URB engine for an operator or a test-bed to
//! read when a device stalls: what is in flight on which id, what waits in
//! the local queue, and both rings' indexes as each side published them.
//!
//! WHY: a stalled guest shows only its symptoms (resets in a loop); whether
//! a request sits unpublished, unanswered by the backend, or answered but
//! not consumed is visible only in these numbers, which nothing else logs.

use std::fmt;

use pvusb_protocol::Pipe;

use crate::engine::EngineStats;

/// The engine as it was at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineReport {
    /// A connection is attached (live or dead).
    pub attached: bool,
    /// Why a protocol error killed the controller, if one did.
    pub dead: Option<String>,
    /// Requests on the ring awaiting their response, by id (at most
    /// [`EngineReport::LISTED`] listed).
    pub in_flight: Vec<InFlightReport>,
    /// How many requests are on the ring in all.
    pub in_flight_total: usize,
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
            (Some(why), _) => write!(f, "dead ({why})")?,
            (None, true) => f.write_str("connected")?,
            (None, false) => f.write_str("not connected")?,
        }
        write!(
            f,
            "; {} in flight, {} queued",
            self.in_flight_total, self.queued
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
        for r in &self.in_flight {
            write!(f, "; [{r}]")?;
        }
        if self.in_flight_total > self.in_flight.len() {
            write!(f, "; ...")?;
        }
        Ok(())
    }
}
