//! The toolstack in a [`World`]: the real `pvusb_toolstack::Toolstack` over
//! the world's xenstore and fake sysfs, as the `pvusb` commands run it.

use std::sync::Arc;
use std::time::Duration;

use pvusb_frontend::Frontend;
use pvusb_protocol::xenstore::frontend_dir;
use pvusb_toolstack::{Sysfs, SysfsRoot, Toolstack};
use pvusb_xenstore::{Tx, XsClient};

use crate::background::Background;
use crate::wait::{wait_for, LIVENESS};
use crate::world::World;

/// The toolstack as the `pvusb` commands build it.
pub type Ts = Toolstack<XsClient, SysfsRoot>;

/// How often the reaper looks again without an event.
const REAPER_POLL: Duration = Duration::from_millis(200);

impl World {
    /// A toolstack with its own xenstore connection (as each `pvusb`
    /// command has), waiting at most the liveness bound for the backend.
    pub fn toolstack(&self) -> Ts {
        let mut ts = Toolstack::new(self.client(), self.sysfs().sysfs(), 0);
        ts.timeout = LIVENESS;
        ts
    }

    /// `ctrl-attach` (USB 2, two ports) for `domid`, which waits for the
    /// connection, with the guest's frontend connecting meanwhile as its
    /// xen-hcd would. Returns the controller's devid and the frontend.
    pub fn ctrl_attach(&self, ts: &Ts, domid: u16) -> (u32, Frontend) {
        let dir = self.dir().to_owned();
        let xs = Arc::clone(self.xs());
        let guest = std::thread::spawn(move || {
            let state = format!("{}/state", frontend_dir(domid, 0));
            wait_for("the frontend node", || {
                xs.exists(Tx::NONE, &state).unwrap_or(false)
            });
            crate::frontend::connect(&dir, xs, domid, 0, crate::frontend::options())
        });
        let c = ts.ctrl_attach(domid, 2, 2).expect("ctrl-attach");
        (c.devid, guest.join().expect("the guest thread"))
    }

    /// The driver an interface (`200-1:1.0`) is bound to in the fake sysfs.
    pub fn driver(&self, interface: &str) -> Option<String> {
        self.sysfs()
            .sysfs()
            .interface_driver(interface)
            .expect("the fake sysfs")
    }

    /// The drivers of a device's interfaces in the fake sysfs.
    pub fn drivers(&self, busid: &str) -> Vec<Option<String>> {
        self.sysfs()
            .sysfs()
            .device(busid)
            .expect("a device in the fake sysfs")
            .interfaces
            .into_iter()
            .map(|i| i.driver)
            .collect()
    }
}

/// The reaper as `pvusb backend` runs it (`cmd_backend.rs`,
/// `start_reaper`): its own toolstack, stopped on drop.
#[derive(Debug)]
pub struct Reaper {
    _thread: Background,
}

impl Reaper {
    /// Starts it in `world`.
    pub fn start(world: &World) -> Self {
        let ts = world.toolstack();
        let thread = Background::spawn(move |running| {
            ts.run_reaper(REAPER_POLL, || running.get())
                .expect("the reaper runs");
        });
        Self { _thread: thread }
    }
}
