//! usbif wire types, constants, validation and xenstore layout (pure, no I/O).
#![forbid(unsafe_code)]

pub mod busid;
pub mod consts;
pub mod pipe;
pub mod speed;
pub mod status;
pub mod wire;
pub mod xenbus;
pub mod xenstore;

pub use busid::{decode_key, encode_key, BusId, BusIdError, InterfaceId};
pub use pipe::{Direction, Pipe, PipeError, PipeFields, TransferType};
pub use speed::{Speed, SpeedError, UsbVer, UsbVerError};
pub use status::{Status, TransferOutcome};
pub use wire::{
    ConnRequest, ConnResponse, IsoPacketDescriptor, IsoParams, RequestSegment, SetupPacket,
    UrbRequest, UrbResponse,
};
pub use xenbus::{XenbusState, XenbusStateError};
pub mod validate;
pub use validate::{validate, Segments, Submit, SubmitKind, ValidateError, ValidatedUrb};
