//! Address virtualisation (spec 10): the guest's USB addresses are not the
//! host's, so the backend keeps a 128-entry table guest address → port,
//! emulates SET_ADDRESS and routes everything else through the table.
//!
//! Requests are matched on the full (bmRequestType, bRequest) pair: a vendor
//! request whose bRequest is 5 (FTDI GET_MODEM_STATUS, 0xc0/5) is *not*
//! SET_ADDRESS and goes to the device untouched — both older backends get
//! this wrong (spec 14).

use pvusb_protocol::usb::request::{self, FEATURE_ENDPOINT_HALT, GET_DESCRIPTOR};
use pvusb_protocol::{SetupPacket, Status, Submit, SubmitKind};

use crate::usb::TransferKind;

/// bmRequestType/bRequest of the standard requests the backend intercepts.
const SET_ADDRESS: (u8, u8) = (0x00, request::SET_ADDRESS);
const SET_CONFIGURATION: (u8, u8) = (0x00, request::SET_CONFIGURATION);
const SET_INTERFACE: (u8, u8) = (0x01, request::SET_INTERFACE);
const CLEAR_FEATURE_ENDPOINT: (u8, u8) = (0x02, request::CLEAR_FEATURE);

/// Why a request is answered without a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// SET_ADDRESS was emulated: answer 0.
    AddressSet,
    /// SET_ADDRESS to a device that already had an address: the guest
    /// reset its port and enumerates again (spec 9). Answer 0; the engine
    /// resets the device on this root-hub port (`engine::port_reset`).
    Readdressed(u8),
    /// No device at that address or port: -ENODEV.
    NoDevice,
    /// Not allowed at address 0 (or a bad address value): -EINVAL.
    Refused,
}

impl Answer {
    /// The status to answer with.
    pub fn status(self) -> Status {
        match self {
            Answer::AddressSet | Answer::Readdressed(_) => Status::Ok,
            Answer::NoDevice => Status::NoDev,
            Answer::Refused => Status::Inval,
        }
    }
}

/// Where a validated submit goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Answer at once.
    Answer(Answer),
    /// To the device on `port`, as this transfer.
    Device {
        /// Root-hub port of the device.
        port: u8,
        /// The transfer's bEndpointAddress: 0 for control requests
        /// (intercepted or not), the pipe's for the others.
        endpoint: u8,
        /// What to ask the device. An isochronous transfer comes without
        /// its packets: they are in guest memory, which the engine reads.
        kind: TransferKind,
    },
}

/// Guest address → root-hub port (0 = none). Address 0 is never stored: it
/// always routes by the pipe's port.
#[derive(Debug, Clone)]
pub struct AddressTable {
    ports: [u8; 128],
    /// The table as last handed out by [`Self::take_changes`] (or restored):
    /// a SET_ADDRESS that ends where it started changes nothing to save.
    saved: [u8; 128],
}

impl Default for AddressTable {
    fn default() -> Self {
        Self {
            ports: [0; 128],
            saved: [0; 128],
        }
    }
}

impl AddressTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every address of the device on `port` (detach, replug).
    pub fn forget_port(&mut self, port: u8) {
        for p in self.ports.iter_mut().filter(|p| **p == port) {
            *p = 0;
        }
    }

    /// Forgets everything (new connection).
    pub fn clear(&mut self) {
        self.ports = [0; 128];
    }

    /// The table as text ("addr:port,..."), if it changed since the last call.
    /// WHY: a restarted daemon must route the guest's addresses exactly as
    /// before (the guest will not enumerate again), so the controller keeps
    /// this in its backend directory.
    pub fn take_changes(&mut self) -> Option<String> {
        if self.ports == self.saved {
            return None;
        }
        self.saved = self.ports;
        let mut out = String::new();
        for (addr, port) in self.ports.iter().enumerate().filter(|(_, p)| **p != 0) {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&format!("{addr}:{port}"));
        }
        Some(out)
    }

    /// Restores a table saved by [`Self::take_changes`]; malformed or
    /// out-of-range entries (port above `num_ports`) are skipped.
    pub fn restore(&mut self, saved: &str, num_ports: u8) {
        self.ports = [0; 128];
        for entry in saved.split(',').take(128) {
            let Some((a, p)) = entry.split_once(':') else {
                continue;
            };
            let (Ok(a), Ok(p)) = (a.parse::<u8>(), p.parse::<u8>()) else {
                continue;
            };
            if (1..=127).contains(&a) && (1..=num_ports).contains(&p) {
                if let Some(slot) = self.ports.get_mut(usize::from(a)) {
                    *slot = p;
                }
            }
        }
        self.saved = self.ports;
    }

    /// The port of guest address `addr` (1..=127), if assigned.
    pub fn port_of(&self, addr: u8) -> Option<u8> {
        match self.ports.get(usize::from(addr)) {
            Some(&p) if addr != 0 && p != 0 => Some(p),
            _ => None,
        }
    }

    /// Decides where `s` goes; emulates SET_ADDRESS in the table.
    /// `has_device(port)` says whether a device is attached on a port.
    pub fn route(&mut self, s: &Submit, mut has_device: impl FnMut(u8) -> bool) -> Route {
        let devnum = s.devnum();
        let setup = match s.kind() {
            SubmitKind::Control(setup) => Some(*setup),
            _ => None,
        };
        let port = if devnum == 0 {
            // Address 0: only enumeration requests, routed by the pipe's port.
            match setup {
                None => return Route::Answer(Answer::NoDevice),
                Some(setup) => {
                    // Standard IN GET_DESCRIPTOR only (type bits 5-6 zero): a
                    // class or vendor IN request 6 is not enumeration.
                    let is_get_descriptor =
                        setup.b_request == GET_DESCRIPTOR && setup.bm_request_type & 0xe0 == 0x80;
                    if !is_get_descriptor && pair(&setup) != SET_ADDRESS {
                        return Route::Answer(Answer::Refused);
                    }
                    s.port()
                }
            }
        } else {
            match self.port_of(devnum) {
                Some(p) => p,
                None => return Route::Answer(Answer::NoDevice),
            }
        };
        if !has_device(port) {
            return Route::Answer(Answer::NoDevice);
        }
        let Some(setup) = setup else {
            return Route::Device {
                port,
                endpoint: s.endpoint_address(),
                kind: data_kind(s.kind()),
            };
        };
        // The host library takes these values as bytes; a request with a
        // non-zero high byte is malformed (USB 2.0 9.4) and is refused rather
        // than truncated into a different, valid request.
        let byte = |v: u16| u8::try_from(v).ok();
        let kind = match pair(&setup) {
            SET_ADDRESS => return Route::Answer(self.set_address(port, setup.w_value)),
            SET_CONFIGURATION => match byte(setup.w_value) {
                Some(config) => TransferKind::SetConfiguration(config),
                None => return Route::Answer(Answer::Refused),
            },
            SET_INTERFACE => match (byte(setup.w_index), byte(setup.w_value)) {
                (Some(interface), Some(alt_setting)) => TransferKind::SetInterface {
                    interface,
                    alt_setting,
                },
                _ => return Route::Answer(Answer::Refused),
            },
            CLEAR_FEATURE_ENDPOINT if setup.w_value == FEATURE_ENDPOINT_HALT => {
                match byte(setup.w_index) {
                    Some(endpoint) => TransferKind::ClearHalt { endpoint },
                    None => return Route::Answer(Answer::Refused),
                }
            }
            _ => TransferKind::Control { setup },
        };
        Route::Device {
            port,
            endpoint: 0,
            kind,
        }
    }

    /// SET_ADDRESS(new) for the device on `port`: whatever address it had is
    /// moved (re-enumeration may happen at any time, spec 9).
    fn set_address(&mut self, port: u8, new: u16) -> Answer {
        let Ok(new) = u8::try_from(new) else {
            return Answer::Refused;
        };
        if new > 127 {
            return Answer::Refused;
        }
        let had_address = port != 0 && self.ports.contains(&port);
        self.forget_port(port);
        if let Some(slot) = self.ports.get_mut(usize::from(new)) {
            if new != 0 {
                *slot = port;
            }
        }
        if had_address {
            Answer::Readdressed(port)
        } else {
            Answer::AddressSet
        }
    }
}

/// The transfer of a bulk, interrupt or isochronous submit (isochronous
/// without its packets, see [`Route::Device`]).
fn data_kind(kind: &SubmitKind) -> TransferKind {
    match kind {
        SubmitKind::Bulk => TransferKind::Bulk,
        SubmitKind::Interrupt { .. } => TransferKind::Interrupt,
        SubmitKind::Isochronous { .. } => TransferKind::Isochronous {
            packets: Vec::new(),
        },
        // Not reached: `route` handles control requests itself.
        SubmitKind::Control(setup) => TransferKind::Control { setup: *setup },
    }
}

/// The USB 3 ep0 packet size code (2^9 = 512) and the USB 2 high-speed size.
const SUPERSPEED_EP0_CODE: u8 = 9;
const HIGH_SPEED_EP0: u8 = 64;

/// Whether `setup` is GET_DESCRIPTOR(DEVICE), whose answer needs the ep0
/// quirk of a SuperSpeed device ([`patch_ep0_max_packet`]).
pub fn is_get_device_descriptor(setup: &SetupPacket) -> bool {
    setup.bm_request_type == 0x80 && setup.b_request == GET_DESCRIPTOR && setup.w_value >> 8 == 1
}

/// QEMU's "usb3ep0quirk" (spec 10): a SuperSpeed device shown on a high-speed
/// port must announce bMaxPacketSize0 64, not the USB 3 exponent 9.
/// `data` is the device descriptor as far as it was transferred.
///
/// WHY here and not in the device layer: it is what the guest is shown of
/// a standard request, like the other interceptions of this module; the
/// engine applies it to the answers, the libusb host to the descriptor it
/// reports.
pub fn patch_ep0_max_packet(data: &mut [u8]) {
    if let Some(b) = data.get_mut(7) {
        if *b == SUPERSPEED_EP0_CODE {
            *b = HIGH_SPEED_EP0;
        }
    }
}

fn pair(s: &SetupPacket) -> (u8, u8) {
    (s.bm_request_type, s.b_request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvusb_protocol::{validate, Direction, Pipe, TransferType, UrbRequest, ValidatedUrb};

    /// `setup` passed on, as it is, to endpoint 0 of the device on `port`.
    fn ep0_of(port: u8, setup: SetupPacket) -> Route {
        Route::Device {
            port,
            endpoint: 0,
            kind: TransferKind::Control { setup },
        }
    }

    /// A validated control request without data stage on `port`.
    fn control(dev: u8, port: u8, setup: SetupPacket) -> Submit {
        let dir = if setup.bm_request_type & 0x80 != 0 {
            Direction::In
        } else {
            Direction::Out
        };
        let pipe = Pipe::new(TransferType::Control, dir, dev, 0, port).expect("pipe");
        let req = UrbRequest::control(1, pipe, setup, &[]).expect("request");
        match validate(&req, 4) {
            Ok(ValidatedUrb::Submit(s)) => s,
            other => panic!("not a submit: {other:?}"),
        }
    }

    /// Spec 10 / 12.13: at address 0 only standard GET_DESCRIPTOR and
    /// SET_ADDRESS pass; a class or vendor IN request 6 is refused.
    #[test]
    fn address_zero_accepts_only_standard_enumeration() {
        let mut t = AddressTable::new();
        let anywhere = |_| true;
        let get_desc = SetupPacket::new(0x80, 6, 0x0100, 0, 0);
        assert_eq!(
            t.route(&control(0, 2, get_desc), anywhere),
            ep0_of(2, get_desc)
        );
        for bm in [0xa1, 0xc0, 0xc1] {
            let s = control(0, 2, SetupPacket::new(bm, 6, 0x0100, 0, 0));
            assert_eq!(
                t.route(&s, anywhere),
                Route::Answer(Answer::Refused),
                "{bm:#x}"
            );
        }
        // Vendor 0xc0/5 at a real address goes to the device untouched.
        assert_eq!(
            t.route(&control(0, 2, SetupPacket::new(0x00, 5, 7, 0, 0)), anywhere),
            Route::Answer(Answer::AddressSet)
        );
        let ftdi = SetupPacket::new(0xc0, 5, 0, 0, 0);
        assert_eq!(t.route(&control(7, 1, ftdi), anywhere), ep0_of(2, ftdi));
    }

    /// wValue/wIndex high bytes are not truncated into a different request.
    #[test]
    fn intercepted_requests_with_wide_values_are_refused() {
        let mut t = AddressTable::new();
        let anywhere = |_| true;
        assert_eq!(t.set_address(3, 9), Answer::AddressSet);
        let route = |t: &mut AddressTable, bm, req, value, index| {
            t.route(
                &control(9, 3, SetupPacket::new(bm, req, value, index, 0)),
                anywhere,
            )
        };
        // SET_CONFIGURATION, SET_INTERFACE (interface, then alternate setting)
        // and CLEAR_FEATURE(ENDPOINT_HALT) with a high byte set.
        for (bm, req, value, index) in [
            (0x00, 9, 0x0101, 0),
            (0x01, 11, 1, 0x0100),
            (0x01, 11, 0x0100, 0),
            (0x02, 1, 0, 0x0181),
        ] {
            let refused = Route::Answer(Answer::Refused);
            assert_eq!(
                route(&mut t, bm, req, value, index),
                refused,
                "{bm:#x} {req}"
            );
        }
        assert_eq!(
            route(&mut t, 0x00, 9, 1, 0),
            Route::Device {
                port: 3,
                endpoint: 0,
                kind: TransferKind::SetConfiguration(1)
            }
        );
        assert_eq!(
            route(&mut t, 0x01, 11, 2, 1),
            Route::Device {
                port: 3,
                endpoint: 0,
                kind: TransferKind::SetInterface {
                    interface: 1,
                    alt_setting: 2
                }
            }
        );
        assert_eq!(
            route(&mut t, 0x02, 1, 0, 0x81),
            Route::Device {
                port: 3,
                endpoint: 0,
                kind: TransferKind::ClearHalt { endpoint: 0x81 }
            }
        );
    }

    #[test]
    fn ep0_quirk() {
        assert!(is_get_device_descriptor(&SetupPacket::new(
            0x80, 6, 0x0100, 0, 18
        )));
        assert!(!is_get_device_descriptor(&SetupPacket::new(
            0x80, 6, 0x0200, 0, 9
        )));
        assert!(!is_get_device_descriptor(&SetupPacket::new(
            0xc0, 6, 0x0100, 0, 18
        )));
        let mut d = [18, 1, 0x20, 0x03, 0, 0, 0, 9, 0x34, 0x12];
        patch_ep0_max_packet(&mut d);
        assert_eq!(d[7], 64);
        let mut hs = [18, 1, 0, 2, 0, 0, 0, 64];
        patch_ep0_max_packet(&mut hs);
        assert_eq!(hs[7], 64);
        let mut short = [18, 1, 0, 3];
        patch_ep0_max_packet(&mut short);
        assert_eq!(short, [18, 1, 0, 3]);
    }

    #[test]
    fn save_and_restore() {
        let mut t = AddressTable::new();
        assert_eq!(t.set_address(2, 7), Answer::AddressSet);
        assert_eq!(t.set_address(3, 9), Answer::AddressSet);
        assert_eq!(t.set_address(2, 11), Answer::Readdressed(2));
        assert_eq!(t.set_address(2, 128), Answer::Refused);
        let saved = t.take_changes().expect("changed");
        assert_eq!(saved, "9:3,11:2");
        assert_eq!(t.take_changes(), None);
        let mut u = AddressTable::new();
        u.restore(&format!("{saved},0:1,5:40,x:y,,7"), 4);
        assert_eq!(
            (u.port_of(9), u.port_of(11), u.port_of(7), u.port_of(5)),
            (Some(3), Some(2), None, None)
        );
    }
}
