//! A [`UsbHost`] made of the libusb host and the emulated bus, routing by
//! busid: the emulated bus has bus number 200, far above real buses.

use std::sync::Arc;

use crate::usb::emulated::{EmulatedHost, EMULATED_BUS};
use crate::usb::{BusId, CompletionSink, DeviceInfo, HotplugHandler, UsbDevice, UsbError, UsbHost};

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

    fn route(&self, busid: &BusId) -> Result<&dyn UsbHost, UsbError> {
        if busid.bus() == EMULATED_BUS {
            return Ok(&self.emulated);
        }
        self.real.as_deref().ok_or(UsbError::NotFound(*busid))
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

    fn open(
        &self,
        busid: &BusId,
        sink: Arc<dyn CompletionSink>,
    ) -> Result<Box<dyn UsbDevice>, UsbError> {
        self.route(busid)?.open(busid, sink)
    }

    fn set_hotplug_handler(&self, handler: HotplugHandler) {
        if let Some(r) = &self.real {
            r.set_hotplug_handler(Arc::clone(&handler));
        }
        self.emulated.set_hotplug_handler(handler);
    }
}
