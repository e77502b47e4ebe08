//! Test support: an embedded xenstore, the backend daemon over the simulated
//! transport, a toolstack stand-in, and [`Driver`], a minimal usbif frontend
//! (a test driver, not the real frontend crate): it grants ring and data pages
//! through `SimXen`, pre-posts conn requests, and sends hand-built requests.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvusb_backend::usb::emulated::EmulatedHost;
use pvusb_backend::usb::UsbHost;
use pvusb_backend::{CompositeHost, Daemon, DaemonConfig, DaemonHandle, StatsSnapshot};
use pvusb_protocol::xenstore::{backend_dir, frontend_dir};
use pvusb_protocol::{
    ConnRequest, ConnResponse, Direction, Pipe, RequestSegment, SetupPacket, TransferType,
    UrbRequest, UrbResponse,
};
use pvusb_ring::{FrontRing, SharedMem};
use pvusb_xen::sim::{SimEventChannel, SimGrantedPages, SimXen};
use pvusb_xen::{EventChannel, EventChannels, GrantAllocator, GrantedPages};
use pvusb_xenstore::{ServerConfig, Tx, XsClient, XsServer, XsServerHandle};

/// How long any wait in a test may take before it fails (generous: CI is slow).
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A xenstore server in a temp dir, and the sim directory.
#[derive(Debug)]
pub struct World {
    pub dir: tempfile::TempDir,
    pub server: Option<XsServerHandle>,
    pub xs: Arc<XsClient>,
}

impl World {
    pub fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("PVUSB_LOG"))
            .with_test_writer()
            .try_init();
        let dir = tempfile::Builder::new()
            .prefix("pvusb")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let sock = dir.path().join("xs.sock");
        let server =
            XsServer::start_with(&sock, ServerConfig::simulation()).expect("xenstore server");
        let xs = Arc::new(XsClient::connect(&sock).expect("xenstore client"));
        Self {
            dir,
            server: Some(server),
            xs,
        }
    }

    pub fn sim_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn xs_path(&self) -> PathBuf {
        self.dir.path().join("xs.sock")
    }

    /// Starts a daemon (domain 0) serving `host`.
    pub fn daemon(&self, host: Arc<dyn UsbHost>) -> DaemonHandle {
        self.daemon_with(host, DaemonConfig::new(0))
    }

    /// Starts a daemon (domain 0) serving `host` with `config`.
    pub fn daemon_with(&self, host: Arc<dyn UsbHost>, config: DaemonConfig) -> DaemonHandle {
        let xs = Arc::new(XsClient::connect(&self.xs_path()).expect("daemon xenstore client"));
        let back = Arc::new(SimXen::new(self.sim_dir(), 0));
        Daemon::start(xs, Arc::clone(&back), back, host, config).expect("daemon starts")
    }

    pub fn write(&self, path: &str, v: &str) {
        self.xs.write(Tx::NONE, path, v).expect("xs write");
    }

    pub fn read(&self, path: &str) -> Option<String> {
        self.xs.read(Tx::NONE, path).expect("xs read")
    }

    pub fn rm(&self, path: &str) {
        self.xs.rm(Tx::NONE, path).expect("xs rm");
    }

    /// What the toolstack writes to create a controller (spec 6.2).
    pub fn add_controller(&self, domid: u16, devid: u32, usb_ver: &str, num_ports: &str) {
        let be = backend_dir(0, domid, devid);
        let fe = frontend_dir(domid, devid);
        self.xs
            .transaction(|tx| {
                self.xs.write(
                    tx,
                    &format!("/local/domain/{domid}/name"),
                    &format!("guest{domid}"),
                )?;
                for (k, v) in [
                    ("frontend", fe.as_str()),
                    ("frontend-id", &domid.to_string()),
                    ("online", "1"),
                    ("type", "pv"),
                    ("usb-ver", usb_ver),
                    ("num-ports", num_ports),
                ] {
                    self.xs.write(tx, &format!("{be}/{k}"), v)?;
                }
                let n: u8 = num_ports.parse().unwrap_or(0).min(31);
                for p in 1..=n {
                    self.xs.write(tx, &format!("{be}/port/{p}"), "")?;
                }
                self.xs.write(tx, &format!("{fe}/backend"), &be)?;
                self.xs.write(tx, &format!("{fe}/backend-id"), "0")?;
                self.xs.write(tx, &format!("{fe}/state"), "1")?;
                // Written last: the daemon reacts to the state node.
                self.xs.write(tx, &format!("{be}/state"), "1")?;
                Ok(())
            })
            .expect("toolstack transaction");
    }

    pub fn be(&self, domid: u16, devid: u32) -> String {
        backend_dir(0, domid, devid)
    }

    pub fn fe(&self, domid: u16, devid: u32) -> String {
        frontend_dir(domid, devid)
    }

    pub fn set_port(&self, domid: u16, devid: u32, port: u8, busid: &str) {
        self.write(&format!("{}/port/{port}", self.be(domid, devid)), busid);
    }

    /// Waits until `f` holds.
    pub fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        let end = Instant::now() + TIMEOUT;
        while !f() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn wait_state(&self, dir: &str, state: &str) {
        let path = format!("{dir}/state");
        self.wait_for(&format!("{path} = {state}"), || {
            self.read(&path).as_deref() == Some(state)
        });
    }
}

/// Waits for a daemon counter condition.
pub fn wait_stats(
    d: &DaemonHandle,
    domid: u16,
    devid: u32,
    what: &str,
    f: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let end = Instant::now() + TIMEOUT;
    loop {
        if let Some(s) = d.stats(domid, devid) {
            if f(&s) {
                return s;
            }
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}: {:?}",
            d.stats(domid, devid)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// An emulated host wrapped as the daemon sees it.
pub fn host(emulated: &EmulatedHost) -> Arc<dyn UsbHost> {
    Arc::new(CompositeHost::new(emulated.clone(), None))
}

/// Pages per request buffer: 16, the most a request can use.
pub const BUF_PAGES: usize = 16;

/// The minimal frontend.
#[derive(Debug)]
pub struct Driver {
    pub xen: SimXen,
    pub domid: u16,
    pub urb_page: Arc<SimGrantedPages>,
    pub conn_page: Arc<SimGrantedPages>,
    pub urb: FrontRing<UrbRequest, UrbResponse, Arc<SimGrantedPages>>,
    pub conn: FrontRing<ConnRequest, ConnResponse, Arc<SimGrantedPages>>,
    pub evtchn: SimEventChannel,
    /// One 16-page writable buffer per request id 0..16.
    pub bufs: Vec<SimGrantedPages>,
    pub responses: VecDeque<UrbResponse>,
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
        let xen = SimXen::new(w.sim_dir(), domid);
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
        let fe = w.fe(domid, devid);
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
            domid,
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

    pub fn connect(w: &World, domid: u16, devid: u32) -> Driver {
        let d = Self::connect_with(w, domid, devid, 512, "4");
        w.wait_state(&w.be(domid, devid), "4");
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

    pub fn write_buf(&self, slot: usize, offset: usize, data: &[u8]) {
        self.bufs[slot]
            .write(offset, data)
            .expect("write data pages");
    }

    pub fn read_buf(&self, slot: usize, offset: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.bufs[slot]
            .read(offset, &mut v)
            .expect("read data pages");
        v
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
        let end = Instant::now() + TIMEOUT;
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

    /// The next URB response.
    pub fn response(&mut self) -> UrbResponse {
        self.wait_until("an urb response", |d| !d.responses.is_empty());
        self.responses.pop_front().expect("present")
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

/// Tiny deterministic PRNG (xorshift64*), so tests need no extra crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Bulk-only-transport helpers for the emulated disk (EP 0x01 OUT, 0x82 IN).
pub mod bot {
    use super::Driver;

    pub const EP_OUT: u8 = 0x01;
    pub const EP_IN: u8 = 0x82;

    pub fn cbw(tag: u32, len: u32, data_in: bool, cdb: &[u8]) -> [u8; 31] {
        let mut c = [0u8; 31];
        c[0..4].copy_from_slice(&0x4342_5355u32.to_le_bytes());
        c[4..8].copy_from_slice(&tag.to_le_bytes());
        c[8..12].copy_from_slice(&len.to_le_bytes());
        c[12] = if data_in { 0x80 } else { 0 };
        c[14] = cdb.len() as u8;
        c[15..15 + cdb.len()].copy_from_slice(cdb);
        c
    }

    pub fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
        let l = lba.to_be_bytes();
        let b = blocks.to_be_bytes();
        [op, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
    }

    /// One SCSI command: CBW, optional data, CSW, sent as one batch on ids
    /// `ids[0..3]`. OUT data is written from `out`; IN data is returned.
    /// Panics with the failing stage if any transfer fails.
    #[allow(clippy::too_many_arguments)]
    pub fn command(
        d: &mut Driver,
        ids: [u16; 3],
        dev: u8,
        port: u8,
        tag: u32,
        cdb: &[u8],
        data_in: bool,
        len: usize,
        out: &[u8],
        extra: &[pvusb_protocol::UrbRequest],
    ) -> Vec<u8> {
        let c = cbw(tag, len as u32, data_in, cdb);
        d.write_buf(ids[0] as usize, 0, &c);
        let mut reqs = vec![d.bulk(ids[0], dev, port, EP_OUT, 31)];
        if len > 0 {
            if !data_in {
                d.write_buf(ids[1] as usize, 0, out);
            }
            reqs.push(d.bulk(ids[1], dev, port, if data_in { EP_IN } else { EP_OUT }, len));
        }
        reqs.push(d.bulk(ids[2], dev, port, EP_IN, 13));
        reqs.extend_from_slice(extra);
        d.send(&reqs);
        let r = d.response_for(ids[0]);
        assert_eq!((r.status, r.actual_length), (0, 31), "CBW of tag {tag}");
        let mut data = Vec::new();
        if len > 0 {
            let r = d.response_for(ids[1]);
            assert_eq!(
                (r.status, r.actual_length as usize),
                (0, len),
                "data of tag {tag}"
            );
            if data_in {
                data = d.read_buf(ids[1] as usize, 0, len);
            }
        }
        let r = d.response_for(ids[2]);
        assert_eq!((r.status, r.actual_length), (0, 13), "CSW of tag {tag}");
        let csw = d.read_buf(ids[2] as usize, 0, 13);
        assert_eq!(&csw[0..4], b"USBS");
        assert_eq!(
            u32::from_le_bytes([csw[4], csw[5], csw[6], csw[7]]),
            tag,
            "CSW tag"
        );
        assert_eq!(csw[12], 0, "CSW status of tag {tag}");
        data
    }
}
