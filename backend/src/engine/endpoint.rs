//! One endpoint of one device as the engine sees it: the URBs waiting for
//! it, the URBs it has on the device (each with the transfer carrying it)
//! and whether the newest of those transfers is a coalesced one.
//!
//! WHY here: a URB's whole life after routing (waiting, joining a coalesced
//! transfer, being split out of it, requeued, unlinked, aborted) is a
//! matter of its endpoint's order, so the endpoint owns it; the engine only
//! routes requests to endpoints and completions to the endpoint that owns
//! the transfer. The joining and splitting rules themselves are the pure
//! functions of [`crate::coalesce`].

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use pvusb_protocol::{Status, UrbResponse};

use super::resources::{response, Resources};
use super::urb::Urb;
use super::MAX_IN_FLIGHT;
use crate::addr::patch_ep0_max_packet;
use crate::coalesce::{self, Fate, Member};
use crate::guest::GuestMemory;
use crate::ids::{RingId, TransferId};
use crate::stats::{Stats, UrbType};
use crate::usb::{Completion, Transfer, TransferBuffer, TransferKind, TransferOutcome, UsbDevice};

/// A URB on the device.
#[derive(Debug)]
struct Sent {
    /// The transfer carrying it (shared by the members of a coalesced one).
    transfer: TransferId,
    urb: Urb,
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Endpoint {
    port: u8,
    /// bEndpointAddress (with the direction bit); 0 for control requests.
    address: u8,
    /// Bulk URBs not yet given to the device, oldest first.
    waiting: VecDeque<Urb>,
    /// URBs on the device, in submission order.
    sent: Vec<Sent>,
    /// The newest bulk transfer in flight is a coalesced one: nothing of
    /// `waiting` may pass it (see [`crate::coalesce`]). Nothing is submitted
    /// after it and an endpoint completes in order, so it is the last bulk
    /// transfer to come back: the flag clears when no bulk URB is on the
    /// device any more.
    coalesced: bool,
}

impl Endpoint {
    /// The endpoint `address` of the device on `port`, with nothing in it.
    pub(crate) fn new(port: u8, address: u8) -> Self {
        Self {
            port,
            address,
            waiting: VecDeque::new(),
            sent: Vec::new(),
            coalesced: false,
        }
    }

    /// Root-hub port of its device.
    pub(crate) fn port(&self) -> u8 {
        self.port
    }

    /// Its bEndpointAddress.
    pub(crate) fn address(&self) -> u8 {
        self.address
    }

    /// URBs it holds (waiting or on the device).
    pub(crate) fn urbs(&self) -> usize {
        self.waiting.len() + self.sent.len()
    }

    /// Whether it holds nothing (and so has no state worth keeping).
    pub(crate) fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.sent.is_empty()
    }

    /// Whether it holds the URB `id`.
    pub(crate) fn holds(&self, id: RingId) -> bool {
        self.waiting.iter().any(|u| u.ring_id == id)
            || self.sent.iter().any(|s| s.urb.ring_id == id)
    }

    /// Whether transfer `tid` is one of its own.
    pub(crate) fn owns(&self, tid: TransferId) -> bool {
        self.sent.iter().any(|s| s.transfer == tid)
    }

    /// Its transfers on the device (one per member of a coalesced transfer).
    pub(crate) fn transfers(&self) -> impl Iterator<Item = TransferId> + '_ {
        self.sent.iter().map(|s| s.transfer)
    }

    /// Queues a bulk URB for [`Endpoint::dispatch`].
    pub(crate) fn enqueue(&mut self, urb: Urb) {
        self.waiting.push_back(urb);
    }

    /// Gives `urb` (not a bulk one) to `device` as a transfer of its own, or
    /// answers it if its OUT data cannot be read.
    pub(crate) fn submit_alone(
        &mut self,
        urb: Urb,
        mut kind: TransferKind,
        device: &mut dyn UsbDevice,
        mem: &dyn GuestMemory,
        res: &mut Resources,
        out: &mut Vec<UrbResponse>,
    ) {
        let Some(buffer) = res.fill(&urb, &mut kind, mem) else {
            out.push(response(urb.ring_id, Status::Inval, 0));
            return;
        };
        let tid = res.ids.next();
        Stats::inc(&res.stats.submitted);
        Stats::inc(&res.stats.transfers);
        if let Some(p) = res.port_stats(self.port) {
            p.transfer();
        }
        let short_not_ok = urb.short_not_ok;
        self.sent.push(Sent { transfer: tid, urb });
        device.submit(
            tid,
            Transfer {
                endpoint: self.address,
                kind,
                buffer,
                short_not_ok,
            },
        );
    }

    /// Gives `device` what waits: URBs that wait together as one transfer
    /// where the device gains from it, everything else one by one,
    /// pipelined (see [`crate::coalesce`]). Without a device, each is
    /// answered -ENODEV.
    pub(crate) fn dispatch(
        &mut self,
        mut device: Option<&mut dyn UsbDevice>,
        mem: &dyn GuestMemory,
        res: &mut Resources,
        out: &mut Vec<UrbResponse>,
    ) {
        let joinable = device
            .as_ref()
            .is_some_and(|d| d.info().gains_from_coalescing);
        // Bounded: each pass takes at least one URB off the queue, which
        // holds at most MAX_IN_FLIGHT.
        for _ in 0..=MAX_IN_FLIGHT {
            // Nothing may pass a coalesced transfer (see `crate::coalesce`).
            if self.coalesced {
                break;
            }
            let batch = self.next_batch(joinable);
            if batch == 0 {
                break;
            }
            self.submit_bulk(batch, device.as_deref_mut(), mem, res, out);
        }
    }

    /// How many URBs at the front of the queue go to the device as the next
    /// transfer: a run that may be coalesced, else one.
    fn next_batch(&self, joinable: bool) -> usize {
        let (mut n, mut total, mut last) = (0usize, 0usize, 0usize);
        for u in &self.waiting {
            let small = joinable && coalesce::coalescible(u.max_len);
            if n > 0
                && (!small
                    || total + u.max_len > coalesce::MAX_TRANSFER
                    || !coalesce::joins(last, u.max_len))
            {
                break;
            }
            n += 1;
            total += u.max_len;
            last = u.max_len;
            if !small {
                break;
            }
        }
        n
    }

    /// One device transfer for the first `n` waiting URBs (in order); those
    /// whose OUT data cannot be copied are answered and left out.
    fn submit_bulk(
        &mut self,
        n: usize,
        device: Option<&mut (dyn UsbDevice + '_)>,
        mem: &dyn GuestMemory,
        res: &mut Resources,
        out: &mut Vec<UrbResponse>,
    ) {
        let n = n.min(self.waiting.len());
        let total: usize = self.waiting.iter().take(n).map(|u| u.max_len).sum();
        // A URB alone may run on its mapped pages (then nothing is copied).
        let device_maps = device
            .as_ref()
            .is_some_and(|d| d.info().transfers_guest_pages);
        let mapped = match self.waiting.front() {
            Some(urb) if n == 1 => res.map_data(urb, device_maps, mem),
            _ => None,
        };
        let is_mapped = mapped.is_some();
        let mut buffer = mapped.unwrap_or_else(|| TransferBuffer::new(res.buffer(total)));
        let tid = res.ids.next();
        let first = self.sent.len();
        let now = Instant::now();
        let mut offset = 0;
        for mut urb in self.waiting.drain(..n) {
            let len = urb.max_len;
            if !urb.is_in && len > 0 && !is_mapped {
                let dst = buffer.get_mut(offset..offset + len).unwrap_or_default();
                if !res.copy_out(urb.ring_id, &urb.data, mem, dst) {
                    res.retire(&urb, Status::Inval.as_i32(), 0);
                    out.push(response(urb.ring_id, Status::Inval, 0));
                    continue;
                }
            }
            urb.offset = offset;
            urb.submitted_at = now;
            offset += len;
            self.sent.push(Sent { transfer: tid, urb });
        }
        if !is_mapped {
            buffer.truncate_data(offset);
        }
        let kept = self.sent.len() - first;
        if kept == 0 {
            res.recycle(buffer);
            return;
        }
        let Some(device) = device else {
            res.recycle(buffer);
            for Sent { urb, .. } in self.sent.drain(first..) {
                res.retire(&urb, Status::NoDev.as_i32(), 0);
                Stats::inc(&res.stats.no_device);
                out.push(response(urb.ring_id, Status::NoDev, 0));
            }
            return;
        };
        let short_not_ok = self.sent.last().is_some_and(|s| s.urb.short_not_ok);
        self.coalesced = kept > 1;
        res.stats
            .submitted
            .fetch_add(kept as u64, Ordering::Relaxed);
        Stats::inc(&res.stats.transfers);
        if let Some(p) = res.port_stats(self.port) {
            p.transfer();
        }
        tracing::trace!(
            %tid,
            endpoint = self.address,
            urbs = kept,
            bytes = offset,
            mapped = is_mapped,
            "bulk transfer"
        );
        device.submit(
            tid,
            Transfer {
                endpoint: self.address,
                kind: TransferKind::Bulk,
                buffer,
                // A coalesced transfer must run to its short packet; each
                // URB's own flag is applied when it is split.
                short_not_ok: kept == 1 && short_not_ok,
            },
        );
    }

    /// Unlinks URB `id`: one still waiting is answered at once; one on the
    /// device is cancelled there (if `device` is there) and answered with
    /// the completion. Whether it held `id`.
    pub(crate) fn unlink(
        &mut self,
        id: RingId,
        device: Option<&mut dyn UsbDevice>,
        res: &mut Resources,
        out: &mut Vec<UrbResponse>,
    ) -> bool {
        if let Some(pos) = self.waiting.iter().position(|u| u.ring_id == id) {
            let Some(urb) = self.waiting.remove(pos) else {
                return false;
            };
            if let Some(p) = res.port_stats(self.port) {
                p.unlink();
            }
            let cancelled = TransferOutcome::Cancelled.status();
            res.retire(&urb, cancelled.as_i32(), 0);
            Stats::inc(&res.stats.unlinks_hit);
            out.push(response(id, cancelled, 0));
            return true;
        }
        let Some(sent) = self.sent.iter_mut().find(|s| s.urb.ring_id == id) else {
            return false;
        };
        sent.urb.unlinked = true;
        if let Some(p) = res.port_stats(self.port) {
            p.unlink();
        }
        if let Some(dev) = device {
            Stats::inc(&res.stats.unlinks_hit);
            // Its own response comes with the completion.
            dev.cancel(sent.transfer);
        }
        true
    }

    /// Handles the completion of its transfer `tid` (see [`Endpoint::owns`]).
    pub(crate) fn complete(
        &mut self,
        tid: TransferId,
        mut c: Completion,
        mem: &dyn GuestMemory,
        res: &mut Resources,
        out: &mut Vec<UrbResponse>,
    ) {
        let members = self.sent.iter().filter(|s| s.transfer == tid).count();
        tracing::trace!(%tid, members, actual = c.actual_length, outcome = ?c.outcome, "completion");
        if members > 1 {
            self.complete_coalesced(tid, c, mem, res, out);
        } else if let Some(pos) = self.sent.iter().position(|s| s.transfer == tid) {
            // The order of `sent` means nothing (a coalesced transfer's
            // members are sorted by offset when split), and shifting the
            // ~400-byte URB states behind the first one cost up to 9 % of
            // small-URB throughput: swap instead.
            let Sent { urb, .. } = self.sent.swap_remove(pos);
            if urb.patch_ep0 {
                let actual = c.actual_length.min(c.buffer.data_len());
                patch_ep0_max_packet(c.buffer.get_mut(..actual).unwrap_or_default());
            }
            let rsp = res.finish(&urb, &c, mem);
            res.account(&urb, &rsp);
            res.recycle(c.buffer);
            out.push(rsp);
        }
        if !self.sent.iter().any(|s| s.urb.urb_type == UrbType::Bulk) {
            self.coalesced = false;
        }
    }

    /// Splits a coalesced transfer's result over its URBs (see
    /// [`coalesce::split`]); those that got nothing go back to the front of
    /// the queue, in order, for the next dispatch.
    fn complete_coalesced(
        &mut self,
        tid: TransferId,
        c: Completion,
        mem: &dyn GuestMemory,
        res: &mut Resources,
        out: &mut Vec<UrbResponse>,
    ) {
        let mut parts: Vec<Urb> = Vec::with_capacity(MAX_IN_FLIGHT);
        let mut i = 0;
        while i < self.sent.len() {
            if self.sent.get(i).is_some_and(|s| s.transfer == tid) {
                parts.push(self.sent.swap_remove(i).urb);
            } else {
                i += 1;
            }
        }
        parts.sort_unstable_by_key(|u| u.offset);
        let members: Vec<Member> = parts
            .iter()
            .map(|u| Member {
                offset: u.offset,
                len: u.max_len,
                short_not_ok: u.short_not_ok,
                unlinked: u.unlinked,
            })
            .collect();
        let actual = c.actual_length.min(c.buffer.data_len());
        let fates = coalesce::split(&members, c.outcome, actual);
        let mut requeue: Vec<Urb> = Vec::new();
        for (mut urb, fate) in parts.into_iter().zip(fates) {
            match fate {
                Fate::Requeue => {
                    urb.offset = 0;
                    requeue.push(urb);
                }
                Fate::Answer { outcome, actual } => {
                    let data = c.buffer.get(urb.offset..).unwrap_or_default();
                    let rsp = res.answer(&urb, outcome.status(), actual, Some(data), mem);
                    res.account(&urb, &rsp);
                    out.push(rsp);
                }
            }
        }
        for urb in requeue.into_iter().rev() {
            self.waiting.push_front(urb);
        }
        res.recycle(c.buffer);
    }

    /// Answers every URB it holds with `status` (its device was closed, or
    /// the connection went; late completions are dropped as stale).
    pub(crate) fn abort(self, status: Status, res: &mut Resources, out: &mut Vec<UrbResponse>) {
        let sent = self.sent.into_iter().map(|s| s.urb);
        for urb in sent.chain(self.waiting) {
            res.retire(&urb, status.as_i32(), 0);
            Stats::inc(&res.stats.aborted);
            out.push(response(urb.ring_id, status, 0));
        }
    }
}

#[cfg(test)]
mod tests;
