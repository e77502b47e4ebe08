//! Target `front_engine`: the userspace frontend's URB engine
//! (`pvusb_frontend::fuzzing::EngineHarness`: request ids, local queue, unlink,
//! response validation, IN data and iso descriptor read-back, the root hub fed
//! by the conn ring, death and reconnect) against a backend that controls both
//! shared ring pages and every page granted to it. In-process, no threads: the
//! input plays the submitting threads, the worker and the hostile backend in
//! turn.
//!
//! Input layout (zero-padded, see [`crate::input`]): `num_ports: u8`, then up
//! to [`MAX_STEPS`] operations, one opcode byte each plus their arguments (see
//! [`Op`]). The backend either answers the requests it takes (echoing their id,
//! filling IN pages and iso descriptors, with chosen status and length) or
//! writes arbitrary responses, conn events and ring indexes.
//!
//! Oracles: no panic; every submitted URB completes exactly once (at most once
//! while running, and all of them after the final teardown); a completion hands
//! back the URB's buffer with `actual_length` within it and, for an iso URB
//! answered by the backend, one result per packet within the packet's length;
//! port events name existing ports; the engine's counters agree with what was
//! observed; nothing is outstanding after teardown.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvusb_frontend::fuzzing::EngineHarness;
use pvusb_frontend::urb::MAX_URB_DATA;
use pvusb_frontend::{Completion, PortEvent, Transport, Urb, UrbStatus};
use pvusb_protocol::{
    ConnRequest, ConnResponse, Direction, IsoPacketDescriptor, Pipe, SetupPacket, TransferType,
    UrbRequest, UrbResponse,
};
use pvusb_ring::mock::MockBackend;
use pvusb_ring::{HeapMem, MemError, SharedMem};
use pvusb_support::lock_unpoisoned;
use pvusb_xen::{DomId, EventChannel, EvtchnError, EvtchnPort, GrantError, GrantedPages};

use crate::input::Input;

/// Upper bound on operations per input.
pub const MAX_STEPS: usize = 256;
const PAGE: usize = 4096;

/// Pages granted to the backend: plain memory with consecutive grant refs.
#[derive(Debug)]
struct Pages {
    mem: HeapMem,
    refs: Vec<u32>,
}

impl SharedMem for Pages {
    fn size(&self) -> usize {
        self.mem.size()
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(offset, buf)
    }
    fn write(&self, offset: usize, buf: &[u8]) -> Result<(), MemError> {
        self.mem.write(offset, buf)
    }
    fn load_u32(&self, offset: usize) -> Result<u32, MemError> {
        self.mem.load_u32(offset)
    }
    fn store_u32(&self, offset: usize, value: u32) -> Result<(), MemError> {
        self.mem.store_u32(offset, value)
    }
}

impl GrantedPages for Pages {
    fn refs(&self) -> &[u32] {
        &self.refs
    }
    fn try_end_access(&self) -> Result<(), GrantError> {
        Ok(())
    }
}

/// An event channel that only counts notifications; its fd (stdin) is never
/// polled here.
#[derive(Debug)]
struct Channel {
    fd: std::io::Stdin,
    notified: AtomicU32,
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl EventChannel for Channel {
    fn port(&self) -> EvtchnPort {
        7
    }
    fn notify(&self) -> Result<(), EvtchnError> {
        self.notified.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn wait(&self, _timeout: Option<Duration>) -> Result<bool, EvtchnError> {
        Ok(false)
    }
    fn ack(&self) -> Result<bool, EvtchnError> {
        Ok(false)
    }
}

/// The grant table as the backend sees it.
#[derive(Debug, Default)]
struct FakeXen {
    pages: Mutex<HashMap<u32, (Arc<Pages>, usize)>>,
    next_ref: AtomicU32,
}

impl Transport for FakeXen {
    fn alloc_pages(
        &self,
        _peer: DomId,
        count: usize,
        _writable: bool,
    ) -> Result<Arc<dyn GrantedPages>, GrantError> {
        let n = u32::try_from(count).map_err(|_| GrantError::Exhausted)?;
        let first = self.next_ref.fetch_add(n, Ordering::Relaxed);
        let refs: Vec<u32> = (first..first + n).collect();
        let pages = Arc::new(Pages {
            mem: HeapMem::new(count * PAGE),
            refs: refs.clone(),
        });
        let mut table = lock_unpoisoned(&self.pages);
        for (i, r) in refs.into_iter().enumerate() {
            table.insert(r, (Arc::clone(&pages), i * PAGE));
        }
        Ok(pages)
    }

    fn alloc_event_channel(&self, _peer: DomId) -> Result<Arc<dyn EventChannel>, EvtchnError> {
        Ok(Arc::new(Channel {
            fd: std::io::stdin(),
            notified: AtomicU32::new(0),
        }))
    }
}

impl FakeXen {
    fn page(&self, gref: u32) -> Option<(Arc<Pages>, usize)> {
        let table = lock_unpoisoned(&self.pages);
        table.get(&gref).map(|(p, at)| (Arc::clone(p), *at))
    }

    /// Backend write into a granted page (ignored outside it, as a failed
    /// grant copy would be).
    fn write(&self, gref: u32, offset: usize, bytes: &[u8]) {
        if let Some((p, at)) = self.page(gref) {
            let _ = p.write(
                at + offset.min(PAGE),
                bytes.get(..PAGE.saturating_sub(offset)).unwrap_or(bytes),
            );
        }
    }
}

type UrbBack = MockBackend<UrbRequest, UrbResponse, Arc<Pages>>;
type ConnBack = MockBackend<ConnRequest, ConnResponse, Arc<Pages>>;

opcodes! {
    /// Operations, by opcode (`byte % 14`).
    pub enum Op {
        /// Submit a URB (see [`urb`]).
        Submit,
        /// Unlink submitted URB `n: u8` with status `s: u8`.
        Unlink,
        /// Backend takes the next request and answers it (see [`Backend::answer`]).
        Answer,
        /// Backend writes 16 arbitrary bytes at `rsp_prod + k: u8 % 32` and moves
        /// `rsp_prod` by `d: i8`.
        RawResponse,
        /// Backend sets the urb ring's `rsp_prod` to a `u32`.
        SetRspProd,
        /// Backend writes `u32` into header word `w: u8 % 4` of ring `r: u8 % 2`.
        SetHeader,
        /// Backend posts conn event `(port: u8, speed: u8)`.
        ConnEvent,
        /// The worker wakes: `limit: u8`, `polling: u8`.
        Process,
        /// Backend takes up to `n: u8 % 17` requests without answering.
        Take,
        /// The supervisor tears down and re-handshakes.
        Reconnect,
        /// Local port reset of `port: u8`.
        ResetPort,
        /// Enumeration gives port `port: u8` an address.
        Address,
        /// Backend answers a taken request out of order: index `i: u8`.
        AnswerTaken,
        /// Backend posts a burst of `n: u8 % 8` well-formed conn events.
        ConnBurst,
    }
}

/// Statuses a backend may send, and some it may not.
const STATUSES: [i32; 10] = [0, -19, -22, -32, -71, -75, -108, 1, -104, i32::MIN];

/// What the oracle knows about a submitted URB.
#[derive(Debug, Clone)]
struct Expect {
    len: usize,
    packets: Vec<u32>,
}

#[derive(Debug, Default)]
struct Log {
    expect: Vec<Expect>,
    completions: Vec<u32>,
    total: u64,
}

impl Log {
    fn complete(&mut self, serial: usize, c: &Completion) {
        let e = &self.expect[serial];
        self.completions[serial] += 1;
        self.total += 1;
        assert_eq!(self.completions[serial], 1, "URB {serial} completed twice");
        assert_eq!(
            c.buffer.len(),
            e.len,
            "URB {serial} came back with another buffer"
        );
        assert!(
            c.actual_length <= e.len,
            "actual_length {} > {}",
            c.actual_length,
            e.len
        );
        assert!(c.data().len() <= e.len);
        if !c.iso_packets.is_empty() {
            assert_eq!(
                c.iso_packets.len(),
                e.packets.len(),
                "iso results per packet"
            );
            for (r, &len) in c.iso_packets.iter().zip(&e.packets) {
                assert!(
                    r.actual_length <= len,
                    "iso packet {} > {len}",
                    r.actual_length
                );
            }
        }
    }
}

struct Backend {
    xen: Arc<FakeXen>,
    urb: UrbBack,
    conn: ConnBack,
    taken: Vec<UrbRequest>,
}

impl Backend {
    fn attach(xen: &Arc<FakeXen>, refs: (u32, u32)) -> Backend {
        let page = |r: u32| xen.page(r).expect("ring page granted").0;
        let urb = UrbBack::with_mem(page(refs.0)).expect("urb ring page");
        let mut conn = ConnBack::with_mem(page(refs.1)).expect("conn ring page");
        conn.set_req_cons(0);
        Backend {
            xen: Arc::clone(xen),
            urb,
            conn,
            taken: Vec::new(),
        }
    }

    /// Answers `req`: IN pages filled with `fill`, iso descriptors written, the
    /// response (id echoed unless `id_xor`) pushed and published.
    fn answer(&mut self, req: &UrbRequest, input: &mut Input<'_>) {
        let status = STATUSES[usize::from(input.u8()) % STATUSES.len()];
        let sel = input.u8();
        let fill = input.u8();
        let id_xor = if sel & 0x80 != 0 {
            u16::from(input.u8() % 17)
        } else {
            0
        };
        let len = i32::from(req.buffer_length);
        let actual_length = match sel % 6 {
            0 | 1 => len,
            2 => len / 2,
            3 => 0,
            4 => -1 - i32::from(input.u8()),
            _ => input.u32() as i32,
        };
        let pipe = Pipe::from_raw(req.pipe);
        let nsegs = usize::from(req.nr_buffer_segs).min(req.seg.len());
        if pipe.direction() == Direction::In && !pipe.is_unlink() {
            for s in &req.seg[..nsegs] {
                self.xen.write(
                    s.gref,
                    usize::from(s.offset),
                    &vec![fill; usize::from(s.length)],
                );
            }
        }
        if pipe.transfer_type() == TransferType::Isochronous && !pipe.is_unlink() {
            if let Some(desc) = req.seg.get(nsegs) {
                let n = usize::from(req.isoc().number_of_packets).min(256);
                let recs: Vec<IsoPacketDescriptor> = (0..n)
                    .map(|i| IsoPacketDescriptor {
                        offset: i as u32 * 8,
                        length: 8,
                        actual_length: u32::from(input.u8()) * u32::from(fill % 4),
                        status: STATUSES[usize::from(fill) % STATUSES.len()],
                    })
                    .collect();
                self.xen.write(desc.gref, 0, bytemuck::cast_slice(&recs));
            }
        }
        let rsp = UrbResponse {
            id: req.id ^ id_xor,
            start_frame: u16::from(fill),
            status,
            actual_length,
            error_count: i32::from(fill) - 3,
        };
        let _ = self.urb.respond(&rsp);
    }
}

/// A URB from `kind: u8`, `port: u8`, `dev: u8`, `ep: u8` and kind-specific bytes.
fn urb(input: &mut Input<'_>, num_ports: u8) -> Urb {
    let kind = input.u8();
    let port = 1 + input.u8() % (num_ports + 1);
    let device = input.u8() % 130;
    let endpoint = input.u8() % 17;
    let dir = if kind & 0x10 != 0 {
        Direction::In
    } else {
        Direction::Out
    };
    let len = |input: &mut Input<'_>| match input.u8() % 4 {
        0 => usize::from(input.u8()),
        1 => usize::from(input.u8()) * 64,
        2 => usize::from(input.u8()) * 300,
        _ => (input.u32() as usize) % (MAX_URB_DATA + 2),
    };
    match kind % 4 {
        0 => {
            let mut b = [0u8; 8];
            input.fill(&mut b);
            let mut setup = SetupPacket::from_bytes(b);
            setup.w_length %= 2048;
            let data = vec![0x33; usize::from(setup.w_length)];
            let mut u = Urb::control(port, device, setup, data);
            if kind & 0x20 != 0 {
                u.endpoint = endpoint;
            }
            u
        }
        1 => {
            let n = len(input);
            match dir {
                Direction::In => Urb::bulk_in(port, device, endpoint, n),
                Direction::Out => Urb::bulk_out(port, device, endpoint, vec![0x44; n]),
            }
        }
        2 => {
            let n = usize::from(input.u8());
            let interval = u16::from(input.u8());
            match dir {
                Direction::In => Urb::interrupt_in(port, device, endpoint, n, interval),
                Direction::Out => {
                    Urb::interrupt_out(port, device, endpoint, vec![0x55; n], interval)
                }
            }
        }
        _ => {
            let count = match input.u8() {
                0 => 0,
                255 => 300,
                c => usize::from(c % 12),
            };
            let packets: Vec<u32> = (0..count).map(|_| u32::from(input.u8()) * 4).collect();
            let total = packets.iter().map(|&l| l as usize).sum();
            Urb::isochronous(port, device, endpoint, dir, 1, packets, vec![0x66; total])
        }
    }
}

/// Run one input. Panics only when an oracle fails.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let num_ports = 1 + input.u8() % 16;
    let xen = Arc::new(FakeXen::default());
    let transport: Arc<dyn Transport> = Arc::clone(&xen) as Arc<dyn Transport>;
    let mut front = EngineHarness::connect(transport, 0, num_ports).expect("connect over memory");
    let mut back = Backend::attach(&xen, front.ring_refs().expect("connected"));
    let log = Arc::new(Mutex::new(Log::default()));
    let mut tokens: Vec<u64> = Vec::new();
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match Op::decode(input.u8()) {
            Op::Submit => {
                let u = urb(&mut input, num_ports);
                let serial = {
                    let mut l = lock_unpoisoned(&log);
                    let packets = match &u.kind {
                        pvusb_frontend::UrbKind::Isochronous { packet_lengths, .. } => {
                            packet_lengths.clone()
                        }
                        _ => Vec::new(),
                    };
                    l.expect.push(Expect {
                        len: u.buffer.len(),
                        packets,
                    });
                    l.completions.push(0);
                    l.expect.len() - 1
                };
                let l = Arc::clone(&log);
                let cb = Box::new(move |c: Completion| lock_unpoisoned(&l).complete(serial, &c));
                tokens.push(front.submit(u, cb));
            }
            Op::Unlink => {
                let n = usize::from(input.u8());
                let status = match input.u8() % 3 {
                    0 => UrbStatus::Cancelled,
                    1 => UrbStatus::TimedOut,
                    _ => UrbStatus::NoDev,
                };
                if let Some(&t) = tokens.get(n % tokens.len().max(1)) {
                    front.unlink(t, status);
                }
            }
            Op::Answer => {
                let req = back.urb.take_request().ok().flatten();
                if let Some(req) = req {
                    back.answer(&req, &mut input);
                }
            }
            Op::AnswerTaken => {
                let i = usize::from(input.u8());
                if !back.taken.is_empty() {
                    let req = back.taken.swap_remove(i % back.taken.len());
                    back.answer(&req, &mut input);
                }
            }
            Op::Take => {
                for _ in 0..input.u8() % 17 {
                    match back.urb.take_request() {
                        Ok(Some(r)) => back.taken.push(r),
                        _ => break,
                    }
                }
            }
            Op::RawResponse => {
                let k = u32::from(input.u8() % 32);
                let d = input.u8() as i8;
                let mut raw = [0u8; 16];
                input.fill(&mut raw);
                let prod = back.urb.rsp_prod().unwrap_or(0);
                let _ = back.urb.write_slot_bytes(prod.wrapping_add(k), &raw);
                let _ = back
                    .urb
                    .set_rsp_prod(prod.wrapping_add_signed(i32::from(d)));
            }
            Op::SetRspProd => {
                let v = input.u32();
                let _ = back.urb.set_rsp_prod(v);
            }
            Op::SetHeader => {
                let (r, w, v) = (input.u8() % 2, input.u8() % 4, input.u32());
                let s = if r == 0 { &*back.urb } else { &*back.conn };
                let _ = match w {
                    0 => s.set_req_prod(v),
                    1 => s.set_req_event(v),
                    2 => s.set_rsp_prod(v),
                    _ => s.set_rsp_event(v),
                };
            }
            Op::ConnEvent => {
                let (port, speed) = (input.u8(), input.u8());
                let req = back.conn.take_request().ok().flatten().unwrap_or_default();
                let portnum = if port & 0x80 != 0 {
                    port
                } else {
                    1 + port % num_ports
                };
                let speed = if speed & 0x80 != 0 { speed } else { speed % 4 };
                let _ = back.conn.respond(&ConnResponse {
                    id: req.id,
                    portnum,
                    speed,
                });
            }
            Op::ConnBurst => {
                let n = input.u8() % 8;
                for i in 0..n {
                    let req = back.conn.take_request().ok().flatten().unwrap_or_default();
                    let _ = back.conn.respond(&ConnResponse {
                        id: req.id,
                        portnum: 1 + i % num_ports,
                        speed: (i + 1) % 4,
                    });
                }
            }
            Op::Process => {
                let limit = usize::from(input.u8() % 20);
                let polling = input.u8() % 2 == 1;
                front.process(limit, polling);
            }
            Op::Reconnect => {
                front.reconnect().expect("reconnect over memory");
                back = Backend::attach(&xen, front.ring_refs().expect("connected"));
            }
            Op::ResetPort => {
                let port = input.u8() % (num_ports + 2);
                front.reset_port(port);
            }
            Op::Address => {
                let port = input.u8() % (num_ports + 2);
                front.assign_address(port);
            }
        }
        for ev in front.take_events() {
            match ev {
                PortEvent::Connected { port, .. }
                | PortEvent::Disconnected { port }
                | PortEvent::Reset { port } => {
                    assert!((1..=num_ports).contains(&port), "event for port {port}");
                }
                PortEvent::ControllerDead { .. } => assert!(!front.usable()),
                PortEvent::ControllerConnected
                | PortEvent::ControllerDisconnected
                | PortEvent::Lagged { .. } => {}
            }
        }
        // Ids hold URBs and unlinks; the queue holds URBs and unlinks of
        // in-flight URBs.
        let pending = tokens.len() as u64 - lock_unpoisoned(&log).total;
        assert!(front.outstanding() as u64 <= pending + 32, "outstanding");
        assert_eq!(
            front.stats().completed,
            lock_unpoisoned(&log).total,
            "completion counter"
        );
        if front.dead_reason().is_some() {
            assert!(!front.usable());
        }
        for p in front.hub().ports() {
            assert!((1..=num_ports).contains(&p.port));
        }
    }
    front.teardown();
    assert_eq!(front.outstanding(), 0, "URBs outstanding after teardown");
    let l = lock_unpoisoned(&log);
    assert_eq!(front.stats().submitted, tokens.len() as u64);
    assert_eq!(front.stats().completed, l.total);
    if let Some(serial) = l.completions.iter().position(|&n| n != 1) {
        panic!("URB {serial} completed {} times", l.completions[serial]);
    }
}

/// Inputs that reach the interesting paths.
pub fn seeds() -> Vec<Vec<u8>> {
    let submit_bulk_in = |port: u8, n: u8| vec![Op::Submit as u8, 0x11, port - 1, 2, 1, 0, n];
    let submit_bulk_out = |port: u8, n: u8| vec![Op::Submit as u8, 0x01, port - 1, 2, 2, 1, n];
    let answer = |status: u8, sel: u8, fill: u8| vec![Op::Answer as u8, status, sel, fill];
    let process = |limit: u8| vec![Op::Process as u8, limit, 0];
    let conn = |port: u8, speed: u8| vec![Op::ConnEvent as u8, port - 1, speed];
    // Control IN GET_DESCRIPTOR(device), 18 bytes.
    let get_desc = vec![Op::Submit as u8, 0x10, 0, 0, 0, 0x80, 6, 0, 1, 0, 0, 18, 0];
    let traffic = [
        vec![1],
        conn(1, 3),
        process(4),
        get_desc.clone(),
        answer(0, 0, 0x12),
        process(4),
        submit_bulk_in(1, 10),
        submit_bulk_out(1, 3),
        answer(0, 2, 0xab),
        answer(0, 0, 0),
        process(16),
        conn(1, 0),
        process(1),
    ]
    .concat();
    let iso = [
        vec![3],
        conn(2, 2),
        vec![Op::Submit as u8, 0x13, 1, 3, 1, 4, 10, 20, 30, 40],
        vec![Op::Submit as u8, 0x03, 1, 3, 2, 2, 16, 16],
        answer(0, 0, 5),
        answer(3, 1, 2),
        process(8),
    ]
    .concat();
    let unlink = [
        vec![1],
        submit_bulk_in(1, 1),
        submit_bulk_in(1, 2),
        vec![Op::Unlink as u8, 0, 0],
        vec![Op::Take as u8, 3],
        vec![Op::AnswerTaken as u8, 1, 0, 0, 1],
        vec![Op::AnswerTaken as u8, 0, 0, 0, 1],
        process(8),
        vec![Op::Unlink as u8, 1, 1],
        answer(2, 3, 0),
        process(8),
    ]
    .concat();
    let hostile = [
        vec![2],
        submit_bulk_in(1, 4),
        vec![Op::Answer as u8, 7, 0x85, 9, 16],
        process(4),
        vec![Op::Reconnect as u8],
        submit_bulk_in(2, 4),
        vec![Op::SetRspProd as u8, 0x40, 0, 0, 0],
        process(4),
        vec![Op::Reconnect as u8],
        vec![Op::RawResponse as u8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        process(2),
    ]
    .concat();
    let ports = [
        vec![4],
        vec![Op::ConnBurst as u8, 7],
        process(1),
        vec![
            Op::Address as u8,
            1,
            Op::Address as u8,
            2,
            Op::ResetPort as u8,
            1,
        ],
        conn(3, 0),
        vec![Op::ConnEvent as u8, 0x85, 1],
        process(1),
    ]
    .concat();
    let queue = {
        let mut v = vec![1];
        for i in 0..20 {
            v.extend(submit_bulk_in(1, i));
        }
        v.extend([Op::Take as u8, 16]);
        for i in 0..16 {
            v.extend([Op::AnswerTaken as u8, i, 0, 1, 2]);
        }
        v.extend(process(19));
        v.extend([Op::Unlink as u8, 19, 0]);
        v
    };
    vec![traffic, iso, unlink, hostile, ports, queue]
}

#[cfg(test)]
mod tests {
    crate::clean_run_tests!(600, 600);
}
