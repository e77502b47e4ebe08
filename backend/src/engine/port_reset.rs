//! A guest's port reset, carried out on the real device.
//!
//! WHY: xen-hcd and vhci-hcd reset their root-hub ports locally; usbif has
//! no message for it (spec 9). The guest then enumerates the device again,
//! which the backend sees as a SET_ADDRESS to a device that already had an
//! address. A driver resets a port to recover a device from a state it
//! cannot fix otherwise: usb-storage does so when a command block stalls
//! because the device is still in an earlier command's data phase (a
//! daemon killed mid-READ leaves it there). Unless the backend resets the
//! device too, every retry stalls the same way.
//!
//! The reset blocks this controller's loop while the host resets the port
//! (milliseconds to a few hundred), as a port reset does on real hardware;
//! other guests' controllers run in their own processes. A guest that
//! re-enumerates in a loop gets at most one reset per port per
//! [`MIN_INTERVAL`], so it cannot keep a physical hub busy.

use std::time::{Duration, Instant};

use pvusb_support::Chain;

use super::resources::Resources;
use crate::guest_warn;
use crate::stats::Stats;
use crate::usb::UsbDevice;

/// Shortest time between two resets of one port's device.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// When each port's device was last reset for its guest.
#[derive(Debug)]
pub(super) struct PortResets {
    last: Vec<Option<Instant>>,
}

impl PortResets {
    pub(super) fn new(num_ports: u8) -> Self {
        Self {
            last: vec![None; usize::from(num_ports)],
        }
    }

    /// Resets `device`, on root-hub port `port`, unless it was reset for
    /// its guest less than [`MIN_INTERVAL`] ago. A failed reset is logged;
    /// the device stays attached (a device that went away is reported by
    /// hotplug).
    pub(super) fn reset(&mut self, port: u8, device: &mut dyn UsbDevice, res: &mut Resources) {
        let Some(last) = usize::from(port)
            .checked_sub(1)
            .and_then(|i| self.last.get_mut(i))
        else {
            return;
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < MIN_INTERVAL) {
            return;
        }
        *last = Some(now);
        Stats::inc(&res.stats.device_resets);
        let busid = device.info().busid;
        tracing::debug!(domid = res.domid, port, %busid, "the guest enumerates its device again: resetting it");
        if let Err(e) = device.reset() {
            guest_warn!(
                res.limiter,
                domid = res.domid,
                port,
                %busid,
                "resetting the device for its guest's port reset failed: {e}",
                e = Chain(&e)
            );
        }
    }
}
