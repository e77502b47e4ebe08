//! The root-hub ports of one controller: which host busid the toolstack put on
//! each (`port/N`), the device opened for it, and the speed last reported.
//!
//! Attach policy (spec 8, 10, 12.16): hubs are refused, and so is any device
//! whose speed the controller's usb-ver cannot report (a high-speed device on
//! a USB 1.1 controller); the port then stays empty and the log says why. A
//! device is reset once when attached (spec 9).

use std::sync::Arc;

use pvusb_protocol::UsbVer;
use pvusb_support::Chain;

use crate::engine::Devices;
use crate::error::{AttachError, BackendError};
use crate::usb::{BusId, CompletionSink, DeviceIo, Speed, UsbDevice};

#[derive(Default)]
struct Slot {
    busid: Option<BusId>,
    device: Option<Box<dyn UsbDevice>>,
}

/// The ports of a controller (index 0 is port 1).
pub struct Ports {
    slots: Vec<Slot>,
    usb_ver: UsbVer,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v: Vec<_> = self
            .slots
            .iter()
            .map(|s| (s.busid.as_ref().map(|b| b.to_string()), s.device.is_some()))
            .collect();
        f.debug_struct("Ports")
            .field("usb_ver", &self.usb_ver)
            .field("slots", &v)
            .finish()
    }
}

impl Ports {
    /// `num_ports` empty ports.
    pub fn new(num_ports: u8, usb_ver: UsbVer) -> Self {
        Self {
            slots: (0..num_ports).map(|_| Slot::default()).collect(),
            usb_ver,
        }
    }

    fn slot(&mut self, port: u8) -> Option<&mut Slot> {
        self.slots.get_mut(usize::from(port).checked_sub(1)?)
    }

    /// Ports 1..=num_ports.
    pub fn numbers(&self) -> impl Iterator<Item = u8> {
        // `new` made at most u8::MAX slots from a u8 count.
        (1..=u8::MAX).take(self.slots.len())
    }

    /// The busid configured on `port`.
    pub fn busid(&self, port: u8) -> Option<&BusId> {
        self.slots
            .get(usize::from(port).checked_sub(1)?)?
            .busid
            .as_ref()
    }

    /// The speed to report for `port` (None when empty).
    pub fn speed(&self, port: u8) -> Speed {
        let Some(slot) = usize::from(port)
            .checked_sub(1)
            .and_then(|i| self.slots.get(i))
        else {
            return Speed::None;
        };
        slot.device.as_ref().map_or(Speed::None, |d| d.info().speed)
    }

    /// Whether a device is open on `port`.
    pub fn is_attached(&self, port: u8) -> bool {
        self.speed(port) != Speed::None
    }

    /// Ports whose configured busid is `busid`.
    pub fn ports_of(&self, busid: &BusId) -> Vec<u8> {
        self.numbers()
            .filter(|&p| self.busid(p) == Some(busid))
            .collect()
    }

    /// Records the busid configured on `port` (no device change).
    pub fn set_busid(&mut self, port: u8, busid: Option<BusId>) {
        if let Some(s) = self.slot(port) {
            s.busid = busid;
        }
    }

    /// Opens the configured busid of `port`, applies the attach policy, resets
    /// it once (unless `reset` is false). Returns the speed to report.
    pub fn attach(
        &mut self,
        port: u8,
        io: &mut dyn DeviceIo,
        sink: Arc<dyn CompletionSink>,
        reset: bool,
    ) -> Result<Speed, BackendError> {
        let usb_ver = self.usb_ver;
        let slot = self.slot(port).ok_or(BackendError::Attach {
            port,
            busid: String::new(),
            why: AttachError::NoSuchPort,
        })?;
        let busid = slot.busid.ok_or(BackendError::Attach {
            port,
            busid: String::new(),
            why: AttachError::NoBusid,
        })?;
        let refuse = |why: AttachError| BackendError::Attach {
            port,
            busid: busid.to_string(),
            why,
        };
        let mut device = io
            .open(&busid, sink)
            .map_err(|e| refuse(AttachError::Open(e)))?;
        let info = device.info().clone();
        let reportable = !matches!(
            (usb_ver, info.speed),
            (_, Speed::None) | (UsbVer::Usb11, Speed::High)
        );
        if info.is_hub || !reportable || (info.max_speed_is_super && usb_ver == UsbVer::Usb11) {
            device.shutdown();
            return Err(refuse(if info.is_hub {
                AttachError::IsHub
            } else {
                AttachError::Speed {
                    speed: info.speed,
                    usb_ver,
                }
            }));
        }
        if !reset {
            // Resuming after a daemon restart: the guest's view of the device
            // (address, configuration) must stay valid.
        } else if let Err(e) = device.reset() {
            tracing::warn!(port, %busid, "reset on attach failed, continuing: {e}", e = Chain(&e));
        }
        slot.device = Some(device);
        Ok(info.speed)
    }

    /// Closes the device of `port` (cancels everything it has in flight; the
    /// completions arrive before this returns, bounded by the device).
    /// Returns whether there was one.
    pub fn detach(&mut self, port: u8) -> bool {
        match self.slot(port).and_then(|s| s.device.take()) {
            Some(mut d) => {
                d.shutdown();
                true
            }
            None => false,
        }
    }

    /// Closes every device (busids stay configured).
    pub fn detach_all(&mut self) {
        for p in self.numbers().collect::<Vec<_>>() {
            self.detach(p);
        }
    }
}

impl Devices for Ports {
    fn device(&mut self, port: u8) -> Option<&mut dyn UsbDevice> {
        match self.slot(port)?.device.as_mut() {
            Some(d) => Some(d.as_mut()),
            None => None,
        }
    }
}
