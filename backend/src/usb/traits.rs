//! The narrow traits the URB engine drives devices through.

use std::sync::Arc;

use super::error::UsbError;
use super::proto::BusId;
use super::types::{Completion, DeviceInfo, HotplugHandler, Transfer, TransferId};

/// Receives completions.
///
/// It may be called synchronously from inside [`UsbDevice::submit`] or
/// [`UsbDevice::cancel`], or from any other thread (libusb's event thread, an
/// emulated device's timer). It must not block and must not call back into
/// the device: implementations queue the completion and return.
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

/// A source of host devices: libusb, or the emulated bus.
pub trait UsbHost: Send + Sync {
    /// The devices present now.
    fn list(&self) -> Result<Vec<DeviceInfo>, UsbError>;

    /// Opens the device at `busid` (bus number + port path), detaches kernel
    /// drivers from every interface of the active configuration and claims
    /// them. Hubs are refused with [`UsbError::IsHub`].
    fn open(
        &self,
        busid: &BusId,
        sink: Arc<dyn CompletionSink>,
    ) -> Result<Box<dyn UsbDevice>, UsbError>;

    /// Installs the function called on hot-plug and hot-unplug (replacing any
    /// previous one). libusb calls it from its event thread; the emulated bus
    /// calls it from `add`/`remove`/`replug` and, for a device that vanishes,
    /// from inside that device's `submit` (after its locks are released). It
    /// must not block: queue the event and return.
    fn set_hotplug_handler(&self, handler: HotplugHandler);
}
