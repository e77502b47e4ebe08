//! The world of the frontend's daemon tests: guest [`DOM`] with one
//! controller (devid 0, USB 2, four ports) and an emulated device of every
//! transfer type on it, served by the daemon: a loopback (bulk) on port 1,
//! a keyboard (interrupt) on 2, a disk (bulk-only storage) on 3, an audio
//! device (isochronous) on 4.

use pvusb_backend::DaemonHandle;
use pvusb_frontend::Frontend;

use crate::controller::Controller;
use crate::wait::LIVENESS;
use crate::world::World;

/// The guest.
pub const DOM: u16 = 1;
/// Bytes of OUT data the loopback keeps.
const LOOPBACK_CAPACITY: usize = 1 << 17;
/// Blocks of the disk.
const DISK_BLOCKS: u32 = 4096;

/// The world with the controller's nodes written, no daemon yet.
fn new() -> World {
    let w = World::builder()
        .guest(DOM)
        .loopback(LOOPBACK_CAPACITY)
        .keyboard()
        .disk(DISK_BLOCKS)
        .audio()
        .build();
    let mut c = Controller::new(DOM, 0, 2, 4);
    for (port, busid) in (1..).zip(w.busids()) {
        c = c.port(port, &busid);
    }
    w.controller(&c);
    w
}

/// The world with the daemon serving it and the frontend connected, every
/// port's device present.
pub fn running() -> (World, DaemonHandle, Frontend) {
    let w = new();
    let daemon = w.daemon();
    let front = connect(&w);
    (w, daemon, front)
}

/// Connects the frontend and waits for every port's device.
pub fn connect(w: &World) -> Frontend {
    let front = w.frontend(DOM, 0);
    for port in 1..=4 {
        front
            .wait_for_device(port, LIVENESS)
            .expect("a device on every port");
    }
    front
}
