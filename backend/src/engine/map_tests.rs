//! The mapped bulk path over the simulated transport: the device sees and
//! writes the same bytes as on the copy path, data that is not
//! page-contiguous is copied instead, and every mapping is released when
//! its transfer is done with (completion, cancel, device removal).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pvusb_protocol::{
    Direction, Pipe, RequestSegment, Status, TransferType, UrbRequest, UrbResponse,
};
use pvusb_xen::sim::{SimGrantedPages, SimXen};
use pvusb_xen::{GrantAllocator, GrantedPages, SharedMem, PAGE_SIZE};

use super::test_support::{info, pattern, set_address, Held};
use super::{Devices, UrbEngine};
use crate::guest::GrantedMemory;
use crate::ids::TransferId;
use crate::stats::Stats;
use crate::usb::{Completion, Transfer, TransferBuffer, TransferOutcome, UsbDevice};

/// The device's guest address (set by the rig).
const ADDRESS: u8 = 5;

struct One(Held);

impl Devices for One {
    fn device(&mut self, port: u8) -> Option<&mut dyn UsbDevice> {
        (port == 1).then_some(&mut self.0 as &mut dyn UsbDevice)
    }
}

/// A guest (domain 1) with three granted pages, a backend (domain 0) and
/// an engine whose device on port 1 takes guest pages.
struct Rig {
    _dir: tempfile::TempDir,
    /// The guest domain: serves its grants while it lives.
    _front: SimXen,
    back: SimXen,
    pages: SimGrantedPages,
    engine: UrbEngine,
    dev: One,
    out: Vec<UrbResponse>,
}

impl Rig {
    fn new(map_min_bytes: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let front = SimXen::new(dir.path(), 1);
        let back = SimXen::new(dir.path(), 0);
        let pages = front.alloc(0, 3, true).expect("grant");
        let mut device = info(false, false);
        device.transfers_guest_pages = true;
        let mut engine = UrbEngine::new(1, 1, Arc::new(Stats::default()));
        engine.set_map_min_bytes(map_min_bytes);
        let mut rig = Self {
            _dir: dir,
            _front: front,
            back,
            pages,
            engine,
            dev: One(Held::new(device)),
            out: Vec::new(),
        };
        rig.request(&set_address(1, ADDRESS));
        rig
    }

    /// Segment `(page, offset, len)` of the granted pages.
    fn seg(&self, page: usize, offset: u16, len: u16) -> RequestSegment {
        RequestSegment::new(self.pages.refs()[page], offset, len)
    }

    fn request(&mut self, req: &UrbRequest) {
        let mem = GrantedMemory {
            grants: &self.back,
            domid: 1,
        };
        self.engine
            .handle_request(req, &mem, &mut self.dev, &mut self.out);
    }

    fn bulk(&mut self, id: u16, dir: Direction, segs: &[RequestSegment]) {
        let pipe = Pipe::new(TransferType::Bulk, dir, ADDRESS, 1, 1).expect("pipe");
        self.request(&UrbRequest::bulk(id, pipe, false, segs).expect("bulk"));
    }

    fn take(&mut self) -> (TransferId, Transfer) {
        self.dev.0.take()
    }

    fn complete(&mut self, tid: TransferId, c: Completion) {
        let mem = GrantedMemory {
            grants: &self.back,
            domid: 1,
        };
        self.engine.complete(tid, c, &mem, &mut self.out);
    }

    /// The device completes `tid` with `len` bytes, and the guest is told
    /// that request `id` moved them.
    fn complete_ok(&mut self, id: u16, tid: TransferId, buffer: TransferBuffer, len: usize) {
        self.complete(
            tid,
            Completion::done(TransferOutcome::Completed, buffer, len),
        );
        let len = i32::try_from(len).unwrap();
        assert_eq!(self.last(), (id, Status::Ok.as_i32(), len));
    }

    fn last(&self) -> (u16, i32, i32) {
        let r = self.out.last().expect("an answer");
        (r.id, r.status, r.actual_length)
    }

    fn guest_bytes(&self) -> Vec<u8> {
        let mut all = vec![0u8; 3 * PAGE_SIZE];
        self.pages.read(0, &mut all).expect("read guest");
        all
    }

    fn counter(&self, c: fn(&Stats) -> &std::sync::atomic::AtomicU64) -> u64 {
        c(self.engine.stats()).load(Ordering::Relaxed)
    }
}

/// OUT data as the device sees it, wherever it lives.
fn out_bytes(t: &Transfer) -> Vec<u8> {
    match t.buffer.guest() {
        Some(g) => {
            let mut v = vec![0u8; g.len()];
            g.read(0, &mut v).expect("read mapping");
            v
        }
        None => t.buffer.to_vec(),
    }
}

/// The device receiving `data` into an IN transfer, wherever it lives.
fn receive(t: &mut Transfer, data: &[u8]) {
    match t.buffer.guest() {
        Some(g) => g.write(0, data).expect("write mapping"),
        None => t.buffer[..data.len()].copy_from_slice(data),
    }
}

/// What the guest holds after a bulk OUT of two whole pages and a short
/// bulk IN starting inside a page, on the copy path (0) or the mapped one.
fn out_then_in(map_min_bytes: usize) -> (Vec<u8>, Vec<u8>, bool) {
    let mut rig = Rig::new(map_min_bytes);
    let sent = pattern(2 * PAGE_SIZE, 0x11);
    rig.pages.write(0, &sent).expect("guest writes");
    let page = u16::try_from(PAGE_SIZE).unwrap();
    let segs = [rig.seg(0, 0, page), rig.seg(1, 0, page)];
    rig.bulk(2, Direction::Out, &segs);
    let (tid, t) = rig.take();
    let mapped = t.buffer.guest().is_some();
    let seen = out_bytes(&t);
    rig.complete_ok(2, tid, t.buffer, sent.len());

    let len = (PAGE_SIZE - 1000) + PAGE_SIZE + 100;
    let segs = [
        rig.seg(0, 1000, page - 1000),
        rig.seg(1, 0, page),
        rig.seg(2, 0, 100),
    ];
    rig.bulk(3, Direction::In, &segs);
    let (tid, mut t) = rig.take();
    assert_eq!(t.buffer.guest().is_some(), mapped, "IN takes the same path");
    let got = pattern(len - 10, 0x5a);
    receive(&mut t, &got);
    rig.complete_ok(3, tid, t.buffer, got.len());
    assert_eq!(rig.guest_bytes()[1000..1000 + got.len()], got[..]);
    assert_eq!(rig.back.live_mappings(), 0, "every mapping released");
    (seen, rig.guest_bytes(), mapped)
}

#[test]
fn mapped_bulk_moves_the_same_bytes_as_copied_bulk() {
    let (copy_seen, copy_guest, copy_mapped) = out_then_in(0);
    let (map_seen, map_guest, map_mapped) = out_then_in(1);
    assert!(!copy_mapped && map_mapped);
    assert_eq!(copy_seen, pattern(2 * PAGE_SIZE, 0x11));
    assert_eq!(map_seen, copy_seen, "OUT: the device sees the same bytes");
    assert_eq!(map_guest, copy_guest, "IN: the guest gets the same bytes");
}

#[test]
fn data_that_is_not_page_contiguous_is_copied() {
    let mut rig = Rig::new(1);
    let sent = pattern(PAGE_SIZE, 0x33);
    rig.pages.write(0, &sent).expect("guest writes");
    rig.pages.write(PAGE_SIZE, &sent).expect("guest writes");
    // The first segment ends before its page does.
    let segs = [rig.seg(0, 0, 100), rig.seg(1, 0, 100)];
    rig.bulk(2, Direction::Out, &segs);
    let (tid, t) = rig.take();
    assert!(t.buffer.guest().is_none(), "copied, not mapped");
    assert_eq!(out_bytes(&t), [&sent[..100], &sent[..100]].concat());
    assert_eq!(rig.counter(|s| &s.map_fallbacks), 1);
    assert_eq!(rig.counter(|s| &s.mapped), 0);
    rig.complete_ok(2, tid, t.buffer, 200);
    // Below the threshold nothing is even tried.
    let mut rig = Rig::new(PAGE_SIZE + 1);
    let page = u16::try_from(PAGE_SIZE).unwrap();
    let seg = rig.seg(0, 0, page);
    rig.bulk(2, Direction::In, &[seg]);
    assert!(rig.take().1.buffer.guest().is_none());
    assert_eq!(rig.counter(|s| &s.map_fallbacks), 0);
}

#[test]
fn a_mapping_lives_until_its_transfer_is_given_back() {
    let mut rig = Rig::new(1);
    let page = u16::try_from(PAGE_SIZE).unwrap();
    let segs = [rig.seg(0, 0, page), rig.seg(1, 0, page)];

    // Completion.
    rig.bulk(2, Direction::In, &segs);
    let (tid, t) = rig.take();
    assert_eq!(rig.back.live_mappings(), 1);
    rig.complete(
        tid,
        Completion::done(TransferOutcome::Completed, t.buffer, 0),
    );
    assert_eq!(rig.back.live_mappings(), 0);

    // Cancel: the device still holds the pages until it completes.
    rig.bulk(3, Direction::In, &segs);
    let (tid, t) = rig.take();
    let pipe = Pipe::new(TransferType::Bulk, Direction::In, ADDRESS, 1, 1).expect("pipe");
    rig.request(&UrbRequest::unlink(4, pipe, 3));
    assert_eq!(rig.dev.0.cancels, vec![tid]);
    assert_eq!(rig.back.live_mappings(), 1, "not while the device has it");
    rig.complete(
        tid,
        Completion::failed(TransferOutcome::Cancelled, t.buffer),
    );
    assert_eq!(rig.back.live_mappings(), 0);
    assert_eq!(rig.last().0, 3);

    // Device removal: the URB is answered at once, the pages stay mapped
    // until the device gives the transfer back (a stale completion).
    rig.bulk(5, Direction::In, &segs);
    let (tid, t) = rig.take();
    rig.engine.abort_port(1, Status::NoDev, &mut rig.out);
    assert_eq!(rig.last(), (5, Status::NoDev.as_i32(), 0));
    assert_eq!(rig.back.live_mappings(), 1, "not while the device has it");
    rig.complete(tid, Completion::failed(TransferOutcome::NoDevice, t.buffer));
    assert_eq!(rig.back.live_mappings(), 0);
    assert_eq!(rig.counter(|s| &s.mapped), 3);
}
