//! A scripted backend for the frontend's tests: a [`World`] with one
//! controller of guest [`FRONT`] whose backend is in InitWait, the real
//! frontend connecting to it, and [`MockPeer`], the ring mock over the
//! frontend's real granted pages, so the test decides every byte the
//! "backend" writes, hostile or not.

use std::time::{Duration, Instant};

use pvusb_frontend::{Frontend, Options};
use pvusb_protocol::{ConnRequest, ConnResponse, UrbRequest, UrbResponse};
use pvusb_ring::mock::MockBackend;
use pvusb_xen::sim::{SimEventChannel, SimMapping, SimXen};
use pvusb_xen::{CopySeg, EventChannel, EventChannels, GrantMapper};

use crate::controller::{Controller, BACKEND_DOMID};
use crate::wait::LIVENESS;
use crate::world::World;

/// The guest.
pub const FRONT: u16 = 1;
/// Its controller.
pub const DEVID: u32 = 0;

/// The frontend's close gives up on a backend that never answers after
/// this (the mock often does not).
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a timed-out URB's own response is waited for.
const UNLINK_GRACE: Duration = Duration::from_secs(2);

/// The world and the controller, backend in InitWait.
#[derive(Debug)]
pub struct Scripted {
    /// The world.
    pub world: World,
    controller: Controller,
}

impl Scripted {
    /// A 4-port USB 2.0 controller as libxl writes it, backend in InitWait.
    pub fn new() -> Self {
        let world = World::builder().guest(FRONT).build();
        let controller = Controller::new(FRONT, DEVID, 2, 4);
        world.controller(&controller);
        let s = Self { world, controller };
        s.set_backend_state(2);
        s
    }

    /// Writes the backend's state.
    pub fn set_backend_state(&self, state: u32) {
        let path = format!("{}/state", self.controller.backend_dir());
        self.world.write(&path, &state.to_string());
    }

    /// A key of the frontend's directory.
    pub fn frontend_key(&self, key: &str) -> Option<String> {
        self.world
            .read(&format!("{}/{key}", self.controller.frontend_dir()))
    }

    /// The frontend, connected (it waits for nothing the mock does not do).
    pub fn connect(&self) -> Frontend {
        let options = Options {
            close_timeout: CLOSE_TIMEOUT,
            unlink_grace: UNLINK_GRACE,
            ..Options::default()
        };
        self.world.frontend_with(FRONT, DEVID, options)
    }

    /// A fresh world with the frontend connected and the backend side of
    /// its handshake: where most frontend tests start.
    pub fn connected() -> (Self, Frontend, MockPeer) {
        let env = Self::new();
        let front = env.connect();
        let peer = env.backend();
        (env, front, peer)
    }

    /// The backend side of the current handshake.
    pub fn backend(&self) -> MockPeer {
        let key = |k: &str| {
            self.frontend_key(k)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("the frontend wrote no {k}"))
        };
        let xen = SimXen::new(self.world.dir(), BACKEND_DOMID);
        let urb_map = xen
            .map(FRONT, &[key("urb-ring-ref")], true)
            .expect("map the urb ring");
        let conn_map = xen
            .map(FRONT, &[key("conn-ring-ref")], true)
            .expect("map the conn ring");
        let evtchn = xen
            .bind_interdomain(FRONT, key("event-channel"))
            .expect("bind the event channel");
        MockPeer {
            urb: MockBackend::with_mem(urb_map).expect("the urb ring"),
            conn: MockBackend::with_mem(conn_map).expect("the conn ring"),
            rsp_prod: 0,
            conn_rsp_prod: 0,
            evtchn,
            xen,
        }
    }
}

impl Default for Scripted {
    fn default() -> Self {
        Self::new()
    }
}

/// The backend's end of the rings, written by hand.
#[derive(Debug)]
pub struct MockPeer {
    /// The urb ring, as the backend maps it.
    pub urb: MockBackend<UrbRequest, UrbResponse, SimMapping>,
    /// The conn ring, as the backend maps it.
    pub conn: MockBackend<ConnRequest, ConnResponse, SimMapping>,
    rsp_prod: u32,
    conn_rsp_prod: u32,
    /// The backend's end of the event channel.
    pub evtchn: SimEventChannel,
    xen: SimXen,
}

impl MockPeer {
    /// Waits (bounded) for `n` requests from the frontend.
    pub fn requests(&mut self, n: usize) -> Vec<UrbRequest> {
        let mut out = Vec::new();
        let end = Instant::now() + LIVENESS;
        while Instant::now() < end {
            out.extend(self.urb.requests().expect("sane requests"));
            if out.len() >= n {
                return out;
            }
            let _ = self.evtchn.wait(Some(Duration::from_millis(10)));
        }
        panic!("only {} of {n} requests arrived", out.len());
    }

    /// Publishes `rsp` at the next response slot and notifies.
    pub fn respond(&mut self, rsp: UrbResponse) {
        self.respond_silently(rsp);
        self.evtchn.notify().expect("the mock ring");
    }

    /// Publishes `rsp` without notifying: a notification lost (as when a
    /// restarting backend's event channel is bound again).
    pub fn respond_silently(&mut self, rsp: UrbResponse) {
        self.urb
            .write_response(self.rsp_prod, &rsp)
            .expect("the mock ring");
        self.rsp_prod = self.rsp_prod.wrapping_add(1);
        self.urb.set_rsp_prod(self.rsp_prod).expect("the mock ring");
    }

    /// A conn event "port has speed" (consuming one posted request).
    pub fn conn_event(&mut self, port: u8, speed: u8) {
        let req = self
            .conn
            .take_request()
            .expect("the mock ring")
            .expect("a posted conn request");
        let rsp = ConnResponse {
            id: req.id,
            portnum: port,
            speed,
        };
        self.conn
            .write_response(self.conn_rsp_prod, &rsp)
            .expect("the mock ring");
        self.conn_rsp_prod = self.conn_rsp_prod.wrapping_add(1);
        self.conn
            .set_rsp_prod(self.conn_rsp_prod)
            .expect("the mock ring");
        self.evtchn.notify().expect("the mock ring");
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
        self.xen
            .copy_from_guest(FRONT, &segs, &mut buf)
            .expect("a grant copy");
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
        self.xen
            .copy_to_guest(FRONT, &segs, data)
            .expect("a grant copy");
    }
}
