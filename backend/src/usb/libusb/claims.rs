//! Which interfaces the backend claimed and which kernel drivers it detached,
//! so they can be released and given back (QEMU `usb-host` does the same).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use pvusb_support::Chain;
use rusb::{Context, DeviceHandle};

use super::status::usb_error;
use crate::usb::error::UsbError;
use crate::usb::proto::BusId;

/// Pause between attempts while a freshly plugged device settles.
const CLAIM_RETRY: Duration = Duration::from_millis(20);
/// Extra claim attempts when a kernel driver raced us to an interface.
const CLAIM_ATTEMPTS: u32 = 10;
/// How long a device opened right after it was plugged in may take to be
/// configured by the kernel.
pub(super) const OPEN_SETTLE: Duration = Duration::from_secs(2);

/// Which step of taking an interface failed.
#[derive(Debug)]
enum ClaimFailure {
    /// Detaching the kernel driver bound to it.
    Detach(rusb::Error),
    /// Claiming it.
    Claim(rusb::Error),
}

impl ClaimFailure {
    fn into_usb_error(self, busid: BusId, interface: u8) -> UsbError {
        match self {
            // libusb reports usbfs's EACCES (a descriptor whose privileges
            // were dropped, see `handoff`) as "other", as it does rarer
            // failures (a device unconfigured meanwhile): the message is
            // right for the case that happens.
            ClaimFailure::Detach(rusb::Error::Other) => UsbError::DriverBound { busid, interface },
            ClaimFailure::Detach(e) => usb_error(busid, "detach kernel driver", e),
            ClaimFailure::Claim(e) => usb_error(busid, "claim interface", e),
        }
    }
}

/// Claimed interfaces and detached kernel drivers of one open device.
#[derive(Debug, Default)]
pub(super) struct Claims {
    claimed: BTreeSet<u8>,
    detached: BTreeSet<u8>,
}

impl Claims {
    /// Detaches kernel drivers from and claims every interface of the active
    /// configuration. On failure everything claimed so far is released.
    ///
    /// `settle`: how long an unconfigured device may take to become configured.
    /// A device that has just been plugged in is opened (hotplug "arrived") before
    /// the kernel has chosen its configuration and bound its drivers; claiming
    /// nothing then would let the host driver (e.g. usb-storage) bind a moment
    /// later and drive the device alongside the guest — the Xen test-bed's
    /// hotplug scenario caught exactly that. A guest's own SET_CONFIGURATION
    /// passes zero: an unconfigured device is what it asked for.
    pub(super) fn claim_active(
        &mut self,
        handle: &DeviceHandle<Context>,
        busid: BusId,
        settle: Duration,
    ) -> Result<(), UsbError> {
        let device = handle.device();
        let deadline = Instant::now() + settle;
        let config = loop {
            // A device wrapped from a descriptor (no sysfs path in libusb)
            // answers `active_config_descriptor` from the configuration
            // cached when it was wrapped; asking the device for it
            // (GET_CONFIGURATION through usbfs) refreshes that cache, so a
            // device the kernel configures meanwhile is seen configured.
            let _ = handle.active_configuration();
            match device.active_config_descriptor() {
                Ok(c) => break c,
                Err(rusb::Error::NotFound) if Instant::now() < deadline => {
                    std::thread::sleep(CLAIM_RETRY);
                }
                // Unconfigured: nothing to claim.
                Err(rusb::Error::NotFound) => return Ok(()),
                Err(e) => return Err(usb_error(busid, "read configuration", e)),
            }
        };
        for number in config.interfaces().map(|i| i.number()) {
            if let Err(failure) = self.claim_one(handle, number) {
                self.release_all(handle);
                return Err(failure.into_usb_error(busid, number));
            }
        }
        Ok(())
    }

    /// Detaches the kernel driver (if any) and claims the interface. A driver
    /// the kernel binds between the two steps (a device that was just plugged in)
    /// makes the claim fail busy: detach and claim again, a bounded number of times.
    ///
    /// An interface the monitor already claimed on a worker's descriptor
    /// (`handoff`) reads as held by "usbfs", not by a kernel driver, and
    /// claiming it again is a no-op.
    fn claim_one(
        &mut self,
        handle: &DeviceHandle<Context>,
        number: u8,
    ) -> Result<(), ClaimFailure> {
        let mut attempt = 0;
        loop {
            // NotSupported: the platform has no kernel drivers to detach.
            if handle.kernel_driver_active(number).unwrap_or(false) {
                match handle.detach_kernel_driver(number) {
                    // NotFound: it went away by itself in the meantime.
                    Ok(()) | Err(rusb::Error::NotFound) => {
                        self.detached.insert(number);
                    }
                    Err(e) => return Err(ClaimFailure::Detach(e)),
                }
            }
            match handle.claim_interface(number) {
                Ok(()) => {
                    self.claimed.insert(number);
                    return Ok(());
                }
                Err(rusb::Error::Busy) if attempt < CLAIM_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(CLAIM_RETRY);
                }
                Err(e) => return Err(ClaimFailure::Claim(e)),
            }
        }
    }

    /// The first interface claimed here that a kernel driver holds now:
    /// after a reset, libusb re-claims the interfaces, and on a worker's
    /// descriptor (see `handoff`) it cannot take one back from a host
    /// driver that bound during the reset.
    pub(super) fn taken_by_driver(&self, handle: &DeviceHandle<Context>) -> Option<u8> {
        self.claimed
            .iter()
            .copied()
            .find(|&n| handle.kernel_driver_active(n).unwrap_or(false))
    }

    /// Releases every claimed interface (kernel drivers stay detached, so a
    /// following SET_CONFIGURATION is not refused as busy).
    pub(super) fn release_all(&mut self, handle: &DeviceHandle<Context>) {
        for number in std::mem::take(&mut self.claimed) {
            if let Err(e) = handle.release_interface(number) {
                tracing::debug!(interface = number, error = %Chain(&e), "release interface failed");
            }
        }
    }

    /// Releases everything and re-attaches the kernel drivers detached earlier.
    pub(super) fn give_back(&mut self, handle: &DeviceHandle<Context>) {
        self.release_all(handle);
        for number in std::mem::take(&mut self.detached) {
            if let Err(e) = handle.attach_kernel_driver(number) {
                // Expected after a configuration change or an unplug.
                tracing::debug!(interface = number, error = %Chain(&e), "re-attaching kernel driver failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A detach usbfs refuses (a worker's descriptor) names the interface
    /// and the fix; other failures keep their usual mapping.
    #[test]
    fn a_refused_detach_names_the_interface() {
        let b: BusId = "1-2".parse().unwrap();
        let bound = ClaimFailure::Detach(rusb::Error::Other).into_usb_error(b, 3);
        assert_eq!(
            bound,
            UsbError::DriverBound {
                busid: b,
                interface: 3
            }
        );
        assert!(bound.to_string().contains("interface 3 of device 1-2"));
        assert!(bound.to_string().contains("unbind it on the host"));
        assert_eq!(
            ClaimFailure::Detach(rusb::Error::NoDevice).into_usb_error(b, 3),
            UsbError::NoDevice(b)
        );
        assert_eq!(
            ClaimFailure::Claim(rusb::Error::Busy).into_usb_error(b, 3),
            UsbError::Busy(b)
        );
        assert!(matches!(
            ClaimFailure::Claim(rusb::Error::Other).into_usb_error(b, 3),
            UsbError::Io {
                op: "claim interface",
                ..
            }
        ));
    }
}
