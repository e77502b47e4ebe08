//! Structured descriptions of an emulated device, and the standard USB
//! descriptors (USB 2.0 chapter 9) built from them.
//!
//! WHY structured and not raw bytes: the framework needs the endpoint layout of
//! each alternate setting to validate transfers, and building the bytes from
//! one description keeps the two from disagreeing.

use pvusb_protocol::usb::request::dt;
use pvusb_protocol::usb::{
    encode_language_ids, encode_string, ConfigBuilder, DeviceDescriptor, EndpointDescriptor,
    InterfaceSpec as ProtoInterface,
};

use crate::usb::proto::Speed;

/// The endpoint transfer types of `bmAttributes`, as the descriptors the
/// emulated devices send encode them (an [`EndpointSpec`] is never Control:
/// endpoint 0 is implied).
pub use pvusb_protocol::usb::EndpointType;

/// One endpoint of an alternate setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// bEndpointAddress (0x80 = IN).
    pub address: u8,
    /// Transfer type.
    pub kind: EndpointType,
    /// wMaxPacketSize.
    pub max_packet_size: u16,
    /// bInterval.
    pub interval: u8,
}

impl EndpointSpec {
    /// An endpoint.
    pub fn new(address: u8, kind: EndpointType, max_packet_size: u16, interval: u8) -> Self {
        Self {
            address,
            kind,
            max_packet_size,
            interval,
        }
    }

    /// A bulk endpoint of a high-speed device (512-byte packets, the only
    /// size USB 2.0 allows there).
    pub fn high_speed_bulk(address: u8) -> Self {
        Self::new(address, EndpointType::Bulk, 512, 0)
    }
}

/// One alternate setting of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceSpec {
    /// bInterfaceNumber.
    pub number: u8,
    /// bAlternateSetting.
    pub alt_setting: u8,
    /// bInterfaceClass.
    pub class: u8,
    /// bInterfaceSubClass.
    pub subclass: u8,
    /// bInterfaceProtocol.
    pub protocol: u8,
    /// Class-specific descriptors placed between the interface and its
    /// endpoints (e.g. the HID descriptor), already encoded.
    pub class_descriptors: Vec<u8>,
    /// The endpoints.
    pub endpoints: Vec<EndpointSpec>,
}

/// One configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSpec {
    /// bConfigurationValue (non-zero).
    pub value: u8,
    /// bmAttributes (bit 7 must be set; 0x40 self-powered, 0x20 remote wakeup).
    pub attributes: u8,
    /// bMaxPower in 2 mA units.
    pub max_power: u8,
    /// Every alternate setting of every interface.
    pub interfaces: Vec<InterfaceSpec>,
}

/// A whole device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Speed the device runs at.
    pub speed: Speed,
    /// bcdUSB.
    pub usb_version: u16,
    /// bDeviceClass (0 = per interface).
    pub class: u8,
    /// bDeviceSubClass.
    pub subclass: u8,
    /// bDeviceProtocol.
    pub protocol: u8,
    /// bMaxPacketSize0.
    pub max_packet_size0: u8,
    /// idVendor.
    pub vendor_id: u16,
    /// idProduct.
    pub product_id: u16,
    /// bcdDevice.
    pub device_version: u16,
    /// Manufacturer string (index 1).
    pub manufacturer: Option<String>,
    /// Product string (index 2).
    pub product: Option<String>,
    /// Serial number string (index 3).
    pub serial: Option<String>,
    /// The configurations.
    pub configs: Vec<ConfigSpec>,
}

/// The only language the emulated devices speak: US English.
pub const LANGID_EN_US: u16 = 0x0409;

/// The vendor id used by every emulated device (a test id).
pub const EMULATED_VENDOR_ID: u16 = 0x1209;

impl DeviceSpec {
    /// A high-speed device whose one interface (class 0xff) is
    /// vendor-specific: the test devices that speak no USB class.
    pub fn vendor_specific(product_id: u16, product: &str, endpoints: Vec<EndpointSpec>) -> Self {
        let iface = interface(0, (0xff, 0, 0), endpoints);
        Self::single_config(Speed::High, product_id, product, vec![iface])
    }

    /// A device with one configuration (value 1, bus powered, 100 mA).
    pub fn single_config(
        speed: Speed,
        product_id: u16,
        product: &str,
        interfaces: Vec<InterfaceSpec>,
    ) -> Self {
        let (usb_version, max_packet_size0) = match speed {
            Speed::High => (0x0200, 64),
            Speed::Full | Speed::None => (0x0110, 64),
            Speed::Low => (0x0110, 8),
        };
        Self {
            speed,
            usb_version,
            class: 0,
            subclass: 0,
            protocol: 0,
            max_packet_size0,
            vendor_id: EMULATED_VENDOR_ID,
            product_id,
            device_version: 0x0100,
            manufacturer: Some("pvusb".to_owned()),
            product: Some(product.to_owned()),
            serial: Some(format!("PVUSB{product_id:04X}")),
            configs: vec![ConfigSpec {
                value: 1,
                attributes: 0x80,
                max_power: 50,
                interfaces,
            }],
        }
    }

    /// The 18-byte device descriptor.
    pub fn device_descriptor(&self) -> Vec<u8> {
        DeviceDescriptor {
            bcd_usb: self.usb_version,
            device_class: self.class,
            device_subclass: self.subclass,
            device_protocol: self.protocol,
            max_packet_size0: self.max_packet_size0,
            id_vendor: self.vendor_id,
            id_product: self.product_id,
            bcd_device: self.device_version,
            i_manufacturer: if self.manufacturer.is_some() { 1 } else { 0 },
            i_product: if self.product.is_some() { 2 } else { 0 },
            i_serial_number: if self.serial.is_some() { 3 } else { 0 },
            num_configurations: u8::try_from(self.configs.len()).unwrap_or(u8::MAX),
        }
        .to_bytes()
        .to_vec()
    }

    /// The 10-byte device qualifier (only high-speed devices have one).
    pub fn device_qualifier(&self) -> Option<Vec<u8>> {
        if self.speed != Speed::High {
            return None;
        }
        let mut d = vec![10, dt::DEVICE_QUALIFIER];
        d.extend_from_slice(&self.usb_version.to_le_bytes());
        d.extend_from_slice(&[
            self.class,
            self.subclass,
            self.protocol,
            self.max_packet_size0,
        ]);
        d.push(u8::try_from(self.configs.len()).unwrap_or(u8::MAX));
        d.push(0);
        Some(d)
    }

    /// The full configuration descriptor (with interfaces and endpoints) at
    /// `index`, built by the protocol crate's [`ConfigBuilder`] (one encoder
    /// for the parser's round trip and the emulated devices). `None` (a
    /// stall) if the description cannot be encoded.
    pub fn config_descriptor(&self, index: usize) -> Option<Vec<u8>> {
        let c = self.configs.get(index)?;
        let mut b = ConfigBuilder::new(c.value)
            .attributes(c.attributes)
            .max_power(c.max_power);
        for i in &c.interfaces {
            b = b.interface(ProtoInterface {
                number: i.number,
                alternate_setting: i.alt_setting,
                class: i.class,
                subclass: i.subclass,
                protocol: i.protocol,
                i_interface: 0,
            });
            if !i.class_descriptors.is_empty() {
                b = b.class_descriptor(&i.class_descriptors);
            }
            for e in &i.endpoints {
                b = b.endpoint(EndpointDescriptor::new(
                    e.address,
                    e.kind,
                    e.max_packet_size,
                    e.interval,
                ));
            }
        }
        b.build().ok()
    }

    /// String descriptor `index` (0 = the language list); a string too long
    /// for a descriptor's one-byte bLength is not offered.
    pub fn string_descriptor(&self, index: u8) -> Option<Vec<u8>> {
        let text = match index {
            0 => return encode_language_ids(&[LANGID_EN_US]).ok(),
            1 => self.manufacturer.as_deref()?,
            2 => self.product.as_deref()?,
            3 => self.serial.as_deref()?,
            _ => return None,
        };
        encode_string(text).ok()
    }

    /// The configuration with this bConfigurationValue.
    pub fn config(&self, value: u8) -> Option<&ConfigSpec> {
        self.configs.iter().find(|c| c.value == value)
    }
}

impl ConfigSpec {
    /// The alternate setting `alt` of interface `number`.
    pub fn interface(&self, number: u8, alt: u8) -> Option<&InterfaceSpec> {
        self.interfaces
            .iter()
            .find(|i| i.number == number && i.alt_setting == alt)
    }

    /// The interface numbers, each once, ascending.
    pub fn interface_numbers(&self) -> Vec<u8> {
        let mut n: Vec<u8> = self.interfaces.iter().map(|i| i.number).collect();
        n.sort_unstable();
        n.dedup();
        n
    }
}

/// An interface with alternate setting 0.
pub fn interface(number: u8, class: (u8, u8, u8), endpoints: Vec<EndpointSpec>) -> InterfaceSpec {
    InterfaceSpec {
        number,
        alt_setting: 0,
        class: class.0,
        subclass: class.1,
        protocol: class.2,
        class_descriptors: Vec::new(),
        endpoints,
    }
}
