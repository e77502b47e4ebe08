//! What every endpoint of a controller's engine shares: the buffer pool, the
//! counters, the log limiter and the transfer-id maker, and the guest-memory
//! work done with them (OUT data in, IN data and isochronous results out).
//!
//! WHY a separate owner: the endpoints own the URBs, the engine owns the
//! endpoints; an endpoint answering a URB borrows these, so they cannot sit
//! in the engine next to the endpoint list.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pvusb_protocol::{IsoPacketDescriptor, RequestSegment, Status, UrbResponse};
use pvusb_xen::CopySeg;

use super::urb::{IsoState, Urb};
use crate::guest::{GuestMemory, SegList};
use crate::guest_warn;
use crate::ids::{RingId, TransferIds};
use crate::pool::BufferPool;
use crate::ratelimit::RateLimiter;
use crate::stats::{PortStats, Stats};
use crate::usb::{Completion, IsoPacket, TransferOutcome};

/// Bytes of one isochronous packet descriptor in guest memory.
const ISO_DESCRIPTOR_LEN: usize = 16;

/// The response `id` gets: `status` after `len` bytes.
pub(crate) fn response(id: RingId, status: Status, len: usize) -> UrbResponse {
    UrbResponse::new(id.get(), status, u32::try_from(len).unwrap_or(u32::MAX))
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Resources {
    /// The guest's domain id (log lines only).
    pub(crate) domid: u16,
    pub(crate) pool: BufferPool,
    pub(crate) stats: Arc<Stats>,
    /// Per-port statistics on (see `UrbEngine::set_port_stats`).
    pub(crate) count_ports: bool,
    pub(crate) limiter: RateLimiter,
    pub(crate) ids: TransferIds,
    /// Isochronous descriptor bytes being read.
    scratch: Vec<u8>,
}

impl Resources {
    /// Resources for a controller serving domain `domid` with a pool for
    /// `buffers` idle buffers.
    pub(crate) fn new(domid: u16, buffers: usize, stats: Arc<Stats>) -> Self {
        Self {
            domid,
            pool: BufferPool::new(buffers),
            stats,
            count_ports: true,
            limiter: RateLimiter::default(),
            ids: TransferIds::new(),
            scratch: Vec::new(),
        }
    }

    /// A buffer of `len` bytes (no pooled buffer for an empty one).
    pub(crate) fn buffer(&mut self, len: usize) -> Vec<u8> {
        if len == 0 {
            Vec::new()
        } else {
            self.pool.take(len)
        }
    }

    /// The statistics of `port` when per-port counting is on.
    pub(crate) fn port_stats(&self, port: u8) -> Option<&PortStats> {
        if !self.count_ports {
            return None;
        }
        self.stats.ports.get(usize::from(port).wrapping_sub(1))
    }

    /// Copies an OUT URB's data from the guest into `buf`; `false` (logged)
    /// if the grants do not allow it.
    pub(crate) fn copy_out(
        &mut self,
        id: RingId,
        data: &SegList,
        mem: &dyn GuestMemory,
        buf: &mut [u8],
    ) -> bool {
        match mem.copy_from(data.as_slice(), buf) {
            Ok(()) => true,
            Err(err) => {
                Stats::inc(&self.stats.grant_errors);
                guest_warn!(
                    self.limiter,
                    domid = self.domid,
                    id = id.get(),
                    "cannot copy OUT data from the guest: {err}"
                );
                false
            }
        }
    }

    /// Reads the isochronous packet descriptors (a byte stream over the
    /// descriptor segments, which may straddle pages) and checks each packet
    /// against the data buffer of `data_len` bytes.
    pub(crate) fn read_iso(
        &mut self,
        mem: &dyn GuestMemory,
        packets: u16,
        desc_segs: &[RequestSegment],
        data_len: usize,
    ) -> Result<(IsoState, Vec<IsoPacket>), Status> {
        // Bounded: the guest's packet count is a u16.
        let bytes = usize::from(packets) * ISO_DESCRIPTOR_LEN;
        let desc = SegList::prefix(desc_segs, bytes);
        if desc.total() != bytes {
            Stats::inc(&self.stats.bad_iso);
            return Err(Status::Inval);
        }
        self.scratch.clear();
        self.scratch.resize(bytes, 0);
        if let Err(e) = mem.copy_from(desc.as_slice(), &mut self.scratch) {
            Stats::inc(&self.stats.grant_errors);
            guest_warn!(
                self.limiter,
                domid = self.domid,
                "cannot read iso descriptors: {e}"
            );
            return Err(Status::Inval);
        }
        let mut descriptors = Vec::with_capacity(usize::from(packets));
        let mut out = Vec::with_capacity(usize::from(packets));
        let data_len = u32::try_from(data_len).unwrap_or(u32::MAX);
        for chunk in self.scratch.chunks_exact(ISO_DESCRIPTOR_LEN) {
            let d: IsoPacketDescriptor = bytemuck::pod_read_unaligned(chunk);
            match d.checked_range(data_len) {
                Ok(r) => out.push(IsoPacket {
                    offset: r.start,
                    length: r.end - r.start,
                }),
                Err(e) => {
                    Stats::inc(&self.stats.bad_iso);
                    guest_warn!(self.limiter, domid = self.domid, "bad iso descriptor: {e}");
                    return Err(Status::Inval);
                }
            }
            descriptors.push(d);
        }
        let mut ranges: Vec<_> = out.iter().map(|p| p.offset..p.offset + p.length).collect();
        if let Err(e) = pvusb_protocol::check_disjoint(&mut ranges) {
            Stats::inc(&self.stats.bad_iso);
            guest_warn!(self.limiter, domid = self.domid, "bad iso descriptors: {e}");
            return Err(Status::Inval);
        }
        Ok((IsoState { desc, descriptors }, out))
    }

    /// The response to `u` from the completion of the transfer that carried
    /// it alone; its results go to the guest first.
    pub(crate) fn finish(&mut self, u: &Urb, c: &Completion, mem: &dyn GuestMemory) -> UrbResponse {
        let status = c.outcome.status();
        let actual = c.actual_length.min(u.max_len).min(c.buffer.len());
        let Some(iso) = &u.iso else {
            return self.answer(u, status, actual, &c.buffer, mem);
        };
        let mut records: Vec<u8> = Vec::with_capacity(iso.descriptors.len() * ISO_DESCRIPTOR_LEN);
        for (i, d) in iso.descriptors.iter().enumerate() {
            let (len, st) = match c.iso.get(i) {
                Some(r) => (r.actual_length.min(d.length), r.outcome.status()),
                None => (0, TransferOutcome::Error.status()),
            };
            let rec = IsoPacketDescriptor {
                actual_length: len,
                status: st.as_i32(),
                ..*d
            };
            records.extend_from_slice(bytemuck::bytes_of(&rec));
        }
        // The packet results and the IN data go to the guest in one grant
        // copy (one system call instead of two): an audio stream sends a
        // 1 ms URB a thousand times a second, and each system call of a
        // dom0 costs far more than copying a few hundred bytes once more.
        let mut segs: Vec<CopySeg> = iso.desc.as_slice().to_vec();
        let mut fits = true;
        if u.is_in {
            let n = u.max_len.min(c.buffer.len());
            let data = u.data.truncated(n);
            match c.buffer.get(..data.total()) {
                Some(bytes) => {
                    segs.extend_from_slice(data.as_slice());
                    records.extend_from_slice(bytes);
                }
                None => fits = false,
            }
        }
        let ok = fits && mem.copy_to(&segs, &records).is_ok();
        if !ok {
            Stats::inc(&self.stats.grant_errors);
            guest_warn!(
                self.limiter,
                domid = self.domid,
                id = u.ring_id.get(),
                "cannot write iso results to the guest"
            );
            return response(u.ring_id, Status::Inval, 0);
        }
        let mut r = response(u.ring_id, status, actual);
        r.error_count = i32::try_from(c.error_count).unwrap_or(i32::MAX);
        r.start_frame = c.start_frame as u16;
        r
    }

    /// The response for a non-isochronous URB that ended with `status` after
    /// `actual` bytes; IN data (`data[..actual]`) goes to the guest first.
    pub(crate) fn answer(
        &mut self,
        u: &Urb,
        status: Status,
        actual: usize,
        data: &[u8],
        mem: &dyn GuestMemory,
    ) -> UrbResponse {
        if u.is_in && actual > 0 {
            let segs = u.data.truncated(actual);
            let copied = data
                .get(..segs.total())
                .is_some_and(|b| mem.copy_to(segs.as_slice(), b).is_ok());
            if !copied {
                Stats::inc(&self.stats.grant_errors);
                guest_warn!(
                    self.limiter,
                    domid = self.domid,
                    id = u.ring_id.get(),
                    "cannot copy IN data to the guest"
                );
                return response(u.ring_id, Status::Inval, 0);
            }
        }
        let len = if u.is_in || status == Status::Ok {
            actual
        } else {
            0
        };
        response(u.ring_id, status, len)
    }

    /// Counts the answer `rsp` a device completion gave `u`.
    pub(crate) fn account(&self, u: &Urb, rsp: &UrbResponse) {
        let us = u64::try_from(u.submitted_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.device_us.fetch_add(us, Ordering::Relaxed);
        Stats::inc(&self.stats.completed);
        let bytes = u64::try_from(rsp.actual_length).unwrap_or(0);
        let counter = if u.is_in {
            &self.stats.bytes_in
        } else {
            &self.stats.bytes_out
        };
        counter.fetch_add(bytes, Ordering::Relaxed);
        if let Some(p) = self.port_stats(u.port) {
            p.answered(rsp.status, bytes, u.is_in, us);
        }
    }

    /// Counts the answer of `u` that no device completion carried (refused,
    /// cancelled while waiting, aborted) in its port's statistics.
    pub(crate) fn retire(&self, u: &Urb, status: i32, bytes: u64) {
        if let Some(p) = self.port_stats(u.port) {
            let us = u64::try_from(u.submitted_at.elapsed().as_micros()).unwrap_or(u64::MAX);
            p.answered(status, bytes, u.is_in, us);
        }
    }
}
