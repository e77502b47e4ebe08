//! Why a request was refused, and the status to answer it with.

use thiserror::Error;

use crate::{Status, TransferType};

/// A URB request that breaks a usbif rule. Each variant names the field that
/// was wrong. Every variant is answered with [`ValidateError::status`] in a
/// normal response: a bad request is the guest's problem, never a reason to
/// stop serving the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ValidateError {
    /// Control transfers carry at most 65535 bytes (wLength is 16 bits).
    #[error("control request has {data_len} bytes of segments, more than the 65535 a control transfer can move")]
    ControlBufferTooLarge {
        /// Σ segment lengths.
        data_len: u32,
    },
    /// Segments provide fewer bytes than the setup packet's wLength.
    #[error(
        "control request wLength {w_length} exceeds the {data_len} bytes its segments provide"
    )]
    ControlDataTooShort {
        /// From the setup packet.
        w_length: u16,
        /// Σ segment lengths.
        data_len: u32,
    },
    /// Control transfers use endpoint 0 only.
    #[error(
        "control request addressed to endpoint {endpoint}, control is only allowed on endpoint 0"
    )]
    ControlOnNonZeroEndpoint {
        /// Pipe endpoint.
        endpoint: u8,
    },
    /// The descriptor segments hold fewer than 16 bytes per packet.
    #[error("isochronous request needs {needed} bytes of packet descriptors but its descriptor segments hold {available}")]
    IsoDescriptorsTooShort {
        /// 16 × number_of_packets.
        needed: u32,
        /// Σ descriptor segment lengths.
        available: u32,
    },
    /// An isochronous request without packets.
    #[error("isochronous request has number_of_packets 0")]
    IsoNoPackets,
    /// Endpoint 0 is the control endpoint.
    #[error(
        "{transfer_type:?} request addressed to endpoint 0, which only takes control transfers"
    )]
    NonControlOnEndpointZero {
        /// Pipe transfer type.
        transfer_type: TransferType,
    },
    /// The pipe's port is 0 or above num-ports.
    #[error("pipe port {port} is outside 1..={num_ports}")]
    PortOutOfRange {
        /// Pipe port.
        port: u8,
        /// Ports of this controller.
        num_ports: u8,
    },
    /// A segment crosses its 4 KiB page.
    #[error("segment {index} has offset {offset} + length {length} beyond its 4096-byte page")]
    SegmentOutOfPage {
        /// Index into `seg[]`.
        index: usize,
        /// Segment offset.
        offset: u16,
        /// Segment length.
        length: u16,
    },
    /// More segments than `seg[]` holds.
    #[error("request uses {data} data + {desc} descriptor segments, more than 16")]
    TooManySegments {
        /// `nr_buffer_segs`.
        data: u16,
        /// `u.isoc.nr_frame_desc_segs` (0 unless isochronous).
        desc: u16,
    },
    /// An unlink naming an id no request can have.
    #[error("unlink_id {unlink_id} is not below the ring size 16")]
    UnlinkIdOutOfRange {
        /// `u.unlink.unlink_id`.
        unlink_id: u16,
    },
}

impl ValidateError {
    /// The usbif status to answer the refused request with. All rule
    /// violations are `-EINVAL` (QEMU answers -22 for bad requests too); a
    /// port out of range is a malformed request, not a missing device.
    pub const fn status(&self) -> Status {
        match self {
            Self::ControlBufferTooLarge { .. }
            | Self::ControlDataTooShort { .. }
            | Self::ControlOnNonZeroEndpoint { .. }
            | Self::IsoDescriptorsTooShort { .. }
            | Self::IsoNoPackets
            | Self::NonControlOnEndpointZero { .. }
            | Self::PortOutOfRange { .. }
            | Self::SegmentOutOfPage { .. }
            | Self::TooManySegments { .. }
            | Self::UnlinkIdOutOfRange { .. } => Status::Inval,
        }
    }
}
