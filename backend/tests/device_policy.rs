//! The device policy in the daemon, over the simulated transport: a storage
//! stick that is allowed, re-enumerates as a keyboard after it was assigned
//! (same busid, new descriptors), is closed again and never posted to the
//! guest; back as a stick it is served again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pvusb_backend::usb::emulated::keyboard::KeyboardHandle;
use pvusb_backend::usb::emulated::mass_storage::store::MemoryStore;
use pvusb_backend::usb::emulated::mass_storage::MassStorageDevice;
use pvusb_backend::usb::emulated::{EmulatedDevice, EmulatedHost};
use pvusb_backend::DaemonConfig;
use pvusb_policy::Policy;
use pvusb_testkit::{wait_stats, Controller, Driver, World};

#[test]
fn a_stick_that_comes_back_as_a_keyboard_is_not_served() {
    let policy = Policy::from_text(
        "/etc/pvusb/rules.conf",
        "allow with-interface equals { 08:*:* } domain \"10\"\n\
         reject with-interface one-of { 03:*:* }\n",
    )
    .unwrap();
    let w = World::new();
    let emu = w.bus();
    let mut config = DaemonConfig::new(0);
    config.policy = Some(Arc::new(policy));
    let d = w.daemon_builder().config(config).start();
    w.controller(&Controller::new(10, 0, 2, 4));
    let mut drv = Driver::connect(&w, 10, 0);

    // One busid whose device is a stick or, after a flip and a re-plug, a
    // keyboard: the factory decides at every (re)connect.
    let keyboard = Arc::new(AtomicBool::new(false));
    let store = Arc::new(MemoryStore::new(2048));
    let kb = KeyboardHandle::new();
    let k = Arc::clone(&keyboard);
    let shapeshifter = Arc::new(move || -> Box<dyn EmulatedDevice> {
        if k.load(Ordering::SeqCst) {
            Box::new(kb.device())
        } else {
            Box::new(MassStorageDevice::new(store.clone()))
        }
    });
    let busid = EmulatedHost::busid(3).expect("busid");
    w.set_port(10, 0, 1, &busid.to_string());
    emu.add(busid, shapeshifter).expect("plug");
    let ev = drv.conn_event();
    assert_eq!(ev.portnum, 1);
    let stick_speed = ev.speed;
    assert_ne!(stick_speed, 0, "the stick is allowed and served");
    drv.enumerate(1, 2);

    keyboard.store(true, Ordering::SeqCst);
    emu.replug(&busid).expect("replug as a keyboard");
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (1, 0), "unplug posted");
    wait_stats(&d, 10, 0, "the keyboard refused", |s| s.attach_refused == 1);

    keyboard.store(false, Ordering::SeqCst);
    emu.replug(&busid).expect("replug as a stick");
    // Had the keyboard been served, its speed and another 0 would come first.
    let ev = drv.conn_event();
    assert_eq!(
        (ev.portnum, ev.speed),
        (1, stick_speed),
        "only the stick is posted"
    );
    let s = wait_stats(&d, 10, 0, "the stick attached twice", |s| s.attached == 2);
    assert_eq!(s.attach_refused, 1);
}
