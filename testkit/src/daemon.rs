//! The backend daemon in a [`World`]: the real `pvusb_backend::Daemon`,
//! started in the test's process over the simulated transport as domain 0.
//!
//! Controllers run as threads by default: the daemon's own code paths,
//! debuggable in one process. [`DaemonBuilder::processes`] runs each in a
//! confined worker process instead, as `pvusb backend` does by default; the
//! workers are the `pvusb` binary, and they obey injected faults
//! (`DaemonHandle::inject_fault`), which is how the containment tests crash
//! them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvusb_backend::isolation::restart::RestartPolicy;
use pvusb_backend::isolation::{ConfineSetup, Isolation, ProcessModel, TransportSetup};
use pvusb_backend::usb::emulated::{EmulatedHost, EmulatedSpec};
use pvusb_backend::usb::UsbHost;
use pvusb_backend::{CompositeHost, Daemon, DaemonConfig, DaemonHandle, StatsSnapshot};
use pvusb_xen::sim::SimXen;

use crate::controller::BACKEND_DOMID;
use crate::wait::LIVENESS;
use crate::world::World;

/// A worker that neither sleeps nor turns this long is killed (short: the
/// tests make one spin on purpose).
const STUCK_AFTER: Duration = Duration::from_secs(2);

/// A daemon to start in a world.
pub struct DaemonBuilder<'w> {
    world: &'w World,
    host: Option<Arc<dyn UsbHost>>,
    config: DaemonConfig,
}

impl std::fmt::Debug for DaemonBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonBuilder")
            .field("own_host", &self.host.is_some())
            .field("isolation", &self.config.isolation)
            .finish_non_exhaustive()
    }
}

impl World {
    /// Starts a daemon serving the world's emulated bus, controllers as
    /// threads.
    pub fn daemon(&self) -> DaemonHandle {
        self.daemon_builder().start()
    }

    /// A daemon to configure before it starts.
    pub fn daemon_builder(&self) -> DaemonBuilder<'_> {
        DaemonBuilder {
            world: self,
            host: None,
            config: DaemonConfig::new(BACKEND_DOMID),
        }
    }
}

impl DaemonBuilder<'_> {
    /// Serves `host` instead of the world's bus (a host that misbehaves).
    pub fn host(mut self, host: Arc<dyn UsbHost>) -> Self {
        self.host = Some(host);
        self
    }

    /// With `config` (its `own_domid` should stay 0).
    pub fn config(mut self, config: DaemonConfig) -> Self {
        self.config = config;
        self
    }

    /// Each controller in a confined worker process: `exe` (the `pvusb`
    /// binary) run as `backend-worker`, building the devices of `emulated`
    /// (`--emulate` specs, in order on the emulated bus: the world's own bus
    /// is not served), with fault hooks on.
    pub fn processes(self, exe: &Path, emulated: &[String]) -> Self {
        self.processes_with_rules(exe, emulated, None)
    }

    /// [`Self::processes`] with device rules (the text of a rules file),
    /// which every worker checks when it opens a device.
    pub fn processes_with_rules(
        mut self,
        exe: &Path,
        emulated: &[String],
        rules: Option<&str>,
    ) -> Self {
        let emulated = emulated
            .iter()
            .map(|s| {
                let spec = EmulatedSpec::parse(s).expect("an --emulate spec");
                let backing = spec.open_backing().expect("the device's backing");
                (spec, backing)
            })
            .collect();
        let model = ProcessModel {
            exe: exe.to_owned(),
            worker_args: vec!["backend-worker".into()],
            xenstore: self.world.xs_path(),
            transport: TransportSetup::Sim {
                dir: self.world.dir().to_owned(),
            },
            xen_devices: None,
            emulated,
            nodes: None,
            rules: rules.map(|text| ("rules.conf".into(), text.to_owned())),
            confine: ConfineSetup::full(),
            fault_hooks: true,
            restart: RestartPolicy::default(),
            stuck_after: STUCK_AFTER,
        };
        self.config.isolation = Isolation::Process(Arc::new(model));
        self.host = Some(Arc::new(CompositeHost::new(EmulatedHost::new(), None)));
        self
    }

    /// Starts it, with its own xenstore connection.
    pub fn start(self) -> DaemonHandle {
        let w = self.world;
        let host = self
            .host
            .unwrap_or_else(|| Arc::new(CompositeHost::new(w.bus().clone(), None)));
        let back = Arc::new(SimXen::new(w.dir(), BACKEND_DOMID));
        Daemon::start(
            Arc::new(w.client()),
            Arc::clone(&back),
            back,
            host,
            self.config,
        )
        .expect("the daemon starts")
    }
}

/// Waits until the counters of controller `devid` of `domid` satisfy `f`;
/// returns them.
pub fn wait_stats(
    d: &DaemonHandle,
    domid: u16,
    devid: u32,
    what: &str,
    f: impl Fn(&StatsSnapshot) -> bool,
) -> StatsSnapshot {
    let end = Instant::now() + LIVENESS;
    loop {
        if let Some(s) = d.stats(domid, devid).filter(|s| f(s)) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}: {:?}",
            d.stats(domid, devid)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
