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
use crate::usb::{
    Completion, IsoPacket, TransferBuffer, TransferKind, TransferOutcome, SETUP_STAGE_LEN,
};

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
    /// Bulk URBs of at least this many bytes run on the guest's mapped
    /// pages instead of a grant copy, where the device can (0: never; see
    /// `UrbEngine::set_map_min_bytes`).
    pub(crate) map_min_bytes: usize,
    /// Isochronous descriptor bytes being read.
    scratch: Vec<u8>,
    /// Copy segments of the packets of an isochronous URB, packed.
    iso_segs: Vec<CopySeg>,
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
            map_min_bytes: 0,
            scratch: Vec::new(),
            iso_segs: Vec::new(),
        }
    }

    /// Gives a transfer's buffer back: its bytes to the pool, its guest
    /// mapping (if any) released.
    pub(crate) fn recycle(&mut self, buffer: TransferBuffer) {
        self.pool.put(buffer.into_vec());
    }

    /// The buffer `urb` goes to the device with: its OUT data copied from
    /// the guest in the layout the device layer transfers from (behind the
    /// setup stage's room for control, packets back to back for
    /// isochronous, whose `packets` are rewritten to match), so nothing is
    /// moved again below. `None` (logged, answered -EINVAL by the caller)
    /// if the grants do not allow the copy.
    pub(crate) fn fill(
        &mut self,
        urb: &Urb,
        kind: &mut TransferKind,
        mem: &dyn GuestMemory,
    ) -> Option<TransferBuffer> {
        let len = urb.max_len;
        let (mut buffer, segs) = match kind {
            TransferKind::Control { .. } => {
                let bytes = self.pool.take(SETUP_STAGE_LEN + len);
                (TransferBuffer::with_head(bytes, SETUP_STAGE_LEN), None)
            }
            TransferKind::Isochronous { packets } => {
                let (total, segs) = self.pack_iso(urb, packets)?;
                let mut buffer = TransferBuffer::new(self.buffer(total));
                if urb.is_in {
                    buffer.fill(0);
                }
                (buffer, Some(segs))
            }
            _ => (TransferBuffer::new(self.buffer(len)), None),
        };
        let copied = match &segs {
            _ if urb.is_in || buffer.is_empty() => true,
            Some(segs) => self.copy_segments_out(urb.ring_id, segs, mem, &mut buffer),
            None => self.copy_out(urb.ring_id, &urb.data, mem, &mut buffer),
        };
        if let Some(segs) = segs {
            // Kept for the next isochronous URB: no allocation per URB.
            self.iso_segs = segs;
        }
        if copied {
            Some(buffer)
        } else {
            self.recycle(buffer);
            None
        }
    }

    /// Rewrites the offsets of `packets` to lie back to back (libusb's
    /// layout) and gives their total and the guest segments of the packets
    /// in that order. `None` if a packet lies outside the data (`read_iso`
    /// checked that already).
    fn pack_iso(&mut self, urb: &Urb, packets: &mut [IsoPacket]) -> Option<(usize, Vec<CopySeg>)> {
        let mut segs = std::mem::take(&mut self.iso_segs);
        segs.clear();
        let mut at = 0usize;
        for p in packets.iter_mut() {
            let (offset, length) = (p.offset as usize, p.length as usize);
            if !urb.is_in && !urb.data.append_range(offset, length, &mut segs) {
                return None;
            }
            p.offset = u32::try_from(at).ok()?;
            at = at.checked_add(length)?;
        }
        Some((at, segs))
    }

    /// Bulk data of `urb` as the guest's pages mapped, when the device can
    /// transfer from them and the URB is large enough; `None`: copy it.
    pub(crate) fn map_data(
        &mut self,
        urb: &Urb,
        device_maps: bool,
        mem: &dyn GuestMemory,
    ) -> Option<TransferBuffer> {
        if !device_maps || self.map_min_bytes == 0 || urb.max_len < self.map_min_bytes {
            return None;
        }
        match mem.map(urb.data.as_slice(), urb.is_in) {
            Ok(mapped) if mapped.len() == urb.max_len => {
                Stats::inc(&self.stats.mapped);
                Some(TransferBuffer::mapped(mapped))
            }
            Ok(_) => {
                Stats::inc(&self.stats.map_fallbacks);
                None
            }
            Err(e) => {
                Stats::inc(&self.stats.map_fallbacks);
                tracing::trace!(id = urb.ring_id.get(), error = %e, "copying instead of mapping");
                None
            }
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
        self.copy_segments_out(id, data.as_slice(), mem, buf)
    }

    /// Copies OUT data from the guest segments `segs` into `buf` (see
    /// [`Resources::copy_out`]).
    fn copy_segments_out(
        &mut self,
        id: RingId,
        segs: &[CopySeg],
        mem: &dyn GuestMemory,
        buf: &mut [u8],
    ) -> bool {
        match mem.copy_from(segs, buf) {
            Ok(()) => true,
            Err(err) => {
                self.grant_failed(
                    id,
                    format_args!("cannot copy OUT data from the guest: {err}"),
                );
                false
            }
        }
    }

    /// Counts a grant copy for URB `id` that failed and logs `what`
    /// (rate-limited: the guest decides how often it happens).
    fn grant_failed(&mut self, id: RingId, what: std::fmt::Arguments<'_>) {
        Stats::inc(&self.stats.grant_errors);
        guest_warn!(self.limiter, domid = self.domid, id = id.get(), "{what}");
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
        let actual = c.actual_length.min(u.max_len).min(c.buffer.data_len());
        let Some(iso) = &u.iso else {
            let data = c.buffer.guest().is_none().then_some(&c.buffer[..]);
            return self.answer(u, status, actual, data, mem);
        };
        let mut records: Vec<u8> = Vec::with_capacity(iso.descriptors.len() * ISO_DESCRIPTOR_LEN);
        let mut segs: Vec<CopySeg> = iso.desc.as_slice().to_vec();
        let mut data: Vec<u8> = Vec::new();
        let mut fits = true;
        // The device got the packets back to back (see `Resources::fill`):
        // each packet's received bytes go from there to its own offset in
        // the guest's buffer.
        let mut packed = 0usize;
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
            if u.is_in && len > 0 {
                let (offset, len) = (d.offset as usize, len as usize);
                match c.buffer.get(packed..packed + len) {
                    Some(bytes) if u.data.append_range(offset, len, &mut segs) => {
                        data.extend_from_slice(bytes);
                    }
                    _ => fits = false,
                }
            }
            packed += d.length as usize;
        }
        // The packet results and the IN data go to the guest in one grant
        // copy (one system call instead of two): an audio stream sends a
        // 1 ms URB a thousand times a second, and each system call of a
        // dom0 costs far more than copying a few hundred bytes once more.
        records.extend_from_slice(&data);
        let ok = fits && mem.copy_to(&segs, &records).is_ok();
        if !ok {
            self.grant_failed(
                u.ring_id,
                format_args!("cannot write iso results to the guest"),
            );
            return response(u.ring_id, Status::Inval, 0);
        }
        let mut r = response(u.ring_id, status, actual);
        r.error_count = i32::try_from(c.error_count).unwrap_or(i32::MAX);
        // CAST: deliberate truncation. usbif's start_frame is 16 bits and frame
        // numbers are a wrapping counter, so the low bits are the frame (Linux
        // usbback stores `urb->start_frame` into the same u16).
        #[allow(clippy::cast_possible_truncation)]
        let start_frame = c.start_frame as u16;
        r.start_frame = start_frame;
        r
    }

    /// The response for a non-isochronous URB that ended with `status` after
    /// `actual` bytes; IN data (`data[..actual]`) goes to the guest first.
    /// `data` is `None` when the device wrote it there itself (a mapped
    /// buffer).
    pub(crate) fn answer(
        &mut self,
        u: &Urb,
        status: Status,
        actual: usize,
        data: Option<&[u8]>,
        mem: &dyn GuestMemory,
    ) -> UrbResponse {
        if let (true, true, Some(data)) = (u.is_in, actual > 0, data) {
            let segs = u.data.truncated(actual);
            let copied = data
                .get(..segs.total())
                .is_some_and(|b| mem.copy_to(segs.as_slice(), b).is_ok());
            if !copied {
                self.grant_failed(u.ring_id, format_args!("cannot copy IN data to the guest"));
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
