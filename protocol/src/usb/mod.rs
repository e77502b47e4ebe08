//! Standard USB (chapter 9) knowledge the backend and frontend share:
//! request codes and setup-packet builders/classifiers, descriptor parsing
//! (of bytes a host device or a peer supplies, so bounded and never
//! panicking) and descriptor building (for the emulated devices).

pub mod bot;
pub mod config;
pub mod descriptor;
pub mod request;
pub mod string;

pub use config::{ConfigBuilder, InterfaceSpec};
pub use descriptor::{
    AltSetting, ConfigDescriptor, DescriptorError, DeviceDescriptor, EndpointDescriptor,
    EndpointType, Interface,
};
pub use string::{
    decode_language_ids, decode_string, encode_language_ids, encode_string, StringError,
};
