//! Standard request codes, `bmRequestType` bits, descriptor types, class
//! codes, and setup-packet builders and classifiers.
//!
//! The classifiers match the full (`bmRequestType`, `bRequest`) pair, not
//! `bRequest` alone: QEMU and usbback matched only `bRequest`, so a vendor
//! request numbered 5 (FTDI GET_MODEM_STATUS) was taken for SET_ADDRESS
//! (spec 10).

use crate::SetupPacket;

/// GET_STATUS.
pub const GET_STATUS: u8 = 0;
/// CLEAR_FEATURE.
pub const CLEAR_FEATURE: u8 = 1;
/// SET_FEATURE.
pub const SET_FEATURE: u8 = 3;
/// SET_ADDRESS.
pub const SET_ADDRESS: u8 = 5;
/// GET_DESCRIPTOR.
pub const GET_DESCRIPTOR: u8 = 6;
/// SET_DESCRIPTOR.
pub const SET_DESCRIPTOR: u8 = 7;
/// GET_CONFIGURATION.
pub const GET_CONFIGURATION: u8 = 8;
/// SET_CONFIGURATION.
pub const SET_CONFIGURATION: u8 = 9;
/// GET_INTERFACE.
pub const GET_INTERFACE: u8 = 10;
/// SET_INTERFACE.
pub const SET_INTERFACE: u8 = 11;
/// SYNCH_FRAME.
pub const SYNCH_FRAME: u8 = 12;

/// `bmRequestType` bit 7: device to host.
pub const DIR_IN: u8 = 0x80;
/// `bmRequestType` type field: standard.
pub const TYPE_STANDARD: u8 = 0x00;
/// `bmRequestType` type field: class.
pub const TYPE_CLASS: u8 = 0x20;
/// `bmRequestType` type field: vendor.
pub const TYPE_VENDOR: u8 = 0x40;
/// Mask of the type field.
pub const TYPE_MASK: u8 = 0x60;
/// Recipient: device.
pub const RECIP_DEVICE: u8 = 0x00;
/// Recipient: interface.
pub const RECIP_INTERFACE: u8 = 0x01;
/// Recipient: endpoint.
pub const RECIP_ENDPOINT: u8 = 0x02;
/// Recipient: other.
pub const RECIP_OTHER: u8 = 0x03;
/// Mask of the recipient field.
pub const RECIP_MASK: u8 = 0x1f;

/// Feature selector ENDPOINT_HALT.
pub const FEATURE_ENDPOINT_HALT: u16 = 0;
/// Feature selector DEVICE_REMOTE_WAKEUP.
pub const FEATURE_DEVICE_REMOTE_WAKEUP: u16 = 1;
/// Feature selector TEST_MODE.
pub const FEATURE_TEST_MODE: u16 = 2;

/// Descriptor types.
pub mod dt {
    /// DEVICE.
    pub const DEVICE: u8 = 1;
    /// CONFIGURATION.
    pub const CONFIG: u8 = 2;
    /// STRING.
    pub const STRING: u8 = 3;
    /// INTERFACE.
    pub const INTERFACE: u8 = 4;
    /// ENDPOINT.
    pub const ENDPOINT: u8 = 5;
    /// DEVICE_QUALIFIER.
    pub const DEVICE_QUALIFIER: u8 = 6;
    /// OTHER_SPEED_CONFIGURATION.
    pub const OTHER_SPEED_CONFIG: u8 = 7;
    /// INTERFACE_POWER.
    pub const INTERFACE_POWER: u8 = 8;
    /// OTG.
    pub const OTG: u8 = 9;
    /// DEBUG.
    pub const DEBUG: u8 = 10;
    /// INTERFACE_ASSOCIATION.
    pub const INTERFACE_ASSOCIATION: u8 = 11;
    /// BOS.
    pub const BOS: u8 = 15;
    /// HID class descriptor.
    pub const HID: u8 = 0x21;
    /// HID report descriptor.
    pub const REPORT: u8 = 0x22;
    /// Hub descriptor.
    pub const HUB: u8 = 0x29;
}

/// Device and interface class codes.
pub mod class {
    /// Class defined per interface.
    pub const PER_INTERFACE: u8 = 0;
    /// Audio.
    pub const AUDIO: u8 = 1;
    /// Communications (CDC).
    pub const COMM: u8 = 2;
    /// Human interface device.
    pub const HID: u8 = 3;
    /// Physical.
    pub const PHYSICAL: u8 = 5;
    /// Still image.
    pub const IMAGE: u8 = 6;
    /// Printer.
    pub const PRINTER: u8 = 7;
    /// Mass storage.
    pub const MASS_STORAGE: u8 = 8;
    /// Hub (never passed through).
    pub const HUB: u8 = 9;
    /// CDC data.
    pub const CDC_DATA: u8 = 0x0a;
    /// Smart card.
    pub const SMART_CARD: u8 = 0x0b;
    /// Video.
    pub const VIDEO: u8 = 0x0e;
    /// Wireless controller.
    pub const WIRELESS: u8 = 0xe0;
    /// Miscellaneous.
    pub const MISC: u8 = 0xef;
    /// Application specific.
    pub const APPLICATION: u8 = 0xfe;
    /// Vendor specific.
    pub const VENDOR_SPECIFIC: u8 = 0xff;
}

impl SetupPacket {
    /// GET_DESCRIPTOR(`desc_type`, `index`) for `length` bytes; `w_index` is
    /// the language id for strings, else 0.
    pub const fn get_descriptor(desc_type: u8, index: u8, w_index: u16, length: u16) -> Self {
        Self::new(
            DIR_IN | TYPE_STANDARD | RECIP_DEVICE,
            GET_DESCRIPTOR,
            (desc_type as u16) << 8 | index as u16,
            w_index,
            length,
        )
    }

    /// SET_ADDRESS(`address`).
    pub const fn set_address(address: u8) -> Self {
        Self::new(RECIP_DEVICE, SET_ADDRESS, address as u16, 0, 0)
    }

    /// SET_CONFIGURATION(`value`).
    pub const fn set_configuration(value: u8) -> Self {
        Self::new(RECIP_DEVICE, SET_CONFIGURATION, value as u16, 0, 0)
    }

    /// SET_INTERFACE(`interface`, `alt_setting`).
    pub const fn set_interface(interface: u8, alt_setting: u8) -> Self {
        Self::new(
            RECIP_INTERFACE,
            SET_INTERFACE,
            alt_setting as u16,
            interface as u16,
            0,
        )
    }

    /// CLEAR_FEATURE(ENDPOINT_HALT) on `endpoint_address`.
    pub const fn clear_halt(endpoint_address: u8) -> Self {
        Self::new(
            RECIP_ENDPOINT,
            CLEAR_FEATURE,
            FEATURE_ENDPOINT_HALT,
            endpoint_address as u16,
            0,
        )
    }

    /// The request type field (standard/class/vendor).
    pub const fn request_kind(&self) -> u8 {
        self.bm_request_type & TYPE_MASK
    }

    /// The recipient field.
    pub const fn recipient(&self) -> u8 {
        self.bm_request_type & RECIP_MASK
    }

    /// Standard SET_ADDRESS: (0x00, 5).
    pub const fn is_set_address(&self) -> bool {
        self.bm_request_type == 0x00 && self.b_request == SET_ADDRESS
    }

    /// Standard SET_CONFIGURATION: (0x00, 9).
    pub const fn is_set_configuration(&self) -> bool {
        self.bm_request_type == 0x00 && self.b_request == SET_CONFIGURATION
    }

    /// Standard SET_INTERFACE: (0x01, 11).
    pub const fn is_set_interface(&self) -> bool {
        self.bm_request_type == 0x01 && self.b_request == SET_INTERFACE
    }

    /// Standard CLEAR_FEATURE(ENDPOINT_HALT): (0x02, 1, wValue 0).
    pub const fn is_clear_halt(&self) -> bool {
        self.bm_request_type == 0x02
            && self.b_request == CLEAR_FEATURE
            && self.w_value == FEATURE_ENDPOINT_HALT
    }

    /// Standard GET_DESCRIPTOR (IN, standard type, any recipient).
    pub const fn is_get_descriptor(&self) -> bool {
        self.bm_request_type & (DIR_IN | TYPE_MASK) == DIR_IN | TYPE_STANDARD
            && self.b_request == GET_DESCRIPTOR
    }

    /// For GET_DESCRIPTOR: (descriptor type, index) from wValue.
    pub const fn descriptor_type_index(&self) -> (u8, u8) {
        let [desc_type, index] = self.w_value.to_be_bytes();
        (desc_type, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_and_classifiers_agree() {
        assert!(SetupPacket::set_address(7).is_set_address());
        assert_eq!(SetupPacket::set_address(7).w_value, 7);
        assert!(SetupPacket::set_configuration(1).is_set_configuration());
        let si = SetupPacket::set_interface(2, 1);
        assert!(si.is_set_interface());
        assert_eq!((si.w_index, si.w_value), (2, 1));
        assert!(SetupPacket::clear_halt(0x81).is_clear_halt());
        assert_eq!(SetupPacket::clear_halt(0x81).w_index, 0x81);
        let gd = SetupPacket::get_descriptor(dt::CONFIG, 0, 0, 9);
        assert_eq!(gd.to_bytes(), [0x80, 6, 0, 2, 0, 0, 9, 0]);
        assert!(gd.is_get_descriptor());
        assert_eq!(gd.descriptor_type_index(), (dt::CONFIG, 0));
        // HID report descriptor: interface recipient, still GET_DESCRIPTOR.
        assert!(SetupPacket::new(0x81, 6, 0x2200, 0, 64).is_get_descriptor());
    }

    #[test]
    fn vendor_request_five_is_not_set_address() {
        // FTDI GET_MODEM_STATUS: vendor IN, bRequest 5, wValue 0.
        let ftdi = SetupPacket::new(0xc0, 5, 0, 0, 2);
        assert!(!ftdi.is_set_address());
        assert_eq!(ftdi.request_kind(), TYPE_VENDOR);
        assert!(!SetupPacket::new(0x21, 9, 0x200, 0, 1).is_set_configuration()); // HID SET_REPORT
        assert!(!SetupPacket::new(0x02, 1, 1, 0x81, 0).is_clear_halt());
        assert!(!SetupPacket::new(0xc0, 6, 0, 0, 8).is_get_descriptor());
        assert_eq!(
            SetupPacket::set_interface(0, 0).recipient(),
            RECIP_INTERFACE
        );
    }

    #[test]
    fn constant_values() {
        assert_eq!(
            [
                GET_STATUS,
                CLEAR_FEATURE,
                SET_FEATURE,
                SET_ADDRESS,
                GET_DESCRIPTOR,
                SET_CONFIGURATION,
                SET_INTERFACE
            ],
            [0, 1, 3, 5, 6, 9, 11]
        );
        assert_eq!(
            [class::AUDIO, class::HID, class::MASS_STORAGE, class::HUB],
            [1, 3, 8, 9]
        );
        assert_eq!(
            [
                dt::DEVICE,
                dt::CONFIG,
                dt::STRING,
                dt::INTERFACE,
                dt::ENDPOINT
            ],
            [1, 2, 3, 4, 5]
        );
    }
}
