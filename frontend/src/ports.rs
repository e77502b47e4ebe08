//! The root hub: per-port speed and status bits (spec 2.8), fed by the conn
//! ring, and the events users observe.
//!
//! Why keep status bits nobody on the wire sees: they are what xen-hcd reports
//! to the guest USB core, and a user of this library (the CLI, a guest-side
//! stack) wants the same view: connected, enabled, speed, what changed.

use pvusb_protocol::{ConnResponse, Speed};

/// `USB_PORT_STAT_*` bits (low half of [`PortStatus::bits`]).
pub mod stat {
    /// A device is connected.
    pub const CONNECTION: u32 = 0x0001;
    /// The port is enabled (after a reset).
    pub const ENABLE: u32 = 0x0002;
    /// The port is suspended.
    pub const SUSPEND: u32 = 0x0004;
    /// A reset is in progress.
    pub const RESET: u32 = 0x0010;
    /// The port is powered.
    pub const POWER: u32 = 0x0100;
    /// A low-speed device is connected.
    pub const LOW_SPEED: u32 = 0x0200;
    /// A high-speed device is connected.
    pub const HIGH_SPEED: u32 = 0x0400;
    /// Change bits are stored shifted left by 16, as xen-hcd does.
    pub const CHANGE_SHIFT: u32 = 16;
    /// `C_CONNECTION`, unshifted.
    pub const C_CONNECTION: u32 = 0x0001;
    /// `C_ENABLE`, unshifted.
    pub const C_ENABLE: u32 = 0x0002;
    /// `C_RESET`, unshifted.
    pub const C_RESET: u32 = 0x0010;
}

/// Something that happened on the root hub or to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortEvent {
    /// A device appeared (or changed speed) on `port`.
    Connected {
        /// Root-hub port.
        port: u8,
        /// Its speed.
        speed: Speed,
    },
    /// The device on `port` went away.
    Disconnected {
        /// Root-hub port.
        port: u8,
    },
    /// `port` was reset locally; its device answers at address 0 again.
    Reset {
        /// Root-hub port.
        port: u8,
    },
    /// The handshake with the backend completed (also after a reconnect).
    ControllerConnected,
    /// The backend went away; every URB failed with shutdown.
    ControllerDisconnected,
    /// The backend broke the protocol; the controller is dead until the
    /// backend re-handshakes.
    ControllerDead {
        /// What the backend did.
        reason: crate::error::BackendViolation,
    },
    /// This subscriber fell behind and `missed` events were dropped for it
    /// (its queue is bounded: a backend flipping ports must not grow it);
    /// read [`crate::Frontend::ports`] for the state as it is now.
    Lagged {
        /// Events dropped.
        missed: u64,
    },
}

/// One port as the root hub sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortStatus {
    /// Root-hub port number.
    pub port: u8,
    /// Speed of the connected device ([`Speed::None`]: empty).
    pub speed: Speed,
    /// `wPortStatus | wPortChange << 16`.
    pub bits: u32,
    /// The address the library gave the device, `None` until enumeration (or
    /// after a reset or disconnect).
    pub address: Option<u8>,
}

impl PortStatus {
    fn empty(port: u8) -> Self {
        Self {
            port,
            speed: Speed::None,
            bits: stat::POWER,
            address: None,
        }
    }

    /// Whether a device is connected.
    pub fn connected(&self) -> bool {
        self.bits & stat::CONNECTION != 0
    }
}

/// A conn-ring message the frontend must refuse (xen-hcd: "Illegal data on
/// conn-ring", the controller dies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnError {
    /// The port is not 1..=num-ports.
    #[error("conn event for port {port} on a controller with {num_ports} ports")]
    BadPort {
        /// As sent.
        port: u8,
        /// Ports of the controller.
        num_ports: u8,
    },
    /// The speed is not 0..=3.
    #[error("conn event with speed {0}, which is not 0..=3")]
    BadSpeed(u8),
}

/// The root hub of one controller.
#[derive(Debug, Clone)]
pub struct RootHub {
    ports: Vec<PortStatus>,
    /// Device addresses handed out by enumeration (index = address; 0 is the
    /// default address and never handed out). Kept here, next to the ports,
    /// so that an address is given back the moment its port loses it (a
    /// disconnect or speed change from the conn ring, a reset): a backend that
    /// plugs and unplugs forever must not exhaust the 127 addresses.
    used: [bool; 128],
}

impl RootHub {
    /// `num_ports` empty, powered ports.
    pub fn new(num_ports: u8) -> Self {
        Self {
            ports: (1..=num_ports).map(PortStatus::empty).collect(),
            used: [false; 128],
        }
    }

    /// Number of ports.
    pub fn num_ports(&self) -> u8 {
        u8::try_from(self.ports.len()).unwrap_or(u8::MAX)
    }

    /// Every port, in order.
    pub fn ports(&self) -> &[PortStatus] {
        &self.ports
    }

    /// Port `port` (1-based).
    pub fn port(&self, port: u8) -> Option<&PortStatus> {
        usize::from(port)
            .checked_sub(1)
            .and_then(|i| self.ports.get(i))
    }

    fn port_mut(&mut self, port: u8) -> Option<&mut PortStatus> {
        usize::from(port)
            .checked_sub(1)
            .and_then(|i| self.ports.get_mut(i))
    }

    /// Applies one conn-ring message (already copied out of the ring). Level
    /// semantics: a repeated speed changes nothing and yields no event.
    pub fn apply(&mut self, rsp: &ConnResponse) -> Result<Option<PortEvent>, ConnError> {
        let num_ports = self.num_ports();
        let speed = Speed::try_from(rsp.speed).map_err(|e| ConnError::BadSpeed(e.0))?;
        let p = self.port_mut(rsp.portnum).ok_or(ConnError::BadPort {
            port: rsp.portnum,
            num_ports,
        })?;
        if p.speed == speed {
            return Ok(None);
        }
        p.speed = speed;
        let old = p.address.take();
        let change = stat::C_CONNECTION << stat::CHANGE_SHIFT;
        let speed_bits =
            stat::CONNECTION | stat::ENABLE | stat::LOW_SPEED | stat::HIGH_SPEED | stat::SUSPEND;
        p.bits &= !speed_bits;
        p.bits |= change;
        let event = match speed {
            Speed::None => PortEvent::Disconnected { port: rsp.portnum },
            Speed::Low | Speed::Full | Speed::High => {
                p.bits |= stat::CONNECTION;
                match speed {
                    Speed::Low => p.bits |= stat::LOW_SPEED,
                    Speed::High => p.bits |= stat::HIGH_SPEED,
                    _ => {}
                }
                PortEvent::Connected {
                    port: rsp.portnum,
                    speed,
                }
            }
        };
        self.release_address(old);
        Ok(Some(event))
    }

    /// Hands out the lowest free device address (1..=127), `None` if all are
    /// taken. The caller puts it on a port with [`Self::set_address`] or gives
    /// it back with [`Self::release_address`].
    pub fn alloc_address(&mut self) -> Option<u8> {
        let free = (1..128u8).find(|&a| !self.used[usize::from(a)])?; // a < 128
        self.used[usize::from(free)] = true;
        Some(free)
    }

    /// Gives an address back (no-op for `None`, 0 or one not handed out).
    pub fn release_address(&mut self, address: Option<u8>) {
        if let Some(slot) = address.and_then(|a| self.used.get_mut(usize::from(a))) {
            *slot = false;
        }
    }

    /// A local port reset (spec 9): the port is enabled, its change bit set, and
    /// the device must be enumerated again from address 0. `None` if the port
    /// does not exist or is empty.
    pub fn reset(&mut self, port: u8) -> Option<PortEvent> {
        let p = self.port_mut(port)?;
        if !p.connected() {
            return None;
        }
        let old = p.address.take();
        p.bits |= stat::ENABLE | (stat::C_RESET << stat::CHANGE_SHIFT);
        self.release_address(old);
        Some(PortEvent::Reset { port })
    }

    /// Clears change bits (`ClearPortFeature(C_*)`), unshifted mask.
    pub fn clear_change(&mut self, port: u8, mask: u32) {
        if let Some(p) = self.port_mut(port) {
            p.bits &= !(mask << stat::CHANGE_SHIFT);
        }
    }

    /// Records the address enumeration gave the device on `port`; the address
    /// it replaces is given back (as is `address` itself if the port does not
    /// exist), so no address outlives its port.
    pub fn set_address(&mut self, port: u8, address: Option<u8>) {
        let old = match self.port_mut(port) {
            Some(p) => std::mem::replace(&mut p.address, address),
            None => address,
        };
        if old != address || self.port(port).is_none() {
            self.release_address(old);
        }
    }

    /// Forgets every device (backend gone): all ports empty.
    pub fn clear(&mut self) -> Vec<PortEvent> {
        let mut events = Vec::new();
        for p in &mut self.ports {
            if p.speed != Speed::None {
                events.push(PortEvent::Disconnected { port: p.port });
            }
            *p = PortStatus::empty(p.port);
        }
        self.used = [false; 128];
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(port: u8, speed: u8) -> ConnResponse {
        ConnResponse {
            id: 0,
            portnum: port,
            speed,
        }
    }

    #[test]
    fn connect_disconnect_and_level_semantics() {
        let mut hub = RootHub::new(2);
        assert_eq!(
            hub.apply(&ev(1, 3)),
            Ok(Some(PortEvent::Connected {
                port: 1,
                speed: Speed::High
            }))
        );
        let p = *hub.port(1).unwrap();
        assert_eq!(
            p.bits & 0xffff,
            stat::POWER | stat::CONNECTION | stat::HIGH_SPEED
        );
        assert_ne!(p.bits & (stat::C_CONNECTION << 16), 0);
        assert_eq!(hub.apply(&ev(1, 3)), Ok(None));
        assert_eq!(hub.reset(1), Some(PortEvent::Reset { port: 1 }));
        assert_ne!(hub.port(1).unwrap().bits & stat::ENABLE, 0);
        assert_eq!(
            hub.apply(&ev(1, 0)),
            Ok(Some(PortEvent::Disconnected { port: 1 }))
        );
        assert!(!hub.port(1).unwrap().connected());
        assert_eq!(hub.reset(1), None);
        assert_eq!(
            hub.apply(&ev(2, 1)),
            Ok(Some(PortEvent::Connected {
                port: 2,
                speed: Speed::Low
            }))
        );
        assert_ne!(hub.port(2).unwrap().bits & stat::LOW_SPEED, 0);
    }

    /// Regression: the address of an unplugged device used to stay taken, so
    /// 127 plug/unplug cycles exhausted the addresses until a reconnect.
    #[test]
    fn addresses_come_back_when_their_port_loses_the_device() {
        let mut hub = RootHub::new(2);
        for cycle in 0..300 {
            hub.apply(&ev(1, 2)).unwrap();
            let a = hub.alloc_address().expect("a free address");
            hub.set_address(1, Some(a));
            if cycle % 2 == 0 {
                hub.apply(&ev(1, 0)).unwrap();
            } else {
                hub.reset(1).unwrap();
                hub.apply(&ev(1, 0)).unwrap();
            }
        }
        let all: Vec<u8> = std::iter::from_fn(|| hub.alloc_address()).collect();
        assert_eq!(all, (1..128).collect::<Vec<u8>>());
        hub.release_address(Some(5));
        hub.set_address(9, Some(5)); // no such port: given back at once
        assert_eq!(hub.alloc_address(), Some(5));
        hub.clear();
        assert_eq!(hub.alloc_address(), Some(1));
    }

    #[test]
    fn hostile_conn_events_are_errors() {
        let mut hub = RootHub::new(2);
        assert_eq!(
            hub.apply(&ev(0, 1)),
            Err(ConnError::BadPort {
                port: 0,
                num_ports: 2
            })
        );
        assert_eq!(
            hub.apply(&ev(3, 1)),
            Err(ConnError::BadPort {
                port: 3,
                num_ports: 2
            })
        );
        assert_eq!(
            hub.apply(&ev(255, 1)),
            Err(ConnError::BadPort {
                port: 255,
                num_ports: 2
            })
        );
        assert_eq!(hub.apply(&ev(1, 4)), Err(ConnError::BadSpeed(4)));
        assert!(hub.ports().iter().all(|p| !p.connected()));
    }
}
