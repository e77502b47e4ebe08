//! One simulated machine for the cross-crate tests: the embedded xenstore, a
//! guest domain, emulated devices described in a fake sysfs, the real backend
//! daemon, the real toolstack and the real frontend (domain 1).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pvusb_backend::usb::emulated::loopback::LoopbackDevice;
use pvusb_backend::usb::emulated::mass_storage::store::{BlockStore, MemoryStore};
use pvusb_backend::usb::emulated::mass_storage::MassStorageDevice;
use pvusb_backend::usb::emulated::EmulatedHost;
use pvusb_backend::{CompositeHost, Daemon, DaemonConfig, DaemonHandle};
use pvusb_frontend::{Frontend, Options};
use pvusb_toolstack::sysfs::fake::{FakeDevice, FakeSysfs};
use pvusb_toolstack::{Sysfs, SysfsRoot, Toolstack};
use pvusb_xen::sim::SimXen;
use pvusb_xenstore::{ServerConfig, Tx, XsClient, XsServer, XsServerHandle};

/// Liveness bound for every wait (never a timing assertion).
pub const T: Duration = Duration::from_secs(30);
/// The guest.
pub const DOM: u16 = 1;
/// The emulated disk (first device of the emulated bus).
pub const DISK: &str = "200-1";
/// The emulated loopback device.
pub const LOOP: &str = "200-2";
/// Blocks of the emulated disk.
pub const DISK_BLOCKS: u32 = 4096;

pub type Ts = Toolstack<XsClient, SysfsRoot>;

pub struct Machine {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    _server: Option<XsServerHandle>,
    pub xs: Arc<XsClient>,
    pub emu: EmulatedHost,
    pub disk: Arc<MemoryStore>,
}

pub fn xs_sock(dir: &Path) -> PathBuf {
    dir.join("xs.sock")
}

pub fn sysfs_root(dir: &Path) -> PathBuf {
    dir.join("sysfs")
}

impl Machine {
    /// A fresh machine: xenstore, domain 1, fake sysfs. Devices are plugged.
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("pvt")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let dir = tmp.path().to_owned();
        let server =
            XsServer::start_with(&xs_sock(&dir), ServerConfig::simulation()).expect("xenstored");
        let xs = Arc::new(XsClient::connect(&xs_sock(&dir)).expect("xs"));
        xs.write(Tx::NONE, &format!("/local/domain/{DOM}/name"), "guest")
            .expect("name");
        xs.write(Tx::NONE, &format!("/local/domain/{DOM}/domid"), "1")
            .expect("domid");
        xs.introduce_domain(DOM, 0, 0).expect("introduce");
        let fake = FakeSysfs::create(&sysfs_root(&dir)).expect("sysfs");
        for (busid, devnum, driver) in [(DISK, 2, Some("usb-storage")), (LOOP, 3, None)] {
            fake.add_device(&FakeDevice::new(busid, 200, devnum, &[driver]))
                .expect("fake device");
        }
        let mut m = Self::attach_to(&dir);
        m._tmp = Some(tmp);
        m._server = Some(server);
        m
    }

    /// The same machine seen from a child process (xenstore already running).
    pub fn attach_to(dir: &Path) -> Self {
        let xs = Arc::new(XsClient::connect(&xs_sock(dir)).expect("xs"));
        let emu = EmulatedHost::new();
        let disk = Arc::new(MemoryStore::new(DISK_BLOCKS));
        let d: Arc<dyn BlockStore> = disk.clone();
        emu.add_next(Arc::new(move || {
            Box::new(MassStorageDevice::new(Arc::clone(&d)))
        }))
        .expect("disk");
        emu.add_next(Arc::new(|| Box::new(LoopbackDevice::new(1 << 20))))
            .expect("loopback");
        Self {
            dir: dir.to_owned(),
            _tmp: None,
            _server: None,
            xs,
            emu,
            disk,
        }
    }

    pub fn daemon(&self) -> DaemonHandle {
        let xs = Arc::new(XsClient::connect(&xs_sock(&self.dir)).expect("xs"));
        let back = Arc::new(SimXen::new(&self.dir, 0));
        let host = Arc::new(CompositeHost::new(self.emu.clone(), None));
        Daemon::start(xs, Arc::clone(&back), back, host, DaemonConfig::new(0)).expect("daemon")
    }

    pub fn toolstack(&self) -> Ts {
        toolstack(&self.dir)
    }

    /// `ctrl-attach` (which waits for the connection) with the frontend
    /// connecting meanwhile, as the guest's xen-hcd would.
    pub fn ctrl_attach(&self, ts: &Ts) -> (u32, Frontend) {
        let dir = self.dir.clone();
        let xs = Arc::clone(&self.xs);
        let guest = std::thread::spawn(move || {
            let fe = format!("/local/domain/{DOM}/device/vusb/0/state");
            wait_for("frontend node", || {
                xs.exists(Tx::NONE, &fe).unwrap_or(false)
            });
            frontend(&dir, xs, 0)
        });
        let c = ts.ctrl_attach(DOM, 2, 2).expect("ctrl-attach");
        (c.devid, guest.join().expect("guest thread"))
    }

    pub fn exists(&self, path: &str) -> bool {
        self.xs.exists(Tx::NONE, path).expect("exists")
    }

    pub fn read(&self, path: &str) -> Option<String> {
        self.xs.read(Tx::NONE, path).expect("read")
    }

    pub fn driver(&self, intf: &str) -> Option<String> {
        SysfsRoot::simulated(sysfs_root(&self.dir))
            .interface_driver(intf)
            .expect("sysfs")
    }
}

pub fn toolstack(dir: &Path) -> Ts {
    let store = XsClient::connect(&xs_sock(dir)).expect("xs");
    let mut ts = Toolstack::new(store, SysfsRoot::simulated(sysfs_root(dir)), 0);
    ts.timeout = T;
    ts
}

pub fn frontend(dir: &Path, xs: Arc<XsClient>, devid: u32) -> Frontend {
    let options = Options {
        handshake_timeout: T,
        close_timeout: Duration::from_secs(10),
        ..Options::default()
    };
    Frontend::connect(xs, Arc::new(SimXen::new(dir, DOM)), DOM, devid, options).expect("frontend")
}

pub fn record(busid: &str) -> String {
    format!("/pvusb/usbback/{}", busid.replace('.', "_"))
}

pub fn backend_dir(devid: u32) -> String {
    format!("/local/domain/0/backend/vusb/{DOM}/{devid}")
}

pub fn frontend_dir(devid: u32) -> String {
    format!("/local/domain/{DOM}/device/vusb/{devid}")
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < T, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The reaper exactly as `pvusb backend` runs it (cli/src/cmd_backend.rs
/// `start_reaper`): its own xenstore connection, stopped by a flag.
pub struct Reaper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    pub fn start(dir: &Path) -> Self {
        let ts = toolstack(dir);
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            ts.run_reaper(Duration::from_millis(200), || !s.load(Ordering::SeqCst))
                .expect("reaper");
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
