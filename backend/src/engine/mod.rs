//! The URB engine of one controller: turns each copied-out request into a
//! response or a device transfer, and each device completion into a response.
//!
//! It owns no ring and no thread; the worker feeds it requests and completions
//! and pushes what it appends to `out` (so the fuzz target and unit tests
//! drive it directly). Rules it keeps:
//!
//! * every request gets exactly one response (its endpoint holds each
//!   submitted request until its completion or an abort answers it);
//! * a response is appended only after all grant work for it is done;
//! * unlinks resolve against what was consumed before them (ring order);
//! * a submit whose id is still in flight is answered -EINVAL and the earlier
//!   request is left alone (xen-hcd never does this; a hostile guest gets an
//!   answer for each slot it used, and the original still completes once);
//! * a completion no endpoint owns (its request was already answered by an
//!   abort) only returns its buffer to the pool.
//!
//! Layout: this file routes requests to endpoints and completions to the
//! endpoint that owns the transfer; `endpoint` holds one endpoint's URBs
//! (waiting, on the device, coalesced); `urb` is one URB's state;
//! `resources` is what the endpoints share (pool, counters, ids) and the
//! guest-memory work done with it.

use std::sync::Arc;
use std::time::Instant;

use pvusb_protocol::{Status, Submit, SubmitKind, UrbRequest, UrbResponse, ValidatedUrb};

use crate::addr::{is_get_device_descriptor, AddressTable, Answer, Route};
use crate::guest::{GuestMemory, SegList};
use crate::guest_warn;
use crate::ids::{RingId, TransferId};
use crate::ratelimit::RateLimiter;
use crate::stats::{Stats, UrbType};
use crate::usb::{Completion, TransferKind, UsbDevice};

mod endpoint;
mod port_reset;
mod resources;
mod urb;

#[cfg(test)]
mod coalesce_tests;
#[cfg(test)]
mod layout_tests;
#[cfg(test)]
mod map_tests;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

use endpoint::Endpoint;
use port_reset::PortResets;
use resources::{response, Resources};
use urb::Urb;

/// The default of [`UrbEngine::set_map_min_bytes`]: never map (see
/// `docs/perf/2026-12-06-map-vs-copy.md` for why).
pub const DEFAULT_MAP_MIN_BYTES: usize = 0;

/// Requests a controller can have in flight: the urb ring's slot count.
pub const MAX_IN_FLIGHT: usize = 16;

/// The devices of a controller, by root-hub port.
pub trait Devices {
    /// The device attached on `port`, if any.
    fn device(&mut self, port: u8) -> Option<&mut dyn UsbDevice>;
}

/// The per-controller URB engine.
#[derive(Debug)]
pub struct UrbEngine {
    num_ports: u8,
    addresses: AddressTable,
    /// The endpoints holding URBs, in the order they were first used (the
    /// dispatch order). Idle ones are dropped when a new one is needed and
    /// the list is long, so a guest cycling through endpoint addresses
    /// cannot grow it: at most one per URB in flight, plus idle ones up to
    /// [`MAX_IN_FLIGHT`].
    endpoints: Vec<Endpoint>,
    /// Port resets the guest made, carried out on its devices.
    resets: PortResets,
    res: Resources,
}

impl UrbEngine {
    /// An engine for a controller of `num_ports` ports serving domain `domid`
    /// (used in log lines only).
    pub fn new(num_ports: u8, domid: u16, stats: Arc<Stats>) -> Self {
        Self {
            num_ports,
            addresses: AddressTable::new(),
            endpoints: Vec::with_capacity(MAX_IN_FLIGHT),
            resets: PortResets::new(num_ports),
            res: Resources::new(domid, MAX_IN_FLIGHT + 2, stats),
        }
    }

    /// Replaces the log rate limiter (tests).
    pub fn set_rate_limiter(&mut self, limiter: RateLimiter) {
        self.res.limiter = limiter;
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.endpoints.iter().map(Endpoint::urbs).sum()
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.res.stats
    }

    /// Idle pooled buffers.
    pub fn pool_free(&self) -> usize {
        self.res.pool.free_count()
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

    /// Turns per-port counting on or off (on by default); off only to
    /// measure what counting costs (`pvusb bench`).
    pub fn set_port_stats(&mut self, on: bool) {
        self.res.count_ports = on;
    }

    /// Lets bulk URBs of at least `bytes` bytes run on the guest's mapped
    /// pages instead of a grant-copied buffer, for devices that can
    /// ([`crate::usb::DeviceInfo::transfers_guest_pages`]) and data that is
    /// page-contiguous; 0 (the default) never maps.
    ///
    /// WHY a threshold: a mapping costs a map and an unmap hypercall and a
    /// TLB flush per URB whatever its size, a copy costs memory bandwidth
    /// per byte; `docs/perf/2026-12-06-map-vs-copy.md` has the numbers.
    pub fn set_map_min_bytes(&mut self, bytes: usize) {
        self.res.map_min_bytes = bytes;
    }

    fn gauges(&self) {
        let stats = &self.res.stats;
        Stats::set(&stats.in_flight, self.in_flight() as u64);
        Stats::set(&stats.pool_free, self.res.pool.free_count() as u64);
        Stats::set(&stats.pool_allocated, self.res.pool.allocated());
    }

    /// Handles one request copied out of the ring.
    pub fn handle_request(
        &mut self,
        req: &UrbRequest,
        mem: &dyn GuestMemory,
        devices: &mut dyn Devices,
        out: &mut Vec<UrbResponse>,
    ) {
        Stats::inc(&self.res.stats.requests);
        match pvusb_protocol::validate(req, self.num_ports) {
            Err(e) => {
                Stats::inc(&self.res.stats.invalid);
                guest_warn!(
                    self.res.limiter,
                    domid = self.res.domid,
                    id = req.id,
                    "invalid request: {e}"
                );
                out.push(response(RingId::new(req.id), e.status(), 0));
            }
            Ok(ValidatedUrb::Unlink { id, unlink_id, .. }) => {
                Stats::inc(&self.res.stats.unlinks);
                self.unlink(RingId::new(unlink_id), devices, out);
                out.push(response(RingId::new(id), Status::Ok, 0));
            }
            Ok(ValidatedUrb::Submit(s)) => self.submit(&s, mem, devices, out),
        }
        self.gauges();
    }

    /// Whether URB `id` is held by some endpoint.
    fn holds(&self, id: RingId) -> bool {
        self.endpoints.iter().any(|e| e.holds(id))
    }

    fn submit(
        &mut self,
        s: &Submit,
        mem: &dyn GuestMemory,
        devices: &mut dyn Devices,
        out: &mut Vec<UrbResponse>,
    ) {
        let id = RingId::new(s.id());
        if self.holds(id) || self.in_flight() >= MAX_IN_FLIGHT {
            Stats::inc(&self.res.stats.duplicate_ids);
            guest_warn!(
                self.res.limiter,
                domid = self.res.domid,
                id = id.get(),
                "request id is already in flight"
            );
            out.push(response(id, Status::Inval, 0));
            return;
        }
        let route = self.addresses.route(s, |p| devices.device(p).is_some());
        let (port, endpoint, mut kind) = match route {
            Route::Answer(a) => {
                if let Answer::Readdressed(port) = a {
                    if let Some(device) = devices.device(port) {
                        self.resets.reset(port, device, &mut self.res);
                    }
                }
                let stats = &self.res.stats;
                let counter = match a {
                    Answer::AddressSet | Answer::Readdressed(_) => &stats.set_address,
                    Answer::NoDevice => &stats.no_device,
                    Answer::Refused => &stats.refused,
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
            match self
                .res
                .read_iso(mem, *number_of_packets, desc_segs.as_slice(), len)
            {
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
            Stats::inc(&self.res.stats.no_device);
            out.push(response(id, Status::NoDev, 0));
            return;
        };
        let urb = Urb {
            ring_id: id,
            port,
            short_not_ok: s.short_not_ok(),
            unlinked: false,
            offset: 0,
            is_in,
            data,
            max_len: len,
            iso,
            submitted_at: Instant::now(),
            urb_type: urb_type(&kind),
            patch_ep0: device.info().max_speed_is_super
                && matches!(&kind, TransferKind::Control { setup } if is_get_device_descriptor(setup)),
        };
        if let Some(p) = self.res.port_stats(port) {
            p.urb(urb.urb_type);
        }
        let bulk = matches!(kind, TransferKind::Bulk);
        match &kind {
            TransferKind::Isochronous { packets } => {
                let packets = packets.len();
                tracing::trace!(id = id.get(), port, endpoint, len, packets, "request");
            }
            // The setup packet of control requests, to name them in a trace.
            other => tracing::trace!(id = id.get(), port, endpoint, len, kind = ?other, "request"),
        }
        let ep = endpoint_mut(&mut self.endpoints, port, endpoint);
        if !bulk {
            ep.submit_alone(urb, kind, device, mem, &mut self.res, out);
            return;
        }
        // Bulk URBs keep their endpoint's order through its queue. For a
        // device that gains from coalescing they wait for the caller's
        // `dispatch` after the batch of requests, so a burst can travel as
        // one transfer (`crate::coalesce`); for others they go now.
        let joinable = device.info().gains_from_coalescing;
        ep.enqueue(urb);
        if !joinable {
            ep.dispatch(Some(device), mem, &mut self.res, out);
        }
    }

    /// Unlinks URB `target`: one still waiting in its queue is answered at
    /// once; one on the device is cancelled there and answered with the
    /// completion.
    fn unlink(&mut self, target: RingId, devices: &mut dyn Devices, out: &mut Vec<UrbResponse>) {
        let Some(ep) = self.endpoints.iter_mut().find(|e| e.holds(target)) else {
            return;
        };
        ep.unlink(target, devices.device(ep.port()), &mut self.res, out);
    }

    /// Gives the devices what waits in the endpoints' queues (see
    /// [`crate::coalesce`]).
    pub fn dispatch(
        &mut self,
        mem: &dyn GuestMemory,
        devices: &mut dyn Devices,
        out: &mut Vec<UrbResponse>,
    ) {
        for ep in &mut self.endpoints {
            ep.dispatch(devices.device(ep.port()), mem, &mut self.res, out);
        }
        self.gauges();
    }

    /// Handles the completion of transfer `tid`: the endpoint that owns it
    /// answers; a completion nobody owns (its URBs were answered by an
    /// abort) only gives its buffer back.
    pub fn complete(
        &mut self,
        tid: TransferId,
        c: Completion,
        mem: &dyn GuestMemory,
        out: &mut Vec<UrbResponse>,
    ) {
        let Some(ep) = self.endpoints.iter_mut().find(|e| e.owns(tid)) else {
            tracing::trace!(%tid, "stale completion");
            Stats::inc(&self.res.stats.stale_completions);
            self.res.recycle(c.buffer);
            return;
        };
        ep.complete(tid, c, mem, &mut self.res, out);
        self.gauges();
    }

    /// Transfer ids in flight on `port`.
    pub fn tids_of(&self, port: u8) -> Vec<TransferId> {
        let mut tids: Vec<TransferId> = self
            .endpoints
            .iter()
            .filter(|e| e.port() == port)
            .flat_map(Endpoint::transfers)
            .collect();
        tids.sort_unstable();
        tids.dedup();
        tids
    }

    /// Asks the device on `port` to cancel every in-flight transfer of it.
    pub fn cancel_port(&mut self, port: u8, devices: &mut dyn Devices) {
        let tids = self.tids_of(port);
        if let Some(dev) = devices.device(port) {
            for tid in tids {
                dev.cancel(tid);
            }
        }
    }

    /// Answers every in-flight request of `port` with `status` (the device
    /// was closed; late completions are dropped as stale).
    pub fn abort_port(&mut self, port: u8, status: Status, out: &mut Vec<UrbResponse>) {
        self.abort_where(|e| e.port() == port, status, out);
    }

    /// Answers every in-flight request with `status`.
    pub fn abort_all(&mut self, status: Status, out: &mut Vec<UrbResponse>) {
        self.abort_where(|_| true, status, out);
    }

    fn abort_where(
        &mut self,
        pred: impl Fn(&Endpoint) -> bool,
        status: Status,
        out: &mut Vec<UrbResponse>,
    ) {
        let mut i = 0;
        while i < self.endpoints.len() {
            if self.endpoints.get(i).is_some_and(&pred) {
                let ep = self.endpoints.remove(i);
                ep.abort(status, &mut self.res, out);
            } else {
                i += 1;
            }
        }
        self.gauges();
    }
}

/// The endpoint `address` of `port` in `endpoints`, made on first use.
fn endpoint_mut(endpoints: &mut Vec<Endpoint>, port: u8, address: u8) -> &mut Endpoint {
    let i = match endpoints
        .iter()
        .position(|e| e.port() == port && e.address() == address)
    {
        Some(i) => i,
        None => {
            if endpoints.len() >= MAX_IN_FLIGHT {
                endpoints.retain(|e| !e.is_idle());
            }
            endpoints.push(Endpoint::new(port, address));
            endpoints.len() - 1
        }
    };
    &mut endpoints[i]
}

/// The statistics' type of a transfer (intercepted requests are control).
fn urb_type(kind: &TransferKind) -> UrbType {
    match kind {
        TransferKind::Bulk => UrbType::Bulk,
        TransferKind::Interrupt => UrbType::Interrupt,
        TransferKind::Isochronous { .. } => UrbType::Isochronous,
        TransferKind::Control { .. }
        | TransferKind::SetConfiguration(_)
        | TransferKind::SetInterface { .. }
        | TransferKind::ClearHalt { .. } => UrbType::Control,
    }
}
