//! The URB engine of one controller: turns each copied-out request into a
//! response or a device transfer, and each device completion into a response.
//!
//! It owns no ring and no thread; the worker feeds it requests and completions
//! and pushes what it appends to `out` (so the fuzz target and unit tests
//! drive it directly). Rules it keeps:
//!
//! * every request gets exactly one response (the in-flight table holds each
//!   submitted request until its completion or an abort answers it);
//! * a response is appended only after all grant work for it is done;
//! * unlinks resolve against what was consumed before them (ring order);
//! * a submit whose id is still in flight is answered -EINVAL and the earlier
//!   request is left alone (xen-hcd never does this; a hostile guest gets an
//!   answer for each slot it used, and the original still completes once);
//! * a completion that no longer matches the in-flight entry (its request was
//!   already answered by an abort) only returns its buffer to the pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use pvusb_protocol::{
    IsoPacketDescriptor, Status, Submit, SubmitKind, UrbRequest, UrbResponse, ValidatedUrb,
};

use crate::addr::{AddressTable, Route};
use crate::coalesce::{self, Fate, Member, Queues};
use crate::guest::{GuestMemory, SegList};
use crate::guest_warn;
use crate::ids::TransferIds;
use crate::pool::BufferPool;
use crate::ratelimit::RateLimiter;
use crate::stats::{PortStats, Stats, UrbType};
use crate::usb::{
    Completion, IsoPacket, Transfer, TransferId, TransferKind, TransferOutcome, UsbDevice,
};

/// Requests a controller can have in flight: the urb ring's slot count.
pub const MAX_IN_FLIGHT: usize = 16;

/// The devices of a controller, by root-hub port.
pub trait Devices {
    /// The device attached on `port`, if any.
    fn device(&mut self, port: u8) -> Option<&mut dyn UsbDevice>;
}

#[derive(Debug)]
struct IsoState {
    desc: SegList,
    descriptors: Vec<IsoPacketDescriptor>,
}

#[derive(Debug)]
struct Entry {
    ring_id: u16,
    /// The device transfer carrying it; `None` while it waits in its
    /// endpoint's bulk queue (see [`crate::coalesce`]).
    tid: Option<TransferId>,
    port: u8,
    /// Endpoint address; bulk URBs go through the endpoint's queue.
    endpoint: u8,
    short_not_ok: bool,
    /// The guest unlinked it while its device transfer was in flight.
    unlinked: bool,
    /// Offset of its data in a coalesced transfer's buffer.
    offset: usize,
    is_in: bool,
    data: SegList,
    /// Bytes the response may report at most.
    max_len: usize,
    iso: Option<IsoState>,
    /// When the device got it (for `Stats::device_us`).
    submitted_at: Instant,
    /// Its transfer type, for the per-port statistics.
    urb_type: UrbType,
}

/// The per-controller URB engine.
#[derive(Debug)]
pub struct UrbEngine {
    num_ports: u8,
    domid: u16,
    in_flight: Vec<Entry>,
    addresses: AddressTable,
    pool: BufferPool,
    ids: TransferIds,
    stats: Arc<Stats>,
    /// Per-port statistics on (see [`Self::set_port_stats`]).
    count_ports: bool,
    limiter: RateLimiter,
    scratch: Vec<u8>,
    queues: Queues,
    /// Ring ids of the transfer being put together (see `dispatch_endpoint`).
    batch: Vec<u16>,
}

fn response(id: u16, status: Status, len: usize) -> UrbResponse {
    UrbResponse::new(id, status, u32::try_from(len).unwrap_or(u32::MAX))
}

impl UrbEngine {
    /// An engine for a controller of `num_ports` ports serving domain `domid`
    /// (used in log lines only).
    pub fn new(num_ports: u8, domid: u16, stats: Arc<Stats>) -> Self {
        Self {
            num_ports,
            domid,
            in_flight: Vec::with_capacity(MAX_IN_FLIGHT),
            addresses: AddressTable::new(),
            pool: BufferPool::new(MAX_IN_FLIGHT + 2),
            ids: TransferIds::new(),
            stats,
            count_ports: true,
            limiter: RateLimiter::default(),
            scratch: Vec::new(),
            queues: Queues::default(),
            batch: Vec::with_capacity(MAX_IN_FLIGHT),
        }
    }

    /// Replaces the log rate limiter (tests).
    pub fn set_rate_limiter(&mut self, limiter: RateLimiter) {
        self.limiter = limiter;
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Idle pooled buffers.
    pub fn pool_free(&self) -> usize {
        self.pool.free_count()
    }

    /// Guest addresses of the device on `port` are no longer valid.
    pub fn forget_port(&mut self, port: u8) {
        self.addresses.forget_port(port);
    }

    /// A new connection starts with no addresses.
    pub fn reset_addresses(&mut self) {
        self.addresses.clear();
    }

    /// The address table as text if it changed (see [`AddressTable::take_changes`]).
    pub fn take_address_changes(&mut self) -> Option<String> {
        self.addresses.take_changes()
    }

    /// Restores a saved address table (daemon restart).
    pub fn restore_addresses(&mut self, saved: &str) {
        self.addresses.restore(saved, self.num_ports);
    }

    fn gauges(&self) {
        Stats::set(&self.stats.in_flight, self.in_flight.len() as u64);
        Stats::set(&self.stats.pool_free, self.pool.free_count() as u64);
        Stats::set(&self.stats.pool_allocated, self.pool.allocated());
    }

    /// Handles one request copied out of the ring.
    pub fn handle_request(
        &mut self,
        req: &UrbRequest,
        mem: &dyn GuestMemory,
        devices: &mut dyn Devices,
        out: &mut Vec<UrbResponse>,
    ) {
        Stats::inc(&self.stats.requests);
        match pvusb_protocol::validate(req, self.num_ports) {
            Err(e) => {
                Stats::inc(&self.stats.invalid);
                guest_warn!(
                    self.limiter,
                    domid = self.domid,
                    id = req.id,
                    "invalid request: {e}"
                );
                out.push(response(req.id, e.status(), 0));
            }
            Ok(ValidatedUrb::Unlink { id, unlink_id, .. }) => {
                Stats::inc(&self.stats.unlinks);
                self.unlink(unlink_id, devices, out);
                out.push(response(id, Status::Ok, 0));
            }
            Ok(ValidatedUrb::Submit(s)) => self.submit(&s, mem, devices, out),
        }
        self.gauges();
    }

    fn submit(
        &mut self,
        s: &Submit,
        mem: &dyn GuestMemory,
        devices: &mut dyn Devices,
        out: &mut Vec<UrbResponse>,
    ) {
        let id = s.id();
        if self.in_flight.iter().any(|e| e.ring_id == id) || self.in_flight.len() >= MAX_IN_FLIGHT {
            Stats::inc(&self.stats.duplicate_ids);
            guest_warn!(
                self.limiter,
                domid = self.domid,
                id,
                "request id is already in flight"
            );
            out.push(response(id, Status::Inval, 0));
            return;
        }
        let route = self.addresses.route(s, |p| devices.device(p).is_some());
        let (port, endpoint, mut kind) = match route {
            Route::Answer(a) => {
                let counter = match a {
                    crate::addr::Answer::AddressSet => &self.stats.set_address,
                    crate::addr::Answer::NoDevice => &self.stats.no_device,
                    crate::addr::Answer::Refused => &self.stats.refused,
                };
                Stats::inc(counter);
                out.push(response(id, a.status(), 0));
                return;
            }
            Route::Device {
                port,
                endpoint,
                kind,
            } => (port, endpoint, kind),
        };
        let is_in = kind.is_in(endpoint);
        // wLength for control requests, the data segments for the others.
        let len = if kind.has_data_stage() {
            s.transfer_len() as usize
        } else {
            0
        };
        let data = SegList::prefix(s.data_segments(), len);
        let mut iso = None;
        if let SubmitKind::Isochronous {
            number_of_packets,
            desc_segs,
            ..
        } = s.kind()
        {
            match self.read_iso(mem, *number_of_packets, desc_segs.as_slice(), len) {
                Ok((state, packets)) => {
                    kind = TransferKind::Isochronous { packets };
                    iso = Some(state);
                }
                Err(status) => {
                    out.push(response(id, status, 0));
                    return;
                }
            }
        }
        let Some(device) = devices.device(port) else {
            Stats::inc(&self.stats.no_device);
            out.push(response(id, Status::NoDev, 0));
            return;
        };
        let bulk = matches!(kind, TransferKind::Bulk);
        let mut entry = Entry {
            ring_id: id,
            tid: None,
            port,
            endpoint,
            short_not_ok: s.short_not_ok(),
            unlinked: false,
            offset: 0,
            is_in,
            data,
            max_len: len,
            iso,
            submitted_at: Instant::now(),
            urb_type: match s.kind() {
                SubmitKind::Control(_) => UrbType::Control,
                SubmitKind::Bulk => UrbType::Bulk,
                SubmitKind::Interrupt { .. } => UrbType::Interrupt,
                SubmitKind::Isochronous { .. } => UrbType::Isochronous,
            },
        };
        if let Some(p) = self.port_stats(port) {
            p.urb(entry.urb_type);
        }
        tracing::trace!(id, port, endpoint, len, bulk, "request");
        if bulk {
            // Bulk URBs keep their endpoint's order through its queue. For a
            // device that gains from coalescing they wait for the caller's
            // `dispatch` after the batch of requests, so a burst can travel
            // as one transfer (`crate::coalesce`); for others they go now.
            let joinable = device.info().gains_from_coalescing;
            self.queues.get(port, endpoint).waiting.push_back(id);
            self.in_flight.push(entry);
            if !joinable {
                self.dispatch_endpoint(port, endpoint, false, mem, devices, out);
            }
            return;
        }
        let mut buffer = if len == 0 {
            Vec::new()
        } else {
            self.pool.take(len)
        };
        if is_in {
            if entry.iso.is_some() {
                buffer.fill(0);
            }
        } else if len > 0 && !self.copy_out(id, &entry.data, mem, &mut buffer) {
            self.pool.put(buffer);
            out.push(response(id, Status::Inval, 0));
            return;
        }
        let tid = self.ids.next();
        entry.tid = Some(tid);
        self.in_flight.push(entry);
        Stats::inc(&self.stats.submitted);
        Stats::inc(&self.stats.transfers);
        if let Some(p) = self.port_stats(port) {
            p.transfer();
        }
        device.submit(
            tid,
            Transfer {
                endpoint,
                kind,
                buffer,
                short_not_ok: s.short_not_ok(),
            },
        );
    }

    /// Copies an OUT URB's data from the guest into `buf`; `false` (logged)
    /// if the grants do not allow it.
    fn copy_out(&mut self, id: u16, data: &SegList, mem: &dyn GuestMemory, buf: &mut [u8]) -> bool {
        match mem.copy_from(data.as_slice(), buf) {
            Ok(()) => true,
            Err(err) => {
                Stats::inc(&self.stats.grant_errors);
                guest_warn!(
                    self.limiter,
                    domid = self.domid,
                    id,
                    "cannot copy OUT data from the guest: {err}"
                );
                false
            }
        }
    }

    /// Unlinks ring id `target`: a URB still waiting in its queue is answered
    /// at once; one on the device is cancelled there and answered with the
    /// completion.
    fn unlink(&mut self, target: u16, devices: &mut dyn Devices, out: &mut Vec<UrbResponse>) {
        let Some(pos) = self.in_flight.iter().position(|e| e.ring_id == target) else {
            return;
        };
        let Some(e) = self.in_flight.get_mut(pos) else {
            return;
        };
        match e.tid {
            None => {
                self.queues.remove_waiting(target);
                let e = self.in_flight.swap_remove(pos);
                if let Some(p) = self.port_stats(e.port) {
                    p.unlink();
                }
                self.retire(&e, TransferOutcome::Cancelled.status().as_i32(), 0);
                Stats::inc(&self.stats.unlinks_hit);
                out.push(response(target, TransferOutcome::Cancelled.status(), 0));
            }
            Some(tid) => {
                e.unlinked = true;
                let port = e.port;
                if let Some(p) = self.port_stats(port) {
                    p.unlink();
                }
                if let Some(dev) = devices.device(port) {
                    Stats::inc(&self.stats.unlinks_hit);
                    // Its own response comes with the completion.
                    dev.cancel(tid);
                }
            }
        }
    }

    /// Gives the device what waits in the bulk queues: URBs that wait
    /// together as one transfer where the device gains from it, everything
    /// else one by one, pipelined (see [`crate::coalesce`]).
    pub fn dispatch(
        &mut self,
        mem: &dyn GuestMemory,
        devices: &mut dyn Devices,
        out: &mut Vec<UrbResponse>,
    ) {
        // By index: dispatching never removes or reorders queues.
        let mut i = 0;
        while let Some((port, endpoint)) = self.queues.key(i) {
            let joinable = devices
                .device(port)
                .is_some_and(|d| d.info().gains_from_coalescing);
            self.dispatch_endpoint(port, endpoint, joinable, mem, devices, out);
            i += 1;
        }
        self.gauges();
    }

    /// [`UrbEngine::dispatch`] for one endpoint; `joinable`: its device
    /// gains from coalescing.
    fn dispatch_endpoint(
        &mut self,
        port: u8,
        endpoint: u8,
        joinable: bool,
        mem: &dyn GuestMemory,
        devices: &mut dyn Devices,
        out: &mut Vec<UrbResponse>,
    ) {
        // The engine's scratch list: no allocation per URB.
        let mut batch = std::mem::take(&mut self.batch);
        // Bounded: each pass takes at least one waiting id off the queue.
        for _ in 0..=MAX_IN_FLIGHT {
            batch.clear();
            let q = self.queues.get(port, endpoint);
            // Nothing may pass a coalesced transfer (see `crate::coalesce`).
            if q.coalesced {
                break;
            }
            let (mut total, mut last) = (0usize, 0usize);
            while let Some(&id) = q.waiting.front() {
                let Some(e) = self.in_flight.iter().find(|e| e.ring_id == id) else {
                    q.waiting.pop_front();
                    continue;
                };
                let small = joinable && coalesce::coalescible(e.max_len);
                if !batch.is_empty()
                    && (!small
                        || total + e.max_len > coalesce::MAX_TRANSFER
                        || !coalesce::joins(last, e.max_len))
                {
                    break;
                }
                batch.push(id);
                q.waiting.pop_front();
                total += e.max_len;
                last = e.max_len;
                if !small {
                    break;
                }
            }
            if batch.is_empty() {
                break;
            }
            self.submit_bulk(port, endpoint, &mut batch, mem, devices, out);
        }
        batch.clear();
        self.batch = batch;
    }

    /// One device transfer for the queued URBs `ids` (in order); those whose
    /// OUT data cannot be copied are answered and dropped from `ids`.
    fn submit_bulk(
        &mut self,
        port: u8,
        endpoint: u8,
        ids: &mut Vec<u16>,
        mem: &dyn GuestMemory,
        devices: &mut dyn Devices,
        out: &mut Vec<UrbResponse>,
    ) {
        let total: usize = ids
            .iter()
            .filter_map(|id| self.in_flight.iter().find(|e| e.ring_id == *id))
            .map(|e| e.max_len)
            .sum();
        let mut buffer = if total == 0 {
            Vec::new()
        } else {
            self.pool.take(total)
        };
        let mut offset = 0;
        ids.retain(|&id| {
            let Some(pos) = self.in_flight.iter().position(|e| e.ring_id == id) else {
                return false;
            };
            let Some(e) = self.in_flight.get(pos) else {
                return false;
            };
            let (len, is_in, data) = (e.max_len, e.is_in, e.data);
            if !is_in && len > 0 {
                let dst = buffer.get_mut(offset..offset + len).unwrap_or_default();
                if !self.copy_out(id, &data, mem, dst) {
                    let e = self.in_flight.swap_remove(pos);
                    self.retire(&e, Status::Inval.as_i32(), 0);
                    out.push(response(id, Status::Inval, 0));
                    return false;
                }
            }
            if let Some(e) = self.in_flight.get_mut(pos) {
                e.offset = offset;
            }
            offset += len;
            true
        });
        let kept: &[u16] = ids;
        buffer.truncate(offset);
        if kept.is_empty() {
            self.pool.put(buffer);
            return;
        }
        let Some(device) = devices.device(port) else {
            self.pool.put(buffer);
            for &id in kept {
                if let Some(pos) = self.in_flight.iter().position(|e| e.ring_id == id) {
                    let e = self.in_flight.swap_remove(pos);
                    self.retire(&e, Status::NoDev.as_i32(), 0);
                }
                Stats::inc(&self.stats.no_device);
                out.push(response(id, Status::NoDev, 0));
            }
            return;
        };
        let tid = self.ids.next();
        let now = Instant::now();
        let mut short_not_ok = false;
        for e in self
            .in_flight
            .iter_mut()
            .filter(|e| kept.contains(&e.ring_id))
        {
            e.tid = Some(tid);
            e.submitted_at = now;
            short_not_ok = e.short_not_ok;
        }
        let q = self.queues.get(port, endpoint);
        q.in_flight.push(tid);
        q.coalesced = kept.len() > 1;
        self.stats
            .submitted
            .fetch_add(kept.len() as u64, Ordering::Relaxed);
        Stats::inc(&self.stats.transfers);
        if let Some(p) = self.port_stats(port) {
            p.transfer();
        }
        tracing::trace!(
            %tid,
            endpoint,
            urbs = kept.len(),
            bytes = offset,
            "bulk transfer"
        );
        device.submit(
            tid,
            Transfer {
                endpoint,
                kind: TransferKind::Bulk,
                buffer,
                // A coalesced transfer must run to its short packet; each
                // URB's own flag is applied when it is split.
                short_not_ok: kept.len() == 1 && short_not_ok,
            },
        );
    }

    /// Reads the isochronous packet descriptors (a byte stream over the
    /// descriptor segments, which may straddle pages) and checks each packet
    /// against the data buffer.
    fn read_iso(
        &mut self,
        mem: &dyn GuestMemory,
        packets: u16,
        desc_segs: &[pvusb_protocol::RequestSegment],
        data_len: usize,
    ) -> Result<(IsoState, Vec<IsoPacket>), Status> {
        let bytes = usize::from(packets) * 16;
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
        for chunk in self.scratch.chunks_exact(16) {
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

    /// Handles the completion of transfer `tid`.
    pub fn complete(
        &mut self,
        tid: TransferId,
        c: Completion,
        mem: &dyn GuestMemory,
        out: &mut Vec<UrbResponse>,
    ) {
        self.queues.transfer_done(tid);
        let members = self.in_flight.iter().filter(|e| e.tid == Some(tid)).count();
        tracing::trace!(%tid, members, actual = c.actual_length, "completion");
        if members > 1 {
            self.complete_coalesced(tid, c, mem, out);
            self.gauges();
            return;
        }
        let Some(pos) = self.in_flight.iter().position(|e| e.tid == Some(tid)) else {
            Stats::inc(&self.stats.stale_completions);
            self.pool.put(c.buffer);
            return;
        };
        let entry = self.in_flight.swap_remove(pos);
        let rsp = self.finish(&entry, &c, mem);
        self.account(&entry, &rsp);
        self.pool.put(c.buffer);
        out.push(rsp);
        self.gauges();
    }

    /// Splits a coalesced transfer's result over its URBs (see
    /// [`coalesce::split`]); those that got nothing go back to the front of
    /// their queue for the next `dispatch`.
    fn complete_coalesced(
        &mut self,
        tid: TransferId,
        c: Completion,
        mem: &dyn GuestMemory,
        out: &mut Vec<UrbResponse>,
    ) {
        let mut parts: Vec<(u16, Member)> = self
            .in_flight
            .iter()
            .filter(|e| e.tid == Some(tid))
            .map(|e| {
                let m = Member {
                    offset: e.offset,
                    len: e.max_len,
                    short_not_ok: e.short_not_ok,
                    unlinked: e.unlinked,
                };
                (e.ring_id, m)
            })
            .collect();
        parts.sort_unstable_by_key(|(_, m)| m.offset);
        let members: Vec<Member> = parts.iter().map(|&(_, m)| m).collect();
        let actual = c.actual_length.min(c.buffer.len());
        let fates = coalesce::split(&members, c.outcome, actual);
        let mut requeue: Vec<u16> = Vec::new();
        for ((id, _), fate) in parts.iter().zip(fates) {
            let Some(pos) = self.in_flight.iter().position(|e| e.ring_id == *id) else {
                continue;
            };
            match fate {
                Fate::Requeue => {
                    if let Some(e) = self.in_flight.get_mut(pos) {
                        e.tid = None;
                        e.offset = 0;
                    }
                    requeue.push(*id);
                }
                Fate::Answer { outcome, actual } => {
                    let e = self.in_flight.swap_remove(pos);
                    let data = c.buffer.get(e.offset..).unwrap_or_default();
                    let rsp = self.answer(&e, outcome.status(), actual, data, mem);
                    self.account(&e, &rsp);
                    out.push(rsp);
                }
            }
        }
        if let Some(e) = requeue
            .first()
            .and_then(|id| self.in_flight.iter().find(|e| e.ring_id == *id))
        {
            let (port, endpoint) = (e.port, e.endpoint);
            let q = self.queues.get(port, endpoint);
            for id in requeue.into_iter().rev() {
                q.waiting.push_front(id);
            }
        }
        self.pool.put(c.buffer);
    }

    fn finish(&mut self, e: &Entry, c: &Completion, mem: &dyn GuestMemory) -> UrbResponse {
        let status = c.outcome.status();
        let actual = c.actual_length.min(e.max_len).min(c.buffer.len());
        if let Some(iso) = &e.iso {
            let mut records: Vec<u8> = Vec::with_capacity(iso.descriptors.len() * 16);
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
            let mut ok = mem.copy_to(iso.desc.as_slice(), &records).is_ok();
            if e.is_in && ok {
                let n = e.max_len.min(c.buffer.len());
                let segs = e.data.truncated(n);
                ok = c
                    .buffer
                    .get(..segs.total())
                    .is_some_and(|b| mem.copy_to(segs.as_slice(), b).is_ok());
            }
            if !ok {
                Stats::inc(&self.stats.grant_errors);
                guest_warn!(
                    self.limiter,
                    domid = self.domid,
                    id = e.ring_id,
                    "cannot write iso results to the guest"
                );
                return response(e.ring_id, Status::Inval, 0);
            }
            let mut r = response(e.ring_id, status, actual);
            r.error_count = i32::try_from(c.error_count).unwrap_or(i32::MAX);
            r.start_frame = c.start_frame as u16;
            return r;
        }
        self.answer(e, status, actual, &c.buffer, mem)
    }

    /// The response for a non-isochronous URB that ended with `status` after
    /// `actual` bytes; IN data (`data[..actual]`) goes to the guest first.
    fn answer(
        &mut self,
        e: &Entry,
        status: Status,
        actual: usize,
        data: &[u8],
        mem: &dyn GuestMemory,
    ) -> UrbResponse {
        if e.is_in && actual > 0 {
            let segs = e.data.truncated(actual);
            let copied = data
                .get(..segs.total())
                .is_some_and(|b| mem.copy_to(segs.as_slice(), b).is_ok());
            if !copied {
                Stats::inc(&self.stats.grant_errors);
                guest_warn!(
                    self.limiter,
                    domid = self.domid,
                    id = e.ring_id,
                    "cannot copy IN data to the guest"
                );
                return response(e.ring_id, Status::Inval, 0);
            }
        }
        let len = if e.is_in || status == Status::Ok {
            actual
        } else {
            0
        };
        response(e.ring_id, status, len)
    }

    fn account(&self, e: &Entry, rsp: &UrbResponse) {
        let us = u64::try_from(e.submitted_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.device_us.fetch_add(us, Ordering::Relaxed);
        Stats::inc(&self.stats.completed);
        let bytes = u64::try_from(rsp.actual_length).unwrap_or(0);
        let counter = if e.is_in {
            &self.stats.bytes_in
        } else {
            &self.stats.bytes_out
        };
        counter.fetch_add(bytes, Ordering::Relaxed);
        if let Some(p) = self.port_stats(e.port) {
            p.answered(rsp.status, bytes, e.is_in, us);
        }
    }

    /// Counts the answer of `e` that no device completion carried (refused,
    /// cancelled while waiting, aborted) in its port's statistics.
    fn retire(&self, e: &Entry, status: i32, bytes: u64) {
        if let Some(p) = self.port_stats(e.port) {
            let us = u64::try_from(e.submitted_at.elapsed().as_micros()).unwrap_or(u64::MAX);
            p.answered(status, bytes, e.is_in, us);
        }
    }

    /// The statistics of `port` when per-port counting is on.
    fn port_stats(&self, port: u8) -> Option<&PortStats> {
        if !self.count_ports {
            return None;
        }
        self.stats.ports.get(usize::from(port).wrapping_sub(1))
    }

    /// Turns per-port counting on or off (on by default); off only to
    /// measure what counting costs (`pvusb bench`).
    pub fn set_port_stats(&mut self, on: bool) {
        self.count_ports = on;
    }

    /// Transfer ids in flight on `port`.
    pub fn tids_of(&self, port: u8) -> Vec<TransferId> {
        let mut tids: Vec<TransferId> = self
            .in_flight
            .iter()
            .filter(|e| e.port == port)
            .filter_map(|e| e.tid)
            .collect();
        tids.sort_unstable();
        tids.dedup();
        tids
    }

    /// Answers every in-flight request of `port` with `status` (the device
    /// was closed; late completions are dropped as stale).
    pub fn abort_port(&mut self, port: u8, status: Status, out: &mut Vec<UrbResponse>) {
        self.queues.forget_port(port);
        self.abort_where(|e| e.port == port, status, out);
    }

    /// Answers every in-flight request with `status`.
    pub fn abort_all(&mut self, status: Status, out: &mut Vec<UrbResponse>) {
        self.queues.clear();
        self.abort_where(|_| true, status, out);
    }

    fn abort_where(
        &mut self,
        pred: impl Fn(&Entry) -> bool,
        status: Status,
        out: &mut Vec<UrbResponse>,
    ) {
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight.get(i).is_some_and(&pred) {
                let e = self.in_flight.swap_remove(i);
                self.retire(&e, status.as_i32(), 0);
                Stats::inc(&self.stats.aborted);
                out.push(response(e.ring_id, status, 0));
            } else {
                i += 1;
            }
        }
        self.gauges();
    }
}
