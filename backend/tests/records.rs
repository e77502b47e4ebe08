//! The toolstack ↔ backend contract (toolstack/src/record.rs): the busid in
//! `port/N` is opened only while its record under `/pvusb/usbback` says
//! `claimed` or `assigned`, or when there is no record at all (ports written by
//! another toolstack); a record moving to `detach-releasing` releases the
//! device while the port still lists it.

use pvusb_protocol::xenstore::backend_dir;
use pvusb_protocol::SetupPacket;
use pvusb_testkit::{wait_stats, Controller, Driver, World};

fn record_state(busid: &str) -> String {
    format!("/pvusb/usbback/{}/state", busid.replace('.', "_"))
}

fn loopback(w: &World) -> String {
    w.plug_loopback(65536).to_string()
}

#[test]
fn a_port_without_any_record_is_opened() {
    // What libxl `type=pv` or `xenstore-write` by hand leave: a port, no record.
    let w = World::new();
    let busid = loopback(&w);
    let _d = w.daemon();
    w.controller(&Controller::new(2, 0, 2, 2));
    let mut drv = Driver::connect(&w, 2, 0);
    w.set_port(2, 0, 1, &busid);
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (1, 3));
    drv.enumerate(1, 1);
}

#[test]
fn a_record_withholds_the_device_until_it_is_claimed_or_assigned() {
    let w = World::new();
    let held = loopback(&w);
    let marker = loopback(&w);
    let d = w.daemon();
    w.controller(&Controller::new(3, 0, 2, 2));
    let mut drv = Driver::connect(&w, 3, 0);
    for stage in ["attach-recorded", "detach-rebinding", "bogus"] {
        w.write(&record_state(&held), stage);
        w.set_port(3, 0, 1, &held);
        // Port 2 (no record) is a marker: the worker handles port changes in
        // order, so once port 2 is posted, port 1 has been decided.
        w.set_port(3, 0, 2, &marker);
        let ev = drv.conn_event();
        assert_eq!(
            (ev.portnum, ev.speed),
            (2, 3),
            "stage {stage}: port 1 must not be opened"
        );
        let (r, _) = drv.control_in(0, 0, 1, SetupPacket::new(0x80, 6, 0x0100, 0, 18));
        assert_eq!(r.status, -19, "stage {stage}: port 1 stays empty");
        w.set_port(3, 0, 2, "");
        assert_eq!(drv.conn_event().speed, 0);
        w.set_port(3, 0, 1, "");
    }
    // A record directory without a state (unreadable record) withholds too.
    w.rm(&record_state(&held));
    w.write(&format!("/pvusb/usbback/{held}/domid"), "3");
    w.set_port(3, 0, 1, &held);
    w.set_port(3, 0, 2, &marker);
    assert_eq!(drv.conn_event().portnum, 2);
    // The toolstack finishes the attach: the device is opened, port unchanged.
    w.write(&record_state(&held), "claimed");
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (1, 3));
    w.write(&record_state(&held), "assigned");
    drv.enumerate(1, 1);
    let s = wait_stats(&d, 3, 0, "attached", |s| s.attached >= 1);
    assert_eq!(
        s.attached, 5,
        "the marker four times, the held device only once it was claimed"
    );
}

#[test]
fn detach_releasing_releases_the_device_while_the_port_still_lists_it() {
    let w = World::new();
    let busid = w.plug_keyboard().to_string();
    let d = w.daemon();
    w.controller(&Controller::new(4, 0, 2, 2));
    w.write(&record_state(&busid), "assigned");
    w.set_port(4, 0, 2, &busid);
    let mut drv = Driver::connect(&w, 4, 0);
    assert_eq!(drv.conn_event().portnum, 2);
    drv.enumerate(2, 2);
    // An interrupt IN waiting for a key is in flight when the claim goes.
    drv.send(&[drv.interrupt_in(9, 2, 2, 1, 8)]);
    wait_stats(&d, 4, 0, "interrupt in flight", |s| s.in_flight == 1);
    w.write(&record_state(&busid), "detach-releasing");
    let r = drv.response_for(9);
    assert!(r.status < 0, "its request is answered with an error: {r:?}");
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (2, 0), "speed 0 posted");
    assert_eq!(
        w.read(&format!("{}/port/2", backend_dir(0, 4, 0)))
            .as_deref(),
        Some(busid.as_str()),
        "released while the port still lists it"
    );
    let s = wait_stats(&d, 4, 0, "answered", |s| s.in_flight == 0);
    assert_eq!(s.in_flight, 0);
    // The device was closed: giving it back (claim again) opens it anew.
    w.write(&record_state(&busid), "assigned");
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (2, 2));
    wait_stats(&d, 4, 0, "opened twice", |s| s.attached == 2);
    // The usual end of a detach: release, then the port is emptied, then the
    // record goes. Nothing more is posted after the release.
    w.write(&record_state(&busid), "detach-releasing");
    assert_eq!(drv.conn_event().speed, 0);
    w.set_port(4, 0, 2, "");
    w.rm(&format!("/pvusb/usbback/{busid}"));
    w.controller(&Controller::new(4, 1, 2, 1));
    w.wait_state(&backend_dir(0, 4, 1), "2");
    assert!(drv.conn_events.is_empty());
    let (r, _) = drv.control_in(0, 0, 2, SetupPacket::new(0x80, 6, 0x0100, 0, 18));
    assert_eq!(r.status, -19);
}
