//! Smoke test: one controller, one emulated disk, enumeration over the sim.
mod support;

use std::sync::Arc;

use pvusb_backend::usb::emulated::mass_storage::store::MemoryStore;
use pvusb_backend::usb::emulated::mass_storage::MassStorageDevice;
use pvusb_backend::usb::emulated::EmulatedHost;
use support::*;

#[test]
fn enumerate_disk() {
    let w = World::new();
    let emu = EmulatedHost::new();
    let store = Arc::new(MemoryStore::new(2048));
    let busid = emu
        .add_next(Arc::new(move || {
            Box::new(MassStorageDevice::new(store.clone()))
        }))
        .expect("add disk");
    let d = w.daemon(host(&emu));
    w.add_controller(5, 0, "2", "4");
    w.wait_state(&w.be(5, 0), "2");
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
