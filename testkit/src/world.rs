//! [`World`]: one simulated machine — a directory, the embedded xenstore in
//! it, dom0 and guest domains, an emulated USB bus and its fake sysfs view —
//! that the daemon, frontends and toolstacks of a test are then started in
//! ([`crate::daemon`], [`crate::frontend`], [`crate::toolstack`]).
//!
//! Why one type: every test used to rebuild this by hand, each a little
//! differently. Here each piece is made once, in the way the real system
//! makes it, and a test says only what is particular to it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use pvusb_backend::usb::emulated::audio::AudioStats;
use pvusb_backend::usb::emulated::keyboard::KeyboardHandle;
use pvusb_backend::usb::emulated::EmulatedHost;
use pvusb_backend::usb::BusId;
use pvusb_protocol::xenstore::backend_dir;
use pvusb_toolstack::sysfs::fake::{FakeDevice, FakeSysfs};
use pvusb_xenstore::{Tx, XsClient};
use tempfile::TempDir;

use crate::controller::{Controller, BACKEND_DOMID};
use crate::devices::Device;
use crate::domain;
use crate::wait::wait_for;
use crate::xenstore::{Xenstore, SOCKET};

/// The fake sysfs root in the world's directory.
const SYSFS: &str = "sysfs";

/// dom0's name, as libxl writes it.
const DOM0_NAME: &str = "Domain-0";

/// A world to build: guests and devices, then [`WorldBuilder::build`].
#[derive(Debug, Default)]
pub struct WorldBuilder {
    guests: Vec<(u16, String)>,
    devices: Vec<Device>,
    host_devices: Vec<FakeDevice>,
}

impl WorldBuilder {
    /// Guest `domid`, named `guest<domid>`.
    pub fn guest(self, domid: u16) -> Self {
        self.named_guest(domid, &format!("guest{domid}"))
    }

    /// Guest `domid` named `name`.
    pub fn named_guest(mut self, domid: u16, name: &str) -> Self {
        self.guests.push((domid, name.to_owned()));
        self
    }

    /// An emulated loopback device keeping `capacity` bytes of OUT data.
    pub fn loopback(mut self, capacity: usize) -> Self {
        self.devices.push(Device::Loopback(capacity));
        self
    }

    /// An emulated disk of `blocks` 512-byte blocks in memory.
    pub fn disk(mut self, blocks: u32) -> Self {
        self.devices.push(Device::Disk(blocks));
        self
    }

    /// An emulated keyboard typing what [`World::keyboard`] is given.
    pub fn keyboard(mut self) -> Self {
        self.devices.push(Device::Keyboard);
        self
    }

    /// An emulated isochronous audio device counting into [`World::audio`].
    pub fn audio(mut self) -> Self {
        self.devices.push(Device::Audio);
        self
    }

    /// A host device outside the emulated bus, in the fake sysfs only (the
    /// toolstack's tests: nothing serves it).
    pub fn host_device(mut self, device: FakeDevice) -> Self {
        self.host_devices.push(device);
        self
    }

    /// The world: a directory, the xenstore in it, dom0 and the guests, the
    /// emulated devices (plugged in the order given: `200-1`, `200-2`, ...)
    /// and the fake sysfs describing them. Panics on failure.
    pub fn build(self) -> World {
        init_logging();
        let dir = crate::dir::create("pvw").expect("the world's directory");
        let xenstore = Xenstore::start_in(dir.path()).expect("the embedded xenstore");
        let world = World::assemble(Root::Owned(dir), Some(xenstore));
        domain::create(&world.xs, 0, DOM0_NAME).expect("dom0's nodes");
        for (domid, name) in &self.guests {
            world.add_named_guest(*domid, name);
        }
        for d in &self.host_devices {
            world.sysfs.add_device(d).expect("a fake sysfs device");
        }
        for d in self.devices {
            world.plug(d);
        }
        world
    }
}

/// Where the world lives: its own directory, or one another process made.
#[derive(Debug)]
enum Root {
    Owned(TempDir),
    Attached(PathBuf),
}

/// A simulated machine. Dropping it stops xenstore and removes the
/// directory; stop daemons and frontends first (declare them after it).
#[derive(Debug)]
pub struct World {
    xs: Arc<XsClient>,
    bus: EmulatedHost,
    keyboard: KeyboardHandle,
    audio: Arc<AudioStats>,
    plugged: Mutex<Vec<BusId>>,
    sysfs: FakeSysfs,
    xenstore: Option<Xenstore>,
    // Last: the sockets live in it.
    root: Root,
}

impl World {
    /// A world with dom0 only.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A world to describe.
    pub fn builder() -> WorldBuilder {
        WorldBuilder::default()
    }

    /// The world another process built in `dir` (its xenstore running),
    /// as a child process of a test sees it: its own connection, its own
    /// (empty) emulated bus.
    pub fn attach(dir: &Path) -> Self {
        init_logging();
        Self::assemble(Root::Attached(dir.to_owned()), None)
    }

    fn assemble(root: Root, xenstore: Option<Xenstore>) -> Self {
        let dir = match &root {
            Root::Owned(d) => d.path(),
            Root::Attached(p) => p.as_path(),
        };
        let xs = XsClient::connect(&dir.join(SOCKET)).expect("a xenstore connection");
        let sysfs = FakeSysfs::create(&dir.join(SYSFS)).expect("the fake sysfs");
        Self {
            xs: Arc::new(xs),
            bus: EmulatedHost::new(),
            keyboard: KeyboardHandle::new(),
            audio: Arc::new(AudioStats::default()),
            plugged: Mutex::new(Vec::new()),
            sysfs,
            xenstore,
            root,
        }
    }

    /// The directory: the simulated transport's rendezvous, the xenstore
    /// socket, the fake sysfs.
    pub fn dir(&self) -> &Path {
        match &self.root {
            Root::Owned(d) => d.path(),
            Root::Attached(p) => p,
        }
    }

    /// The xenstore socket.
    pub fn xs_path(&self) -> PathBuf {
        self.xenstore
            .as_ref()
            .map_or_else(|| self.dir().join(SOCKET), |x| x.path().to_owned())
    }

    /// The world's own xenstore connection (dom0).
    pub fn xs(&self) -> &Arc<XsClient> {
        &self.xs
    }

    /// A new xenstore connection as dom0 (a second process, in effect).
    pub fn client(&self) -> XsClient {
        XsClient::connect(&self.xs_path()).expect("a xenstore connection")
    }

    /// Reads a node (`None`: absent).
    pub fn read(&self, path: &str) -> Option<String> {
        self.xs.read(Tx::NONE, path).expect("xenstore read")
    }

    /// Writes a node.
    pub fn write(&self, path: &str, value: &str) {
        self.xs
            .write(Tx::NONE, path, value)
            .expect("xenstore write");
    }

    /// Removes a node and everything under it.
    pub fn rm(&self, path: &str) {
        self.xs.rm(Tx::NONE, path).expect("xenstore rm");
    }

    /// Whether a node exists.
    pub fn exists(&self, path: &str) -> bool {
        self.xs.exists(Tx::NONE, path).expect("xenstore exists")
    }

    /// Guest `domid`, named `guest<domid>`, created now.
    pub fn add_guest(&self, domid: u16) {
        self.add_named_guest(domid, &format!("guest{domid}"));
    }

    fn add_named_guest(&self, domid: u16, name: &str) {
        domain::create(&self.xs, domid, name).expect("a guest's nodes");
    }

    /// Removes the home of `domid`, as the toolstack does when the domain
    /// is destroyed (xenstored's part, the release, is `xs().release_domain`).
    pub fn destroy_guest(&self, domid: u16) {
        self.rm(&format!("/local/domain/{domid}"));
    }

    /// Writes a controller's nodes; its guest is created first if it has no
    /// home yet (the backend serves only guests that exist).
    pub fn controller(&self, c: &Controller) {
        if !self.exists(&format!("/local/domain/{}", c.domid)) {
            self.add_guest(c.domid);
        }
        c.write(&self.xs).expect("the controller's nodes");
    }

    /// Puts `busid` in `port` of a controller (`""`: empties it), as
    /// `dev-attach` and `dev-detach` do in the end.
    pub fn set_port(&self, domid: u16, devid: u32, port: u8, busid: &str) {
        let be = backend_dir(BACKEND_DOMID, domid, devid);
        self.write(&format!("{be}/port/{port}"), busid);
    }

    /// Waits until `<dir>/state` is `state`.
    pub fn wait_state(&self, dir: &str, state: &str) {
        let path = format!("{dir}/state");
        wait_for(&format!("{path} = {state}"), || {
            self.read(&path).as_deref() == Some(state)
        });
    }

    /// The emulated bus, to plug and unplug devices.
    pub fn bus(&self) -> &EmulatedHost {
        &self.bus
    }

    /// What the world's emulated keyboards type.
    pub fn keyboard(&self) -> &KeyboardHandle {
        &self.keyboard
    }

    /// What the world's emulated audio devices count.
    pub fn audio(&self) -> &Arc<AudioStats> {
        &self.audio
    }

    /// The busids plugged by the world, in order.
    pub fn busids(&self) -> Vec<String> {
        self.plugged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The fake sysfs.
    pub fn sysfs(&self) -> &FakeSysfs {
        &self.sysfs
    }

    /// Plugs `device` into the bus and describes it in the fake sysfs.
    pub(crate) fn plug(&self, device: Device) -> BusId {
        let busid = self
            .bus
            .add_next(device.factory(&self.keyboard, &self.audio))
            .expect("a free port on the emulated bus");
        self.sysfs
            .add_device(&device.sysfs(&busid))
            .expect("the device's fake sysfs entry");
        self.plugged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(busid);
        busid
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// Logs of the code under test, filtered by `PVUSB_LOG` and captured per
/// test; once per process.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("PVUSB_LOG"))
        .with_test_writer()
        .try_init();
}
