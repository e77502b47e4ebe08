//! A connected controller's shared rings and event channel.
//!
//! Both rings are attached at the `rsp_prod` the page holds, which is 0 for a
//! fresh connection and, after a daemon restart, the first request the
//! previous daemon had not answered: such requests are taken again and
//! answered once by this daemon.

use std::collections::VecDeque;
use std::sync::Arc;

use pvusb_protocol::{
    ConnRequest, ConnResponse, Pipe, Speed, TransferType, UrbRequest, UrbResponse,
};
use pvusb_ring::sring::RSP_PROD;
use pvusb_ring::{BackRing, RingError, SharedMem};
use pvusb_support::Chain;
use pvusb_xen::EventChannel;

use crate::engine::MAX_IN_FLIGHT;
use crate::error::BackendError;
use crate::stats::Stats;

/// Conn-ring events kept while the frontend has no request posted; older
/// ones are dropped beyond this (events are level information, spec 8).
const CONN_BACKLOG: usize = 64;

/// What [`Connection::final_check`] does with `req_event` when the ring is
/// empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingWait {
    /// The worker is about to sleep: arm `req_event`, so the frontend's next
    /// request notifies it (and catch what arrived just before).
    Arm,
    /// The worker keeps polling the ring: only look, and leave `req_event`
    /// as it is, so a frontend publishing requests meanwhile does not notify
    /// us (one eventfd write per batch saved on its side, one spurious
    /// wake-up on ours). The worker must service once more with [`Self::Arm`]
    /// before it sleeps, or requests could wait for an event never sent.
    Poll,
}

/// The rings and event channel of one connection.
#[derive(Debug)]
pub struct Connection<M, C> {
    urb: BackRing<UrbRequest, UrbResponse, M>,
    conn: BackRing<ConnRequest, ConnResponse, M>,
    evtchn: C,
    backlog: VecDeque<(u8, Speed)>,
    stats: Arc<Stats>,
    /// After a daemon restart: how many of the requests still to take were
    /// published before this daemon attached ([`Self::fence_published`]).
    pre_restart: u32,
}

fn urb_err(source: RingError) -> BackendError {
    BackendError::Ring {
        ring: "urb",
        source,
    }
}

fn conn_err(source: RingError) -> BackendError {
    BackendError::Ring {
        ring: "conn",
        source,
    }
}

impl<M: SharedMem, C: EventChannel> Connection<M, C> {
    /// Attaches to the two mapped ring pages.
    pub fn new(
        urb_mem: M,
        conn_mem: M,
        evtchn: C,
        stats: Arc<Stats>,
    ) -> Result<Self, BackendError> {
        let start = urb_mem.load_u32(RSP_PROD).map_err(|e| urb_err(e.into()))?;
        let urb = BackRing::attach(urb_mem, start).map_err(urb_err)?;
        let start = conn_mem
            .load_u32(RSP_PROD)
            .map_err(|e| conn_err(e.into()))?;
        let conn = BackRing::attach(conn_mem, start).map_err(conn_err)?;
        Ok(Self {
            urb,
            conn,
            evtchn,
            backlog: VecDeque::new(),
            stats,
            pre_restart: 0,
        })
    }

    /// Marks every request published now as one the previous daemon may
    /// have started: [`Self::take_requests`] then says how many of those it
    /// returns, for [`must_not_rerun`].
    ///
    /// WHY: a daemon that died mid-transfer leaves its requests between
    /// `rsp_prod` and its private `req_cons` unanswered, and nothing tells
    /// which of them had reached the device. Running a bulk or interrupt
    /// transfer again is not harmless: the device may already have sent
    /// part of the data for the lost one, and the rerun can hand the guest
    /// the rest of it as if it were the start, or take a command block as
    /// data. Those requests are failed instead, which drivers recover from
    /// (usb-storage resets the pipe and retries the command).
    pub fn fence_published(&mut self) -> Result<(), BackendError> {
        self.pre_restart = self.urb.unconsumed_requests().map_err(urb_err)?;
        Ok(())
    }

    /// Copies out up to 16 published requests (each exactly once); returns
    /// how many it took and how many of those, at the front, were published
    /// before a daemon restart ([`Self::fence_published`]).
    pub fn take_requests_fenced(
        &mut self,
        out: &mut Vec<UrbRequest>,
    ) -> Result<(usize, usize), BackendError> {
        let n = self.take_requests(out)?;
        let fenced = usize::try_from(self.pre_restart)
            .unwrap_or(usize::MAX)
            .min(n);
        self.pre_restart = self
            .pre_restart
            .saturating_sub(u32::try_from(fenced).unwrap_or(u32::MAX));
        Ok((n, fenced))
    }

    /// The event channel (its fd is polled by the worker).
    pub fn evtchn(&self) -> &C {
        &self.evtchn
    }

    /// Copies out up to 16 published requests (each exactly once).
    pub fn take_requests(&mut self, out: &mut Vec<UrbRequest>) -> Result<usize, BackendError> {
        self.urb
            .take_requests_into(out, MAX_IN_FLIGHT)
            .map_err(urb_err)
    }

    /// Pushes responses and notifies if the frontend asked for it.
    pub fn respond(&mut self, rsps: &[UrbResponse]) -> Result<(), BackendError> {
        if rsps.is_empty() {
            return Ok(());
        }
        self.urb.push_responses(rsps).map_err(urb_err)?;
        self.stats
            .responses
            .fetch_add(rsps.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if self
            .urb
            .push_responses_and_check_notify()
            .map_err(urb_err)?
        {
            self.notify();
        }
        Ok(())
    }

    fn notify(&self) {
        Stats::inc(&self.stats.notifications);
        if let Err(e) = self.evtchn.notify() {
            tracing::debug!("event channel notify failed: {e}", e = Chain(&e));
        }
    }

    /// Whether requests are waiting; with [`RingWait::Arm`] arms
    /// `req_event` before saying no, with [`RingWait::Poll`] only looks.
    pub fn final_check(&mut self, wait: RingWait) -> Result<bool, BackendError> {
        match wait {
            RingWait::Poll => self.urb.has_unconsumed_requests().map_err(urb_err),
            RingWait::Arm => self.urb.final_check_for_requests().map_err(urb_err),
        }
    }

    /// Queues "port now has speed" and posts what the frontend has room for.
    pub fn post(&mut self, port: u8, speed: Speed) -> Result<(), BackendError> {
        if self.backlog.len() >= CONN_BACKLOG {
            self.backlog.pop_front();
            Stats::inc(&self.stats.conn_backlog_drops);
        }
        self.backlog.push_back((port, speed));
        self.flush_conn()
    }

    /// Posts backlogged conn events for which the frontend posted requests.
    pub fn flush_conn(&mut self) -> Result<(), BackendError> {
        let mut posted = false;
        while let Some(&(port, speed)) = self.backlog.front() {
            let Some(req) = self.conn.take_request().map_err(conn_err)? else {
                break;
            };
            self.conn
                .push_response(&ConnResponse::new(req, port, speed))
                .map_err(conn_err)?;
            self.backlog.pop_front();
            Stats::inc(&self.stats.conn_events);
            posted = true;
        }
        if posted
            && self
                .conn
                .push_responses_and_check_notify()
                .map_err(conn_err)?
        {
            self.notify();
        }
        Ok(())
    }

    /// Conn events waiting for the frontend to post requests.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }
}

/// Whether `request`, published before a daemon restart, must be failed
/// rather than run ([`Connection::fence_published`]): bulk and interrupt
/// transfers. Control transfers and isochronous ones are run: a repeated
/// control request leaves the device as one run would, and isochronous
/// data has no stream position to lose. Unlinks are run (they find
/// nothing).
pub fn must_not_rerun(request: &UrbRequest) -> bool {
    let pipe = Pipe::from_raw(request.pipe);
    !pipe.is_unlink()
        && matches!(
            pipe.transfer_type(),
            TransferType::Bulk | TransferType::Interrupt
        )
}
