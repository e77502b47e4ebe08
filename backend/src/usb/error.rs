//! Errors of the host-USB layer. Each message names the fix.

use super::proto::BusId;

/// Why a host-USB operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsbError {
    /// libusb could not create a context (typically no `/dev/bus/usb`).
    #[error("no host USB: libusb could not initialise (no /dev/bus/usb?): {0}; emulated devices still work")]
    NoHostUsb(String),
    /// Nothing at that busid.
    #[error("no USB device at busid {0}: check `lsusb -t` for the bus and port path")]
    NotFound(BusId),
    /// Hubs cannot be passed through.
    #[error(
        "device {0} is a hub: hubs cannot be passed through; assign the devices behind it instead"
    )]
    IsHub(BusId),
    /// Permission denied on the device node.
    #[error("no permission to open device {0}: run the backend as root (or grant access to /dev/bus/usb)")]
    Access(BusId),
    /// Another program or kernel driver holds the device.
    #[error("device {0} is busy: another program holds it; stop it or detach it first")]
    Busy(BusId),
    /// A host driver holds an interface and this process may not detach it
    /// (a worker's descriptor, whose usbfs privileges the monitor dropped).
    #[error("a host driver is bound to interface {interface} of device {busid} and this process cannot detach it: unbind it on the host (sysfs) and open the device again")]
    DriverBound {
        /// Which device.
        busid: BusId,
        /// bInterfaceNumber.
        interface: u8,
    },
    /// The device went away.
    #[error("device {0} disappeared: it was unplugged or re-enumerated; plug it in again")]
    NoDevice(BusId),
    /// The device was shut down already.
    #[error("device {0} was shut down: open it again")]
    Closed(BusId),
    /// Any other libusb failure.
    #[error("USB operation `{op}` on device {busid} failed: {detail}; check dmesg for the device")]
    Io {
        /// Which device.
        busid: BusId,
        /// What was being done.
        op: &'static str,
        /// The library's message.
        detail: String,
    },
    /// The emulated bus already has a device there.
    #[error("busid {0} is already in use on the emulated bus: remove that device first")]
    AlreadyPresent(BusId),
    /// A device's descriptors are inconsistent.
    /// A SuperSpeed device that cannot be shown as high speed (spec 12.16).
    #[error("SuperSpeed device {0} cannot run at high speed ({1}); the usbif protocol has no SuperSpeed")]
    NeedsSuperSpeed(BusId, HighSpeedObstacle),
    /// A configuration descriptor could not be read.
    #[error("cannot read configuration {configuration} of device {busid}: unplug and replug it")]
    BadDescriptors {
        /// The device.
        busid: BusId,
        /// The configuration's index.
        configuration: u8,
    },
}

/// Why a SuperSpeed device cannot be shown on a high-speed port (spec
/// 12.16): the endpoint in the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HighSpeedObstacle {
    /// High speed has no isochronous endpoint of SuperSpeed's size.
    #[error("endpoint {0:#04x} is isochronous")]
    Isochronous(u8),
    /// High speed has no bulk streams.
    #[error("endpoint {0:#04x} uses bulk streams")]
    BulkStreams(u8),
    /// Above high speed's largest interrupt packet.
    #[error("interrupt endpoint {address:#04x} has wMaxPacketSize {max_packet_size}")]
    LargeInterrupt {
        /// bEndpointAddress.
        address: u8,
        /// wMaxPacketSize.
        max_packet_size: u16,
    },
}
