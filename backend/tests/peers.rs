//! Regression tests for the bugs found in the peers (spec 10, 14).

use std::sync::Arc;

use pvusb_backend::usb::emulated::keyboard::KeyboardHandle;
use pvusb_backend::usb::emulated::loopback::LoopbackDevice;
use pvusb_protocol::{Direction, Pipe, SetupPacket, TransferType, UrbRequest};
use pvusb_testkit::{wait_stats, Controller, Driver, World};

fn one_device(
    w: &World,
    domid: u16,
    factory: pvusb_backend::usb::emulated::DeviceFactory,
) -> (pvusb_backend::DaemonHandle, Driver) {
    let b = w.bus().add_next(factory).expect("add");
    let d = w.daemon();
    w.controller(&Controller::new(domid, 0, 2, 2));
    w.set_port(domid, 0, 1, &b.to_string());
    let mut drv = Driver::connect(w, domid, 0);
    drv.conn_event();
    (d, drv)
}

/// QEMU indexes `ports[-1]` for pipe port 0.
#[test]
fn qemu_port_zero_is_refused() {
    let w = World::new();
    let (d, mut drv) = one_device(&w, 30, Arc::new(|| Box::new(LoopbackDevice::new(64))));
    let setup = SetupPacket::new(0x80, 6, 0x0100, 0, 18);
    let pipe = Pipe::new(TransferType::Control, Direction::In, 0, 0, 1).expect("pipe");
    let mut r = UrbRequest::control(0, pipe, setup, &drv.segs(0, 0, 18)).expect("req");
    r.pipe &= !0x1f;
    assert_eq!(drv.roundtrip(r).status, -22);
    let mut u = UrbRequest::unlink(1, pipe, 0);
    u.pipe &= !0x1f;
    assert_eq!(drv.roundtrip(u).status, -22);
    let (r, _) = drv.control_in(2, 0, 1, setup);
    assert_eq!(r.status, 0, "port 1 still works");
    assert!(d.is_running(30, 0));
}

/// QEMU leaks a request struct for every unlinked URB.
#[test]
fn qemu_unlink_leak_1000_unlinks() {
    let w = World::new();
    let kb = KeyboardHandle::new();
    let k = kb.clone();
    let (d, mut drv) = one_device(&w, 31, Arc::new(move || Box::new(k.device())));
    drv.enumerate(1, 1);
    let pipe = Pipe::new(TransferType::Interrupt, Direction::In, 1, 1, 1).expect("pipe");
    let mut unlinks = 0;
    while unlinks < 1000 {
        let reqs: Vec<_> = (0..8u16)
            .map(|id| drv.interrupt_in(id, 1, 1, 1, 8))
            .collect();
        drv.send(&reqs);
        wait_stats(&d, 31, 0, "8 pending", |s| s.in_flight == 8);
        let unl: Vec<_> = (0..8u16)
            .map(|i| UrbRequest::unlink(8 + i, pipe, i))
            .collect();
        drv.send(&unl);
        let rs = drv.responses(16);
        for r in &rs {
            let expect = if r.id < 8 { -71 } else { 0 };
            assert_eq!(r.status, expect, "{r:?}");
        }
        let mut ids: Vec<u16> = rs.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            (0..16).collect::<Vec<_>>(),
            "exactly one response per request"
        );
        unlinks += 8;
    }
    let s = wait_stats(&d, 31, 0, "all answered", |s| s.in_flight == 0);
    assert_eq!(s.unlinks_hit, unlinks as u64);
    assert!(
        s.pool_allocated <= 18,
        "pool grew to {} buffers",
        s.pool_allocated
    );
    assert_eq!(s.stale_completions, 0);
    // The device still works afterwards.
    kb.press("a");
    let r = drv.roundtrip(drv.interrupt_in(0, 1, 1, 1, 8));
    assert_eq!((r.status, r.actual_length), (0, 8));
}

/// Both peers take any bRequest 5 for SET_ADDRESS; FTDI's GET_MODEM_STATUS
/// (vendor IN 0xc0/5) must reach the device, and the address stays.
#[test]
fn vendor_request_5_goes_to_the_device() {
    let w = World::new();
    let (d, mut drv) = one_device(&w, 32, Arc::new(|| Box::new(LoopbackDevice::new(64))));
    drv.enumerate(1, 6);
    let before = d.stats(32, 0).expect("stats");
    let (r, _) = drv.control_in(4, 6, 1, SetupPacket::new(0xc0, 5, 0, 0, 2));
    // The loopback device knows no vendor request 5: it stalls. An emulated
    // SET_ADDRESS would have answered 0 without asking it.
    assert_eq!(r.status, -32);
    let after = d.stats(32, 0).expect("stats");
    assert_eq!(after.set_address, before.set_address);
    assert_eq!(
        after.submitted,
        before.submitted + 1,
        "it reached the device"
    );
    let (r, _) = drv.control_in(5, 6, 1, SetupPacket::new(0x80, 6, 0x0100, 0, 18));
    assert_eq!(r.status, 0, "address 6 still routes to the device");
    // At address 0 it is not SET_ADDRESS either: refused.
    let (r, _) = drv.control_in(5, 0, 1, SetupPacket::new(0xc0, 5, 0, 0, 2));
    assert_eq!(r.status, -22);
}

/// usbback dereferences NULL for SET_ADDRESS sent to an addressed device.
#[test]
fn set_address_to_an_addressed_device_moves_it() {
    let w = World::new();
    let (_d, mut drv) = one_device(&w, 33, Arc::new(|| Box::new(LoopbackDevice::new(64))));
    drv.enumerate(1, 7);
    let r = drv.control_out(0, 7, 1, SetupPacket::new(0x00, 5, 9, 0, 0), &[]);
    assert_eq!(r.status, 0);
    let get = SetupPacket::new(0x80, 6, 0x0100, 0, 18);
    assert_eq!(
        drv.control_in(1, 9, 1, get).0.status,
        0,
        "new address works"
    );
    assert_eq!(
        drv.control_in(2, 7, 1, get).0.status,
        -19,
        "old address is gone"
    );
    // Re-enumeration at address 0 after a (frontend-local) port reset.
    drv.enumerate(1, 3);
    assert_eq!(drv.control_in(2, 9, 1, get).0.status, -19);
}

/// QEMU caps the control data stage at 4096 bytes (STALL beyond).
#[test]
fn control_transfers_above_4_kib() {
    let w = World::new();
    let (_d, mut drv) = one_device(&w, 34, Arc::new(|| Box::new(LoopbackDevice::new(64))));
    drv.enumerate(1, 2);
    let (r, cfg) = drv.control_in(0, 2, 1, SetupPacket::new(0x80, 6, 0x0200, 0, 16000));
    assert_eq!(r.status, 0, "wLength 16000 is served");
    assert!(
        r.actual_length > 0 && (r.actual_length as usize) < 16000,
        "a short IN is status 0"
    );
    assert_eq!(cfg[1], 2);
    let total = u16::from_le_bytes([cfg[2], cfg[3]]);
    assert_eq!(total as i32, r.actual_length);
    let (r, _) = drv.control_in(1, 2, 1, SetupPacket::new(0x80, 6, 0x0200, 0, 65535));
    assert_eq!(r.status, 0, "the full 64 KiB - 1");
}
