//! [`Server`] against the backend daemon and its emulated devices over the
//! simulated transport, with a fake vhci-hcd that keeps the attached socket
//! ends: every device attached with its devid and speed, requests answered
//! through the attached socket, an unplug releasing its port, and the
//! stop detaching the rest.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvusb_frontend::vhci::attach::{AttachError, VhciPorts, VhciSpeed};
use pvusb_frontend::vhci::serve::{Next, Server};
use pvusb_frontend::vhci::BridgeOptions;
use pvusb_frontend::PortEvent;
use pvusb_protocol::usb::request::dt;
use pvusb_protocol::usbip::{
    Basic, CmdSubmit, CmdSubmitHeader, HostSide, Limits, Message, PacketCount, StreamDecoder,
};
use pvusb_protocol::{Direction, SetupPacket};

use pvusb_testkit::{rig, LIVENESS};

/// What the fake vhci-hcd was asked, and the socket ends it holds.
#[derive(Default)]
struct FakeVhci {
    attached: Mutex<Vec<(u32, u32, VhciSpeed, UnixStream)>>,
    detached: Mutex<Vec<u32>>,
}

impl VhciPorts for FakeVhci {
    fn attach(
        &self,
        sock: BorrowedFd<'_>,
        devid: u32,
        speed: VhciSpeed,
    ) -> Result<u32, AttachError> {
        // As sockfd_lookup: our own reference to the socket.
        let sock = UnixStream::from(sock.try_clone_to_owned().unwrap());
        let mut attached = self.attached.lock().unwrap();
        let port = attached.len() as u32;
        attached.push((port, devid, speed, sock));
        Ok(port)
    }

    fn detach(&self, port: u32) -> Result<(), AttachError> {
        self.detached.lock().unwrap().push(port);
        Ok(())
    }
}

/// The socket vhci got for its `vhci_port`.
fn socket(vhci: &FakeVhci, vhci_port: u32) -> UnixStream {
    let attached = vhci.attached.lock().unwrap();
    let s = attached
        .iter()
        .find(|a| a.0 == vhci_port)
        .unwrap()
        .3
        .try_clone()
        .unwrap();
    s.set_read_timeout(Some(LIVENESS)).unwrap();
    s
}

/// GET_DESCRIPTOR(device) at address 0, as vhci's enumeration sends it;
/// returns the descriptor.
fn device_descriptor(sock: &mut UnixStream) -> Vec<u8> {
    let setup = SetupPacket::get_descriptor(dt::DEVICE, 0, 0, 18);
    let cmd = CmdSubmit {
        header: CmdSubmitHeader {
            basic: Basic {
                seqnum: 1,
                devid: 0,
                direction: Direction::In,
                ep: 0,
            },
            transfer_flags: 0,
            transfer_buffer_length: 18,
            start_frame: 0,
            number_of_packets: PacketCount::Count(0),
            interval: 0,
            setup: setup.to_bytes(),
        },
        out_data: Vec::new(),
        iso_packets: Vec::new(),
    };
    let shape = cmd.header.shape();
    let mut bytes = Vec::new();
    cmd.encode(&mut bytes).unwrap();
    sock.write_all(&bytes).unwrap();
    let lookup = move |s: u32| (s == 1).then_some(shape);
    let mut decoder = StreamDecoder::new(HostSide::new(lookup), Limits::DEFAULT);
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.read(&mut buf).unwrap();
        assert!(n > 0, "EOF before the reply");
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let (used, msg) = decoder.feed(rest).unwrap();
            rest = &rest[used..];
            if let Some(Message::RetSubmit(r)) = msg {
                assert_eq!(r.header.status, 0);
                return r.in_data;
            }
        }
    }
}

/// True once the peer closed `sock`.
fn closed(sock: &mut UnixStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

#[test]
fn every_device_is_attached_served_and_released() {
    let (w, daemon, front) = rig::running();
    let front = Arc::new(front);
    let events = front.subscribe();
    let vhci = Arc::new(FakeVhci::default());
    let mut server = Server::new(
        Arc::clone(&front),
        Arc::clone(&vhci),
        0,
        BridgeOptions::default(),
    );
    server.serve_all();
    assert_eq!(server.served(), vec![(1, 0), (2, 1), (3, 2), (4, 3)]);
    {
        let attached = vhci.attached.lock().unwrap();
        let devids: Vec<u32> = attached.iter().map(|a| a.1).collect();
        assert_eq!(devids, vec![0x1_0001, 0x1_0002, 0x1_0003, 0x1_0004]);
        assert!(attached.iter().all(|a| a.2 != VhciSpeed::Super));
    }
    // A connect event queued before serving (the handshake's) is stale:
    // the device keeps its bridge and its vhci port.
    let stale = PortEvent::Connected {
        port: 1,
        speed: pvusb_protocol::Speed::High,
    };
    assert_eq!(server.on_event(stale), Next::Continue);
    assert_eq!(server.served()[0], (1, 0));
    assert!(vhci.detached.lock().unwrap().is_empty());
    // Served: vhci's enumeration request is answered on its socket.
    let mut sock1 = socket(&vhci, 0);
    let d = device_descriptor(&mut sock1);
    assert_eq!(&d[..2], &[18, dt::DEVICE]);
    // Unplug the keyboard (port 2, vhci port 1): released and detached.
    let mut sock2 = socket(&vhci, 1);
    assert!(w.bus().remove(&w.busids()[1].parse().unwrap()));
    let deadline = Instant::now() + LIVENESS;
    while server.served().iter().any(|s| s.0 == 2) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events.recv_timeout(left).expect("a disconnect event");
        assert_eq!(server.on_event(event), Next::Continue);
    }
    assert!(closed(&mut sock2), "the bridge shut its socket down");
    assert_eq!(*vhci.detached.lock().unwrap(), vec![1]);
    // A Lagged event re-scans and changes nothing.
    assert_eq!(
        server.on_event(PortEvent::Lagged { missed: 1 }),
        Next::Continue
    );
    assert_eq!(server.served().len(), 3);
    server.reap();
    assert_eq!(server.served().len(), 3, "no bridge ended by itself");
    // vhci letting go of a port (socket closed): reaped and detached.
    let sock4 = socket(&vhci, 3);
    vhci.attached.lock().unwrap().retain(|a| a.0 != 3);
    sock4.shutdown(std::net::Shutdown::Both).unwrap();
    drop(sock4);
    let deadline = Instant::now() + LIVENESS;
    while server.served().iter().any(|s| s.0 == 4) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        server.reap();
    }
    assert_eq!(server.served(), vec![(1, 0), (3, 2)]);
    // The stop: every remaining bridge stopped, every port detached.
    server.release_all();
    assert!(server.served().is_empty());
    assert!(closed(&mut sock1));
    let mut detached = vhci.detached.lock().unwrap().clone();
    detached.sort_unstable();
    assert_eq!(detached, vec![0, 1, 2, 3]);
    assert_eq!(front.outstanding(), 0);
    assert_eq!(front.dead_reason(), None);
    drop(server);
    drop(front);
    daemon.shutdown();
}

#[test]
fn a_controller_connected_by_another_frontend_is_refused() {
    let (w, daemon, front) = rig::running();
    let second = pvusb_frontend::Frontend::connect(
        Arc::clone(w.xs()),
        Arc::new(pvusb_xen::sim::SimXen::new(w.dir(), rig::DOM)),
        rig::DOM,
        0,
        pvusb_frontend::Options::default(),
    );
    match second {
        Err(e @ pvusb_frontend::FrontendError::ControllerInUse { devid: 0 }) => {
            assert!(e.to_string().contains("rmmod xen-hcd"), "{e}");
        }
        other => panic!("expected ControllerInUse, got {other:?}"),
    }
    // The first frontend is untouched.
    assert_eq!(front.dead_reason(), None);
    assert!(front.port(1).unwrap().connected());
    drop(front);
    daemon.shutdown();
}
