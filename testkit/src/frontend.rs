//! Frontends in a [`World`]: the real `pvusb_frontend::Frontend`, in the
//! test's process, acting as a guest over the simulated transport.

use std::path::Path;
use std::sync::Arc;

use pvusb_frontend::{Frontend, Options};
use pvusb_xen::sim::SimXen;
use pvusb_xenstore::XsClient;

use crate::wait::LIVENESS;
use crate::world::World;

/// The options of [`World::frontend`]: the handshake bounded by the
/// liveness bound, the rest the library's defaults (tests that close on a
/// dead backend wait for the close timeout).
pub(crate) fn options() -> Options {
    Options {
        handshake_timeout: LIVENESS,
        ..Options::default()
    }
}

impl World {
    /// Connects controller `devid` of guest `domid` (its nodes written; the
    /// handshake waits for the backend).
    pub fn frontend(&self, domid: u16, devid: u32) -> Frontend {
        self.frontend_with(domid, devid, options())
    }

    /// [`World::frontend`] with `options`.
    pub fn frontend_with(&self, domid: u16, devid: u32, options: Options) -> Frontend {
        connect(self.dir(), Arc::clone(self.xs()), domid, devid, options)
    }
}

/// A frontend of `domid` over the simulation in `dir`, from any thread.
pub(crate) fn connect(
    dir: &Path,
    xs: Arc<XsClient>,
    domid: u16,
    devid: u32,
    options: Options,
) -> Frontend {
    let xen = Arc::new(SimXen::new(dir, domid));
    Frontend::connect(xs, xen, domid, devid, options).expect("the frontend connects")
}
