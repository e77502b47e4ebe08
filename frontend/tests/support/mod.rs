//! A scripted backend for frontend tests: the embedded xenstore, the simulated
//! transport (backend = domain 0, frontend = domain 1), and the ring mock over
//! the frontend's real granted ring pages, so the test decides every byte the
//! "backend" writes, hostile or not.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use pvusb_frontend::{Frontend, Options};
use pvusb_protocol::xenstore::{backend_dir, frontend_dir, join};
use pvusb_protocol::{ConnRequest, ConnResponse, UrbRequest, UrbResponse};
use pvusb_ring::mock::MockBackend;
use pvusb_xen::sim::{SimMapping, SimXen};
use pvusb_xen::{CopySeg, EventChannel, EventChannels, GrantMapper, SharedMem};
use pvusb_xenstore::{ServerConfig, Tx, XsClient, XsServer, XsServerHandle};

pub const FRONT: u16 = 1;
pub const BACK: u16 = 0;
pub const DEVID: u32 = 0;
pub const T: Duration = Duration::from_secs(10);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub _server: XsServerHandle,
    pub xs: Arc<XsClient>,
}

impl Env {
    /// xenstore with a 4-port USB 2.0 controller as libxl writes it, backend in InitWait.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("xs.sock");
        let server = XsServer::start_with(&sock, ServerConfig::simulation()).unwrap();
        let xs = Arc::new(XsClient::connect(&sock).unwrap());
        let fe = frontend_dir(FRONT, DEVID);
        let be = backend_dir(BACK, FRONT, DEVID);
        for (k, v) in [
            (join(&fe, "backend"), be.clone()),
            (join(&fe, "backend-id"), BACK.to_string()),
            (join(&fe, "state"), "1".into()),
            (join(&be, "frontend"), fe.clone()),
            (join(&be, "frontend-id"), FRONT.to_string()),
            (join(&be, "num-ports"), "4".into()),
            (join(&be, "usb-ver"), "2".into()),
            (join(&be, "online"), "1".into()),
            (join(&be, "state"), "2".into()),
        ] {
            xs.write(Tx::NONE, &k, &v).unwrap();
        }
        Self {
            dir,
            _server: server,
            xs,
        }
    }

    pub fn set_backend_state(&self, state: u32) {
        let be = backend_dir(BACK, FRONT, DEVID);
        self.xs
            .write(Tx::NONE, &join(&be, "state"), &state.to_string())
            .unwrap();
    }

    pub fn frontend_key(&self, key: &str) -> Option<String> {
        self.xs
            .read(Tx::NONE, &join(&frontend_dir(FRONT, DEVID), key))
            .unwrap()
    }

    pub fn connect(&self) -> Frontend {
        let options = Options {
            close_timeout: Duration::from_millis(500),
            unlink_grace: Duration::from_secs(2),
            ..Options::default()
        };
        Frontend::connect(
            Arc::clone(&self.xs),
            Arc::new(SimXen::new(self.dir.path(), FRONT)),
            FRONT,
            DEVID,
            options,
        )
        .unwrap()
    }

    /// The backend side of the current handshake.
    pub fn backend(&self) -> MockPeer {
        let key = |k: &str| self.frontend_key(k).unwrap().parse::<u32>().unwrap();
        let xen = SimXen::new(self.dir.path(), BACK);
        let urb_map = xen.map(FRONT, &[key("urb-ring-ref")], true).unwrap();
        let conn_map = xen.map(FRONT, &[key("conn-ring-ref")], true).unwrap();
        let evtchn = xen.bind_interdomain(FRONT, key("event-channel")).unwrap();
        MockPeer {
            urb: MockBackend::with_mem(urb_map).unwrap(),
            conn: MockBackend::with_mem(conn_map).unwrap(),
            rsp_prod: 0,
            conn_rsp_prod: 0,
            evtchn,
            xen,
        }
    }
}

pub struct MockPeer {
    pub urb: MockBackend<UrbRequest, UrbResponse, SimMapping>,
    pub conn: MockBackend<ConnRequest, ConnResponse, SimMapping>,
    pub rsp_prod: u32,
    pub conn_rsp_prod: u32,
    pub evtchn: pvusb_xen::sim::SimEventChannel,
    pub xen: SimXen,
}

impl MockPeer {
    /// Waits (bounded) for `n` requests from the frontend.
    pub fn requests(&mut self, n: usize) -> Vec<UrbRequest> {
        let mut out = Vec::new();
        for _ in 0..1000 {
            out.extend(self.urb.requests().unwrap());
            if out.len() >= n {
                return out;
            }
            let _ = self.evtchn.wait(Some(Duration::from_millis(10)));
        }
        panic!("only {} of {n} requests arrived", out.len());
    }

    /// Publishes `rsp` at the next response slot and notifies.
    pub fn respond(&mut self, rsp: UrbResponse) {
        self.urb.write_response(self.rsp_prod, &rsp).unwrap();
        self.rsp_prod = self.rsp_prod.wrapping_add(1);
        self.urb.set_rsp_prod(self.rsp_prod).unwrap();
        self.evtchn.notify().unwrap();
    }

    /// A conn event "port has speed" (consuming one posted request).
    pub fn conn_event(&mut self, port: u8, speed: u8) {
        let req = self
            .conn
            .take_request()
            .unwrap()
            .expect("a posted conn request");
        let rsp = ConnResponse {
            id: req.id,
            portnum: port,
            speed,
        };
        self.conn.write_response(self.conn_rsp_prod, &rsp).unwrap();
        self.conn_rsp_prod = self.conn_rsp_prod.wrapping_add(1);
        self.conn.set_rsp_prod(self.conn_rsp_prod).unwrap();
        self.evtchn.notify().unwrap();
    }

    fn segs(req: &UrbRequest) -> Vec<CopySeg> {
        req.seg
            .iter()
            .take(usize::from(req.nr_buffer_segs))
            .map(|s| CopySeg {
                gref: s.gref,
                offset: s.offset,
                len: s.length,
            })
            .collect()
    }

    /// The OUT data of a request.
    pub fn read_data(&self, req: &UrbRequest) -> Vec<u8> {
        let segs = Self::segs(req);
        let mut buf = vec![0; segs.iter().map(|s| usize::from(s.len)).sum()];
        self.xen.copy_from_guest(FRONT, &segs, &mut buf).unwrap();
        buf
    }

    /// Writes IN data into a request's segments (from the start).
    pub fn write_data(&self, req: &UrbRequest, data: &[u8]) {
        let mut segs = Vec::new();
        let mut left = data.len();
        for s in Self::segs(req) {
            if left == 0 {
                break;
            }
            let n = left.min(usize::from(s.len));
            segs.push(CopySeg { len: n as u16, ..s });
            left -= n;
        }
        self.xen.copy_to_guest(FRONT, &segs, data).unwrap();
    }

    pub fn page_u32(&self, at: usize) -> u32 {
        self.urb.mem().load_u32(at).unwrap()
    }
}

/// Collects completions from `submit` callbacks.
pub fn collector() -> (
    crossbeam_channel::Sender<pvusb_frontend::Completion>,
    crossbeam_channel::Receiver<pvusb_frontend::Completion>,
) {
    crossbeam_channel::unbounded()
}
