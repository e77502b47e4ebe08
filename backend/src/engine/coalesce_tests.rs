//! Bulk URB coalescing through the engine, with a device that holds its
//! transfers until the test completes them (as a real, asynchronous one
//! does): small URBs queued behind a transfer in flight go to the device as
//! one transfer, and its result is split back per URB.

use std::sync::Arc;

use pvusb_protocol::{
    Direction, Pipe, RequestSegment, SetupPacket, TransferType, UrbRequest, UrbResponse,
};

use super::test_support::{pattern, Guest, Held, PAGE};
use crate::usb::emulated::loopback::LoopbackDevice;
use crate::usb::emulated::EmulatedHost;
use crate::usb::{Completion, CompletionSink, TransferId, TransferOutcome, UsbDevice};
use crate::{Devices, Stats, UrbEngine};

const PORT: u8 = 1;
const ADDR: u8 = 5;

struct One(Held);

impl Devices for One {
    fn device(&mut self, port: u8) -> Option<&mut dyn UsbDevice> {
        (port == PORT).then_some(&mut self.0 as &mut dyn UsbDevice)
    }
}

struct NoSink;
impl CompletionSink for NoSink {
    fn complete(&self, _: TransferId, _: Completion) {}
}

/// Guest memory: one page per gref, gref = 100 + request id.
struct Rig {
    engine: UrbEngine,
    devs: One,
    guest: Guest,
    out: Vec<UrbResponse>,
}

impl Rig {
    fn new() -> Self {
        Self::with(true)
    }

    /// `joins`: whether the device asks for coalescing.
    fn with(joins: bool) -> Self {
        let emu = EmulatedHost::new();
        let busid = emu
            .add_next(Arc::new(|| Box::new(LoopbackDevice::new(1 << 20))))
            .expect("loopback");
        let mut dev = emu.open(&busid, Arc::new(NoSink)).expect("open");
        let mut info = dev.info().clone();
        info.gains_from_coalescing = joins;
        dev.shutdown();
        let mut rig = Rig {
            engine: UrbEngine::new(1, 1, Arc::new(Stats::default())),
            devs: One(Held::new(info)),
            guest: Guest::default(),
            out: Vec::new(),
        };
        let pipe = Pipe::new(TransferType::Control, Direction::Out, 0, 0, PORT).expect("pipe");
        let setup = SetupPacket::new(0x00, 5, u16::from(ADDR), 0, 0);
        rig.request(UrbRequest::control(15, pipe, setup, &[]).expect("SET_ADDRESS"));
        assert_eq!(rig.take(), vec![(15, 0, 0)], "SET_ADDRESS is emulated");
        rig
    }

    fn request(&mut self, r: UrbRequest) {
        self.engine
            .handle_request(&r, &self.guest, &mut self.devs, &mut self.out);
    }

    /// What the controller does after each batch of requests.
    fn dispatch(&mut self) {
        self.engine
            .dispatch(&self.guest, &mut self.devs, &mut self.out);
    }

    /// A one-page bulk URB with id `id` on endpoint 1 in `dir`.
    fn bulk(&mut self, id: u16, dir: Direction, len: usize) {
        let pipe = Pipe::new(TransferType::Bulk, dir, ADDR, 1, PORT).expect("pipe");
        let seg = RequestSegment::new(100 + u32::from(id), 0, u16::try_from(len).expect("a page"));
        self.request(UrbRequest::bulk(id, pipe, false, &[seg]).expect("bulk"));
    }

    /// One-page bulk INs with ids `ids`, arriving in one batch.
    fn bulk_ins_then_dispatch(&mut self, ids: std::ops::Range<u16>) {
        for id in ids {
            self.bulk(id, Direction::In, PAGE);
        }
        self.dispatch();
    }

    /// Completes the oldest held transfer; returns its length.
    fn complete(&mut self, outcome: TransferOutcome, data: &[u8]) -> usize {
        let (tid, t): (TransferId, _) = self.devs.0.take();
        let mut buffer = t.buffer;
        buffer[..data.len()].copy_from_slice(data);
        let len = buffer.len();
        let c = Completion {
            outcome,
            buffer,
            actual_length: data.len(),
            iso: Vec::new(),
            start_frame: 0,
            error_count: 0,
        };
        self.engine.complete(tid, c, &self.guest, &mut self.out);
        self.engine
            .dispatch(&self.guest, &mut self.devs, &mut self.out);
        len
    }

    fn held(&self) -> Vec<usize> {
        self.devs
            .0
            .submits
            .iter()
            .map(|(_, t)| t.buffer.len())
            .collect()
    }

    fn take(&mut self) -> Vec<(u16, i32, i32)> {
        self.out
            .drain(..)
            .map(|r| (r.id, r.status, r.actual_length))
            .collect()
    }
}

#[test]
fn a_burst_of_small_in_urbs_travels_as_one_transfer_and_splits_at_a_short_packet() {
    let mut rig = Rig::new();
    rig.bulk(0, Direction::In, PAGE);
    assert!(rig.held().is_empty(), "bulk URBs wait for the dispatch");
    rig.dispatch();
    assert_eq!(rig.held(), vec![PAGE], "a lone URB goes alone");
    // A burst arrives while it is in flight: one transfer, pipelined behind it.
    rig.bulk_ins_then_dispatch(1..4);
    assert_eq!(rig.held(), vec![PAGE, 3 * PAGE]);
    let first = pattern(PAGE, 1);
    rig.complete(TransferOutcome::Completed, &first);
    assert_eq!(rig.take(), vec![(0, 0, 4096)]);
    assert_eq!(rig.guest.page(100), first);
    // The device ended the joined transfer with a short packet after 5000 bytes.
    let data = pattern(5000, 2);
    rig.complete(TransferOutcome::Completed, &data);
    assert_eq!(rig.take(), vec![(1, 0, 4096), (2, 0, 904)]);
    assert_eq!(rig.guest.page(101), data[..PAGE].to_vec());
    assert_eq!(rig.guest.page(102)[..904], data[PAGE..]);
    // Id 3 received nothing: it goes to the device again.
    assert_eq!(rig.held(), vec![PAGE]);
    rig.complete(TransferOutcome::Completed, &pattern(PAGE, 3));
    assert_eq!(rig.take(), vec![(3, 0, 4096)]);
    let s = rig.engine.stats().snapshot();
    assert_eq!(
        (s.completed, s.bytes_in, s.in_flight, s.transfers),
        (4, 3 * 4096 + 904, 0, 3)
    );
}

#[test]
fn nothing_passes_a_coalesced_transfer_and_lone_urbs_pipeline() {
    let mut rig = Rig::new();
    rig.bulk_ins_then_dispatch(0..2);
    assert_eq!(rig.held(), vec![2 * PAGE]);
    rig.bulk(2, Direction::In, PAGE);
    rig.dispatch();
    assert_eq!(
        rig.held(),
        vec![2 * PAGE],
        "id 2 waits behind the joined transfer"
    );
    rig.complete(TransferOutcome::Completed, &pattern(2 * PAGE, 1));
    assert_eq!(rig.take(), vec![(0, 0, 4096), (1, 0, 4096)]);
    assert_eq!(rig.held(), vec![PAGE], "then goes");
    // Lone URBs arriving one by one are pipelined, not held back.
    rig.bulk(3, Direction::In, PAGE);
    rig.dispatch();
    rig.bulk(4, Direction::In, PAGE);
    rig.dispatch();
    assert_eq!(rig.held(), vec![PAGE, PAGE, PAGE]);
}

#[test]
fn an_unlinked_member_is_answered_and_the_others_go_again_in_order() {
    let mut rig = Rig::new();
    rig.bulk_ins_then_dispatch(1..4);
    assert_eq!(rig.held(), vec![3 * PAGE]);
    let pipe = Pipe::new(TransferType::Bulk, Direction::In, ADDR, 1, PORT).expect("pipe");
    rig.request(UrbRequest::unlink(9, pipe, 2));
    assert_eq!(rig.take(), vec![(9, 0, 0)], "the unlink itself is answered");
    assert_eq!(rig.devs.0.cancels.len(), 1, "the transfer is cancelled");
    rig.complete(TransferOutcome::Cancelled, &[]);
    assert_eq!(
        rig.take(),
        vec![(2, -71, 0)],
        "only the unlinked URB is answered"
    );
    // Ids 1 and 3 go again, together.
    assert_eq!(rig.held(), vec![2 * PAGE]);
    let data = pattern(2 * PAGE, 4);
    rig.complete(TransferOutcome::Completed, &data);
    assert_eq!(rig.take(), vec![(1, 0, 4096), (3, 0, 4096)]);
    assert_eq!(rig.guest.page(103), data[PAGE..].to_vec());
}

#[test]
fn out_urbs_of_whole_packets_are_gathered_in_order_and_a_csw_sized_one_is_not_joined() {
    let mut rig = Rig::new();
    rig.guest.set(100, pattern(PAGE, 10));
    rig.guest.set(101, pattern(PAGE, 11));
    rig.bulk(0, Direction::Out, PAGE);
    rig.bulk(1, Direction::Out, 2048); // another whole-packet size joins
    rig.bulk(2, Direction::Out, 13); // another phase: never joined to the run
    rig.dispatch();
    assert_eq!(
        rig.held(),
        vec![PAGE + 2048],
        "ids 0 and 1 together, 2 waits"
    );
    let gathered = rig.devs.0.submits[0].1.buffer.clone();
    assert_eq!(gathered[..PAGE], pattern(PAGE, 10));
    assert_eq!(gathered[PAGE..], pattern(PAGE, 11)[..2048]);
    rig.complete(TransferOutcome::Completed, &[0; PAGE + 2048]);
    assert_eq!(rig.take(), vec![(0, 0, 4096), (1, 0, 2048)]);
    assert_eq!(rig.held(), vec![13]);
}

#[test]
fn a_device_that_gains_nothing_gets_each_urb_as_its_own_pipelined_transfer() {
    let mut rig = Rig::with(false);
    for id in 0..4 {
        rig.bulk(id, Direction::In, PAGE);
    }
    assert_eq!(rig.held(), vec![PAGE; 4], "all four at once, one each");
    for id in 0..4u8 {
        rig.complete(TransferOutcome::Completed, &pattern(PAGE, id));
    }
    assert_eq!(
        rig.take(),
        vec![(0, 0, 4096), (1, 0, 4096), (2, 0, 4096), (3, 0, 4096)]
    );
    let s = rig.engine.stats().snapshot();
    assert_eq!((s.submitted, s.transfers), (4, 4));
}

#[test]
fn emulated_devices_gain_nothing_from_coalescing() {
    let emu = EmulatedHost::new();
    let busid = emu
        .add_next(Arc::new(|| Box::new(LoopbackDevice::new(1 << 20))))
        .expect("loopback");
    let mut dev = emu.open(&busid, Arc::new(NoSink)).expect("open");
    assert!(!dev.info().gains_from_coalescing);
    dev.shutdown();
}
