//! End to end: an emulated disk enumerated by the test driver, 64 MiB written
//! and read back through BOT READ(10)/WRITE(10), random unlinks mixed in.

use pvusb_backend::DaemonHandle;
use pvusb_protocol::{Direction, Pipe, TransferType, UrbRequest};
use pvusb_testkit::bot::{cbw, command, read10, rw10, send_cbw, write10};
use pvusb_testkit::rng::Rng;
use pvusb_testkit::{Controller, Driver, World};

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 64 * 1024;

fn chunk_data(i: usize) -> Vec<u8> {
    let mut v = vec![0u8; CHUNK];
    Rng(0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1)).fill(&mut v);
    v
}

/// Runs the whole 64 MiB workload on controller `domid/0`, port 1.
pub fn workload(drv: &mut Driver, domid: u16, total: usize) {
    drv.enumerate(1, 5);
    let mut tag = 1;
    command(drv, [0, 1, 2], 5, 1, tag, &[0; 6], false, 0, &[], &[]); // TEST UNIT READY
    tag += 1;
    let cap = command(
        drv,
        [0, 1, 2],
        5,
        1,
        tag,
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        true,
        8,
        &[],
        &[],
    );
    let last = u32::from_be_bytes([cap[0], cap[1], cap[2], cap[3]]);
    assert!((last as usize + 1) * 512 >= total, "disk too small: {last}");
    let mut rng = Rng(42 + u64::from(domid));
    let pipe = Pipe::new(TransferType::Bulk, Direction::In, 5, 2, 1).expect("pipe");
    let mut unlinks = 0;
    for pass in 0..2 {
        for i in 0..total / CHUNK {
            tag += 1;
            let lba = (i * CHUNK / 512) as u32;
            // A third of the commands carry an unlink of one of their own
            // requests or of an id not in use.
            let mut extra = Vec::new();
            let unlink_id = 3 + (i % 8) as u16;
            if rng.below(3) == 0 {
                extra.push(UrbRequest::unlink(unlink_id, pipe, rng.below(16) as u16));
            }
            if pass == 0 {
                let data = chunk_data(i);
                write10(drv, 5, 1, tag, lba, &data, &extra);
            } else {
                let got = read10(drv, 5, 1, tag, lba, CHUNK, &extra);
                assert!(got == chunk_data(i), "chunk {i} read back differs");
            }
            if !extra.is_empty() {
                let r = drv.response_for(unlink_id);
                assert_eq!(r.status, 0, "unlink answered 0");
                unlinks += 1;
            }
        }
    }
    assert!(unlinks > 0);
}

/// A daemon serving a disk of `blocks` blocks on port 1 of controller
/// `domid/0`, and the guest's driver, past the disk's conn event.
fn disk_on_port_1(domid: u16, blocks: u32) -> (World, DaemonHandle, Driver) {
    let w = World::new();
    let b = w.plug_disk(blocks);
    let d = w.daemon();
    w.controller(&Controller::new(domid, 0, 2, 1));
    w.set_port(domid, 0, 1, &b.to_string());
    let mut drv = Driver::connect(&w, domid, 0);
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (1, 3));
    (w, d, drv)
}

#[test]
fn write_and_read_back_64_mib_with_unlinks() {
    let (_w, d, mut drv) = disk_on_port_1(40, (TOTAL / 512) as u32);
    workload(&mut drv, 40, TOTAL);
    let s = d.stats(40, 0).expect("stats");
    assert_eq!(s.in_flight, 0);
    assert_eq!(s.invalid + s.grant_errors + s.no_device, 0, "{s:?}");
    assert!(s.pool_allocated <= 18, "no per-URB allocation: {s:?}");
}

/// A guest that resets its port and enumerates the device again gets the
/// device reset. Port resets stay in the guest (xen-hcd and vhci-hcd do them
/// locally), so without this a device left mid-command (a daemon killed
/// during a READ) stalls every later command block, and usb-storage's
/// recovery (a port reset) cannot help.
#[test]
fn enumerating_again_resets_a_device_left_mid_command() {
    let (_w, _d, mut drv) = disk_on_port_1(41, 2048);
    drv.enumerate(1, 5);
    // READ(10) of 8 blocks of which only the first is taken.
    let r = send_cbw(
        &mut drv,
        0,
        (5, 1),
        &cbw(1, 8 * 512, true, &rw10(0x28, 0, 8)),
    );
    assert_eq!((r.status, r.actual_length), (0, 31), "CBW of the READ");
    let r = drv.roundtrip(drv.bulk(1, 5, 1, 0x82, 512));
    assert_eq!((r.status, r.actual_length), (0, 512), "the first block");
    // The disk still owes seven blocks: a new command block is stalled.
    let r = send_cbw(&mut drv, 2, (5, 1), &cbw(2, 0, false, &[0; 6]));
    assert_eq!(r.status, -32, "a CBW in the middle of a data phase stalls");

    // The guest's recovery: a port reset, then enumeration from address 0.
    drv.enumerate(1, 6);
    command(&mut drv, [0, 1, 2], 6, 1, 3, &[0; 6], false, 0, &[], &[]); // TEST UNIT READY
    let got = read10(&mut drv, 6, 1, 4, 0, 4096, &[]);
    assert_eq!(got.len(), 4096);
}
