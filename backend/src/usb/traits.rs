//! The narrow traits the URB engine drives devices through.

use std::sync::Arc;

use super::error::UsbError;
use super::proto::BusId;
use super::types::{Completion, DeviceInfo, HotplugHandler, Transfer, TransferId};

/// Receives completions.
///
/// It may be called synchronously from inside [`UsbDevice::submit`] or
/// [`UsbDevice::cancel`], from inside [`DeviceIo::run_ready`] (libusb's
/// callbacks, on the controller's thread), or from another thread (a helper
/// running a blocking request, an emulated device unplugged by the test that
/// owns it). It must not block and must not call back into the device:
/// implementations queue the completion and return.
pub trait CompletionSink: Send + Sync {
    /// Transfer `id` finished; this happens exactly once per submitted id.
    fn complete(&self, id: TransferId, completion: Completion);
}

/// A USB device the backend drives, opened and with its interfaces claimed.
pub trait UsbDevice: Send {
    /// What the device is.
    fn info(&self) -> &DeviceInfo;

    /// Starts a transfer. Never blocks for long; every failure is delivered as
    /// a [`Completion`]. Exactly one completion per submitted id, in order per
    /// endpoint; many transfers may be in flight.
    fn submit(&mut self, id: TransferId, transfer: Transfer);

    /// Cancels a transfer: it still completes exactly once (outcome
    /// `Cancelled` unless it had already finished). Unknown ids are ignored.
    fn cancel(&mut self, id: TransferId);

    /// Resets the device (the backend does it once when attaching, spec 9).
    fn reset(&mut self) -> Result<(), UsbError>;

    /// Cancels everything, waits (bounded) until every completion was
    /// delivered, releases the interfaces and gives kernel drivers back.
    /// Later submits complete with `NoDevice`.
    fn shutdown(&mut self);
}

/// A descriptor a controller's `poll` watches for its devices' I/O.
#[derive(Debug, Clone, Copy)]
pub struct IoFd<'a> {
    /// The file descriptor.
    pub fd: std::os::fd::BorrowedFd<'a>,
    /// `poll` events to wait for (`POLLIN`, `POLLOUT`).
    pub events: i16,
}

/// One controller's device I/O: devices are opened into it, and their
/// completions run on the thread that calls [`DeviceIo::run_ready`] (the
/// controller's own loop), not on a shared event thread.
///
/// WHY per controller: a completion then needs no hand-off between threads,
/// and no other guest's devices share its locks or its thread (QEMU and
/// crosvm run a device's descriptors in the loop that serves its ring, too).
pub trait DeviceIo: Send {
    /// Opens the device at `busid` (bus number + port path), detaches kernel
    /// drivers from every interface of the active configuration and claims
    /// them. Hubs are refused with [`UsbError::IsHub`].
    fn open(
        &mut self,
        busid: &BusId,
        sink: Arc<dyn CompletionSink>,
    ) -> Result<Box<dyn UsbDevice>, UsbError>;

    /// Appends the descriptors to poll for the open devices (none for
    /// devices that complete without a descriptor, like emulated ones).
    fn poll_fds<'a>(&'a self, out: &mut Vec<IoFd<'a>>);

    /// Whether there is anything to poll or run (a real device was opened).
    fn polls(&self) -> bool;

    /// Runs the I/O that is ready, waiting at most `wait` for some (zero:
    /// never blocks). Completion callbacks run inside, on the caller's thread.
    fn run_ready(&mut self, wait: std::time::Duration);
}

/// A source of host devices: libusb, or the emulated bus. Shared by the
/// daemon and every controller.
pub trait UsbHost: Send + Sync {
    /// The devices present now.
    fn list(&self) -> Result<Vec<DeviceInfo>, UsbError>;

    /// A new, empty device I/O for one controller.
    fn device_io(&self) -> Box<dyn DeviceIo>;

    /// Installs the function called on hot-plug and hot-unplug (replacing any
    /// previous one). libusb calls it from its hotplug thread; the emulated
    /// bus calls it from `add`/`remove`/`replug` and, for a device that
    /// vanishes, from inside that device's `submit` (after its locks are
    /// released). It must not block: queue the event and return.
    fn set_hotplug_handler(&self, handler: HotplugHandler);
}
