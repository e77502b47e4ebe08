//! The privileged half of opening a host device, as a trait: find the device
//! and open its usbfs node. A controller's libusb I/O (`LibusbIo`)
//! only wraps the descriptor it is given, so the same I/O code runs in the
//! daemon (the opener is the daemon's own device discovery) and in a confined
//! worker (the opener asks the monitor, which passes the descriptor over a
//! socket).

use std::os::fd::OwnedFd;

use crate::usb::error::UsbError;
use crate::usb::proto::BusId;
use crate::usb::types::DeviceInfo;

/// Opens host devices' usbfs nodes for a controller.
///
/// Errors pass through [`DeviceIo::open`](crate::usb::DeviceIo::open)
/// unchanged, so an implementation that forwards a remote answer should
/// return the variant the remote side returned (`NotFound`, `Access`, ...).
pub trait NodeOpener: Send + Sync {
    /// Finds the device at `busid`, applies what is refused before opening
    /// (hubs, SuperSpeed-only devices) and returns its node
    /// `/dev/bus/usb/BBB/DDD` opened read-write, with what is known about
    /// the device.
    fn open_node(&self, busid: &BusId) -> Result<OpenedNode, UsbError>;
}

/// A device found on the bus, with its node opened read-write: what a
/// controller's context needs to wrap it. `info` is serializable, so a
/// monitor can send it along with the descriptor.
#[derive(Debug)]
pub struct OpenedNode {
    /// What the opener learnt about the device (strings are read later, by
    /// the controller that wraps it).
    pub info: DeviceInfo,
    /// The device's usbfs node.
    pub fd: OwnedFd,
}
