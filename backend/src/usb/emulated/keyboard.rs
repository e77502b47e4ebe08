//! HID boot keyboard: 8-byte reports on interrupt IN 0x81. Key presses are
//! injected through a [`KeyboardHandle`]; a pending interrupt IN completes
//! when a report is available (like a real keyboard, which NAKs until then).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use pvusb_support::lock_unpoisoned;

use super::descriptors::{DeviceSpec, EndpointSpec, EndpointType, InterfaceSpec};
use super::device::{ControlRequest, DataRequest, EmulatedDevice, Kicker, Reply};
use crate::usb::proto::Speed;

/// The interrupt IN endpoint.
pub const EP_REPORTS: u8 = 0x81;
/// Product id of the emulated keyboard.
pub const KEYBOARD_PRODUCT_ID: u16 = 0x0003;

/// A boot-protocol keyboard report: modifiers, reserved, six key codes.
pub type Report = [u8; 8];

/// Length of [`REPORT_DESCRIPTOR`] as the HID descriptor's `wDescriptorLength`;
/// the array's type ties the two together.
const REPORT_DESCRIPTOR_LEN: u16 = 63;

/// The standard boot keyboard report descriptor (HID 1.11 appendix B.1).
pub const REPORT_DESCRIPTOR: [u8; REPORT_DESCRIPTOR_LEN as usize] = [
    0x05, 0x01, 0x09, 0x06, 0xa1, 0x01, 0x05, 0x07, 0x19, 0xe0, 0x29, 0xe7, 0x15, 0x00, 0x25, 0x01,
    0x75, 0x01, 0x95, 0x08, 0x81, 0x02, 0x95, 0x01, 0x75, 0x08, 0x81, 0x01, 0x95, 0x05, 0x75, 0x01,
    0x05, 0x08, 0x19, 0x01, 0x29, 0x05, 0x91, 0x02, 0x95, 0x01, 0x75, 0x03, 0x91, 0x01, 0x95, 0x06,
    0x75, 0x08, 0x15, 0x00, 0x25, 0x65, 0x05, 0x07, 0x19, 0x00, 0x29, 0x65, 0x81, 0x00, 0xc0,
];

/// Left shift in the modifier byte.
const MOD_LEFT_SHIFT: u8 = 0x02;

/// (modifiers, usage) for a character, US layout; `None` for unsupported ones.
pub fn key_for_char(c: char) -> Option<(u8, u8)> {
    let plain = |u: u8| Some((0, u));
    let shifted = |u: u8| Some((MOD_LEFT_SHIFT, u));
    match c {
        'a'..='z' => plain(0x04 + (c as u8 - b'a')),
        'A'..='Z' => shifted(0x04 + (c as u8 - b'A')),
        '1'..='9' => plain(0x1e + (c as u8 - b'1')),
        '0' => plain(0x27),
        '\n' => plain(0x28),
        '\t' => plain(0x2b),
        ' ' => plain(0x2c),
        '-' => plain(0x2d),
        '=' => plain(0x2e),
        '.' => plain(0x37),
        ',' => plain(0x36),
        '/' => plain(0x38),
        '!' => shifted(0x1e),
        '?' => shifted(0x38),
        _ => None,
    }
}

#[derive(Default)]
struct KeyboardShared {
    reports: Mutex<VecDeque<Report>>,
    kicker: Mutex<Option<Kicker>>,
    /// LED state from SET_REPORT (num, caps, scroll lock ...).
    leds: Mutex<u8>,
}

/// Types on the keyboard from another thread. Survives replugs: the handle
/// feeds whichever instance is currently open.
#[derive(Clone, Default)]
pub struct KeyboardHandle {
    shared: Arc<KeyboardShared>,
}

impl std::fmt::Debug for KeyboardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyboardHandle")
            .field("queued", &lock_unpoisoned(&self.shared.reports).len())
            .finish()
    }
}

impl KeyboardHandle {
    /// A keyboard with nothing typed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues a press and a release report for every supported character of
    /// `text`; returns how many characters were queued (others are skipped).
    pub fn press(&self, text: &str) -> usize {
        let mut typed = 0;
        {
            let mut reports = lock_unpoisoned(&self.shared.reports);
            for (modifiers, usage) in text.chars().filter_map(key_for_char) {
                reports.push_back([modifiers, 0, usage, 0, 0, 0, 0, 0]);
                reports.push_back([0; 8]);
                typed += 1;
            }
        }
        // Outside the report lock: the kick runs the device, which takes it.
        self.kick();
        typed
    }

    /// Queues one raw report.
    pub fn send_report(&self, report: Report) {
        lock_unpoisoned(&self.shared.reports).push_back(report);
        self.kick();
    }

    /// Reports not yet read by the host.
    pub fn queued(&self) -> usize {
        lock_unpoisoned(&self.shared.reports).len()
    }

    /// The LED bits the host last set.
    pub fn leds(&self) -> u8 {
        *lock_unpoisoned(&self.shared.leds)
    }

    /// A device instance fed by this handle (use it in a device factory).
    pub fn device(&self) -> KeyboardDevice {
        KeyboardDevice {
            shared: self.shared.clone(),
            idle: 0,
            boot_protocol: true,
            last: [0; 8],
        }
    }

    fn kick(&self) {
        let kicker = lock_unpoisoned(&self.shared.kicker).clone();
        if let Some(k) = kicker {
            k.kick();
        }
    }
}

/// The keyboard device (create it with [`KeyboardHandle::device`]).
pub struct KeyboardDevice {
    shared: Arc<KeyboardShared>,
    idle: u8,
    boot_protocol: bool,
    last: Report,
}

impl std::fmt::Debug for KeyboardDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyboardDevice")
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

fn copy_out(dst: &mut [u8], src: &[u8]) -> Reply {
    let n = dst.len().min(src.len());
    if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
    Reply::Done(n)
}

impl EmulatedDevice for KeyboardDevice {
    fn spec(&self) -> DeviceSpec {
        let len = REPORT_DESCRIPTOR_LEN.to_le_bytes();
        // HID descriptor: HID 1.11, country 0, one report descriptor.
        let hid = vec![9, 0x21, 0x11, 0x01, 0, 1, 0x22, len[0], len[1]];
        let iface = InterfaceSpec {
            number: 0,
            alt_setting: 0,
            class: 3,
            subclass: 1,
            protocol: 1,
            class_descriptors: hid,
            endpoints: vec![EndpointSpec::new(
                EP_REPORTS,
                EndpointType::Interrupt,
                8,
                10,
            )],
        };
        DeviceSpec::single_config(
            Speed::Full,
            KEYBOARD_PRODUCT_ID,
            "pvusb keyboard",
            vec![iface],
        )
    }

    fn attach(&mut self, kicker: Kicker) {
        *lock_unpoisoned(&self.shared.kicker) = Some(kicker);
    }

    fn control(&mut self, req: ControlRequest<'_>) -> Reply {
        let s = req.setup;
        match (s.bm_request_type, s.b_request) {
            // GET_DESCRIPTOR(REPORT) to the interface.
            (0x81, 0x06) if s.w_value >> 8 == 0x22 => copy_out(req.data, &REPORT_DESCRIPTOR),
            // GET_DESCRIPTOR(HID).
            (0x81, 0x06) if s.w_value >> 8 == 0x21 => {
                let len = REPORT_DESCRIPTOR_LEN.to_le_bytes();
                copy_out(req.data, &[9, 0x21, 0x11, 0x01, 0, 1, 0x22, len[0], len[1]])
            }
            // GET_REPORT: the current key state.
            (0xa1, 0x01) => copy_out(req.data, &self.last),
            // GET_IDLE / GET_PROTOCOL.
            (0xa1, 0x02) => copy_out(req.data, &[self.idle]),
            (0xa1, 0x03) => copy_out(req.data, &[u8::from(!self.boot_protocol)]),
            // SET_REPORT (output report: LEDs).
            (0x21, 0x09) => {
                if let Some(&leds) = req.data.first() {
                    *lock_unpoisoned(&self.shared.leds) = leds;
                }
                Reply::Done(req.data.len())
            }
            // SET_IDLE: upper byte of wValue is the duration.
            (0x21, 0x0a) => {
                self.idle = (s.w_value >> 8) as u8;
                Reply::Done(0)
            }
            // SET_PROTOCOL: 0 = boot, 1 = report (same reports here).
            (0x21, 0x0b) if s.w_value <= 1 => {
                self.boot_protocol = s.w_value == 0;
                Reply::Done(0)
            }
            _ => Reply::Stall,
        }
    }

    fn data(&mut self, req: DataRequest<'_>) -> Reply {
        if req.endpoint != EP_REPORTS {
            return Reply::Stall;
        }
        let Some(report) = lock_unpoisoned(&self.shared.reports).pop_front() else {
            return Reply::Pending;
        };
        self.last = report;
        copy_out(req.buffer, &report)
    }
}
