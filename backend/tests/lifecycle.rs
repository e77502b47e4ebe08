//! xenbus life-cycle of the daemon over the simulated transport and the
//! embedded xenstore: handshake variants, close paths, re-handshake, daemon
//! restart, bad configuration, hot-plug on the conn ring.

use std::sync::Arc;

use pvusb_backend::usb::emulated::keyboard::KeyboardHandle;
use pvusb_backend::usb::emulated::loopback::LoopbackDevice;
use pvusb_backend::usb::emulated::EmulatedHost;
use pvusb_backend::DaemonHandle;
use pvusb_protocol::xenstore::{backend_dir, frontend_dir};
use pvusb_protocol::SetupPacket;
use pvusb_testkit::{wait_for, wait_stats, Controller, Driver, World};

fn loopback(w: &World) -> String {
    w.plug_loopback(65536).to_string()
}

/// A daemon serving the loopback device on port 1 of controller 0 of
/// `domid` (USB 2, two ports), and the guest's driver with the device
/// enumerated at address 4.
fn served_loopback(w: &World, domid: u16) -> (String, DaemonHandle, Driver) {
    let busid = loopback(w);
    let d = w.daemon();
    w.controller(&Controller::new(domid, 0, 2, 2));
    w.set_port(domid, 0, 1, &busid);
    let mut drv = Driver::connect(w, domid, 0);
    assert_eq!(drv.conn_event().portnum, 1);
    drv.enumerate(1, 4);
    (busid, d, drv)
}

#[test]
fn frontend_jumping_from_initialising_to_connected_is_served() {
    let w = World::new();
    let busid = loopback(&w);
    let d = w.daemon();
    w.controller(&Controller::new(3, 0, 2, 8));
    w.wait_state(&backend_dir(0, 3, 0), "2");
    w.set_port(3, 0, 1, &busid);
    let mut drv = Driver::connect(&w, 3, 0);
    let ev = drv.conn_event();
    assert_eq!(
        (ev.portnum, ev.speed),
        (1, 3),
        "occupied port posted at connect"
    );
    assert!(drv.conn_events.is_empty());
    drv.enumerate(1, 1);
    d.shutdown();
}

#[test]
fn frontend_initialised_state_is_accepted_too() {
    let w = World::new();
    loopback(&w);
    let _d = w.daemon();
    w.controller(&Controller::new(3, 1, 1, 2));
    w.wait_state(&backend_dir(0, 3, 1), "2");
    let _drv = Driver::connect_with(&w, 3, 1, 512, "3");
    w.wait_state(&backend_dir(0, 3, 1), "4");
}

#[test]
fn close_paths_and_rehandshake() {
    let w = World::new();
    let busid = loopback(&w);
    let d = w.daemon();
    w.controller(&Controller::new(4, 0, 2, 4));
    w.set_port(4, 0, 2, &busid);
    let be = backend_dir(0, 4, 0);
    let fe = frontend_dir(4, 0);
    let mut drv = Driver::connect(&w, 4, 0);
    assert_eq!(drv.conn_event().portnum, 2);
    // Frontend Closing -> backend mirrors Closing; Closed -> Closed.
    w.write(&format!("{fe}/state"), "5");
    w.wait_state(&be, "5");
    w.write(&format!("{fe}/state"), "6");
    w.wait_state(&be, "6");
    drop(drv);
    // Back to Initialising: re-handshake on the same node.
    w.write(&format!("{fe}/state"), "1");
    w.wait_state(&be, "2");
    let mut drv = Driver::connect(&w, 4, 0);
    let ev = drv.conn_event();
    assert_eq!(
        (ev.portnum, ev.speed),
        (2, 3),
        "port state posted again after re-handshake"
    );
    let (r, _) = drv.control_in(0, 0, 2, SetupPacket::new(0x80, 6, 0x0100, 0, 18));
    assert_eq!(r.status, 0);
    let s = wait_stats(&d, 4, 0, "two connects", |s| s.connects == 2);
    assert_eq!(s.in_flight, 0);
}

#[test]
fn online_zero_closes_the_controller() {
    let w = World::new();
    loopback(&w);
    let _d = w.daemon();
    w.controller(&Controller::new(6, 0, 2, 1));
    let be = backend_dir(0, 6, 0);
    let _drv = Driver::connect(&w, 6, 0);
    // What libxl does on remove: online=0, state=5, then waits for 6.
    w.write(&format!("{be}/online"), "0");
    w.write(&format!("{be}/state"), "5");
    w.write(&format!("{}/state", frontend_dir(6, 0)), "6");
    w.wait_state(&be, "6");
}

#[test]
fn bad_configuration_is_logged_and_left_alone_until_fixed() {
    let w = World::new();
    loopback(&w);
    let d = w.daemon();
    w.controller(&Controller::new(7, 0, 3, 8));
    let be = backend_dir(0, 7, 0);
    wait_stats(&d, 7, 0, "worker running", |_| true);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        w.read(&format!("{be}/state")).as_deref(),
        Some("1"),
        "usb-ver 3 refused"
    );
    w.write(&format!("{be}/num-ports"), "99");
    w.write(&format!("{be}/usb-ver"), "2");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(
        w.read(&format!("{be}/state")).as_deref(),
        Some("1"),
        "num-ports 99 refused"
    );
    assert!(
        d.is_running(7, 0),
        "a bad configuration never kills the worker"
    );
    w.write(&format!("{be}/num-ports"), "31");
    w.wait_state(&be, "2");
}

#[test]
fn hostile_ring_references_keep_initwait() {
    let w = World::new();
    loopback(&w);
    let d = w.daemon();
    w.controller(&Controller::new(8, 0, 2, 1));
    let be = backend_dir(0, 8, 0);
    let fe = frontend_dir(8, 0);
    w.wait_state(&be, "2");
    for (urb, conn, ev) in [
        ("x", "9", "1"),
        ("99999999999", "9", "1"),
        ("5000", "5001", "1"),
        ("-1", "0", "0"),
    ] {
        w.write(&format!("{fe}/urb-ring-ref"), urb);
        w.write(&format!("{fe}/conn-ring-ref"), conn);
        w.write(&format!("{fe}/event-channel"), ev);
        w.write(&format!("{fe}/state"), "4");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(w.read(&format!("{be}/state")).as_deref(), Some("2"));
        w.write(&format!("{fe}/state"), "1");
    }
    assert!(d.is_running(8, 0));
    // A good frontend still connects afterwards.
    let _drv = Driver::connect(&w, 8, 0);
}

#[test]
fn daemon_restart_picks_up_a_connected_controller() {
    let w = World::new();
    let (d, mut drv) = enumerated_loopback(&w);
    d.shutdown();
    assert_eq!(
        w.read(&format!("{}/state", backend_dir(0, 9, 0)))
            .as_deref(),
        Some("4"),
        "shutdown keeps the state"
    );
    assert_eq!(
        w.read(&format!("{}/pvusb-addresses", backend_dir(0, 9, 0)))
            .as_deref(),
        Some("4:1"),
        "address table saved"
    );
    // Transparent restart: nothing in xenstore changes. As on Xen, the
    // frontend's event channel port went back to unbound when the daemon
    // closed its end, and the next daemon binds the same port again.
    let before = w.read(&format!("{}/event-channel", frontend_dir(9, 0)));
    // A request sent while no daemon runs is served by the next one.
    let pipe = pvusb_protocol::Pipe::new(
        pvusb_protocol::TransferType::Control,
        pvusb_protocol::Direction::In,
        4,
        0,
        1,
    )
    .expect("pipe");
    let get = SetupPacket::new(0x80, 6, 0x0100, 0, 18);
    let pending =
        pvusb_protocol::UrbRequest::control(5, pipe, get, &drv.segs(5, 0, 18)).expect("req");
    drv.send(&[pending]);
    let d2 = w.daemon();
    let r = drv.response_for(5);
    assert_eq!(
        (r.status, r.actual_length),
        (0, 18),
        "request to address 4 made while the daemon was down: {:?}",
        d2.stats(9, 0)
    );
    let ev = drv.conn_event();
    assert_eq!(
        (ev.portnum, ev.speed),
        (1, 3),
        "port state re-posted on resume"
    );
    // The restarted daemon has a fresh address table: re-enumeration works.
    drv.enumerate(1, 4);
    wait_stats(&d2, 9, 0, "one connect", |s| s.connects == 1);
    assert_eq!(
        w.read(&format!("{}/event-channel", frontend_dir(9, 0))),
        before,
        "the frontend's event channel is unchanged"
    );
}

/// A daemon that died may have started the bulk transfers it left
/// unanswered, and running one again can hand the guest data shifted by
/// what the device had already sent: the next daemon fails bulk requests
/// published before it attached instead of running them, and serves the
/// ones after.
#[test]
fn a_restarted_daemon_fails_bulk_requests_published_before_it() {
    let w = World::new();
    let (d, mut drv) = enumerated_loopback(&w);
    d.shutdown();
    drv.write_buf(6, 0, &[0x5a; 64]);
    let before = drv.bulk(6, 4, 1, 0x01, 64);
    drv.send(&[before]);
    let d2 = w.daemon();
    let r = drv.response_for(6);
    assert_eq!(
        (r.status, r.actual_length),
        (pvusb_protocol::Status::IoError as i32, 0),
        "a bulk request published before the restart is failed, not run"
    );
    assert_eq!(drv.conn_event().portnum, 1, "port re-posted on resume");
    let after = drv.bulk(7, 4, 1, 0x01, 64);
    let r = drv.roundtrip(after);
    assert_eq!((r.status, r.actual_length), (0, 64), "{:?}", d2.stats(9, 0));
}

#[test]
fn hotplug_and_unplug_are_seen_on_the_conn_ring() {
    let w = World::new();
    let emu = w.bus();
    let kb = KeyboardHandle::new();
    let d = w.daemon();
    w.controller(&Controller::new(10, 0, 2, 4));
    let mut drv = Driver::connect(&w, 10, 0);
    let busid = EmulatedHost::busid(3).expect("busid");
    w.set_port(10, 0, 4, &busid.to_string());
    // Configured but absent: nothing posted. Plug it in: posted.
    let k = kb.clone();
    emu.add(busid, Arc::new(move || Box::new(k.device())))
        .expect("plug");
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (4, 2), "keyboard is full speed");
    drv.enumerate(4, 2);
    // An interrupt IN waits for a key; host unplug answers it and posts 0.
    drv.send(&[drv.interrupt_in(9, 2, 4, 1, 8)]);
    wait_stats(&d, 10, 0, "interrupt in flight", |s| s.in_flight == 1);
    assert!(emu.remove(&busid));
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (4, 0));
    let r = drv.response_for(9);
    assert_eq!(
        r.status, -19,
        "in-flight request of an unplugged device: NODEV"
    );
    // Replug with the busid still configured: reattached.
    let k = kb.clone();
    emu.add(busid, Arc::new(move || Box::new(k.device())))
        .expect("replug");
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (4, 2));
    // Toolstack empties the port: speed 0.
    w.set_port(10, 0, 4, "");
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (4, 0));
    // A different device on a port gets a 0 first.
    let lb = EmulatedHost::busid(5).expect("busid");
    emu.add(lb, Arc::new(|| Box::new(LoopbackDevice::new(1024))))
        .expect("add");
    w.set_port(10, 0, 1, &busid.to_string());
    assert_eq!((drv.conn_event().portnum, drv.conn_events.len()), (1, 0));
    w.set_port(10, 0, 1, &lb.to_string());
    let a = drv.conn_event();
    let b = drv.conn_event();
    assert_eq!(
        [(a.portnum, a.speed), (b.portnum, b.speed)],
        [(1, 0), (1, 3)]
    );
}

#[test]
fn high_speed_device_on_a_usb11_controller_is_refused() {
    let w = World::new();
    let busid = loopback(&w);
    let d = w.daemon();
    w.controller(&Controller::new(11, 0, 1, 2));
    w.set_port(11, 0, 1, &busid);
    let mut drv = Driver::connect(&w, 11, 0);
    wait_stats(&d, 11, 0, "refused", |s| s.attach_refused >= 1);
    let (r, _) = drv.control_in(0, 0, 1, SetupPacket::new(0x80, 6, 0x0100, 0, 18));
    assert_eq!(r.status, -19, "port left empty");
    assert!(drv.conn_events.is_empty());
}

#[test]
fn a_dead_guest_stops_its_controller_only() {
    let w = World::new();
    loopback(&w);
    let d = w.daemon();
    w.controller(&Controller::new(12, 0, 2, 1));
    w.controller(&Controller::new(13, 0, 2, 1));
    let _a = Driver::connect(&w, 12, 0);
    let mut b = Driver::connect(&w, 13, 0);
    w.destroy_guest(12);
    w.xs().release_domain(12).expect("release");
    wait_for("controller of the dead guest stopped", || {
        !d.is_running(12, 0)
    });
    assert!(d.is_running(13, 0));
    let (r, _) = b.control_in(0, 0, 1, SetupPacket::new(0x80, 6, 0x0100, 0, 18));
    assert_eq!(r.status, -19, "the other controller still answers");
    // Removing the backend directory stops a controller as well.
    w.rm(&backend_dir(0, 13, 0));
    wait_for("controller with removed directory stopped", || {
        !d.is_running(13, 0)
    });
}

#[test]
fn shutdown_answers_in_flight_requests_and_releases_grants() {
    let w = World::new();
    let busid = w.plug_keyboard();
    let d = w.daemon();
    w.controller(&Controller::new(14, 0, 2, 1));
    w.set_port(14, 0, 1, &busid.to_string());
    let mut drv = Driver::connect(&w, 14, 0);
    drv.conn_event();
    drv.enumerate(1, 1);
    let reqs: Vec<_> = (4..8u16)
        .map(|id| drv.interrupt_in(id, 1, 1, 1, 8))
        .collect();
    drv.send(&reqs);
    wait_stats(&d, 14, 0, "4 pending", |s| s.in_flight == 4);
    d.shutdown();
    let rs = drv.responses(4);
    let mut ids: Vec<u16> = rs.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        vec![4, 5, 6, 7],
        "every in-flight request answered once"
    );
    assert!(
        rs.iter().all(|r| r.status == -108 || r.status == -71),
        "{rs:?}"
    );
    use pvusb_xen::GrantedPages;
    drv.urb_page
        .try_end_access()
        .expect("urb ring no longer mapped by the backend");
    drv.conn_page
        .try_end_access()
        .expect("conn ring no longer mapped by the backend");
    for b in &drv.bufs {
        b.try_end_access().expect("no data page left mapped");
    }
}

/// A guest toggling SET_ADDRESS must not drive xenstore transactions at ring
/// speed (the address table is saved at most every 500 ms), and the table a
/// restarted daemon needs still reaches xenstore.
#[test]
fn set_address_flood_saves_at_a_bounded_rate() {
    let w = World::new();
    let (_busid, d, mut drv) = served_loopback(&w, 9);
    let path = format!("{}/pvusb-addresses", backend_dir(0, 9, 0));
    let watch = w.xs().watch(&path).expect("watch");
    // The watch fires once when set.
    let _ = watch
        .receiver()
        .recv_timeout(std::time::Duration::from_secs(1));
    let started = std::time::Instant::now();
    let mut last = 0u16;
    for i in 0..300u16 {
        last = 5 + i % 2;
        let r = drv.control_out(i % 16, 0, 1, SetupPacket::new(0x00, 5, last, 0, 0), &[]);
        assert_eq!(r.status, 0, "SET_ADDRESS");
    }
    let elapsed = started.elapsed();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let mut writes = 0u32;
    while watch
        .receiver()
        .recv_timeout(std::time::Duration::from_millis(50))
        .is_ok()
    {
        writes += 1;
    }
    let bound = 2 + 2 * u32::try_from(elapsed.as_millis() / 1000).unwrap_or(u32::MAX) + 2;
    assert!(
        writes <= bound,
        "{writes} saves for 300 SET_ADDRESS in {elapsed:?} (bound {bound})"
    );
    assert_eq!(
        w.read(&path).as_deref(),
        Some(format!("{last}:1").as_str()),
        "the last table is saved once its interval ends"
    );
    d.shutdown();
}

/// A guest that keeps its ring full must not starve the worker's control
/// messages: removing the controller stops the worker while the flood goes
/// on (the worker reads its mailbox between bounded service passes).
#[test]
fn a_flooding_guest_cannot_starve_the_controllers_removal() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let w = World::new();
    let (_busid, d, mut drv) = served_loopback(&w, 9);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let (stop2, answered2) = (Arc::clone(&stop), Arc::clone(&answered));
    let flood = std::thread::spawn(move || {
        let pipe = pvusb_protocol::Pipe::new(
            pvusb_protocol::TransferType::Control,
            pvusb_protocol::Direction::In,
            4,
            0,
            1,
        )
        .expect("pipe");
        let get = |drv: &Driver, id: u16| {
            pvusb_protocol::UrbRequest::control(
                id,
                pipe,
                SetupPacket::new(0x80, 0, 0, 0, 2),
                &drv.segs(usize::from(id), 0, 2),
            )
            .expect("req")
        };
        let first: Vec<_> = (0..16).map(|id| get(&drv, id)).collect();
        drv.send(&first);
        while !stop2.load(Ordering::SeqCst) {
            let mut again = Vec::new();
            while let Ok(Some(r)) = drv.urb.take_response() {
                again.push(get(&drv, r.id));
            }
            answered2.fetch_add(again.len() as u64, Ordering::Relaxed);
            for r in &again {
                drv.urb.push_request(r).expect("room");
            }
            if !again.is_empty() && drv.urb.push_requests_and_check_notify().expect("push") {
                let _ = pvusb_xen::EventChannel::notify(&drv.evtchn);
            }
        }
    });
    wait_for("the flood to run", || {
        answered.load(Ordering::Relaxed) > 1000
    });
    w.rm(&backend_dir(0, 9, 0));
    wait_for("the worker to stop despite the flood", || {
        !d.is_running(9, 0)
    });
    stop.store(true, Ordering::SeqCst);
    flood.join().expect("flood thread");
    d.shutdown();
}

/// A device that is not served after a daemon restart (unplugged while no
/// daemon ran, or refused now) is posted empty: the guest still believed in
/// the port the last daemon posted.
#[test]
fn restart_posts_ports_whose_device_is_no_longer_served_as_empty() {
    let w = World::new();
    let (busid, d, mut drv) = served_loopback(&w, 9);
    d.shutdown();
    assert!(w.bus().remove(&busid.parse().expect("busid")), "unplugged");
    let d2 = w.daemon();
    let mut seen = Vec::new();
    while !seen.contains(&(1, 0)) {
        let ev = drv.conn_event();
        seen.push((ev.portnum, ev.speed));
    }
    assert!(
        !seen.contains(&(1, 3)),
        "the gone device posted again: {seen:?}"
    );
    d2.shutdown();
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// A connected controller is served by its one worker thread: no thread of
/// its own waits for its frontend's watch (those events arrive on xenstore's
/// reader thread) and none runs its devices' completions.
#[test]
fn a_connected_controller_runs_on_one_thread() {
    if !std::path::Path::new("/proc/self/task").exists() {
        eprintln!("SKIP: no /proc/self/task to list threads");
        return;
    }
    let w = World::new();
    let (_busid, d, _drv) = served_loopback(&w, 91);
    let names = thread_names();
    let of = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    assert_eq!(of("vusb-91-0"), 1, "one worker: {names:?}");
    assert_eq!(of("vusb-fe-91"), 0, "no frontend watch thread: {names:?}");
    d.shutdown();
}

/// A request whose notification was lost (published while a restarted
/// backend bound the event channel again) is still served: a connected
/// controller looks at its ring at least every second. Before, the worker
/// slept until the next event and the request waited for good (scenario 11's
/// restart under the vhci bridge).
#[test]
fn a_request_without_a_notification_is_still_served() {
    let w = World::new();
    let (_d, mut drv) = enumerated_loopback(&w);
    // Long enough that the worker's polling after its last work is over.
    std::thread::sleep(std::time::Duration::from_millis(200));
    drv.write_buf(6, 0, &[0x5a; 64]);
    let req = drv.bulk(6, 4, 1, 0x01, 64);
    drv.send_silently(&[req]);
    let r = drv.response_for(6);
    assert_eq!((r.status, r.actual_length), (0, 64));
}

/// Controller 0 of guest 9 with the loopback in port 1, connected by a ring
/// driver that has seen the port and enumerated the device at address 4.
fn enumerated_loopback(w: &World) -> (DaemonHandle, Driver) {
    let busid = loopback(w);
    let d = w.daemon();
    w.controller(&Controller::new(9, 0, 2, 2));
    w.set_port(9, 0, 1, &busid);
    let mut drv = Driver::connect(w, 9, 0);
    assert_eq!(drv.conn_event().portnum, 1);
    drv.enumerate(1, 4);
    (d, drv)
}
