//! The layouts the engine's grant copies land in, so the device layer moves
//! nothing again: a control transfer's data behind room for its setup
//! stage, an isochronous transfer's packets back to back (libusb's layout)
//! whatever their offsets in the guest's buffer. And the data round-trips.

use std::sync::Arc;

use pvusb_protocol::{
    Direction, IsoPacketDescriptor, Pipe, SetupPacket, Status, TransferType, UrbRequest,
    UrbResponse,
};

use super::test_support::{
    info, iso_descriptors, pattern, segment, set_address, Guest, Held, PAGE,
};
use super::{Devices, UrbEngine};
use crate::stats::Stats;
use crate::usb::{
    Completion, IsoPacket, IsoPacketResult, TransferKind, TransferOutcome, UsbDevice,
    SETUP_STAGE_LEN,
};

struct One(Held);

impl Devices for One {
    fn device(&mut self, port: u8) -> Option<&mut dyn UsbDevice> {
        (port == 1).then_some(&mut self.0 as &mut dyn UsbDevice)
    }
}

struct Rig {
    engine: UrbEngine,
    dev: One,
    guest: Guest,
    out: Vec<UrbResponse>,
}

impl Rig {
    /// A device at address 6 on port 1.
    fn new() -> Self {
        let mut rig = Self {
            engine: UrbEngine::new(1, 1, Arc::new(Stats::default())),
            dev: One(Held::new(info(false, false))),
            guest: Guest::default(),
            out: Vec::new(),
        };
        rig.request(&set_address(1, 6));
        rig
    }

    fn request(&mut self, req: &UrbRequest) {
        self.engine
            .handle_request(req, &self.guest, &mut self.dev, &mut self.out);
    }

    fn take(&mut self) -> (crate::ids::TransferId, crate::usb::Transfer) {
        assert!(
            !self.dev.0.submits.is_empty(),
            "answered instead: {:?}",
            self.out
        );
        self.dev.0.take()
    }

    fn complete(&mut self, tid: crate::ids::TransferId, c: Completion) {
        self.engine.complete(tid, c, &self.guest, &mut self.out);
    }
}

fn control_pipe(dir: Direction) -> Pipe {
    Pipe::new(TransferType::Control, dir, 6, 0, 1).expect("pipe")
}

#[test]
fn control_data_lands_behind_room_for_the_setup_stage() {
    let mut rig = Rig::new();
    let data = pattern(300, 1);
    let mut page = vec![0u8; PAGE];
    page[..300].copy_from_slice(&data);
    rig.guest.set(400, page);
    let setup = SetupPacket::new(0x40, 0x10, 0, 0, 300);
    let req = UrbRequest::control(2, control_pipe(Direction::Out), setup, &[segment(400, 300)]);
    rig.request(&req.unwrap());
    let (tid, mut t) = rig.take();
    assert_eq!(t.buffer.head(), SETUP_STAGE_LEN);
    assert_eq!(
        t.buffer[..],
        data[..],
        "the data stage, as the guest wrote it"
    );
    assert_eq!(t.buffer.framed_mut().len(), SETUP_STAGE_LEN + 300);
    rig.complete(
        tid,
        Completion::done(TransferOutcome::Completed, t.buffer, 300),
    );
    assert_eq!(rig.out.last().unwrap().actual_length, 300);

    // IN: what the device put behind the room reaches the guest.
    let setup = SetupPacket::new(0xc0, 0x11, 0, 0, 64);
    let req = UrbRequest::control(3, control_pipe(Direction::In), setup, &[segment(401, 64)]);
    rig.request(&req.unwrap());
    let (tid, mut t) = rig.take();
    assert_eq!(t.buffer.head(), SETUP_STAGE_LEN);
    assert_eq!(t.buffer.len(), 64);
    let got = pattern(40, 2);
    t.buffer[..40].copy_from_slice(&got);
    rig.complete(
        tid,
        Completion::done(TransferOutcome::Completed, t.buffer, 40),
    );
    let last = rig.out.last().unwrap();
    assert_eq!((last.id, last.status, last.actual_length), (3, 0, 40));
    assert_eq!(rig.guest.page(401)[..40], got[..]);
}

/// Three packets at scattered offsets of a two-page guest buffer (one
/// straddles the page boundary); their descriptors in page 502.
fn iso_request(rig: &mut Rig, id: u16, dir: Direction) -> UrbRequest {
    let packets = [(4000u32, 200u32), (0, 100), (6000, 50)];
    let descs = iso_descriptors(&packets);
    let mut page = vec![0u8; PAGE];
    page[..descs.len()].copy_from_slice(&descs);
    rig.guest.set(502, page);
    let pipe = Pipe::new(TransferType::Isochronous, dir, 6, 1, 1).expect("pipe");
    let data = [segment(500, PAGE), segment(501, PAGE)];
    UrbRequest::isochronous(id, pipe, 1, 0, 3, &data, &[segment(502, 48)]).expect("iso")
}

fn packed() -> Vec<IsoPacket> {
    let p = |offset, length| IsoPacket { offset, length };
    vec![p(0, 200), p(200, 100), p(300, 50)]
}

#[test]
fn iso_out_packets_are_copied_back_to_back() {
    let mut rig = Rig::new();
    let (a, b) = (pattern(PAGE, 3), pattern(PAGE, 4));
    rig.guest.set(500, a.clone());
    rig.guest.set(501, b.clone());
    let req = iso_request(&mut rig, 2, Direction::Out);
    rig.request(&req);
    let (tid, t) = rig.take();
    let TransferKind::Isochronous { packets } = &t.kind else {
        panic!("an iso transfer");
    };
    assert_eq!(packets, &packed());
    let guest: Vec<u8> = [a, b].concat();
    let expect = [&guest[4000..4200], &guest[..100], &guest[6000..6050]].concat();
    assert_eq!(t.buffer[..], expect[..]);
    let results = vec![
        IsoPacketResult {
            actual_length: 0,
            outcome: TransferOutcome::Completed,
        };
        3
    ];
    let c = Completion {
        iso: results,
        ..Completion::done(TransferOutcome::Completed, t.buffer, 350)
    };
    rig.complete(tid, c);
    assert_eq!(rig.out.last().unwrap().status, Status::Ok.as_i32());
}

#[test]
fn iso_in_packets_go_back_to_their_offsets() {
    let mut rig = Rig::new();
    rig.guest.set(500, vec![0xee; PAGE]);
    rig.guest.set(501, vec![0xee; PAGE]);
    let req = iso_request(&mut rig, 2, Direction::In);
    rig.request(&req);
    let (tid, mut t) = rig.take();
    let TransferKind::Isochronous { packets } = &t.kind else {
        panic!("an iso transfer");
    };
    assert_eq!(packets, &packed());
    assert_eq!(t.buffer.len(), 350);
    // The device fills each packet at its packed offset; packet 1 is short.
    let (p0, p1, p2) = (pattern(200, 5), pattern(60, 6), pattern(50, 7));
    t.buffer[..200].copy_from_slice(&p0);
    t.buffer[200..260].copy_from_slice(&p1);
    t.buffer[300..350].copy_from_slice(&p2);
    let ok = |n| IsoPacketResult {
        actual_length: n,
        outcome: TransferOutcome::Completed,
    };
    let c = Completion {
        iso: vec![ok(200), ok(60), ok(50)],
        ..Completion::done(TransferOutcome::Completed, t.buffer, 310)
    };
    rig.complete(tid, c);
    let last = rig.out.last().unwrap();
    assert_eq!((last.status, last.actual_length), (0, 310));
    let guest = [rig.guest.page(500), rig.guest.page(501)].concat();
    assert_eq!(guest[4000..4200], p0[..]);
    assert_eq!(guest[..60], p1[..]);
    assert!(
        guest[60..100].iter().all(|&b| b == 0xee),
        "short packet's tail untouched"
    );
    assert_eq!(guest[6000..6050], p2[..]);
    assert!(guest[100..4000].iter().all(|&b| b == 0xee));
    let d: IsoPacketDescriptor = bytemuck::pod_read_unaligned(&rig.guest.page(502)[16..32]);
    assert_eq!((d.offset, d.length, d.actual_length), (0, 100, 60));
}
