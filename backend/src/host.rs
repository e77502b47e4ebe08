//! A [`UsbHost`] made of the libusb host and the emulated bus, routing by
//! busid: the emulated bus has bus number 200, far above real buses.

use std::sync::Arc;
use std::time::Duration;

use crate::usb::emulated::{EmulatedHost, EMULATED_BUS};
use crate::usb::{
    BusId, CompletionSink, DeviceInfo, DeviceIo, HotplugHandler, IoFd, UsbDevice, UsbError, UsbHost,
};

/// Real devices (if libusb initialised) plus emulated ones.
#[derive(Clone)]
pub struct CompositeHost {
    emulated: EmulatedHost,
    real: Option<Arc<dyn UsbHost>>,
}

impl std::fmt::Debug for CompositeHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompositeHost")
            .field("emulated", &self.emulated)
            .field("real", &self.real.is_some())
            .finish()
    }
}

impl CompositeHost {
    /// Emulated devices only, or with a real host.
    pub fn new(emulated: EmulatedHost, real: Option<Arc<dyn UsbHost>>) -> Self {
        Self { emulated, real }
    }

    /// The emulated bus.
    pub fn emulated(&self) -> &EmulatedHost {
        &self.emulated
    }
}

/// A controller's I/O over both buses. The real side is created on the
/// first open of a real device, so a controller with emulated devices only
/// never creates a libusb context.
struct CompositeIo {
    emulated: Box<dyn DeviceIo>,
    real_host: Option<Arc<dyn UsbHost>>,
    real: Option<Box<dyn DeviceIo>>,
}

impl DeviceIo for CompositeIo {
    fn open(
        &mut self,
        busid: &BusId,
        sink: Arc<dyn CompletionSink>,
    ) -> Result<Box<dyn UsbDevice>, UsbError> {
        if busid.bus() == EMULATED_BUS {
            return self.emulated.open(busid, sink);
        }
        let host = self.real_host.as_ref().ok_or(UsbError::NotFound(*busid))?;
        self.real
            .get_or_insert_with(|| host.device_io())
            .open(busid, sink)
    }

    fn poll_fds<'a>(&'a self, out: &mut Vec<IoFd<'a>>) {
        self.emulated.poll_fds(out);
        if let Some(r) = self.real.as_ref() {
            r.poll_fds(out);
        }
    }

    fn polls(&self) -> bool {
        self.emulated.polls() || self.real.as_ref().is_some_and(|r| r.polls())
    }

    fn run_ready(&mut self, wait: Duration) {
        self.emulated.run_ready(Duration::ZERO);
        if let Some(r) = self.real.as_mut() {
            r.run_ready(wait);
        }
    }
}

impl UsbHost for CompositeHost {
    fn list(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        let mut all = self.emulated.list()?;
        if let Some(r) = &self.real {
            all.extend(r.list()?);
        }
        Ok(all)
    }

    fn device_io(&self) -> Box<dyn DeviceIo> {
        Box::new(CompositeIo {
            emulated: self.emulated.device_io(),
            real_host: self.real.clone(),
            real: None,
        })
    }

    fn set_hotplug_handler(&self, handler: HotplugHandler) {
        if let Some(r) = &self.real {
            r.set_hotplug_handler(Arc::clone(&handler));
        }
        self.emulated.set_hotplug_handler(handler);
    }
}
