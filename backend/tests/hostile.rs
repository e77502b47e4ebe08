//! The hostile-guest suite: a frontend that breaks every rule, and a second
//! controller in the same daemon that must keep working throughout.

use pvusb_backend::DaemonHandle;
use pvusb_protocol::xenstore::{backend_dir, frontend_dir};
use pvusb_protocol::{Direction, Pipe, RequestSegment, SetupPacket, TransferType, UrbRequest};
use pvusb_ring::SharedMem;
use pvusb_testkit::{wait_stats, Controller, Driver, World};
use pvusb_xen::{EventChannel, GrantAllocator, GrantedPages};

const EVIL: u16 = 20;
const GOOD: u16 = 21;

struct Setup {
    w: World,
    d: DaemonHandle,
    evil: Driver,
    good: Driver,
}

/// Hostile controller: port 1 loopback (addr 1), port 2 keyboard (addr 2),
/// port 3 audio (addr 3). Bystander: a loopback on port 1 (addr 1).
fn setup() -> Setup {
    let w = World::new();
    let lb1 = w.plug_loopback(65536);
    let key = w.plug_keyboard();
    let au = w.plug_audio();
    let lb2 = w.plug_loopback(65536);
    let d = w.daemon();
    w.controller(&Controller::new(EVIL, 0, 2, 3));
    w.controller(&Controller::new(GOOD, 0, 2, 1));
    for (p, b) in [(1, &lb1), (2, &key), (3, &au)] {
        w.set_port(EVIL, 0, p, &b.to_string());
    }
    w.set_port(GOOD, 0, 1, &lb2.to_string());
    let mut evil = Driver::connect(&w, EVIL, 0);
    let mut good = Driver::connect(&w, GOOD, 0);
    for _ in 0..3 {
        evil.conn_event();
    }
    good.conn_event();
    for p in 1..=3 {
        evil.enumerate(p, p);
    }
    good.enumerate(1, 1);
    Setup { w, d, evil, good }
}

impl Setup {
    /// The bystander still works, and the daemon still runs both workers.
    fn bystander_ok(&mut self) {
        self.good.write_buf(4, 0, b"still alive");
        let r = self.good.roundtrip(self.good.bulk(4, 1, 1, 0x01, 11));
        assert_eq!(r.status, 0);
        let r = self.good.roundtrip(self.good.bulk(5, 1, 1, 0x81, 11));
        assert_eq!((r.status, r.actual_length), (0, 11));
        assert_eq!(self.good.read_buf(5, 0, 11), b"still alive");
        assert!(self.d.is_running(GOOD, 0));
    }

    fn status(&mut self, req: UrbRequest) -> i32 {
        self.evil.roundtrip(req).status
    }

    /// SET_INTERFACE(0, 1) on the audio device (port 3, address 3), through
    /// the device's library call, which enables its iso endpoints; returns
    /// the pipe of its iso IN endpoint.
    fn audio_iso_in(&mut self) -> Pipe {
        let p = Pipe::new(TransferType::Control, Direction::Out, 3, 0, 3).expect("pipe");
        let set_interface = SetupPacket::new(0x01, 11, 1, 0, 0);
        let r = self
            .evil
            .roundtrip(UrbRequest::control(0, p, set_interface, &[]).expect("req"));
        assert_eq!(r.status, 0, "SET_INTERFACE");
        Pipe::new(TransferType::Isochronous, Direction::In, 3, 2, 3).expect("pipe")
    }
}

/// Iso packet descriptors at `(offset, length)`, as a guest writes them.
fn iso_descriptors(layout: &[(u32, u32)]) -> Vec<u8> {
    let mut descs = Vec::new();
    for &(off, len) in layout {
        descs.extend_from_slice(&off.to_le_bytes());
        descs.extend_from_slice(&len.to_le_bytes());
        descs.extend_from_slice(&[0; 8]);
    }
    descs
}

fn ctrl_in(dev: u8, port: u8) -> Pipe {
    Pipe::new(TransferType::Control, Direction::In, dev, 0, port).expect("pipe")
}

#[test]
fn malformed_requests_get_einval_and_nothing_else_breaks() {
    let mut s = setup();
    let get_desc = SetupPacket::new(0x80, 6, 0x0100, 0, 18);
    let segs = s.evil.segs(0, 0, 18);
    // nr_buffer_segs > 16.
    let mut r = UrbRequest::control(0, ctrl_in(1, 1), get_desc, &segs).expect("req");
    r.nr_buffer_segs = 17;
    assert_eq!(s.status(r), -22);
    r.nr_buffer_segs = u16::MAX;
    assert_eq!(s.status(r), -22);
    // Segment crossing its page.
    let bad = [RequestSegment::new(segs[0].gref, 4090, 18)];
    assert_eq!(
        s.status(UrbRequest::control(0, ctrl_in(1, 1), get_desc, &bad).expect("req")),
        -22
    );
    // wLength larger than the segments.
    let long = SetupPacket::new(0x80, 6, 0x0100, 0, 4000);
    assert_eq!(
        s.status(UrbRequest::control(0, ctrl_in(1, 1), long, &segs).expect("req")),
        -22
    );
    // Port 0 and port > num-ports (the pipe encoder refuses them: patch raw).
    for port in [0u32, 4, 31] {
        let mut r = UrbRequest::control(0, ctrl_in(1, 1), get_desc, &segs).expect("req");
        r.pipe = (r.pipe & !0x1f) | port;
        assert_eq!(s.status(r), -22, "port {port}");
    }
    // Control on a non-zero endpoint; bulk on endpoint 0.
    let mut r = UrbRequest::control(0, ctrl_in(1, 1), get_desc, &segs).expect("req");
    r.pipe |= 3 << 15;
    assert_eq!(s.status(r), -22);
    let bulk0 = Pipe::new(TransferType::Bulk, Direction::In, 1, 0, 1);
    if let Ok(p) = bulk0 {
        assert_eq!(
            s.status(UrbRequest::bulk(0, p, false, &segs).expect("req")),
            -22
        );
    }
    let st = s.d.stats(EVIL, 0).expect("stats");
    assert!(st.invalid >= 8, "{st:?}");
    assert_eq!(st.in_flight, 0);
    s.bystander_ok();
}

#[test]
fn addresses_without_devices_get_enodev_or_einval() {
    let mut s = setup();
    let segs = s.evil.segs(0, 0, 18);
    let get_desc = SetupPacket::new(0x80, 6, 0x0100, 0, 18);
    // An address never assigned.
    assert_eq!(
        s.status(UrbRequest::control(0, ctrl_in(50, 1), get_desc, &segs).expect("req")),
        -19
    );
    // Non-control to address 0.
    let p = Pipe::new(TransferType::Bulk, Direction::In, 0, 1, 1).expect("pipe");
    assert_eq!(
        s.status(UrbRequest::bulk(0, p, false, &segs).expect("req")),
        -19
    );
    // Anything but GET_DESCRIPTOR / SET_ADDRESS to address 0.
    let other = SetupPacket::new(0x80, 0, 0, 0, 2);
    assert_eq!(
        s.status(UrbRequest::control(0, ctrl_in(0, 1), other, &segs).expect("req")),
        -22
    );
    // SET_ADDRESS with an address above 127.
    let set = SetupPacket::new(0x00, 5, 300, 0, 0);
    let p = Pipe::new(TransferType::Control, Direction::Out, 0, 0, 1).expect("pipe");
    assert_eq!(
        s.status(UrbRequest::control(0, p, set, &[]).expect("req")),
        -22
    );
    s.bystander_ok();
}

#[test]
fn ids_out_of_range_and_duplicates() {
    let mut s = setup();
    // Any u16 id is answered with that id.
    let segs = s.evil.segs(0, 0, 18);
    let get_desc = SetupPacket::new(0x80, 6, 0x0100, 0, 18);
    let r = s
        .evil
        .roundtrip(UrbRequest::control(0xffff, ctrl_in(1, 1), get_desc, &segs).expect("req"));
    assert_eq!((r.id, r.status), (0xffff, 0));
    // A duplicate of an id in flight: the new one gets -EINVAL, the old one
    // is untouched and still gets its own answer.
    let p = Pipe::new(TransferType::Interrupt, Direction::In, 2, 1, 2).expect("pipe");
    let pending = UrbRequest::interrupt(7, p, 10, false, &s.evil.segs(7, 0, 8)).expect("req");
    s.evil.send(&[pending]);
    wait_stats(&s.d, EVIL, 0, "interrupt pending", |st| st.in_flight == 1);
    let dup = UrbRequest::control(7, ctrl_in(1, 1), get_desc, &segs).expect("req");
    let r = s.evil.roundtrip(dup);
    assert_eq!((r.id, r.status), (7, -22));
    assert_eq!(s.d.stats(EVIL, 0).expect("stats").in_flight, 1);
    // Unlink: unknown target -> 0; out-of-range target -> -EINVAL; the real
    // target -> it gets its own response.
    let r = s.evil.roundtrip(UrbRequest::unlink(8, p, 3));
    assert_eq!(r.status, 0);
    let r = s.evil.roundtrip(UrbRequest::unlink(8, p, 16));
    assert_eq!(r.status, -22);
    let r = s.evil.roundtrip(UrbRequest::unlink(8, p, 7));
    assert_eq!(r.status, 0);
    let r = s.evil.response_for(7);
    assert_eq!(r.status, -71, "cancelled request answered");
    assert_eq!(s.d.stats(EVIL, 0).expect("stats").in_flight, 0);
    s.bystander_ok();
}

#[test]
fn grants_not_granted_or_read_only() {
    let mut s = setup();
    // OUT from a grant that does not exist / is not ours.
    let p_out = Pipe::new(TransferType::Bulk, Direction::Out, 1, 1, 1).expect("pipe");
    let bogus = [RequestSegment::new(4000, 0, 64)];
    assert_eq!(
        s.status(UrbRequest::bulk(0, p_out, false, &bogus).expect("req")),
        -22
    );
    let bogus = [RequestSegment::new(1, 0, 64)];
    assert_eq!(
        s.status(UrbRequest::bulk(0, p_out, false, &bogus).expect("req")),
        -22
    );
    // IN into a read-only grant: the data cannot be delivered.
    s.evil.write_buf(1, 0, &[0xab; 64]);
    assert_eq!(
        s.status(UrbRequest::bulk(1, p_out, false, &s.evil.segs(1, 0, 64)).expect("req")),
        0
    );
    let ro = s.evil.xen.alloc(0, 1, false).expect("read-only page");
    let p_in = Pipe::new(TransferType::Bulk, Direction::In, 1, 1, 1).expect("pipe");
    let seg = [RequestSegment::new(ro.refs()[0], 0, 64)];
    assert_eq!(
        s.status(UrbRequest::bulk(2, p_in, false, &seg).expect("req")),
        -22
    );
    let mut b = [0u8; 64];
    ro.read(0, &mut b).expect("read");
    assert_eq!(b, [0u8; 64], "nothing written into a read-only grant");
    assert!(s.d.stats(EVIL, 0).expect("stats").grant_errors >= 3);
    s.bystander_ok();
}

#[test]
fn iso_descriptors_that_do_not_fit() {
    let mut s = setup();
    let p_in = s.audio_iso_in();
    let data = s.evil.segs(1, 0, 1000);
    // 8 packets need 128 descriptor bytes; give 64.
    let desc = s.evil.segs(2, 0, 64);
    let r = UrbRequest::isochronous(1, p_in, 1, 0, 8, &data, &desc).expect("req");
    assert_eq!(s.status(r), -22);
    // Data + descriptor segments > 16.
    let data16 = s.evil.segs(1, 0, 16 * 4096);
    let r = UrbRequest::isochronous(1, p_in, 1, 0, 1, &data16[..15], &s.evil.segs(2, 0, 16));
    if let Ok(mut r) = r {
        r.set_isoc(pvusb_protocol::IsoParams {
            interval: 1,
            start_frame: 0,
            number_of_packets: 1,
            nr_frame_desc_segs: 2,
        });
        assert_eq!(s.status(r), -22);
    }
    // A descriptor pointing outside the data buffer.
    let mut descs = iso_descriptors(&[(0, 100), (100, 100), (900, 500), (300, 100)]);
    s.evil.write_buf(2, 4060, &descs);
    let straddling = s.evil.segs(2, 4060, 64);
    assert_eq!(straddling.len(), 2, "descriptors straddle a page");
    let r = UrbRequest::isochronous(3, p_in, 1, 0, 4, &data, &straddling).expect("req");
    assert_eq!(s.status(r), -22);
    // Fixed: all four inside, descriptors straddling two pages: served, and
    // only the 16-byte records are written back.
    descs[2 * 16..2 * 16 + 8]
        .copy_from_slice(&[200u32.to_le_bytes(), 100u32.to_le_bytes()].concat());
    s.evil.write_buf(2, 4060, &descs);
    s.evil.write_buf(2, 4050, &[0xee; 10]);
    s.evil.write_buf(2, 4124, &[0xee; 10]);
    let r = s
        .evil
        .roundtrip(UrbRequest::isochronous(4, p_in, 1, 0, 4, &data, &straddling).expect("req"));
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(s.evil.read_buf(2, 4050, 10), [0xee; 10]);
    assert_eq!(s.evil.read_buf(2, 4124, 10), [0xee; 10]);
    let back = s.evil.read_buf(2, 4060, 64);
    let total: u32 = (0..4)
        .map(|i| u32::from_le_bytes(back[i * 16 + 8..i * 16 + 12].try_into().expect("4")))
        .sum();
    assert_eq!(
        total, r.actual_length as u32,
        "per-packet lengths add up to the response"
    );
    let st = s.d.stats(EVIL, 0).expect("stats");
    assert!(st.bad_iso >= 1 && st.invalid >= 2, "{st:?}");
    s.bystander_ok();
}

/// Packets that all name the same bytes would make the device layer stage
/// the sum of their lengths (an amplification a guest repeats at ring
/// speed): refused with -EINVAL before any device sees them.
#[test]
fn overlapping_iso_packets_are_refused() {
    let mut s = setup();
    let p_in = s.audio_iso_in();
    let data = s.evil.segs(1, 0, 400);
    let write_descs = |s: &mut Setup, layout: &[(u32, u32)]| {
        s.evil.write_buf(2, 0, &iso_descriptors(layout));
    };
    let desc = s.evil.segs(2, 0, 64);
    let before = s.d.stats(EVIL, 0).expect("stats").bad_iso;
    // Four packets over the same 100 bytes.
    write_descs(&mut s, &[(0, 100), (0, 100), (0, 100), (0, 100)]);
    let r = UrbRequest::isochronous(1, p_in, 1, 0, 4, &data, &desc).expect("req");
    assert_eq!(s.status(r), -22);
    // Partly overlapping, out of order.
    write_descs(&mut s, &[(200, 100), (0, 100), (150, 100), (300, 100)]);
    let r = UrbRequest::isochronous(2, p_in, 1, 0, 4, &data, &desc).expect("req");
    assert_eq!(s.status(r), -22);
    assert_eq!(s.d.stats(EVIL, 0).expect("stats").bad_iso, before + 2);
    // Disjoint, out of order, with a gap and an empty packet: served.
    write_descs(&mut s, &[(300, 100), (0, 100), (100, 0), (150, 100)]);
    let r = UrbRequest::isochronous(3, p_in, 1, 0, 4, &data, &desc).expect("req");
    assert_eq!(s.status(r), 0);
    s.bystander_ok();
}

#[test]
fn conn_ring_without_posted_requests() {
    let w = World::new();
    let lb = w.plug_loopback(1024);
    let d = w.daemon();
    w.controller(&Controller::new(EVIL, 0, 2, 2));
    w.set_port(EVIL, 0, 2, &lb.to_string());
    let mut drv = Driver::connect_with(&w, EVIL, 0, 0, "4");
    w.wait_state(&backend_dir(0, EVIL, 0), "4");
    // Nothing posted: the event waits, the controller serves URBs anyway.
    let (r, _) = drv.control_in(0, 0, 2, SetupPacket::new(0x80, 6, 0x0100, 0, 18));
    assert_eq!(r.status, 0);
    assert!(drv.conn_events.is_empty());
    // Post one request: the backlog is delivered.
    drv.conn
        .push_request(&pvusb_protocol::ConnRequest { id: 77 })
        .expect("post");
    drv.conn.push_requests_and_check_notify().expect("push");
    drv.evtchn.notify().expect("notify");
    let ev = drv.conn_event();
    assert_eq!((ev.id, ev.portnum, ev.speed), (77, 2, 3));
    assert!(d.is_running(EVIL, 0));
}

#[test]
fn req_prod_far_ahead_stops_only_that_controller() {
    let mut s = setup();
    let prod = s.evil.urb_page.load_u32(0).expect("req_prod");
    s.evil
        .urb_page
        .store_u32(0, prod.wrapping_add(1000))
        .expect("hostile req_prod");
    s.evil.evtchn.notify().expect("notify");
    s.w.wait_state(&backend_dir(0, EVIL, 0), "5");
    let st = s.d.stats(EVIL, 0).expect("stats");
    assert_eq!(st.ring_errors, 1);
    s.bystander_ok();
    // The frontend closes; the controller can be reconnected afresh.
    s.w.write(&format!("{}/state", frontend_dir(EVIL, 0)), "6");
    s.w.wait_state(&backend_dir(0, EVIL, 0), "6");
}

#[test]
fn conn_ring_req_prod_overflow_stops_the_controller() {
    let mut s = setup();
    let prod = s.evil.conn_page.load_u32(0).expect("req_prod");
    s.evil
        .conn_page
        .store_u32(0, prod.wrapping_add(5000))
        .expect("hostile req_prod");
    // A conn event makes the backend look at the conn ring.
    s.w.set_port(EVIL, 0, 1, "");
    s.w.wait_state(&backend_dir(0, EVIL, 0), "5");
    s.bystander_ok();
}

#[test]
fn event_storm() {
    let mut s = setup();
    for _ in 0..20_000 {
        s.evil.evtchn.notify().expect("notify");
    }
    let (r, _) = s
        .evil
        .control_in(0, 1, 1, SetupPacket::new(0x80, 6, 0x0100, 0, 18));
    assert_eq!(r.status, 0, "still serving after the storm");
    // The worker may have answered the request from its polling loop before it
    // consumed the (coalesced) storm; it does consume it before it sleeps.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut st = s.d.stats(EVIL, 0).expect("stats");
    while st.events == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
        st = s.d.stats(EVIL, 0).expect("stats");
    }
    assert!(st.events > 0, "the storm was never consumed: {st:?}");
    assert!(st.events <= 20_001, "more wake-ups than events: {st:?}");
    s.bystander_ok();
}
