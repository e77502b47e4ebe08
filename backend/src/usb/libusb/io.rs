//! One controller's libusb I/O: its private context (created on the first
//! real device, or earlier by [`LibusbIo::prepare`]), the devices wrapped
//! into it from the descriptors its [`NodeOpener`] returns, and the event
//! handling the controller's loop runs when their descriptors are ready.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use pvusb_support::Chain;
use rusb::{Context, UsbContext};

use super::device::LibusbDevice;
use super::ffi::IoContext;
use super::status::usb_error;
use crate::ratelimit::RateLimiter;
use crate::usb::error::UsbError;
use crate::usb::opener::NodeOpener;
use crate::usb::proto::BusId;
use crate::usb::traits::{CompletionSink, DeviceIo, IoFd, UsbDevice};
use crate::usb::types::DeviceInfo;

/// Timeout for reading string descriptors when opening a device.
const STRING_TIMEOUT: Duration = Duration::from_secs(1);

/// A controller's libusb I/O.
pub struct LibusbIo {
    opener: Arc<dyn NodeOpener>,
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
    /// An I/O without a context yet, that opens devices' nodes through
    /// `opener`: the daemon's device discovery in one process, the monitor
    /// in a worker.
    pub fn with_opener(opener: Arc<dyn NodeOpener>) -> Self {
        Self {
            opener,
            context: None,
            limiter: RateLimiter::default(),
        }
    }

    /// Creates the controller's libusb context now rather than at the first
    /// open: libusb needs `/dev/bus/usb` to create one, so a process that is
    /// about to give up file-system access calls this first. From then on
    /// [`DeviceIo::polls`] is true (the context has its own descriptors).
    pub fn prepare(&mut self) -> Result<(), UsbError> {
        self.context().map(drop)
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
        let node = self.opener.open_node(busid)?;
        if node.info.busid != *busid {
            // A confused (or hostile) opener must not make this controller
            // drive another device than the one the guest was given.
            return Err(UsbError::Io {
                busid: *busid,
                op: "open",
                detail: format!("the opener returned device {}", node.info.busid),
            });
        }
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
