//! [`Driver`]: a minimal usbif frontend over raw rings, for the backend's
//! tests. It is a test driver, not the frontend crate: it grants the ring
//! and data pages through `SimXen`, pre-posts conn requests and sends
//! hand-built requests, so a test decides every byte a guest puts on the
//! ring, well-formed or hostile.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvusb_protocol::xenstore::{backend_dir, frontend_dir};
use pvusb_protocol::{
    ConnRequest, ConnResponse, Direction, Pipe, RequestSegment, SetupPacket, TransferType,
    UrbRequest, UrbResponse,
};
use pvusb_ring::{FrontRing, SharedMem};
use pvusb_xen::sim::{SimEventChannel, SimGrantedPages, SimXen};
use pvusb_xen::{EventChannel, EventChannels, GrantAllocator, GrantedPages};

use crate::controller::BACKEND_DOMID;
use crate::wait::LIVENESS;
use crate::world::World;

/// Pages per request buffer: 16, the most a request can use.
const BUF_PAGES: usize = 16;

/// The minimal frontend of one controller.
#[derive(Debug)]
pub struct Driver {
    /// The guest's side of the simulated transport (more grants).
    pub xen: SimXen,
    /// The urb ring's page.
    pub urb_page: Arc<SimGrantedPages>,
    /// The conn ring's page.
    pub conn_page: Arc<SimGrantedPages>,
    /// The urb ring.
    pub urb: FrontRing<UrbRequest, UrbResponse, Arc<SimGrantedPages>>,
    /// The conn ring.
    pub conn: FrontRing<ConnRequest, ConnResponse, Arc<SimGrantedPages>>,
    /// The event channel to the backend.
    pub evtchn: SimEventChannel,
    /// One 16-page writable buffer per request id 0..16.
    pub bufs: Vec<SimGrantedPages>,
    /// URB responses taken off the ring, not yet asked for.
    responses: VecDeque<UrbResponse>,
    /// Conn events taken off the ring, not yet asked for.
    pub conn_events: VecDeque<ConnResponse>,
}

impl Driver {
    /// Grants the rings, writes the keys, pre-posts `conn_posted` conn
    /// requests and switches the frontend to `state` (4 like xen-hcd).
    pub fn connect_with(
        w: &World,
        domid: u16,
        devid: u32,
        conn_posted: u32,
        state: &str,
    ) -> Driver {
        let xen = SimXen::new(w.dir(), domid);
        let urb_page = Arc::new(xen.alloc(0, 1, true).expect("urb ring page"));
        let conn_page = Arc::new(xen.alloc(0, 1, true).expect("conn ring page"));
        let urb_view = Arc::clone(&urb_page);
        let conn_view = Arc::clone(&conn_page);
        let urb = FrontRing::new(urb_view).expect("urb ring");
        urb.init_shared().expect("init urb ring");
        let mut conn = FrontRing::new(conn_view).expect("conn ring");
        conn.init_shared().expect("init conn ring");
        for i in 0..conn_posted {
            conn.push_request(&ConnRequest { id: i as u16 })
                .expect("post conn request");
        }
        conn.push_requests_and_check_notify()
            .expect("push conn requests");
        let evtchn = xen.alloc_unbound(0).expect("event channel");
        let bufs = (0..16)
            .map(|_| xen.alloc(0, BUF_PAGES, true).expect("data pages"))
            .collect();
        let fe = frontend_dir(domid, devid);
        w.write(
            &format!("{fe}/urb-ring-ref"),
            &urb_page.refs()[0].to_string(),
        );
        w.write(
            &format!("{fe}/conn-ring-ref"),
            &conn_page.refs()[0].to_string(),
        );
        w.write(&format!("{fe}/event-channel"), &evtchn.port().to_string());
        w.write(&format!("{fe}/state"), state);
        Driver {
            xen,
            urb_page,
            conn_page,
            urb,
            conn,
            evtchn,
            bufs,
            responses: VecDeque::new(),
            conn_events: VecDeque::new(),
        }
    }

    /// Connects like xen-hcd (512 conn requests posted, state Connected)
    /// and waits for the backend to be Connected too.
    pub fn connect(w: &World, domid: u16, devid: u32) -> Driver {
        let d = Self::connect_with(w, domid, devid, 512, "4");
        w.wait_state(&backend_dir(BACKEND_DOMID, domid, devid), "4");
        d
    }

    /// Segments covering `len` bytes of buffer `slot` starting at byte `offset`.
    pub fn segs(&self, slot: usize, offset: usize, len: usize) -> Vec<RequestSegment> {
        let refs = self.bufs[slot].refs();
        let mut out = Vec::new();
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let page = pos / 4096;
            let in_page = pos % 4096;
            let n = (4096 - in_page).min(end - pos);
            out.push(RequestSegment::new(refs[page], in_page as u16, n as u16));
            pos += n;
        }
        out
    }

    /// Writes `data` into buffer `slot` at `offset`.
    pub fn write_buf(&self, slot: usize, offset: usize, data: &[u8]) {
        self.bufs[slot]
            .write(offset, data)
            .expect("write data pages");
    }

    /// Reads `len` bytes of buffer `slot` at `offset`.
    pub fn read_buf(&self, slot: usize, offset: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.bufs[slot]
            .read(offset, &mut v)
            .expect("read data pages");
        v
    }

    /// Pushes requests without notifying: a notification lost (as while a
    /// restarted backend binds the event channel again).
    pub fn send_silently(&mut self, reqs: &[UrbRequest]) {
        for r in reqs {
            self.urb.push_request(r).expect("ring has room");
        }
        let _ = self.urb.push_requests_and_check_notify().expect("push");
    }

    /// Pushes requests and notifies if the backend asked for it.
    pub fn send(&mut self, reqs: &[UrbRequest]) {
        for r in reqs {
            self.urb.push_request(r).expect("ring has room");
        }
        if self.urb.push_requests_and_check_notify().expect("push") {
            self.evtchn.notify().expect("notify");
        }
    }

    fn poll_rings(&mut self) {
        while let Some(r) = self.urb.take_response().expect("urb responses sane") {
            self.responses.push_back(r);
        }
        let mut reposted = false;
        while let Some(c) = self.conn.take_response().expect("conn responses sane") {
            self.conn_events.push_back(c);
            self.conn
                .push_request(&ConnRequest { id: c.id })
                .expect("repost");
            reposted = true;
        }
        if reposted && self.conn.push_requests_and_check_notify().expect("push") {
            self.evtchn.notify().expect("notify");
        }
    }

    fn wait_until(&mut self, what: &str, mut ready: impl FnMut(&Self) -> bool) {
        let end = Instant::now() + LIVENESS;
        loop {
            self.poll_rings();
            if ready(self) {
                return;
            }
            let more_urb = self.urb.final_check_for_responses().expect("final check");
            let more_conn = self.conn.final_check_for_responses().expect("final check");
            if more_urb || more_conn {
                continue;
            }
            let now = Instant::now();
            assert!(now < end, "timed out waiting for {what}");
            let _ = self
                .evtchn
                .wait(Some((end - now).min(Duration::from_millis(50))));
        }
    }

    /// The response with id `id` (others stay queued).
    pub fn response_for(&mut self, id: u16) -> UrbResponse {
        self.wait_until(&format!("the response for id {id}"), |d| {
            d.responses.iter().any(|r| r.id == id)
        });
        let i = self
            .responses
            .iter()
            .position(|r| r.id == id)
            .expect("present");
        self.responses.remove(i).expect("present")
    }

    /// `n` responses, in arrival order.
    pub fn responses(&mut self, n: usize) -> Vec<UrbResponse> {
        self.wait_until(&format!("{n} urb responses"), |d| d.responses.len() >= n);
        self.responses.drain(..n).collect()
    }

    /// The next conn event.
    pub fn conn_event(&mut self) -> ConnResponse {
        self.wait_until("a conn event", |d| !d.conn_events.is_empty());
        self.conn_events.pop_front().expect("present")
    }

    /// Sends one request and waits for its response.
    pub fn roundtrip(&mut self, req: UrbRequest) -> UrbResponse {
        let id = req.id;
        self.send(&[req]);
        self.response_for(id)
    }

    /// Control IN through buffer slot `id`; returns the response and the data.
    pub fn control_in(
        &mut self,
        id: u16,
        dev: u8,
        port: u8,
        setup: SetupPacket,
    ) -> (UrbResponse, Vec<u8>) {
        let len = usize::from(setup.w_length);
        let pipe = Pipe::new(TransferType::Control, Direction::In, dev, 0, port).expect("pipe");
        let req =
            UrbRequest::control(id, pipe, setup, &self.segs(id as usize, 0, len)).expect("request");
        let r = self.roundtrip(req);
        let n = r.actual_length_clamped() as usize;
        (r, self.read_buf(id as usize, 0, n.min(len)))
    }

    /// Control OUT (no data stage unless `data` is non-empty).
    pub fn control_out(
        &mut self,
        id: u16,
        dev: u8,
        port: u8,
        setup: SetupPacket,
        data: &[u8],
    ) -> UrbResponse {
        self.write_buf(id as usize, 0, data);
        let pipe = Pipe::new(TransferType::Control, Direction::Out, dev, 0, port).expect("pipe");
        let req = UrbRequest::control(id, pipe, setup, &self.segs(id as usize, 0, data.len()))
            .expect("request");
        self.roundtrip(req)
    }

    /// Bulk request on `ep` (address with 0x80 for IN) of `len` bytes at
    /// buffer `id`, not yet sent.
    pub fn bulk(&self, id: u16, dev: u8, port: u8, ep: u8, len: usize) -> UrbRequest {
        let dir = if ep & 0x80 != 0 {
            Direction::In
        } else {
            Direction::Out
        };
        let pipe = Pipe::new(TransferType::Bulk, dir, dev, ep & 0x0f, port).expect("pipe");
        UrbRequest::bulk(id, pipe, false, &self.segs(id as usize, 0, len)).expect("request")
    }

    /// Interrupt IN request on endpoint number `ep` of `len` bytes at buffer
    /// `id`, polled every 10 frames, not yet sent.
    pub fn interrupt_in(&self, id: u16, dev: u8, port: u8, ep: u8, len: usize) -> UrbRequest {
        let pipe = Pipe::new(TransferType::Interrupt, Direction::In, dev, ep, port).expect("pipe");
        UrbRequest::interrupt(id, pipe, 10, false, &self.segs(id as usize, 0, len))
            .expect("request")
    }

    /// Standard enumeration of the device on `port` at address 0, given
    /// address `addr`, configured with configuration 1. Returns the device
    /// descriptor.
    pub fn enumerate(&mut self, port: u8, addr: u8) -> Vec<u8> {
        let (r, desc) = self.control_in(0, 0, port, SetupPacket::new(0x80, 6, 0x0100, 0, 18));
        assert_eq!(r.status, 0, "GET_DESCRIPTOR(device) at address 0");
        assert_eq!(desc.len(), 18);
        assert_eq!(desc[1], 1, "a device descriptor");
        let r = self.control_out(
            1,
            0,
            port,
            SetupPacket::new(0x00, 5, u16::from(addr), 0, 0),
            &[],
        );
        assert_eq!(r.status, 0, "SET_ADDRESS");
        let (r, cfg) = self.control_in(2, addr, port, SetupPacket::new(0x80, 6, 0x0200, 0, 9));
        assert_eq!(r.status, 0, "GET_DESCRIPTOR(config) at the new address");
        assert_eq!(cfg[1], 2);
        let r = self.control_out(3, addr, port, SetupPacket::new(0x00, 9, 1, 0, 0), &[]);
        assert_eq!(r.status, 0, "SET_CONFIGURATION");
        desc
    }
}
