//! Enumeration (GET_DESCRIPTOR at address 0, SET_ADDRESS, descriptors,
//! strings, SET_CONFIGURATION) and the [`Device`] handle it yields.

use std::time::Duration;

use pvusb_protocol::usb::request::dt;
use pvusb_protocol::usb::{
    decode_language_ids, decode_string, ConfigDescriptor, DeviceDescriptor, EndpointDescriptor,
};
use pvusb_protocol::{SetupPacket, Speed};

use crate::error::FrontendError;
use crate::frontend::Frontend;

/// Timeout of each enumeration request (USB 2.0 allows 5 s for control).
pub const ENUM_TIMEOUT: Duration = Duration::from_secs(5);

/// The language asked for when reading strings.
pub const LANG_EN_US: u16 = 0x0409;

/// An enumerated, configured device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Root-hub port.
    pub port: u8,
    /// The address the library gave it.
    pub address: u8,
    /// Port speed.
    pub speed: Speed,
    /// Device descriptor.
    pub descriptor: DeviceDescriptor,
    /// The first configuration, parsed.
    pub config: ConfigDescriptor,
    /// The configuration bytes as the device sent them.
    pub raw_config: Vec<u8>,
    /// Manufacturer string.
    pub manufacturer: Option<String>,
    /// Product string.
    pub product: Option<String>,
    /// Serial number string.
    pub serial: Option<String>,
}

impl Device {
    /// Every endpoint of the first alternate setting of every interface.
    pub fn endpoints(&self) -> Vec<EndpointDescriptor> {
        self.config
            .interfaces
            .iter()
            .filter_map(|i| i.alt_settings.first())
            .flat_map(|a| a.endpoints.iter().cloned())
            .collect()
    }
}

fn device_err(port: u8, reason: impl Into<String>) -> FrontendError {
    FrontendError::Device {
        port,
        reason: reason.into(),
    }
}

impl Frontend {
    /// Enumerates the device on `port` as a host does after a port reset:
    /// GET_DESCRIPTOR(device, 8 then 18) at address 0, SET_ADDRESS with a
    /// free address, GET_DESCRIPTOR(config, 9 then wTotalLength), the
    /// strings in US English, SET_CONFIGURATION of the first configuration.
    pub fn enumerate(&self, port: u8) -> Result<Device, FrontendError> {
        let status = self.port(port)?;
        if !status.connected() {
            return Err(FrontendError::NoDevice(port));
        }
        if status.address.is_some() {
            // Gives the old address back to the pool.
            self.set_port_address(port, None);
        }
        let t = ENUM_TIMEOUT;
        let head = self.control_in(port, 0, SetupPacket::get_descriptor(dt::DEVICE, 0, 0, 8), t)?;
        if head.len() < 8 {
            return Err(device_err(
                port,
                format!("first device descriptor read gave {} bytes", head.len()),
            ));
        }
        let raw = self.control_in(
            port,
            0,
            SetupPacket::get_descriptor(dt::DEVICE, 0, 0, 18),
            t,
        )?;
        let descriptor =
            DeviceDescriptor::parse(&raw).map_err(|e| device_err(port, e.to_string()))?;
        let address = self.alloc_address()?;
        if let Err(e) = self.control_out(port, 0, SetupPacket::set_address(address), &[], t) {
            self.release_address(address);
            return Err(e);
        }
        self.set_port_address(port, Some(address));
        let cfg_head = self.control_in(
            port,
            address,
            SetupPacket::get_descriptor(dt::CONFIG, 0, 0, 9),
            t,
        )?;
        let total = ConfigDescriptor::total_length(&cfg_head)
            .ok_or_else(|| device_err(port, "configuration header too short"))?;
        let raw_config = self.control_in(
            port,
            address,
            SetupPacket::get_descriptor(dt::CONFIG, 0, 0, total),
            t,
        )?;
        let config =
            ConfigDescriptor::parse(&raw_config).map_err(|e| device_err(port, e.to_string()))?;
        let (manufacturer, product, serial) = self.strings(port, address, &descriptor);
        self.control_out(
            port,
            address,
            SetupPacket::set_configuration(config.configuration_value),
            &[],
            t,
        )?;
        Ok(Device {
            port,
            address,
            speed: status.speed,
            descriptor,
            config,
            raw_config,
            manufacturer,
            product,
            serial,
        })
    }

    fn strings(
        &self,
        port: u8,
        address: u8,
        d: &DeviceDescriptor,
    ) -> (Option<String>, Option<String>, Option<String>) {
        if d.i_manufacturer == 0 && d.i_product == 0 && d.i_serial_number == 0 {
            return (None, None, None);
        }
        let langs = self
            .control_in(
                port,
                address,
                SetupPacket::get_descriptor(dt::STRING, 0, 0, 255),
                ENUM_TIMEOUT,
            )
            .ok()
            .and_then(|b| decode_language_ids(&b).ok())
            .unwrap_or_default();
        let lang = if langs.contains(&LANG_EN_US) {
            LANG_EN_US
        } else {
            langs.first().copied().unwrap_or(LANG_EN_US)
        };
        let read = |index: u8| -> Option<String> {
            if index == 0 {
                return None;
            }
            let b = self
                .control_in(
                    port,
                    address,
                    SetupPacket::get_descriptor(dt::STRING, index, lang, 255),
                    ENUM_TIMEOUT,
                )
                .ok()?;
            decode_string(&b).ok()
        };
        (
            read(d.i_manufacturer),
            read(d.i_product),
            read(d.i_serial_number),
        )
    }
}
