//! Device and configuration descriptors: parsing (bounded, never panicking
//! on garbage) and serialisation.
//!
//! Descriptor bytes come from host devices (which can be broken or
//! malicious) and from peers, so the parser checks every `bLength` against
//! the remaining bytes and refuses `bLength < 2` (which would otherwise loop
//! forever). Class-specific and unknown descriptors are kept verbatim in the
//! `extra` bytes of whatever they follow, as libusb does.

use thiserror::Error;

use super::request::dt;
use crate::Direction;

/// A malformed descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DescriptorError {
    /// A descriptor's `bLength` is below 2 or runs past the data.
    #[error("descriptor at offset {offset} has bLength {b_length}, which does not fit the {available} bytes left")]
    BadLength {
        /// Byte offset in the configuration.
        offset: usize,
        /// Its `bLength`.
        b_length: u8,
        /// Bytes left from `offset`.
        available: usize,
    },
    /// An endpoint descriptor before any interface descriptor.
    #[error("endpoint descriptor at offset {offset} precedes every interface descriptor")]
    EndpointOutsideInterface {
        /// Byte offset in the configuration.
        offset: usize,
    },
    /// A standard descriptor shorter than its fixed part.
    #[error("descriptor type {desc_type} at offset {offset} has bLength {b_length}, below its minimum {min}")]
    TooShortForType {
        /// Descriptor type.
        desc_type: u8,
        /// Byte offset.
        offset: usize,
        /// Its `bLength`.
        b_length: u8,
        /// Required minimum.
        min: u8,
    },
    /// The data ends before the descriptor's fixed part or wTotalLength.
    #[error("descriptor data has {got} bytes, {needed} needed")]
    Truncated {
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// A serialised configuration would exceed 65535 bytes.
    #[error("configuration would be {0} bytes, more than wTotalLength can express")]
    TooLarge(usize),
    /// The first descriptor has the wrong type.
    #[error("expected descriptor type {expected}, found {found}")]
    WrongType {
        /// Expected type.
        expected: u8,
        /// Found type.
        found: u8,
    },
    /// More interfaces or endpoints than the count fields can hold.
    #[error("more than 255 {0} in one configuration or interface")]
    TooMany(&'static str),
    /// An `extra` blob is not a chain of well-formed descriptors, or holds an
    /// interface or endpoint descriptor (which would change the structure).
    #[error("extra descriptor bytes at index {index} are malformed or hold an interface or endpoint descriptor")]
    BadExtra {
        /// Index in the blob.
        index: usize,
    },
}

/// The 18-byte device descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DeviceDescriptor {
    /// USB release, BCD (0x0200 = 2.0).
    pub bcd_usb: u16,
    /// Class code.
    pub device_class: u8,
    /// Subclass code.
    pub device_subclass: u8,
    /// Protocol code.
    pub device_protocol: u8,
    /// Max packet size of endpoint 0 (8, 16, 32, 64; 9 means 512 on USB 3).
    pub max_packet_size0: u8,
    /// Vendor id.
    pub id_vendor: u16,
    /// Product id.
    pub id_product: u16,
    /// Device release, BCD.
    pub bcd_device: u16,
    /// String index of the manufacturer.
    pub i_manufacturer: u8,
    /// String index of the product.
    pub i_product: u8,
    /// String index of the serial number.
    pub i_serial_number: u8,
    /// Number of configurations.
    pub num_configurations: u8,
}

fn le16(d: &[u8], i: usize) -> u16 {
    match d.get(i..i + 2) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => 0,
    }
}

fn byte(d: &[u8], i: usize) -> u8 {
    d.get(i).copied().unwrap_or(0)
}

impl DeviceDescriptor {
    /// Size on the wire.
    pub const LEN: usize = Self::B_LENGTH as usize;
    /// `bLength`, the size as the descriptor's own first byte.
    const B_LENGTH: u8 = 18;

    /// Parses the first 18 bytes of `data` (`bLength` 18, type DEVICE).
    pub fn parse(data: &[u8]) -> Result<Self, DescriptorError> {
        if data.len() < Self::LEN {
            return Err(DescriptorError::Truncated {
                needed: Self::LEN,
                got: data.len(),
            });
        }
        if byte(data, 1) != dt::DEVICE {
            return Err(DescriptorError::WrongType {
                expected: dt::DEVICE,
                found: byte(data, 1),
            });
        }
        if usize::from(byte(data, 0)) < Self::LEN {
            return Err(DescriptorError::TooShortForType {
                desc_type: dt::DEVICE,
                offset: 0,
                b_length: byte(data, 0),
                min: Self::B_LENGTH,
            });
        }
        Ok(Self {
            bcd_usb: le16(data, 2),
            device_class: byte(data, 4),
            device_subclass: byte(data, 5),
            device_protocol: byte(data, 6),
            max_packet_size0: byte(data, 7),
            id_vendor: le16(data, 8),
            id_product: le16(data, 10),
            bcd_device: le16(data, 12),
            i_manufacturer: byte(data, 14),
            i_product: byte(data, 15),
            i_serial_number: byte(data, 16),
            num_configurations: byte(data, 17),
        })
    }

    /// The wire form.
    pub fn to_bytes(&self) -> [u8; 18] {
        let [u0, u1] = self.bcd_usb.to_le_bytes();
        let [v0, v1] = self.id_vendor.to_le_bytes();
        let [p0, p1] = self.id_product.to_le_bytes();
        let [d0, d1] = self.bcd_device.to_le_bytes();
        [
            Self::B_LENGTH,
            dt::DEVICE,
            u0,
            u1,
            self.device_class,
            self.device_subclass,
            self.device_protocol,
            self.max_packet_size0,
            v0,
            v1,
            p0,
            p1,
            d0,
            d1,
            self.i_manufacturer,
            self.i_product,
            self.i_serial_number,
            self.num_configurations,
        ]
    }
}

/// Endpoint transfer type as encoded in `bmAttributes` bits 0-1 (note: a
/// different numbering from the usbif pipe's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointType {
    /// 0.
    Control,
    /// 1.
    Isochronous,
    /// 2.
    Bulk,
    /// 3.
    Interrupt,
}

/// An endpoint descriptor plus the class-specific bytes that follow it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EndpointDescriptor {
    /// `bEndpointAddress`: number | 0x80 for IN.
    pub address: u8,
    /// `bmAttributes`: transfer type and iso sync/usage.
    pub attributes: u8,
    /// `wMaxPacketSize` (bits 11-12: extra transactions per microframe).
    pub max_packet_size: u16,
    /// `bInterval`.
    pub interval: u8,
    /// Bytes of this descriptor beyond the standard 7 (audio class
    /// endpoints are 9 bytes: `bRefresh`, `bSynchAddress`).
    pub tail: Vec<u8>,
    /// Descriptors following this one up to the next standard descriptor.
    pub extra: Vec<u8>,
}

impl EndpointDescriptor {
    /// Size of the standard part.
    pub const LEN: usize = Self::B_LENGTH as usize;
    /// `bLength`, the size as the descriptor's own first byte.
    const B_LENGTH: u8 = 7;

    /// An endpoint without extra bytes.
    pub fn new(
        address: u8,
        endpoint_type: EndpointType,
        max_packet_size: u16,
        interval: u8,
    ) -> Self {
        Self {
            address,
            attributes: endpoint_type as u8,
            max_packet_size,
            interval,
            tail: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Endpoint number (0..=15).
    pub fn number(&self) -> u8 {
        self.address & 0x0f
    }

    /// Direction from the address.
    pub fn direction(&self) -> Direction {
        if self.address & 0x80 != 0 {
            Direction::In
        } else {
            Direction::Out
        }
    }

    /// Transfer type from the attributes.
    pub fn endpoint_type(&self) -> EndpointType {
        match self.attributes & 3 {
            0 => EndpointType::Control,
            1 => EndpointType::Isochronous,
            2 => EndpointType::Bulk,
            _ => EndpointType::Interrupt,
        }
    }

    fn standard_bytes(&self) -> [u8; 7] {
        let [m0, m1] = self.max_packet_size.to_le_bytes();
        [
            Self::B_LENGTH,
            dt::ENDPOINT,
            self.address,
            self.attributes,
            m0,
            m1,
            self.interval,
        ]
    }
}

/// One alternate setting of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AltSetting {
    /// `bInterfaceNumber`.
    pub interface_number: u8,
    /// `bAlternateSetting`.
    pub alternate_setting: u8,
    /// `bInterfaceClass`.
    pub class: u8,
    /// `bInterfaceSubClass`.
    pub subclass: u8,
    /// `bInterfaceProtocol`.
    pub protocol: u8,
    /// `iInterface`.
    pub i_interface: u8,
    /// Endpoints as found (the declared `bNumEndpoints` is not trusted).
    pub endpoints: Vec<EndpointDescriptor>,
    /// Class-specific descriptors between this and the first endpoint.
    pub extra: Vec<u8>,
}

/// An interface: its alternate settings in the order they appear.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Interface {
    /// `bInterfaceNumber`.
    pub number: u8,
    /// Alternate settings (at least one).
    pub alt_settings: Vec<AltSetting>,
}

/// A whole configuration (what GET_DESCRIPTOR(CONFIG) returns with
/// wLength = wTotalLength). Counts and lengths are derived, not stored, so
/// that parsing and serialising are inverse.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ConfigDescriptor {
    /// `bConfigurationValue`.
    pub configuration_value: u8,
    /// `iConfiguration`.
    pub i_configuration: u8,
    /// `bmAttributes` (0x80 reserved-one, 0x40 self-powered, 0x20 remote wakeup).
    pub attributes: u8,
    /// `bMaxPower` in 2 mA units.
    pub max_power: u8,
    /// Interfaces, in order of first appearance.
    pub interfaces: Vec<Interface>,
    /// Descriptors between the configuration and the first interface (IADs,
    /// OTG, ...).
    pub extra: Vec<u8>,
}

/// `bLength` of a configuration descriptor; the `u8` is the source so the
/// `usize` form below is a widening, never a truncating, conversion.
const CONFIG_B_LENGTH: u8 = 9;
const CONFIG_LEN: usize = CONFIG_B_LENGTH as usize;
/// `bLength` of an interface descriptor.
const INTERFACE_B_LENGTH: u8 = 9;
const INTERFACE_LEN: usize = INTERFACE_B_LENGTH as usize;

impl ConfigDescriptor {
    /// `wTotalLength` of a configuration header (bytes 2-3), if present.
    pub fn total_length(data: &[u8]) -> Option<u16> {
        (data.len() >= 4).then(|| le16(data, 2))
    }

    /// Parses a full configuration. `data` must hold `wTotalLength` bytes;
    /// bytes past it are ignored.
    pub fn parse(data: &[u8]) -> Result<Self, DescriptorError> {
        if data.len() < CONFIG_LEN {
            return Err(DescriptorError::Truncated {
                needed: CONFIG_LEN,
                got: data.len(),
            });
        }
        if byte(data, 1) != dt::CONFIG {
            return Err(DescriptorError::WrongType {
                expected: dt::CONFIG,
                found: byte(data, 1),
            });
        }
        let head_len = usize::from(byte(data, 0));
        if head_len < CONFIG_LEN {
            return Err(DescriptorError::TooShortForType {
                desc_type: dt::CONFIG,
                offset: 0,
                b_length: byte(data, 0),
                min: CONFIG_B_LENGTH,
            });
        }
        let total = usize::from(le16(data, 2));
        let body = data.get(..total).ok_or(DescriptorError::Truncated {
            needed: total,
            got: data.len(),
        })?;
        let mut cfg = Self {
            configuration_value: byte(data, 5),
            i_configuration: byte(data, 6),
            attributes: byte(data, 7),
            max_power: byte(data, 8),
            ..Self::default()
        };
        // The header's own bLength may exceed 9; the excess is ignored (it is
        // not a descriptor of its own) but must fit in wTotalLength.
        if head_len > total {
            return Err(DescriptorError::BadLength {
                offset: 0,
                b_length: byte(data, 0),
                available: total,
            });
        }
        let mut offset = head_len;
        // Each step advances by bLength ≥ 2, so this ends within total/2 steps.
        while let Some(rest) = body.get(offset..).filter(|r| !r.is_empty()) {
            let b_length = byte(rest, 0);
            let len = usize::from(b_length);
            if len < 2 || len > rest.len() {
                return Err(DescriptorError::BadLength {
                    offset,
                    b_length,
                    available: rest.len(),
                });
            }
            let d = rest.get(..len).unwrap_or(&[]);
            match byte(d, 1) {
                dt::INTERFACE => cfg.push_interface(d, offset)?,
                dt::ENDPOINT => cfg.push_endpoint(d, offset)?,
                _ => cfg.last_extra().extend_from_slice(d),
            }
            offset += len;
        }
        Ok(cfg)
    }

    fn push_interface(&mut self, d: &[u8], offset: usize) -> Result<(), DescriptorError> {
        if d.len() < INTERFACE_LEN {
            return Err(DescriptorError::TooShortForType {
                desc_type: dt::INTERFACE,
                offset,
                b_length: byte(d, 0),
                min: INTERFACE_B_LENGTH,
            });
        }
        let alt = AltSetting {
            interface_number: byte(d, 2),
            alternate_setting: byte(d, 3),
            class: byte(d, 5),
            subclass: byte(d, 6),
            protocol: byte(d, 7),
            i_interface: byte(d, 8),
            endpoints: Vec::new(),
            extra: Vec::new(),
        };
        self.add_alt_setting(alt);
        Ok(())
    }

    /// Appends `alt` to its interface (creating the interface if new) and
    /// makes it the current one.
    pub(crate) fn add_alt_setting(&mut self, alt: AltSetting) {
        let number = alt.interface_number;
        // Keep the current interface last so endpoints attach to it.
        let pos = self.interfaces.iter().position(|i| i.number == number);
        let mut intf = match pos {
            Some(p) => self.interfaces.remove(p),
            None => Interface {
                number,
                alt_settings: Vec::new(),
            },
        };
        intf.alt_settings.push(alt);
        self.interfaces.push(intf);
    }

    fn push_endpoint(&mut self, d: &[u8], offset: usize) -> Result<(), DescriptorError> {
        if d.len() < EndpointDescriptor::LEN {
            return Err(DescriptorError::TooShortForType {
                desc_type: dt::ENDPOINT,
                offset,
                b_length: byte(d, 0),
                min: EndpointDescriptor::B_LENGTH,
            });
        }
        let alt = self
            .current_alt()
            .ok_or(DescriptorError::EndpointOutsideInterface { offset })?;
        alt.endpoints.push(EndpointDescriptor {
            address: byte(d, 2),
            attributes: byte(d, 3),
            max_packet_size: le16(d, 4),
            interval: byte(d, 6),
            // Audio endpoints are 9 bytes; keep the tail so nothing is lost.
            tail: d.get(EndpointDescriptor::LEN..).unwrap_or(&[]).to_vec(),
            extra: Vec::new(),
        });
        Ok(())
    }

    fn current_alt(&mut self) -> Option<&mut AltSetting> {
        self.interfaces.last_mut()?.alt_settings.last_mut()
    }

    /// Where an unknown descriptor goes: after the last endpoint, else the
    /// last alternate setting, else the configuration header (as libusb).
    pub(super) fn last_extra(&mut self) -> &mut Vec<u8> {
        match self
            .interfaces
            .last_mut()
            .and_then(|i| i.alt_settings.last_mut())
        {
            Some(alt) => match alt.endpoints.last_mut() {
                Some(ep) => &mut ep.extra,
                None => &mut alt.extra,
            },
            None => &mut self.extra,
        }
    }

    /// Serialises the configuration with computed `wTotalLength`,
    /// `bNumInterfaces` and `bNumEndpoints`. `extra` blobs must be chains of
    /// well-formed descriptors other than interface and endpoint. For well-formed input,
    /// `parse(to_bytes(c)) == c`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, DescriptorError> {
        let num_interfaces = u8::try_from(self.interfaces.len())
            .map_err(|_| DescriptorError::TooMany("interfaces"))?;
        let mut out = vec![
            CONFIG_B_LENGTH,
            dt::CONFIG,
            0,
            0,
            num_interfaces,
            self.configuration_value,
            self.i_configuration,
            self.attributes,
            self.max_power,
        ];
        append_extra(&mut out, &self.extra)?;
        for intf in &self.interfaces {
            for alt in &intf.alt_settings {
                append_alt_setting(&mut out, intf.number, alt)?;
            }
        }
        let total = u16::try_from(out.len()).map_err(|_| DescriptorError::TooLarge(out.len()))?;
        out.splice(2..4, total.to_le_bytes());
        Ok(out)
    }
}

/// One alternate setting of interface `number`: its interface descriptor,
/// the descriptors following it, then its endpoints.
fn append_alt_setting(
    out: &mut Vec<u8>,
    number: u8,
    alt: &AltSetting,
) -> Result<(), DescriptorError> {
    let num_endpoints =
        u8::try_from(alt.endpoints.len()).map_err(|_| DescriptorError::TooMany("endpoints"))?;
    out.extend_from_slice(&[
        INTERFACE_B_LENGTH,
        dt::INTERFACE,
        number,
        alt.alternate_setting,
        num_endpoints,
        alt.class,
        alt.subclass,
        alt.protocol,
        alt.i_interface,
    ]);
    append_extra(out, &alt.extra)?;
    for ep in &alt.endpoints {
        append_endpoint(out, ep)?;
    }
    Ok(())
}

/// An endpoint's standard part, its own tail and the following descriptors.
fn append_endpoint(out: &mut Vec<u8>, ep: &EndpointDescriptor) -> Result<(), DescriptorError> {
    let mut std = ep.standard_bytes().to_vec();
    std.extend_from_slice(&ep.tail);
    let b_length =
        u8::try_from(std.len()).map_err(|_| DescriptorError::TooMany("endpoint bytes"))?;
    if let Some(first) = std.first_mut() {
        *first = b_length;
    }
    out.extend_from_slice(&std);
    append_extra(out, &ep.extra)
}

fn check_chain(blob: &[u8]) -> Result<(), DescriptorError> {
    let mut i = 0;
    while let Some(rest) = blob.get(i..).filter(|r| !r.is_empty()) {
        let len = usize::from(byte(rest, 0));
        let t = byte(rest, 1);
        if len < 2 || len > rest.len() || matches!(t, dt::INTERFACE | dt::ENDPOINT) {
            return Err(DescriptorError::BadExtra { index: i });
        }
        i += len;
    }
    Ok(())
}

fn append_extra(out: &mut Vec<u8>, blob: &[u8]) -> Result<(), DescriptorError> {
    check_chain(blob)?;
    out.extend_from_slice(blob);
    Ok(())
}

#[cfg(test)]
mod tests;
