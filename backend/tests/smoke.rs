//! Smoke test: one controller, one emulated disk, enumeration over the sim.

use pvusb_protocol::xenstore::backend_dir;
use pvusb_testkit::{Controller, Driver, World};

#[test]
fn enumerate_disk() {
    let w = World::new();
    let busid = w.plug_disk(2048);
    let d = w.daemon();
    w.controller(&Controller::new(5, 0, 2, 4));
    w.wait_state(&backend_dir(0, 5, 0), "2");
    w.set_port(5, 0, 2, &busid.to_string());
    let mut drv = Driver::connect(&w, 5, 0);
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (2, 3));
    let desc = drv.enumerate(2, 7);
    assert_eq!(desc[0], 18);
    let s = d.stats(5, 0).expect("stats");
    assert_eq!(s.set_address, 1);
    // Every device completion is counted with its bytes: SET_ADDRESS is
    // emulated, the GET_DESCRIPTOR calls of the enumeration reached the device.
    assert_eq!(s.completed, s.submitted);
    assert!(s.completed >= 1);
    assert!(s.bytes_in >= 18, "{s:?}");
    assert_eq!(s.bytes_out, 0);
    d.shutdown();
}
