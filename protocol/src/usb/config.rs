//! Building configuration descriptors, for devices the backend emulates.

use super::descriptor::{AltSetting, ConfigDescriptor, DescriptorError, EndpointDescriptor};

/// The fixed fields of an interface descriptor (one alternate setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InterfaceSpec {
    /// `bInterfaceNumber`.
    pub number: u8,
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
}

/// Builds a configuration in bus order: `interface`, then its class
/// descriptors (`class_descriptor`) and `endpoint`s, then the next
/// interface. Errors (an endpoint before any interface, a malformed class
/// descriptor, too many bytes) are reported by [`ConfigBuilder::build`].
///
/// ```
/// use pvusb_protocol::usb::{ConfigBuilder, ConfigDescriptor, EndpointDescriptor, EndpointType, InterfaceSpec};
/// let bytes = ConfigBuilder::new(1)
///     .interface(InterfaceSpec { number: 0, class: 8, subclass: 6, protocol: 0x50, ..Default::default() })
///     .endpoint(EndpointDescriptor::new(0x81, EndpointType::Bulk, 512, 0))
///     .endpoint(EndpointDescriptor::new(0x02, EndpointType::Bulk, 512, 0))
///     .build()
///     .unwrap();
/// assert_eq!(bytes.len(), 9 + 9 + 7 + 7);
/// assert_eq!(ConfigDescriptor::parse(&bytes).unwrap().interfaces[0].alt_settings[0].endpoints.len(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: ConfigDescriptor,
    error: Option<DescriptorError>,
}

impl ConfigBuilder {
    /// A bus-powered configuration `configuration_value` drawing 100 mA.
    pub fn new(configuration_value: u8) -> Self {
        Self {
            config: ConfigDescriptor {
                configuration_value,
                attributes: 0x80,
                max_power: 50,
                ..ConfigDescriptor::default()
            },
            error: None,
        }
    }

    /// `bmAttributes` (bit 7 is reserved-one and always set).
    pub fn attributes(mut self, attributes: u8) -> Self {
        self.config.attributes = attributes | 0x80;
        self
    }

    /// `bMaxPower` in 2 mA units.
    pub fn max_power(mut self, units_of_2ma: u8) -> Self {
        self.config.max_power = units_of_2ma;
        self
    }

    /// `iConfiguration`.
    pub fn i_configuration(mut self, index: u8) -> Self {
        self.config.i_configuration = index;
        self
    }

    /// Starts an interface alternate setting.
    pub fn interface(mut self, spec: InterfaceSpec) -> Self {
        self.config.add_alt_setting(AltSetting {
            interface_number: spec.number,
            alternate_setting: spec.alternate_setting,
            class: spec.class,
            subclass: spec.subclass,
            protocol: spec.protocol,
            i_interface: spec.i_interface,
            endpoints: Vec::new(),
            extra: Vec::new(),
        });
        self
    }

    /// Appends a class-specific descriptor (complete, with its `bLength`)
    /// after the last interface or endpoint, or after the configuration
    /// header if none yet (e.g. an interface association descriptor).
    pub fn class_descriptor(mut self, bytes: &[u8]) -> Self {
        // The same placement the parser uses for descriptors it does not know.
        self.config.last_extra().extend_from_slice(bytes);
        self
    }

    /// Appends an endpoint to the current interface.
    pub fn endpoint(mut self, ep: EndpointDescriptor) -> Self {
        match self
            .config
            .interfaces
            .last_mut()
            .and_then(|i| i.alt_settings.last_mut())
        {
            Some(alt) => alt.endpoints.push(ep),
            None => {
                self.error
                    .get_or_insert(DescriptorError::EndpointOutsideInterface { offset: 0 });
            }
        }
        self
    }

    /// The structured configuration.
    pub fn descriptor(self) -> Result<ConfigDescriptor, DescriptorError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.config),
        }
    }

    /// The configuration bytes, `wTotalLength` and counts filled in.
    pub fn build(self) -> Result<Vec<u8>, DescriptorError> {
        self.descriptor()?.to_bytes()
    }
}
