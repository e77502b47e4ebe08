//! Which interfaces the backend claimed and which kernel drivers it detached,
//! so they can be released and given back (QEMU `usb-host` does the same).

use std::collections::BTreeSet;

use rusb::{Context, DeviceHandle};

use super::status::usb_error;
use crate::usb::error::UsbError;
use crate::usb::proto::BusId;

/// Claimed interfaces and detached kernel drivers of one open device.
#[derive(Debug, Default)]
pub(super) struct Claims {
    claimed: BTreeSet<u8>,
    detached: BTreeSet<u8>,
}

impl Claims {
    /// Detaches kernel drivers from and claims every interface of the active
    /// configuration. On failure everything claimed so far is released.
    pub(super) fn claim_active(
        &mut self,
        handle: &DeviceHandle<Context>,
        busid: BusId,
    ) -> Result<(), UsbError> {
        let device = handle.device();
        let config = match device.active_config_descriptor() {
            Ok(c) => c,
            // Unconfigured: nothing to claim.
            Err(rusb::Error::NotFound) => return Ok(()),
            Err(e) => return Err(usb_error(busid, "read configuration", e)),
        };
        for number in config.interfaces().map(|i| i.number()) {
            if let Err(e) = self.claim_one(handle, number) {
                self.release_all(handle);
                return Err(usb_error(busid, "claim interface", e));
            }
        }
        Ok(())
    }

    fn claim_one(&mut self, handle: &DeviceHandle<Context>, number: u8) -> rusb::Result<()> {
        // NotSupported: the platform has no kernel drivers to detach.
        if handle.kernel_driver_active(number).unwrap_or(false) {
            handle.detach_kernel_driver(number)?;
            self.detached.insert(number);
        }
        handle.claim_interface(number)?;
        self.claimed.insert(number);
        Ok(())
    }

    /// Releases every claimed interface (kernel drivers stay detached, so a
    /// following SET_CONFIGURATION is not refused as busy).
    pub(super) fn release_all(&mut self, handle: &DeviceHandle<Context>) {
        for number in std::mem::take(&mut self.claimed) {
            if let Err(e) = handle.release_interface(number) {
                tracing::debug!(interface = number, error = %e, "release interface failed");
            }
        }
    }

    /// Releases everything and re-attaches the kernel drivers detached earlier.
    pub(super) fn give_back(&mut self, handle: &DeviceHandle<Context>) {
        self.release_all(handle);
        for number in std::mem::take(&mut self.detached) {
            if let Err(e) = handle.attach_kernel_driver(number) {
                // Expected after a configuration change or an unplug.
                tracing::debug!(interface = number, error = %e, "re-attaching kernel driver failed");
            }
        }
    }
}
