//! What an emulated device implements: only its behaviour. The framework
//! ([`super::framework`]) does standard requests, endpoint queues, halts,
//! cancellation and completion delivery.

use std::sync::Weak;

use super::descriptors::DeviceSpec;
use super::framework::Shared;
use crate::usb::proto::{SetupPacket, TransferOutcome};
use crate::usb::types::{IsoPacket, IsoPacketResult, TransferId};

/// A device's answer to one attempt at a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Finished; this many bytes were transferred (IN: written to the buffer).
    Done(usize),
    /// Refuse: a control request STALLs; a data endpoint halts until CLEAR_FEATURE(HALT).
    Stall,
    /// Not yet: the framework retries when the device calls [`Kicker::kick`].
    /// Later transfers on the same endpoint wait behind this one.
    Pending,
    /// Finished with this (error) outcome and nothing transferred.
    Fail(TransferOutcome),
    /// The device vanished: this and every other transfer in flight complete
    /// `NoDevice`, and the emulated bus reports it gone.
    Gone,
}

/// A class or vendor control request (standard requests never reach the device,
/// except GET_DESCRIPTOR addressed to an interface, e.g. HID report descriptors).
#[derive(Debug)]
pub struct ControlRequest<'a> {
    /// The transfer's id (stable across retries of a pending request).
    pub id: TransferId,
    /// False when this is a retry after [`Reply::Pending`].
    pub first_attempt: bool,
    /// The setup stage.
    pub setup: SetupPacket,
    /// OUT: the data stage; IN: the buffer to fill (at most `wLength` bytes).
    pub data: &'a mut [u8],
}

/// The transfer type of a [`DataRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind<'a> {
    /// Bulk.
    Bulk,
    /// Interrupt.
    Interrupt,
    /// Isochronous with these packets (already checked to lie inside the buffer).
    Isochronous(&'a [IsoPacket]),
}

/// A transfer on a non-zero endpoint, already checked to exist in the current
/// configuration with the right type.
#[derive(Debug)]
pub struct DataRequest<'a> {
    /// The transfer's id (stable across retries of a pending request).
    pub id: TransferId,
    /// False when this is a retry after [`Reply::Pending`].
    pub first_attempt: bool,
    /// bEndpointAddress.
    pub endpoint: u8,
    /// Transfer type.
    pub kind: DataKind<'a>,
    /// OUT: the payload; IN: the buffer to fill.
    pub buffer: &'a mut [u8],
    /// Isochronous only: push one result per packet (missing ones count as failed).
    pub iso_results: &'a mut Vec<IsoPacketResult>,
}

/// A device's behaviour.
pub trait EmulatedDevice: Send + 'static {
    /// The device's descriptors (read once when opened).
    fn spec(&self) -> DeviceSpec;

    /// Called once when opened, with the handle that wakes pending transfers.
    fn attach(&mut self, _kicker: Kicker) {}

    /// A class or vendor control request. Default: STALL.
    fn control(&mut self, _req: ControlRequest<'_>) -> Reply {
        Reply::Stall
    }

    /// A bulk, interrupt or isochronous transfer.
    fn data(&mut self, req: DataRequest<'_>) -> Reply;

    /// SET_CONFIGURATION succeeded (0 = unconfigured).
    fn configuration_changed(&mut self, _value: u8) {}

    /// SET_INTERFACE succeeded.
    fn interface_changed(&mut self, _interface: u8, _alt_setting: u8) {}

    /// CLEAR_FEATURE(ENDPOINT_HALT) on one of the device's endpoints.
    fn halt_cleared(&mut self, _endpoint: u8) {}

    /// A bus reset.
    fn reset(&mut self) {}

    /// A pending transfer was cancelled (forget any state kept for `id`).
    fn cancelled(&mut self, _id: TransferId) {}
}

/// Wakes an emulated device's pending transfers: the framework retries the
/// oldest transfer of every endpoint. Cheap to clone; harmless after the
/// device was closed.
#[derive(Clone, Debug)]
pub struct Kicker {
    pub(super) shared: Weak<Shared>,
}

impl Kicker {
    /// Retry pending transfers now. Must not be called while holding a lock
    /// the device's own methods take (they run inside this call).
    pub fn kick(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.kick();
        }
    }

    /// A kicker attached to nothing (for devices used outside a framework).
    pub fn detached() -> Self {
        Self {
            shared: Weak::new(),
        }
    }
}
