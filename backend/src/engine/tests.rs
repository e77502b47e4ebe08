//! Engine-level unit tests (the endpoint queue has its own, in
//! `endpoint/tests.rs`; the integration tests in `backend/tests` drive the
//! engine from outside).

use std::sync::Arc;

use pvusb_protocol::{Direction, Pipe, SetupPacket, Status, TransferType, UrbRequest, UrbResponse};

use super::test_support::{info, iso_descriptors, segment, set_address, Guest, Held};
use super::{Devices, UrbEngine};
use crate::stats::Stats;
use crate::usb::{Completion, TransferOutcome, UsbDevice};

/// Two devices, on ports 1 and 2.
struct Two([Held; 2]);

impl Devices for Two {
    fn device(&mut self, port: u8) -> Option<&mut dyn UsbDevice> {
        let i = usize::from(port).checked_sub(1)?;
        self.0.get_mut(i).map(|d| d as &mut dyn UsbDevice)
    }
}

impl Two {
    fn held(&mut self, port: u8) -> &mut Held {
        &mut self.0[usize::from(port) - 1]
    }
}

/// A device descriptor as a SuperSpeed device sends it (bMaxPacketSize0 is
/// the exponent 9).
const SUPERSPEED_DESCRIPTOR: [u8; 18] = [
    18, 1, 0x20, 0x03, 0, 0, 0, 9, 0x34, 0x12, 0x78, 0x56, 0, 1, 1, 2, 3, 1,
];

/// A standard IN control request at address 0 on `port` (enumeration),
/// `len` bytes of data into page `gref`.
fn control_in(id: u16, port: u8, setup: SetupPacket, gref: u32) -> UrbRequest {
    let pipe = Pipe::new(TransferType::Control, Direction::In, 0, 0, port).expect("pipe");
    let len = usize::from(setup.w_length);
    UrbRequest::control(id, pipe, setup, &[segment(gref, len)]).expect("request")
}

fn get_descriptor(kind: u8, len: u16) -> SetupPacket {
    SetupPacket::new(0x80, 6, u16::from(kind) << 8, 0, len)
}

struct Rig {
    engine: UrbEngine,
    devs: Two,
    guest: Guest,
    out: Vec<UrbResponse>,
}

impl Rig {
    /// Port 1 has a SuperSpeed device, port 2 a high-speed one.
    fn new() -> Self {
        Self {
            engine: UrbEngine::new(2, 1, Arc::new(Stats::default())),
            devs: Two([Held::new(info(true, true)), Held::new(info(true, false))]),
            guest: Guest::default(),
            out: Vec::new(),
        }
    }

    fn request(&mut self, req: &UrbRequest) {
        self.engine
            .handle_request(req, &self.guest, &mut self.devs, &mut self.out);
    }

    /// Completes the oldest transfer of `port` with `data`.
    fn complete(&mut self, port: u8, data: &[u8]) {
        let (tid, t) = self.devs.held(port).take();
        let mut buffer = t.buffer;
        buffer[..data.len()].copy_from_slice(data);
        let c = Completion::done(TransferOutcome::Completed, buffer, data.len());
        self.engine.complete(tid, c, &self.guest, &mut self.out);
    }
}

#[test]
fn a_superspeed_device_descriptor_shows_ep0_as_high_speed() {
    let mut rig = Rig::new();
    for (id, port) in [(1u16, 1u8), (2, 2)] {
        rig.request(&control_in(
            id,
            port,
            get_descriptor(1, 18),
            200 + u32::from(id),
        ));
        rig.complete(port, &SUPERSPEED_DESCRIPTOR);
    }
    let ok = Status::Ok.as_i32();
    let got: Vec<_> = rig
        .out
        .iter()
        .map(|r| (r.id, r.status, r.actual_length))
        .collect();
    assert_eq!(got, vec![(1, ok, 18), (2, ok, 18)]);
    // The SuperSpeed device's answer is patched, the other one is not.
    assert_eq!(rig.guest.page(201)[7], 64);
    assert_eq!(rig.guest.page(201)[8..18], SUPERSPEED_DESCRIPTOR[8..]);
    assert_eq!(rig.guest.page(202)[7], 9);
    // Other descriptors of the SuperSpeed device are left alone.
    let mut config = [0u8; 9];
    config[..2].copy_from_slice(&[9, 2]);
    config[7] = 9;
    rig.request(&control_in(3, 1, get_descriptor(2, 9), 203));
    rig.complete(1, &config);
    assert_eq!(rig.guest.page(203)[7], 9);
}

/// A SET_ADDRESS to a device that has an address (the guest reset its port)
/// resets that device, at most once per `port_reset::MIN_INTERVAL`.
#[test]
fn enumerating_again_resets_the_device_of_that_port_only() {
    let mut rig = Rig::new();
    rig.request(&set_address(1, 5));
    rig.request(&set_address(2, 6));
    assert_eq!((rig.devs.held(1).resets, rig.devs.held(2).resets), (0, 0));
    rig.request(&set_address(1, 7));
    assert_eq!((rig.devs.held(1).resets, rig.devs.held(2).resets), (1, 0));
    // A guest re-enumerating in a loop does not keep the hub busy.
    rig.request(&set_address(1, 8));
    assert_eq!(rig.devs.held(1).resets, 1);
    let stats = rig.engine.stats().snapshot();
    assert_eq!((stats.set_address, stats.device_resets), (4, 1));
    assert!(rig.out.iter().all(|r| r.status == 0), "{:?}", rig.out);
}

#[test]
fn aborting_a_port_answers_its_urbs_and_leaves_the_others() {
    let mut rig = Rig::new();
    rig.request(&control_in(1, 1, get_descriptor(1, 18), 201));
    rig.request(&control_in(2, 2, get_descriptor(1, 18), 202));
    rig.request(&control_in(3, 1, get_descriptor(2, 9), 203));
    assert_eq!(rig.engine.in_flight(), 3);
    let on_port_1 = rig.engine.tids_of(1);
    assert_eq!(on_port_1.len(), 2);
    rig.engine.abort_port(1, Status::NoDev, &mut rig.out);
    let nodev = Status::NoDev.as_i32();
    let mut got: Vec<_> = rig.out.drain(..).map(|r| (r.id, r.status)).collect();
    got.sort_unstable();
    assert_eq!(got, vec![(1, nodev), (3, nodev)]);
    assert_eq!(rig.engine.in_flight(), 1);
    assert!(rig.engine.tids_of(1).is_empty());
    // A late completion of an aborted transfer is stale; port 2 still answers.
    let (tid, t) = rig.devs.held(1).take();
    let c = Completion::done(TransferOutcome::Completed, t.buffer, 18);
    rig.engine.complete(tid, c, &rig.guest, &mut rig.out);
    assert!(rig.out.is_empty());
    assert_eq!(rig.engine.stats().snapshot().stale_completions, 1);
    rig.complete(2, &SUPERSPEED_DESCRIPTOR);
    assert_eq!(rig.out.len(), 1);
    assert_eq!(rig.engine.in_flight(), 0);
}

#[test]
fn many_endpoint_addresses_do_not_grow_the_endpoint_list() {
    let mut rig = Rig::new();
    rig.request(&set_address(1, 5));
    assert_eq!(rig.out.len(), 1);
    // A guest cycling through every endpoint address of the device, one
    // bulk URB at a time.
    for round in 0..4u16 {
        for ep in 1..=15u8 {
            for dir in [Direction::In, Direction::Out] {
                let pipe = Pipe::new(TransferType::Bulk, dir, 5, ep, 1).expect("pipe");
                let id = round * 100 + u16::from(ep) * 2 + u16::from(dir == Direction::In);
                let req = UrbRequest::bulk(id, pipe, false, &[segment(400, 512)]).expect("bulk");
                rig.request(&req);
                rig.engine.dispatch(&rig.guest, &mut rig.devs, &mut rig.out);
                rig.complete(1, &[0x5a; 512]);
                assert!(rig.engine.endpoints.len() <= super::MAX_IN_FLIGHT + 1);
            }
        }
    }
    assert_eq!(rig.out.len(), 1 + 4 * 30);
    assert!(rig.out.iter().all(|r| r.status == Status::Ok.as_i32()));
}

/// An isochronous IN URB's packet results and data reach the guest in one
/// grant copy (a system call per URB saved: audio sends a thousand a second).
#[test]
fn iso_in_results_and_data_go_to_the_guest_in_one_copy() {
    use pvusb_protocol::IsoPacketDescriptor;
    let mut rig = Rig::new();
    rig.request(&set_address(2, 6));
    // Two packets of 192 bytes in page 300; their descriptors in page 301.
    let descs = iso_descriptors(&[(0, 192), (192, 192)]);
    let mut page = vec![0u8; super::test_support::PAGE];
    page[..descs.len()].copy_from_slice(&descs);
    rig.guest.set(301, page);
    let pipe = Pipe::new(TransferType::Isochronous, Direction::In, 6, 1, 2).expect("pipe");
    let req = UrbRequest::isochronous(2, pipe, 1, 0, 2, &[segment(300, 384)], &[segment(301, 32)])
        .expect("iso request");
    rig.request(&req);
    let before = rig.guest.copies_to();
    let (tid, t) = rig.devs.held(2).take();
    let mut buffer = t.buffer;
    buffer.fill(0xa5);
    let results = vec![
        crate::usb::IsoPacketResult {
            actual_length: 192,
            outcome: TransferOutcome::Completed,
        };
        2
    ];
    let c = Completion {
        outcome: TransferOutcome::Completed,
        buffer,
        actual_length: 384,
        iso: results,
        start_frame: 0,
        error_count: 0,
    };
    rig.engine.complete(tid, c, &rig.guest, &mut rig.out);
    assert_eq!(rig.guest.copies_to() - before, 1, "one grant copy");
    let last = rig.out.last().expect("answered");
    assert_eq!((last.id, last.status), (2, Status::Ok.as_i32()));
    assert_eq!(rig.guest.page(300)[..384], [0xa5; 384]);
    let written: IsoPacketDescriptor = bytemuck::pod_read_unaligned(&rig.guest.page(301)[16..32]);
    assert_eq!((written.offset, written.actual_length), (192, 192));
}
