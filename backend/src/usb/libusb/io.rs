//! One controller's libusb I/O: its private context (created on the first
//! real device), the devices wrapped into it, and the event handling the
//! controller's loop runs when their descriptors are ready.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use pvusb_support::Chain;
use rusb::{Context, UsbContext};

use super::device::LibusbDevice;
use super::ffi::IoContext;
use super::status::usb_error;
use super::Discovery;
use crate::ratelimit::RateLimiter;
use crate::usb::error::UsbError;
use crate::usb::proto::BusId;
use crate::usb::traits::{CompletionSink, DeviceIo, IoFd, UsbDevice};
use crate::usb::types::DeviceInfo;

/// Timeout for reading string descriptors when opening a device.
const STRING_TIMEOUT: Duration = Duration::from_secs(1);

/// A controller's libusb I/O.
pub struct LibusbIo {
    discovery: Arc<Discovery>,
    context: Option<IoContext>,
    limiter: RateLimiter,
}

impl std::fmt::Debug for LibusbIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibusbIo")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl LibusbIo {
    pub(super) fn new(discovery: Arc<Discovery>) -> Self {
        Self {
            discovery,
            context: None,
            limiter: RateLimiter::default(),
        }
    }

    fn context(&mut self) -> Result<&IoContext, UsbError> {
        if self.context.is_none() {
            let created = IoContext::new().map_err(|e| {
                UsbError::NoHostUsb(format!("controller context: {e}", e = Chain(&e)))
            })?;
            self.context = Some(created);
        }
        self.context
            .as_ref()
            .ok_or_else(|| UsbError::NoHostUsb("controller context".to_owned()))
    }
}

/// Fills in the string descriptors (best effort: many devices have none).
fn read_strings(info: &mut DeviceInfo, handle: &rusb::DeviceHandle<Context>) {
    let Ok(desc) = handle.device().device_descriptor() else {
        return;
    };
    let lang = handle
        .read_languages(STRING_TIMEOUT)
        .ok()
        .and_then(|l| l.first().copied());
    if let Some(lang) = lang {
        info.manufacturer = handle
            .read_manufacturer_string(lang, &desc, STRING_TIMEOUT)
            .ok();
        info.product = handle.read_product_string(lang, &desc, STRING_TIMEOUT).ok();
        info.serial = handle
            .read_serial_number_string(lang, &desc, STRING_TIMEOUT)
            .ok();
    }
}

impl DeviceIo for LibusbIo {
    fn open(
        &mut self,
        busid: &BusId,
        sink: Arc<dyn CompletionSink>,
    ) -> Result<Box<dyn UsbDevice>, UsbError> {
        let node = self.discovery.open_node(busid)?;
        let context = self.context()?;
        let handle = context
            .wrap(node.fd.as_raw_fd())
            .map_err(|e| usb_error(*busid, "open", e))?;
        let mut info = node.info;
        read_strings(&mut info, &handle);
        let events = context.context().clone();
        let opened = LibusbDevice::new(info, handle, node.fd, sink, events)?;
        Ok(Box::new(opened))
    }

    fn poll_fds<'a>(&'a self, out: &mut Vec<IoFd<'a>>) {
        if let Some(c) = self.context.as_ref() {
            c.poll_fds(out);
        }
    }

    fn polls(&self) -> bool {
        self.context.is_some()
    }

    fn run_ready(&mut self, wait: Duration) {
        let Some(c) = self.context.as_ref() else {
            return;
        };
        match c.context().handle_events(Some(wait)) {
            Ok(()) | Err(rusb::Error::Interrupted) => {}
            Err(e) => {
                if let crate::ratelimit::Verdict::Log { suppressed } = self.limiter.check() {
                    tracing::warn!(error = %Chain(&e), suppressed, "libusb event handling failed");
                }
            }
        }
    }
}
