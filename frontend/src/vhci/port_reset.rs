//! The guest's port reset, made visible to the backend.
//!
//! WHY: vhci-hcd resets its ports locally and answers SET_ADDRESS itself,
//! so nothing of a guest's port reset reaches the bridge, and the USB/IP
//! header carries no device address. What does reach it is the first
//! request of the enumeration that follows every port reset: the device
//! descriptor read with wLength 64 (Linux's "new scheme", the default for
//! every speed below SuperSpeed) or 8 (the old scheme). A driver resets a
//! port to recover a device from a state nothing else clears, such as a
//! mass-storage device left in an earlier command's data phase (a backend
//! killed mid-READ leaves it there), so the reset has to happen to the real
//! device. The bridge therefore addresses the device again through usbif
//! before it forwards that request, and the backend resets the device on a
//! SET_ADDRESS to a device that already has an address (as it does for
//! xen-hcd, whose SET_ADDRESS it sees).

use std::time::Duration;

use pvusb_protocol::usb::request::dt;
use pvusb_protocol::usbip::CmdSubmit;
use pvusb_protocol::{Direction, SetupPacket};
use pvusb_support::Chain;
use tracing::{debug, warn};

use super::translate::DeviceTarget;
use crate::frontend::Frontend;

/// How long the re-addressing may take: the backend resets the device in
/// between, which takes up to a few hundred milliseconds on real hardware.
const READDRESS_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `cmd` is the first request of an enumeration: a standard
/// GET_DESCRIPTOR(DEVICE) on endpoint 0 asking 64 or 8 bytes.
pub(super) fn starts_enumeration(cmd: &CmdSubmit) -> bool {
    let h = &cmd.header;
    let setup = SetupPacket::from_bytes(h.setup);
    h.basic.ep == 0
        && h.basic.direction == Direction::In
        && setup.is_get_descriptor()
        && setup.descriptor_type_index() == (dt::DEVICE, 0)
        && matches!(setup.w_length, 8 | 64)
}

/// Addresses the device of `target` again (SET_ADDRESS at address 0 of
/// its port, to the address it has), which the backend takes as the
/// guest's port reset. A failure is logged: the enumeration goes on and
/// tells the guest whether the device answers.
pub(super) fn readdress(front: &Frontend, target: &DeviceTarget) {
    let setup = SetupPacket::set_address(target.address);
    match front.control_out(target.port, 0, setup, &[], READDRESS_TIMEOUT) {
        Ok(_) => debug!(
            port = target.port,
            "the guest enumerates again: device re-addressed"
        ),
        Err(e) => warn!(
            port = target.port,
            error = %Chain(&e),
            "re-addressing the device for the guest's port reset failed"
        ),
    }
}
