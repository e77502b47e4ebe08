//! # pvusb-protocol
//!
//! Everything about Xen's paravirtual USB protocol (usbif) that is pure data:
//! the wire types byte-exact with `usbif.h`, its constants, the pipe
//! encoding, status codes, speeds, xenbus states, the xenstore layout of a
//! `vusb` controller, host busids, standard USB descriptors, and the
//! validation of URB requests. No I/O, no `unsafe`, no global state: the
//! backend, the frontend, the toolstack, the tests and the fuzzers all share
//! these definitions, so the two sides cannot drift apart.
//!
//! ## Where each concern lives
//!
//! | module | concern |
//! |---|---|
//! | [`consts`] | usbif constants, ring sizes computed by [`consts::ring_slots`] |
//! | [`wire`] | `#[repr(C)]` `Pod` types: [`UrbRequest`], [`UrbResponse`], [`RequestSegment`], [`ConnRequest`], [`ConnResponse`], [`IsoPacketDescriptor`], [`SetupPacket`] |
//! | [`pipe`] | [`Pipe`] decode/encode, [`TransferType`], [`Direction`] |
//! | [`status`] | the seven [`Status`] values and [`TransferOutcome`] → status |
//! | [`speed`] | [`Speed`], [`UsbVer`] and which speeds a controller may report |
//! | [`xenbus`] | [`XenbusState`] and its decimal xenstore form |
//! | [`xenstore`] | directory paths, key names, strict number parsers |
//! | [`busid`] | [`BusId`], [`InterfaceId`], libxl's key encoding |
//! | [`usb`] | chapter-9 requests, descriptor parsing and building, strings |
//! | [`usbip`] | the USB/IP wire codec (vhci-hcd's messages), bounded stream decoder |
//! | [`validate`](mod@validate) | [`validate()`]: [`UrbRequest`] → [`ValidatedUrb`] |
//!
//! ## The trust boundary
//!
//! A [`UrbRequest`] is guest-written bytes and means nothing by itself. The
//! backend copies each ring slot out of shared memory exactly once (the
//! `ring` crate does that), then calls [`validate()`]; only the resulting
//! [`ValidatedUrb`] is acted upon. It guarantees the port is in range, every
//! segment stays within its page, the transfer size is Σ segment lengths
//! (≤ 64 KiB), a control transfer's wLength is covered by its buffer, and an
//! isochronous request's descriptor segments hold all its packet
//! descriptors. Following the spec's stale-field rule, only the fields a
//! request type uses are looked at, so Linux xen-hcd's unzeroed shadow
//! requests are accepted. A failed validation yields a [`ValidateError`]
//! naming the bad field and the [`Status`] to answer with; it never stops the
//! ring. Everything else parsed here (xenstore values, busids, descriptors
//! from host devices) is treated as hostile too: strict parsers, bounded
//! loops, errors instead of panics.
//!
//! usbif is native-endian and every Xen platform is little-endian; wire
//! integers are stored natively and the crate refuses big-endian targets.
//!
//! ```
//! use pvusb_protocol::{validate, Pipe, RequestSegment, SetupPacket, UrbRequest, ValidatedUrb};
//! use pvusb_protocol::{Direction, TransferType};
//!
//! // Frontend side: GET_DESCRIPTOR(DEVICE) to address 0 on port 1.
//! let pipe = Pipe::new(TransferType::Control, Direction::In, 0, 0, 1).unwrap();
//! let setup = SetupPacket::get_descriptor(1, 0, 0, 18);
//! let req = UrbRequest::control(0, pipe, setup, &[RequestSegment::new(42, 0, 18)]).unwrap();
//!
//! // Backend side, after copying the slot out of the ring:
//! match validate(&req, 8) {
//!     Ok(ValidatedUrb::Submit(s)) => assert_eq!(s.setup(), Some(setup)),
//!     Ok(ValidatedUrb::Unlink { .. }) => unreachable!(),
//!     Err(e) => panic!("answer with {:?}: {e}", e.status()),
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Hostile guest input flows through this crate: a silent `as` truncation or sign
// flip could turn an out-of-range length or index into a plausible one. Every
// remaining cast carries `#[allow]` and a `// CAST:` comment saying why it is exact.
#![deny(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

pub mod busid;
pub mod consts;
pub mod pipe;
pub mod speed;
pub mod status;
pub mod usb;
pub mod usbip;
pub mod validate;
pub mod wire;
pub mod xenbus;
pub mod xenstore;

pub use busid::{decode_key, encode_key, BusId, BusIdError, InterfaceId};
pub use pipe::{Direction, Pipe, PipeError, PipeFields, TransferType};
pub use speed::{Speed, SpeedError, UsbVer, UsbVerError};
pub use status::{Status, TransferOutcome};
pub use validate::{validate, Segments, Submit, SubmitKind, ValidateError, ValidatedUrb};
pub use wire::{
    check_disjoint, ConnRequest, ConnResponse, IsoPacketDescriptor, IsoPacketError, IsoParams,
    RequestSegment, SetupPacket, UrbRequest, UrbResponse, WireError,
};
pub use xenbus::{XenbusState, XenbusStateError};
pub use xenstore::ValueError;
