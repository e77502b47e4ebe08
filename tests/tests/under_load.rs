//! Hot-unplug during bulk transfers and a daemon restart under load, with the
//! real toolstack, daemon and frontend.
mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pvusb_frontend::Frontend;
use pvusb_toolstack::DeviceSpec;
use support::*;

/// Bulk OUT/IN echo loops on the loopback device until `stop`; counts successes.
fn load(front: &Arc<Frontend>, addr: u8, stop: &Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    let (front, stop) = (Arc::clone(front), Arc::clone(stop));
    std::thread::spawn(move || {
        let ok = AtomicUsize::new(0);
        let data = vec![0x5a; 4096];
        while !stop.load(Ordering::SeqCst) {
            if front.bulk_out(1, addr, 1, &data, T).is_ok()
                && front.bulk_in(1, addr, 1, 4096, T).is_ok_and(|d| d == data)
            {
                ok.fetch_add(1, Ordering::Relaxed);
            } else {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        ok.into_inner()
    })
}

fn echo(front: &Frontend, addr: u8) {
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 3) as u8).collect();
    assert_eq!(front.bulk_out(1, addr, 1, &data, T).expect("out"), 4096);
    assert_eq!(front.bulk_in(1, addr, 1, 4096, T).expect("in"), data);
}

#[test]
fn hot_unplug_during_transfers_then_replug() {
    let m = Machine::new();
    let _daemon = m.daemon();
    let ts = m.toolstack();
    let (_, front) = m.ctrl_attach(&ts);
    let front = Arc::new(front);
    ts.dev_attach(DOM, &DeviceSpec::BusId(LOOP.into()), Some(0), Some(1))
        .expect("dev-attach");
    front.wait_for_device(1, T).expect("device");
    let dev = front.enumerate(1).expect("enumerate");
    let stop = Arc::new(AtomicBool::new(false));
    let worker = load(&front, dev.address, &stop);
    let busid = LOOP.parse().expect("busid");
    wait_for("some transfers", || front.stats() != Default::default());
    assert!(m.emu.remove(&busid), "unplugged");
    front
        .wait_for_disconnect(1, T)
        .expect("the guest sees it go");
    stop.store(true, Ordering::SeqCst);
    worker.join().expect("load thread");
    m.emu
        .add(
            busid,
            Arc::new(|| {
                Box::new(pvusb_backend::usb::emulated::loopback::LoopbackDevice::new(
                    1 << 20,
                ))
            }),
        )
        .expect("replug");
    front
        .wait_for_device(1, T)
        .expect("the guest sees it come back");
    let dev = front.enumerate(1).expect("enumerate again");
    echo(&front, dev.address);
}

#[test]
fn daemon_restart_under_load() {
    let m = Machine::new();
    let daemon = m.daemon();
    let ts = m.toolstack();
    let (_, front) = m.ctrl_attach(&ts);
    let front = Arc::new(front);
    ts.dev_attach(DOM, &DeviceSpec::BusId(LOOP.into()), Some(0), Some(1))
        .expect("dev-attach");
    front.wait_for_device(1, T).expect("device");
    let dev = front.enumerate(1).expect("enumerate");
    let stop = Arc::new(AtomicBool::new(false));
    let worker = load(&front, dev.address, &stop);
    wait_for("some transfers", || front.stats() != Default::default());
    daemon.shutdown();
    let _daemon = m.daemon();
    front.wait_connected(T).expect("connected again");
    front.wait_for_device(1, T).expect("device after restart");
    stop.store(true, Ordering::SeqCst);
    assert!(
        worker.join().expect("load thread") > 0,
        "transfers succeeded"
    );
    // Later transfers succeed, at the address the guest had or a new one.
    let addr = match front.enumerate(1) {
        Ok(d) => d.address,
        Err(_) => dev.address,
    };
    echo(&front, addr);
    assert_eq!(
        m.read(&format!("{}/port/1", backend_dir(0))).as_deref(),
        Some(LOOP)
    );
}
