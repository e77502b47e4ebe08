//! The vhci bridge against the real backend daemon and its emulated devices
//! over the simulated transport, with a fake vhci-hcd on the other end of a
//! socketpair speaking USB/IP through the codec's host side: enumeration
//! requests at address 0, SET_CONFIGURATION, bulk loopback (split above the
//! URB limit), a mass-storage INQUIRY through CBW/CSW, an interrupt request
//! above the URB limit, unlinks of pending and finished URBs, and a device
//! unplug.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvusb_backend::usb::emulated::audio::MAX_PACKET;
use pvusb_backend::usb::emulated::loopback::{LOOPBACK_PRODUCT_ID, VENDOR_SET_MODE};
use pvusb_backend::usb::emulated::mass_storage::{CBW_SIGNATURE, CSW_SIGNATURE};
use pvusb_backend::DaemonHandle;
use pvusb_frontend::vhci::{Bridge, BridgeEnd, BridgeOptions, DeviceTarget};
use pvusb_frontend::Frontend;
use pvusb_protocol::usb::request::dt;
use pvusb_protocol::usbip::{
    Basic, CmdSubmit, CmdSubmitHeader, CmdUnlinkHeader, Header, HostSide, Limits, Message,
    PacketCount, RetSubmit, StreamDecoder, SubmitShape,
};
use pvusb_protocol::{Direction, IsoPacketDescriptor, SetupPacket};

use pvusb_testkit::{rig, World, LIVENESS};

const EMSGSIZE: i32 = -90;
const ECONNRESET: i32 = -104;
const ENODEV: i32 = -19;
const EPIPE: i32 = -32;

/// The world with the daemon serving it and the frontend connected (shared
/// with the bridges under test).
fn running() -> (World, DaemonHandle, Arc<Frontend>) {
    let (w, daemon, front) = rig::running();
    (w, daemon, Arc::new(front))
}

type Lookup = Box<dyn FnMut(u32) -> Option<SubmitShape> + Send>;

/// vhci-hcd's side of the socket, written with the codec's host side.
struct FakeVhci {
    sock: UnixStream,
    decoder: StreamDecoder<HostSide<Lookup>>,
    shapes: Arc<Mutex<HashMap<u32, SubmitShape>>>,
    next_seqnum: u32,
    buf: Vec<u8>,
}

impl FakeVhci {
    fn new(sock: UnixStream) -> Self {
        sock.set_read_timeout(Some(LIVENESS)).unwrap();
        let shapes = Arc::new(Mutex::new(HashMap::new()));
        let lookup_shapes = Arc::clone(&shapes);
        // vhci forgets a URB once it is given back: a second reply for one
        // seqnum is refused, as vhci would drop the device on it.
        let lookup: Lookup = Box::new(move |seqnum| lookup_shapes.lock().unwrap().remove(&seqnum));
        Self {
            sock,
            decoder: StreamDecoder::new(HostSide::new(lookup), Limits::DEFAULT),
            shapes,
            next_seqnum: 1,
            buf: Vec::new(),
        }
    }

    fn seqnum(&mut self) -> u32 {
        let s = self.next_seqnum;
        self.next_seqnum += 1;
        s
    }

    /// A CMD_SUBMIT header with the next seqnum, as `vhci_send_cmd_submit`
    /// writes it for the guest's bus 1 device 2; no data, no packets.
    fn header(&mut self, direction: Direction, ep: u8) -> CmdSubmitHeader {
        CmdSubmitHeader {
            basic: Basic {
                seqnum: self.seqnum(),
                devid: 0x0001_0002,
                direction,
                ep,
            },
            transfer_flags: 0,
            transfer_buffer_length: 0,
            start_frame: 0,
            number_of_packets: PacketCount::Count(0),
            interval: 0,
            setup: [0; 8],
        }
    }

    /// Sends a CMD_SUBMIT as `vhci_send_cmd_submit` does (devid of the
    /// guest's bus 1 device 2, address 0's requests included) and returns its seqnum.
    fn submit(
        &mut self,
        direction: Direction,
        ep: u8,
        len: u32,
        setup: [u8; 8],
        out: Vec<u8>,
    ) -> u32 {
        let cmd = CmdSubmit {
            header: CmdSubmitHeader {
                transfer_flags: if direction == Direction::In { 0x200 } else { 0 },
                transfer_buffer_length: len,
                interval: if ep == 0 { 0 } else { 8 },
                setup,
                ..self.header(direction, ep)
            },
            out_data: out,
            iso_packets: Vec::new(),
        };
        self.send(cmd)
    }

    /// Sends an isochronous CMD_SUBMIT with packets at `(offset, length)`
    /// of a `buffer_len`-byte buffer (OUT: `out` is the whole buffer).
    fn submit_iso(
        &mut self,
        direction: Direction,
        ep: u8,
        packets: &[(u32, u32)],
        buffer_len: u32,
        out: Vec<u8>,
    ) -> u32 {
        let cmd = CmdSubmit {
            header: CmdSubmitHeader {
                transfer_flags: 0x0002, // URB_ISO_ASAP
                transfer_buffer_length: buffer_len,
                number_of_packets: PacketCount::Count(packets.len() as u32),
                interval: 1,
                ..self.header(direction, ep)
            },
            out_data: out,
            iso_packets: packets
                .iter()
                .map(|&(offset, length)| IsoPacketDescriptor::request(offset, length))
                .collect(),
        };
        self.send(cmd)
    }

    /// Writes `cmd` and remembers its shape for the reply; returns its seqnum.
    fn send(&mut self, cmd: CmdSubmit) -> u32 {
        let seqnum = cmd.header.basic.seqnum;
        self.shapes
            .lock()
            .unwrap()
            .insert(seqnum, cmd.header.shape());
        let mut bytes = Vec::new();
        cmd.encode(&mut bytes).unwrap();
        self.sock.write_all(&bytes).unwrap();
        seqnum
    }

    fn control(&mut self, setup: SetupPacket, out: Vec<u8>) -> u32 {
        let dir = if setup.is_in() {
            Direction::In
        } else {
            Direction::Out
        };
        self.submit(dir, 0, u32::from(setup.w_length), setup.to_bytes(), out)
    }

    fn unlink(&mut self, victim: u32) -> u32 {
        let seqnum = self.seqnum();
        let header = Header::CmdUnlink(CmdUnlinkHeader {
            basic: Basic {
                devid: 0x0001_0002,
                ..Basic::reply(seqnum)
            },
            unlink_seqnum: victim,
        });
        self.sock.write_all(&header.encode().unwrap()).unwrap();
        seqnum
    }

    /// The next message, or `None` at the end of the stream.
    fn recv(&mut self) -> Option<Message> {
        loop {
            while !self.buf.is_empty() {
                let (used, msg) = self.decoder.feed(&self.buf).expect("well-formed reply");
                self.buf.drain(..used);
                if msg.is_some() {
                    return msg;
                }
            }
            let mut chunk = [0u8; 65536];
            match self.sock.read(&mut chunk) {
                Ok(0) => {
                    assert_eq!(self.decoder.buffered(), 0, "stream ends between messages");
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("no reply within {LIVENESS:?}: {e}"),
            }
        }
    }

    fn ret_submit(&mut self, seqnum: u32) -> RetSubmit {
        match self.recv() {
            Some(Message::RetSubmit(r)) if r.header.basic.seqnum == seqnum => r,
            other => panic!("expected RET_SUBMIT {seqnum}, got {other:?}"),
        }
    }

    /// Submits and waits for the answer.
    fn transfer(&mut self, direction: Direction, ep: u8, len: u32, out: Vec<u8>) -> RetSubmit {
        let s = self.submit(direction, ep, len, [0; 8], out);
        self.ret_submit(s)
    }
}

/// A bridge for the device on `port`, enumerated by the frontend first.
fn bridge(front: &Arc<Frontend>, port: u8) -> (Bridge, FakeVhci) {
    bridge_with(front, port, BridgeOptions::default())
}

/// [`bridge`] with `options`.
fn bridge_with(front: &Arc<Frontend>, port: u8, options: BridgeOptions) -> (Bridge, FakeVhci) {
    let dev = front.enumerate(port).unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let b = Bridge::spawn(Arc::clone(front), DeviceTarget::of(&dev), ours, options).unwrap();
    (b, FakeVhci::new(theirs))
}

#[test]
fn enumeration_bulk_limits_and_stop_through_the_bridge() {
    let (_w, daemon, front) = running();
    let (bridge, mut vhci) = bridge(&front, 1);
    // vhci's own enumeration: address 0 on the wire, the usbif address used.
    let s = vhci.control(SetupPacket::get_descriptor(dt::DEVICE, 0, 0, 18), vec![]);
    let r = vhci.ret_submit(s);
    assert_eq!((r.header.status, r.header.actual_length), (0, 18));
    assert_eq!(&r.in_data[..2], &[18, dt::DEVICE]);
    assert_eq!(
        u16::from_le_bytes([r.in_data[10], r.in_data[11]]),
        LOOPBACK_PRODUCT_ID
    );
    assert_eq!(
        r.header.basic,
        Basic::reply(s),
        "devid, direction, ep are 0"
    );
    let s = vhci.control(SetupPacket::set_configuration(1), vec![]);
    assert_eq!(vhci.ret_submit(s).header.status, 0);
    // Bulk loopback.
    let data: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    let r = vhci.transfer(Direction::Out, 1, 4096, data.clone());
    assert_eq!((r.header.status, r.header.actual_length), (0, 4096));
    let finished = vhci.submit(Direction::In, 1, 4096, [0; 8], vec![]);
    let r = vhci.ret_submit(finished);
    assert_eq!((r.header.status, r.in_data), (0, data));
    // Bulk above usbif's URB limit: carried in pieces. Loopback keeps the
    // last OUT URB's data, so the IN returns the last piece's bytes, short,
    // which ends the split IN with what came.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let r = vhci.transfer(Direction::Out, 1, 100_000, big.clone());
    assert_eq!((r.header.status, r.header.actual_length), (0, 100_000));
    let r = vhci.transfer(Direction::In, 1, 100_000, vec![]);
    assert_eq!(r.header.status, 0);
    assert_eq!(r.in_data, big[pvusb_frontend::BULK_CHUNK..]);
    // Source mode: every piece full, 100 000 bytes of the pattern.
    let s = vhci.control(SetupPacket::new(0x40, VENDOR_SET_MODE, 1, 0, 0), vec![]);
    assert_eq!(vhci.ret_submit(s).header.status, 0);
    let r = vhci.transfer(Direction::In, 1, 100_000, vec![]);
    assert_eq!((r.header.status, r.in_data.len()), (0, 100_000));
    assert!(r.in_data.windows(2).all(|w| w[1] == (w[0] + 1) % 251));
    let r = vhci.transfer(Direction::In, 1, 64, vec![]);
    assert_eq!((r.header.status, r.in_data.len()), (0, 64));
    // An unlink of a URB already answered: RET_UNLINK 0, nothing else.
    let u = vhci.unlink(finished);
    match vhci.recv() {
        Some(Message::RetUnlink(h)) => assert_eq!((h.basic.seqnum, h.status), (u, 0)),
        other => panic!("expected RET_UNLINK, got {other:?}"),
    }
    // Stop: the socket is shut down, the frontend keeps working.
    bridge.stop();
    assert_eq!(vhci.recv(), None);
    assert_eq!(bridge.join(), BridgeEnd::Stopped);
    assert_eq!(front.outstanding(), 0);
    assert_eq!(front.dead_reason(), None);
    drop(front);
    daemon.shutdown();
}

/// A mass-storage command block wrapper of `len` bytes of data.
fn cbw(tag: u32, len: u32, data_in: bool, cdb: &[u8]) -> Vec<u8> {
    let mut cbw = Vec::with_capacity(31);
    cbw.extend_from_slice(&CBW_SIGNATURE.to_le_bytes());
    cbw.extend_from_slice(&tag.to_le_bytes());
    cbw.extend_from_slice(&len.to_le_bytes());
    cbw.extend_from_slice(&[if data_in { 0x80 } else { 0 }, 0, cdb.len() as u8]);
    cbw.extend_from_slice(cdb);
    cbw.resize(31, 0);
    cbw
}

#[test]
fn mass_storage_inquiry_through_cbw_and_csw() {
    let (_w, daemon, front) = running();
    let (bridge, mut vhci) = bridge(&front, 3);
    let tag = 0x1234_5678u32;
    let inquiry = cbw(tag, 36, true, &[0x12, 0, 0, 0, 36, 0]);
    let r = vhci.transfer(Direction::Out, 1, 31, inquiry);
    assert_eq!((r.header.status, r.header.actual_length), (0, 31));
    let r = vhci.transfer(Direction::In, 2, 36, vec![]);
    assert_eq!((r.header.status, r.in_data.len()), (0, 36));
    assert_eq!(r.in_data[0], 0, "direct-access block device");
    let r = vhci.transfer(Direction::In, 2, 13, vec![]);
    assert_eq!(r.header.status, 0);
    assert_eq!(&r.in_data[..4], &CSW_SIGNATURE.to_le_bytes());
    assert_eq!(&r.in_data[4..8], &tag.to_le_bytes());
    assert_eq!(r.in_data[12], 0, "command passed");
    drop(vhci);
    assert_eq!(bridge.join(), BridgeEnd::PeerClosed);
    drop(front);
    daemon.shutdown();
}

/// A guest's port reset reaches the real device. vhci keeps the reset and
/// SET_ADDRESS to itself, so the bridge takes the enumeration's first
/// request, GET_DESCRIPTOR(DEVICE) of 64 bytes, for the reset: a disk left
/// in a data phase (a backend killed mid-READ) takes commands again.
#[test]
fn the_guests_port_reset_resets_a_disk_left_mid_command() {
    let (_w, daemon, front) = running();
    let (bridge, mut vhci) = bridge(&front, 3);
    let read_8_blocks = cbw(1, 4096, true, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]);
    assert_eq!(
        vhci.transfer(Direction::Out, 1, 31, read_8_blocks)
            .header
            .status,
        0
    );
    let r = vhci.transfer(Direction::In, 2, 512, vec![]);
    assert_eq!((r.header.status, r.in_data.len()), (0, 512));
    let test_unit_ready = cbw(2, 0, false, &[0; 6]);
    let r = vhci.transfer(Direction::Out, 1, 31, test_unit_ready.clone());
    assert_eq!(
        r.header.status, EPIPE,
        "the disk still owes data: the CBW stalls"
    );
    // usb-storage's recovery: a port reset (in vhci) and enumeration.
    let s = vhci.control(SetupPacket::get_descriptor(dt::DEVICE, 0, 0, 64), vec![]);
    assert_eq!(vhci.ret_submit(s).header.status, 0);
    let r = vhci.transfer(Direction::Out, 1, 31, test_unit_ready);
    assert_eq!((r.header.status, r.header.actual_length), (0, 31));
    let r = vhci.transfer(Direction::In, 2, 13, vec![]);
    assert_eq!((r.header.status, r.in_data[12]), (0, 0), "command passed");
    let stats = daemon.stats(rig::DOM, 0).expect("stats");
    assert_eq!(stats.device_resets, 1);
    // A device descriptor read of 18 bytes is no enumeration: no reset.
    let s = vhci.control(SetupPacket::get_descriptor(dt::DEVICE, 0, 0, 18), vec![]);
    assert_eq!(vhci.ret_submit(s).header.status, 0);
    assert_eq!(daemon.stats(rig::DOM, 0).expect("stats").device_resets, 1);
    drop(vhci);
    assert_eq!(bridge.join(), BridgeEnd::PeerClosed);
    drop(front);
    daemon.shutdown();
}

#[test]
fn unlink_of_a_pending_urb_and_unplug_with_urbs_in_flight() {
    let (w, daemon, front) = running();
    let (bridge, mut vhci) = bridge(&front, 2);
    // Interrupt above usbif's URB limit: refused, not split or truncated,
    // and the stream lives.
    let r = vhci.transfer(Direction::In, 1, 70_000, vec![]);
    assert_eq!((r.header.status, r.header.actual_length), (EMSGSIZE, 0));
    // Interrupt INs on a keyboard nobody types on stay pending.
    let cancelled = vhci.submit(Direction::In, 1, 8, [0; 8], vec![]);
    let typed = vhci.submit(Direction::In, 1, 8, [0; 8], vec![]);
    let u = vhci.unlink(cancelled);
    match vhci.recv() {
        Some(Message::RetUnlink(h)) => assert_eq!((h.basic.seqnum, h.status), (u, ECONNRESET)),
        other => panic!("expected RET_UNLINK -ECONNRESET, got {other:?}"),
    }
    // No RET_SUBMIT for the cancelled URB: the next message answers the
    // other one (the decoder would refuse a reply to a forgotten seqnum).
    w.keyboard().press("a");
    let r = vhci.ret_submit(typed);
    assert_eq!((r.header.status, r.in_data[2]), (0, 0x04));
    let release = vhci.submit(Direction::In, 1, 8, [0; 8], vec![]);
    assert_eq!(vhci.ret_submit(release).in_data, vec![0; 8]);
    // Unplug with two URBs pending: both answered with an error, then EOF.
    let pending = [
        vhci.submit(Direction::In, 1, 8, [0; 8], vec![]),
        vhci.submit(Direction::In, 1, 8, [0; 8], vec![]),
    ];
    // Let the bridge submit them before the device goes.
    std::thread::sleep(Duration::from_millis(200));
    assert!(w.bus().remove(&w.busids()[1].parse().unwrap()));
    let mut answered = Vec::new();
    while let Some(msg) = vhci.recv() {
        let Message::RetSubmit(r) = msg else {
            panic!("unexpected {msg:?}")
        };
        // -ENODEV once the bridge knows; what the backend said (-EPROTO,
        // -ESHUTDOWN) if the URB failed before the port event arrived.
        assert!(
            [ENODEV, -71, -108].contains(&r.header.status),
            "{:?}",
            r.header
        );
        answered.push(r.header.basic.seqnum);
    }
    answered.sort_unstable();
    assert_eq!(answered, pending);
    assert_eq!(bridge.join(), BridgeEnd::DeviceGone(2));
    assert_eq!(front.outstanding(), 0);
    drop(front);
    daemon.shutdown();
}

#[test]
fn commands_beyond_the_in_flight_bound_wait_in_the_socket() {
    let (w, daemon, front) = running();
    let options = BridgeOptions {
        max_in_flight: 2,
        ..BridgeOptions::default()
    };
    let (bridge, mut vhci) = bridge_with(&front, 2, options);
    let urbs: Vec<u32> = (0..3)
        .map(|_| vhci.submit(Direction::In, 1, 8, [0; 8], vec![]))
        .collect();
    let u = vhci.unlink(urbs[2]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(front.outstanding(), 2, "the third waits unread");
    // A key press completes the first; its credit lets the third and the
    // unlink in, and the unlink cancels the third.
    w.keyboard().press("a");
    assert_eq!(vhci.ret_submit(urbs[0]).in_data[2], 0x04);
    let mut rest = Vec::new();
    for _ in 0..2 {
        match vhci.recv() {
            Some(Message::RetSubmit(r)) => rest.push((r.header.basic.seqnum, r.header.status)),
            Some(Message::RetUnlink(h)) => rest.push((h.basic.seqnum, h.status)),
            other => panic!("unexpected {other:?}"),
        }
    }
    rest.sort_unstable();
    // The release report answers the second; the third is cancelled.
    assert_eq!(rest, vec![(urbs[1], 0), (u, ECONNRESET)]);
    // Stopping with a URB pending cancels it and answers -ENODEV.
    let pending = vhci.submit(Direction::In, 1, 8, [0; 8], vec![]);
    std::thread::sleep(Duration::from_millis(200));
    bridge.stop();
    let r = vhci.ret_submit(pending);
    assert_eq!((r.header.status, r.header.actual_length), (ENODEV, 0));
    assert_eq!(vhci.recv(), None);
    assert_eq!(bridge.join(), BridgeEnd::Stopped);
    assert_eq!(front.outstanding(), 0);
    drop(front);
    daemon.shutdown();
}

#[test]
fn the_backend_going_away_ends_the_bridge() {
    let (_w, daemon, front) = running();
    let (bridge, mut vhci) = bridge(&front, 2);
    let pending = vhci.submit(Direction::In, 1, 8, [0; 8], vec![]);
    std::thread::sleep(Duration::from_millis(200));
    let t0 = std::time::Instant::now();
    daemon.shutdown();
    let r = vhci.ret_submit(pending);
    assert!(r.header.status < 0, "{:?}", r.header);
    assert_eq!(vhci.recv(), None);
    let end = bridge.join();
    // Ended by the port event, not by the drain timeout.
    assert!(t0.elapsed() < BridgeOptions::default().drain_timeout);
    assert!(
        matches!(end, BridgeEnd::ControllerGone | BridgeEnd::DeviceGone(2)),
        "{end}"
    );
    drop(front);
}

#[test]
fn a_malformed_command_ends_the_bridge_not_the_frontend() {
    let (_w, daemon, front) = running();
    let (bridge, mut vhci) = bridge(&front, 1);
    let r = vhci.transfer(Direction::In, 1, 16, vec![]);
    assert_eq!(r.header.status, 0);
    let mut garbage = [0u8; 48];
    garbage[3] = 0x99;
    vhci.sock.write_all(&garbage).unwrap();
    assert_eq!(vhci.recv(), None);
    assert!(matches!(bridge.join(), BridgeEnd::Protocol(_)));
    assert_eq!(front.dead_reason(), None);
    // The device is still usable: a new bridge serves it.
    let (again, mut vhci) = bridge_with(&front, 1, BridgeOptions::default());
    assert_eq!(vhci.transfer(Direction::In, 1, 16, vec![]).header.status, 0);
    drop(vhci);
    assert_eq!(again.join(), BridgeEnd::PeerClosed);
    drop(front);
    daemon.shutdown();
}

#[test]
fn isochronous_in_and_out_keep_the_drivers_packet_offsets() {
    let (w, daemon, front) = running();
    let (bridge, mut vhci) = bridge(&front, 4);
    let s = vhci.control(SetupPacket::set_interface(0, 1), vec![]);
    assert_eq!(vhci.ret_submit(s).header.status, 0);
    // IN: three packets with gaps between them, as a driver may lay out.
    let mp = u32::from(MAX_PACKET);
    let layout = [(0, mp), (256, mp), (512, mp)];
    let s = vhci.submit_iso(Direction::In, 2, &layout, 512 + mp, vec![]);
    let r = vhci.ret_submit(s);
    assert_eq!(r.header.status, 0);
    assert_eq!(r.header.actual_length, 3 * mp);
    assert_eq!(r.in_data.len(), 3 * MAX_PACKET as usize, "packed, no gaps");
    assert_eq!(r.header.number_of_packets, PacketCount::Count(3));
    let echoed: Vec<_> = r
        .iso_packets
        .iter()
        .map(|p| (p.offset, p.length, p.actual_length, p.status))
        .collect();
    assert_eq!(
        echoed,
        vec![(0, mp, mp, 0), (256, mp, mp, 0), (512, mp, mp, 0)]
    );
    // OUT: four packets back to back reach the sink.
    let layout: Vec<(u32, u32)> = (0..4).map(|i| (i * mp, mp)).collect();
    let s = vhci.submit_iso(
        Direction::Out,
        1,
        &layout,
        4 * mp,
        vec![0x11; 4 * MAX_PACKET as usize],
    );
    let r = vhci.ret_submit(s);
    assert_eq!((r.header.status, r.header.error_count), (0, 0));
    assert!(r.in_data.is_empty());
    assert_eq!(
        w.audio()
            .out_packets
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    drop(vhci);
    assert_eq!(bridge.join(), BridgeEnd::PeerClosed);
    drop(front);
    daemon.shutdown();
}

#[test]
fn a_peer_that_stops_reading_ends_the_bridge_after_the_write_timeout() {
    let (_w, daemon, front) = running();
    let options = BridgeOptions {
        write_timeout: Duration::from_millis(200),
        ..BridgeOptions::default()
    };
    let (bridge, mut vhci) = bridge_with(&front, 1, options);
    // Source mode: every bulk IN returns all it was asked for.
    let s = vhci.control(SetupPacket::new(0x40, VENDOR_SET_MODE, 1, 0, 0), vec![]);
    assert_eq!(vhci.ret_submit(s).header.status, 0);
    // 2.4 MB of IN data asked for, none of it read: far beyond the
    // socket's buffer.
    for _ in 0..40 {
        vhci.submit(Direction::In, 1, 60_000, [0; 8], vec![]);
    }
    assert!(matches!(bridge.join(), BridgeEnd::Socket(_)));
    assert_eq!(front.outstanding(), 0);
    assert_eq!(front.dead_reason(), None);
    drop(front);
    daemon.shutdown();
}
