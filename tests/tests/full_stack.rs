//! The whole stack over the simulated transport with the real components:
//! toolstack commands, backend daemon with emulated devices, frontend as
//! domain 1.

use pvusb_frontend::MassStorage;
use pvusb_protocol::xenstore::{backend_dir, frontend_dir};
use pvusb_testkit::machine::{self, DISK, DISK_BLOCKS, DOM};
use pvusb_testkit::toolstack::Reaper;
use pvusb_testkit::{wait_for, LIVENESS};
use pvusb_toolstack::paths::record_dir;
use pvusb_toolstack::DeviceSpec;

#[test]
fn attach_use_detach_and_remove_a_storage_device() {
    let m = machine::new();
    let daemon = m.daemon();
    let ts = m.toolstack();
    let (devid, front) = m.ctrl_attach(&ts, DOM);
    assert_eq!(devid, 0);
    assert_eq!(m.driver("200-1:1.0").as_deref(), Some("usb-storage"));

    let a = ts
        .dev_attach(DOM, &DeviceSpec::BusId(DISK.into()), Some(0), Some(1))
        .expect("dev-attach");
    assert_eq!((a.ctrl, a.port), (0, 1));
    assert_eq!(
        m.read(&format!("{}/state", record_dir(DISK))).as_deref(),
        Some("assigned")
    );
    assert_ne!(
        m.driver("200-1:1.0").as_deref(),
        Some("usb-storage"),
        "host driver unbound"
    );

    front
        .wait_for_device(1, LIVENESS)
        .expect("device in port 1");
    let dev = front.enumerate(1).expect("enumerate");
    let mut ms = MassStorage::open(&front, &dev).expect("mass storage");
    assert_eq!(ms.blocks, u64::from(DISK_BLOCKS));
    let data: Vec<u8> = (0..512 * 64).map(|i| (i * 7 % 251) as u8).collect();
    ms.write_blocks(100, &data).expect("write");
    assert_eq!(ms.read_blocks(100, 64).expect("read"), data);

    assert_eq!(
        m.read(&format!("{}/opened", record_dir(DISK))),
        Some(std::process::id().to_string()),
        "the daemon marks the device open in its record"
    );
    let d = ts.dev_detach(DOM, 0, 1).expect("dev-detach");
    assert_eq!(
        d.release,
        Some(pvusb_toolstack::Release::Confirmed),
        "detach waited for the daemon to close the device"
    );
    front
        .wait_for_disconnect(1, LIVENESS)
        .expect("port empty in the guest");
    assert!(!m.exists(&record_dir(DISK)), "record gone");
    assert_eq!(
        m.driver("200-1:1.0").as_deref(),
        Some("usb-storage"),
        "driver back"
    );
    assert_eq!(
        m.read(&format!("{}/port/1", backend_dir(0, DOM, 0)))
            .as_deref(),
        Some("")
    );

    ts.ctrl_detach(DOM, 0, false).expect("ctrl-detach");
    assert!(!m.exists(&backend_dir(0, DOM, 0)), "backend directory gone");
    assert!(!m.exists(&frontend_dir(DOM, 0)), "frontend directory gone");
    front.close().expect("frontend closes cleanly");
    wait_for("worker stopped", || !daemon.is_running(DOM, 0));
    daemon.shutdown();
}

#[test]
fn a_released_domain_gives_its_devices_back() {
    let m = machine::new();
    let daemon = m.daemon();
    let _reaper = Reaper::start(&m);
    let ts = m.toolstack();
    let (_, front) = m.ctrl_attach(&ts, DOM);
    ts.dev_attach(DOM, &DeviceSpec::BusId(DISK.into()), None, None)
        .expect("dev-attach");
    front.wait_for_device(1, LIVENESS).expect("device");
    assert!(daemon.is_running(DOM, 0));
    // The guest dies. Its frontend first stops writing to xenstore (a live
    // frontend thread would recreate the domain's home by writing its state).
    front.close().expect("frontend closed");
    // The toolstack removes its home and xenstored releases it.
    m.destroy_guest(DOM);
    m.xs().release_domain(DOM).expect("release");
    wait_for("controller nodes removed", || {
        !m.exists(&backend_dir(0, DOM, 0))
    });
    wait_for("record removed", || !m.exists(&record_dir(DISK)));
    assert_eq!(
        m.driver("200-1:1.0").as_deref(),
        Some("usb-storage"),
        "driver restored"
    );
    assert!(!m.exists(&frontend_dir(DOM, 0)));
    wait_for("worker stopped", || !daemon.is_running(DOM, 0));
    daemon.shutdown();
}
