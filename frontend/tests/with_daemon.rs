//! The frontend against the real backend daemon and its emulated devices over
//! the simulated transport: every transfer type, an unlink storm, hot-unplug
//! during transfers and a backend restart.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pvusb_backend::usb::emulated::loopback::{
    LoopbackDevice, VENDOR_GET_COUNTERS, VENDOR_SET_MODE,
};
use pvusb_frontend::{Frontend, MassStorage, PortEvent, Urb, UrbStatus};
use pvusb_protocol::usb::request::dt;
use pvusb_protocol::xenstore::frontend_dir;
use pvusb_protocol::{SetupPacket, Speed};
use pvusb_xenstore::Tx;

use pvusb_testkit::rig::{self, DOM};
use pvusb_testkit::LIVENESS;

/// Switches the loopback on port 1 (at `address`) from echoing the last OUT
/// data to source/sink: bulk IN returns a deterministic pattern of any length
/// and bulk OUT is consumed without being kept.
fn source_sink_mode(front: &Frontend, address: u8) {
    front
        .control_out(
            1,
            address,
            SetupPacket::new(0x40, VENDOR_SET_MODE, 1, 0, 0),
            &[],
            LIVENESS,
        )
        .unwrap();
}

#[test]
fn every_transfer_type_against_emulated_devices() {
    let (w, daemon, front) = rig::running();
    // Control, including a wLength far above the configuration's size.
    let lb = front.enumerate(1).unwrap();
    assert_eq!(lb.speed, Speed::High);
    assert_eq!(lb.product.as_deref(), Some("pvusb loopback"));
    let big = front
        .control_in(
            1,
            lb.address,
            SetupPacket::get_descriptor(dt::CONFIG, 0, 0, 4096),
            LIVENESS,
        )
        .unwrap();
    assert_eq!(big, lb.raw_config);
    // Bulk loopback, then source/sink with transfers split above 64 KiB.
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 13) as u8).collect();
    assert_eq!(
        front.bulk_out(1, lb.address, 1, &data, LIVENESS).unwrap(),
        4096
    );
    assert_eq!(
        front.bulk_in(1, lb.address, 1, 4096, LIVENESS).unwrap(),
        data
    );
    source_sink_mode(&front, lb.address);
    let n = 200_000;
    let got = front.bulk_in(1, lb.address, 1, n, LIVENESS).unwrap();
    assert_eq!(got.len(), n);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, &b)| b == LoopbackDevice::pattern_byte(i as u64)));
    assert_eq!(
        front
            .bulk_out(1, lb.address, 1, &vec![1; n], LIVENESS)
            .unwrap(),
        n
    );
    let counters = front
        .control_in(
            1,
            lb.address,
            SetupPacket::new(0xc0, VENDOR_GET_COUNTERS, 0, 0, 16),
            LIVENESS,
        )
        .unwrap();
    assert_eq!(
        u64::from_le_bytes(counters[..8].try_into().unwrap()),
        (4096 + n) as u64
    );
    // Interrupt: key reports from the keyboard.
    let kb = front.enumerate(2).unwrap();
    w.keyboard().press("a");
    let report = front
        .interrupt_in(2, kb.address, 1, 8, 10, LIVENESS)
        .unwrap();
    assert_eq!(report.len(), 8);
    assert_eq!(report[2], 0x04, "usage of 'a'");
    // Mass storage: write and read back blocks.
    let disk = front.enumerate(3).unwrap();
    let mut ms = MassStorage::open(&front, &disk).unwrap();
    assert_eq!((ms.blocks, ms.block_size), (4096, 512));
    assert_eq!(ms.inquiry().unwrap().device_type, 0);
    let blocks: Vec<u8> = (0..512 * 300).map(|i| (i % 253) as u8).collect();
    ms.write_blocks(17, &blocks).unwrap();
    assert_eq!(ms.read_blocks(17, 300).unwrap(), blocks);
    assert!(ms.read_blocks(4095, 2).is_err(), "beyond the medium");
    // The whole medium in one call: more than one READ(10)/WRITE(10) command
    // (at most 1 MiB each), as `pvusb front read --count` of a large range does.
    let whole: Vec<u8> = (0..512 * 4096).map(|i| (i % 241) as u8).collect();
    ms.write_blocks(0, &whole).unwrap();
    assert!(
        ms.read_blocks(0, 4096).unwrap() == whole,
        "whole medium read back"
    );
    // Isochronous IN and OUT with per-packet results (alt setting 1).
    let audio = front.enumerate(4).unwrap();
    front
        .control_out(
            4,
            audio.address,
            SetupPacket::set_interface(0, 1),
            &[],
            LIVENESS,
        )
        .unwrap();
    let c = front
        .iso_in(4, audio.address, 2, 1, vec![192; 10], LIVENESS)
        .unwrap();
    assert_eq!(c.iso_packets.len(), 10);
    assert!(
        c.iso_packets
            .iter()
            .all(|p| p.status.is_ok() && p.actual_length == 192),
        "{:?}",
        c.iso_packets
    );
    let payload = [0x11u8; 192];
    let c = front
        .iso_out(4, audio.address, 1, 1, &[&payload[..]; 4], LIVENESS)
        .unwrap();
    assert!(
        c.iso_packets.iter().all(|p| p.status.is_ok()),
        "{:?}",
        c.iso_packets
    );
    front.close().unwrap();
    assert_eq!(
        w.xs()
            .read(Tx::NONE, &format!("{}/state", frontend_dir(DOM, 0)))
            .unwrap()
            .as_deref(),
        Some("6")
    );
    daemon.shutdown();
}

#[test]
fn unlink_storm_completes_every_urb_exactly_once() {
    let (_w, daemon, front) = rig::running();
    let lb = front.enumerate(1).unwrap();
    source_sink_mode(&front, lb.address);
    let completed = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut seed = 0x1234_5678u32;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut handles = Vec::new();
    for i in 0..1000usize {
        let (c, tx) = (Arc::clone(&completed), tx.clone());
        let urb = Urb::bulk_in(1, lb.address, 1, 512 + (rand() as usize % 8192));
        handles.push(front.submit(urb, move |comp| {
            c.fetch_add(1, Ordering::SeqCst);
            tx.send((i, comp.status)).unwrap();
        }));
        if rand() % 2 == 0 {
            let victim = rand() as usize % handles.len();
            handles[victim].unlink(UrbStatus::Cancelled);
        }
    }
    let mut seen = vec![0u8; 1000];
    for _ in 0..1000 {
        let (i, status) = rx.recv_timeout(LIVENESS).unwrap();
        seen[i] += 1;
        assert!(
            matches!(status, UrbStatus::Ok | UrbStatus::Cancelled),
            "{status:?}"
        );
    }
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    assert!(seen.iter().all(|&n| n == 1));
    assert_eq!(completed.load(Ordering::SeqCst), 1000);
    assert_eq!(front.outstanding(), 0);
    assert_eq!(front.dead_reason(), None);
    // The controller still works after the storm.
    assert_eq!(
        front
            .bulk_in(1, lb.address, 1, 100, LIVENESS)
            .unwrap()
            .len(),
        100
    );
    drop(front);
    daemon.shutdown();
}

#[test]
fn device_vanishing_mid_transfer_fails_urbs_and_comes_back() {
    let (w, daemon, front) = rig::running();
    let kb = front.enumerate(2).unwrap();
    let events = front.subscribe();
    // Interrupt URBs pending on a keyboard nobody types on.
    let (tx, rx) = crossbeam_channel::unbounded();
    for _ in 0..4 {
        let tx = tx.clone();
        front.submit(Urb::interrupt_in(2, kb.address, 1, 8, 10), move |c| {
            tx.send(c.status).unwrap()
        });
    }
    let busid = w.busids()[1].parse().unwrap();
    assert!(w.bus().remove(&busid));
    for _ in 0..4 {
        let status = rx.recv_timeout(LIVENESS).unwrap();
        assert!(
            matches!(
                status,
                UrbStatus::NoDev | UrbStatus::IoError | UrbStatus::Shutdown
            ),
            "{status:?}"
        );
    }
    front.wait_for_disconnect(2, LIVENESS).unwrap();
    assert_eq!(front.port(2).unwrap().speed, Speed::None);
    let kb2 = w.keyboard().clone();
    w.bus()
        .add(busid, Arc::new(move || Box::new(kb2.device())))
        .unwrap();
    front.wait_for_device(2, LIVENESS).unwrap();
    let again = front.enumerate(2).unwrap();
    w.keyboard().press("b");
    assert_eq!(
        front
            .interrupt_in(2, again.address, 1, 8, 10, LIVENESS)
            .unwrap()[2],
        0x05
    );
    let seen: Vec<PortEvent> = events.try_iter().collect();
    assert!(
        seen.contains(&PortEvent::Disconnected { port: 2 }),
        "{seen:?}"
    );
    drop(front);
    daemon.shutdown();
}

#[test]
fn backend_restart_reconnects_the_frontend() {
    let (w, daemon, front) = rig::running();
    let lb = front.enumerate(1).unwrap();
    assert_eq!(
        front
            .bulk_out(1, lb.address, 1, &[1, 2, 3], LIVENESS)
            .unwrap(),
        3
    );
    daemon.shutdown();
    // Whatever the old daemon left behind, a new one serves the controller again.
    let daemon = w.daemon();
    front.wait_connected(LIVENESS).unwrap();
    front.wait_for_device(1, LIVENESS).unwrap();
    let lb = front.enumerate(1).unwrap();
    assert_eq!(
        front
            .bulk_out(1, lb.address, 1, &[4, 5, 6], LIVENESS)
            .unwrap(),
        3
    );
    assert_eq!(
        front.bulk_in(1, lb.address, 1, 3, LIVENESS).unwrap(),
        vec![4, 5, 6]
    );
    drop(front);
    daemon.shutdown();
}

/// A second session on the same controller after the first one closed (what
/// `pvusb front list` then `pvusb front read` do): the new session announces
/// itself with Initialising, the backend goes back to InitWait, and the
/// handshake runs again on fresh rings.
#[test]
fn a_second_session_after_close_reconnects() {
    let (w, daemon, front) = rig::running();
    let lb = front.enumerate(1).unwrap();
    assert_eq!(
        front.bulk_out(1, lb.address, 1, &[7, 8], LIVENESS).unwrap(),
        2
    );
    front.close().unwrap();
    drop(front);
    let front = rig::connect(&w);
    let lb = front.enumerate(1).unwrap();
    assert_eq!(
        front
            .bulk_out(1, lb.address, 1, &[9, 10], LIVENESS)
            .unwrap(),
        2
    );
    assert_eq!(
        front.bulk_in(1, lb.address, 1, 2, LIVENESS).unwrap(),
        vec![9, 10]
    );
    drop(front);
    daemon.shutdown();
}
