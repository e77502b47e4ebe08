//! The world the frontend's daemon tests run in: the embedded xenstore, the
//! emulated devices, the backend daemon over the simulated transport and a
//! connected frontend. Shared by several test binaries, each using part of
//! it, hence `dead_code` allowed.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use pvusb_backend::usb::emulated::audio::{AudioDevice, AudioStats};
use pvusb_backend::usb::emulated::keyboard::KeyboardHandle;
use pvusb_backend::usb::emulated::loopback::LoopbackDevice;
use pvusb_backend::usb::emulated::mass_storage::store::MemoryStore;
use pvusb_backend::usb::emulated::mass_storage::MassStorageDevice;
use pvusb_backend::usb::emulated::EmulatedHost;
use pvusb_backend::{CompositeHost, Daemon, DaemonConfig, DaemonHandle};
use pvusb_frontend::{Frontend, Options};
use pvusb_protocol::xenstore::{backend_dir, frontend_dir};
use pvusb_xen::sim::SimXen;
use pvusb_xenstore::{ServerConfig, XsClient, XsServer, XsServerHandle};

pub const T: Duration = Duration::from_secs(20);
pub const DOM: u16 = 1;

/// xenstore, the emulated host (loopback on port 1, keyboard on 2, disk on
/// 3, iso audio on 4) and one controller of domain [`DOM`] listing them.
pub struct World {
    pub dir: tempfile::TempDir,
    pub _server: XsServerHandle,
    pub xs: Arc<XsClient>,
    pub emu: EmulatedHost,
    pub keyboard: KeyboardHandle,
    pub audio: Arc<AudioStats>,
    pub busids: Vec<String>,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pvf")
            .tempdir_in("/tmp")
            .unwrap();
        let sock = dir.path().join("xs.sock");
        let server = XsServer::start_with(&sock, ServerConfig::simulation()).unwrap();
        let xs = Arc::new(XsClient::connect(&sock).unwrap());
        let emu = EmulatedHost::new();
        let keyboard = KeyboardHandle::new();
        let store = Arc::new(MemoryStore::new(4096));
        let kb = keyboard.clone();
        let audio = Arc::new(AudioStats::default());
        let stats = Arc::clone(&audio);
        let busids = vec![
            emu.add_next(Arc::new(|| Box::new(LoopbackDevice::new(1 << 17))))
                .unwrap(),
            emu.add_next(Arc::new(move || Box::new(kb.device())))
                .unwrap(),
            emu.add_next(Arc::new(move || {
                Box::new(MassStorageDevice::new(store.clone()))
            }))
            .unwrap(),
            emu.add_next(Arc::new(move || Box::new(AudioDevice::new(stats.clone()))))
                .unwrap(),
        ]
        .into_iter()
        .map(|b| b.to_string())
        .collect();
        let w = Self {
            dir,
            _server: server,
            xs,
            emu,
            keyboard,
            audio,
            busids,
        };
        w.add_controller();
        w
    }

    /// A world with the daemon serving it and the frontend connected, every
    /// port's device present.
    pub fn running() -> (Self, DaemonHandle, Frontend) {
        let w = Self::new();
        let daemon = w.daemon();
        let front = w.frontend();
        (w, daemon, front)
    }

    pub fn daemon(&self) -> DaemonHandle {
        let xs = Arc::new(XsClient::connect(&self.dir.path().join("xs.sock")).unwrap());
        let back = Arc::new(SimXen::new(self.dir.path(), 0));
        let host = Arc::new(CompositeHost::new(self.emu.clone(), None));
        Daemon::start(xs, Arc::clone(&back), back, host, DaemonConfig::new(0)).unwrap()
    }

    pub fn add_controller(&self) {
        let (be, fe) = (backend_dir(0, DOM, 0), frontend_dir(DOM, 0));
        let xs = &self.xs;
        xs.transaction(|tx| {
            for (k, v) in [
                ("frontend", fe.as_str()),
                ("frontend-id", "1"),
                ("online", "1"),
                ("type", "pv"),
                ("usb-ver", "2"),
                ("num-ports", "4"),
            ] {
                xs.write(tx, &format!("{be}/{k}"), v)?;
            }
            for (p, busid) in self.busids.iter().enumerate() {
                xs.write(tx, &format!("{be}/port/{}", p + 1), busid)?;
            }
            xs.write(tx, &format!("{fe}/backend"), &be)?;
            xs.write(tx, &format!("{fe}/backend-id"), "0")?;
            xs.write(tx, &format!("{fe}/state"), "1")?;
            xs.write(tx, &format!("{be}/state"), "1")
        })
        .unwrap();
    }

    pub fn frontend(&self) -> Frontend {
        let options = Options {
            handshake_timeout: T,
            close_timeout: Duration::from_secs(5),
            ..Options::default()
        };
        let front = Frontend::connect(
            Arc::clone(&self.xs),
            Arc::new(SimXen::new(self.dir.path(), DOM)),
            DOM,
            0,
            options,
        )
        .unwrap();
        for port in 1..=4 {
            front.wait_for_device(port, T).unwrap();
        }
        front
    }
}
