//! Hot-unplug during bulk transfers and a daemon restart under load, with the
//! real toolstack, daemon and frontend.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use pvusb_frontend::Frontend;
use pvusb_protocol::xenstore::backend_dir;
use pvusb_testkit::background::Background;
use pvusb_testkit::machine::{self, DOM, LOOP};
use pvusb_testkit::{wait_for, World, LIVENESS};
use pvusb_toolstack::DeviceSpec;

/// Bulk OUT/IN echo loops on the loopback device in a thread, until stopped.
struct Load {
    worker: Background,
    echoed: Arc<AtomicUsize>,
}

impl Load {
    /// Starts the loops and returns once some transfers have gone through, so
    /// whatever the test does next happens under load.
    fn start(front: &Arc<Frontend>, addr: u8) -> Self {
        let echoed = Arc::new(AtomicUsize::new(0));
        let (worker_front, ok) = (Arc::clone(front), Arc::clone(&echoed));
        let worker = Background::spawn(move |running| {
            let data = vec![0x5a; 4096];
            while running.get() {
                if worker_front.bulk_out(1, addr, 1, &data, LIVENESS).is_ok()
                    && worker_front
                        .bulk_in(1, addr, 1, 4096, LIVENESS)
                        .is_ok_and(|d| d == data)
                {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        });
        // Not the frontend's stats: enumeration has already submitted URBs.
        wait_for("some echoes", || echoed.load(Ordering::SeqCst) > 0);
        Self { worker, echoed }
    }

    /// Stops the loops; returns how many echoes succeeded.
    fn stop(self) -> usize {
        self.worker.stop();
        self.echoed.load(Ordering::SeqCst)
    }
}

/// The loopback attached to port 1 of a new controller and enumerated: the
/// frontend and the device's address.
fn loopback_on_port_1(m: &World) -> (Arc<Frontend>, u8) {
    let ts = m.toolstack();
    let (_, front) = m.ctrl_attach(&ts, DOM);
    let front = Arc::new(front);
    ts.dev_attach(DOM, &DeviceSpec::BusId(LOOP.into()), Some(0), Some(1))
        .expect("dev-attach");
    front.wait_for_device(1, LIVENESS).expect("device");
    let dev = front.enumerate(1).expect("enumerate");
    (front, dev.address)
}

fn echo(front: &Frontend, addr: u8) {
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 3) as u8).collect();
    assert_eq!(
        front.bulk_out(1, addr, 1, &data, LIVENESS).expect("out"),
        4096
    );
    assert_eq!(front.bulk_in(1, addr, 1, 4096, LIVENESS).expect("in"), data);
}

#[test]
fn hot_unplug_during_transfers_then_replug() {
    let m = machine::new();
    let _daemon = m.daemon();
    let (front, addr) = loopback_on_port_1(&m);
    let load = Load::start(&front, addr);
    let busid = LOOP.parse().expect("busid");
    assert!(m.bus().remove(&busid), "unplugged");
    front
        .wait_for_disconnect(1, LIVENESS)
        .expect("the guest sees it go");
    load.stop();
    m.bus()
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
        .wait_for_device(1, LIVENESS)
        .expect("the guest sees it come back");
    let dev = front.enumerate(1).expect("enumerate again");
    echo(&front, dev.address);
}

#[test]
fn daemon_restart_under_load() {
    let m = machine::new();
    let daemon = m.daemon();
    let (front, addr) = loopback_on_port_1(&m);
    let load = Load::start(&front, addr);
    daemon.shutdown();
    let _daemon = m.daemon();
    front.wait_connected(LIVENESS).expect("connected again");
    front
        .wait_for_device(1, LIVENESS)
        .expect("device after restart");
    assert!(load.stop() > 0, "transfers succeeded");
    // Later transfers succeed, at the address the guest had or a new one.
    let addr = front.enumerate(1).map_or(addr, |d| d.address);
    echo(&front, addr);
    assert_eq!(
        m.read(&format!("{}/port/1", backend_dir(0, DOM, 0)))
            .as_deref(),
        Some(LOOP)
    );
}
