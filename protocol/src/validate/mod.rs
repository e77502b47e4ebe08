//! Turning a copied-out [`UrbRequest`] into a typed, trusted [`ValidatedUrb`].
//!
//! This is the trust boundary of the backend: everything past [`validate()`]
//! may rely on the invariants documented on [`Submit`]. The rules, and the
//! choices made where the spec leaves room:
//!
//! * **Stale fields** (spec 7.2): only the fields the request type uses are
//!   read. An unlink reads `id`, `pipe` and `u.unlink.unlink_id`, nothing else
//!   (its `nr_buffer_segs`, `seg[]`, flags are stale). Bulk ignores `u`;
//!   interrupt reads only `u.intr.interval`; `seg[i]` past the used ones is
//!   never looked at.
//! * **Port**: 1..=num_ports for submits and unlinks alike (QEMU indexes its
//!   port array with it unchecked); refused with `-EINVAL`.
//! * **Pipe undefined bits** (6, 19-29) are ignored: Linux never sets them and
//!   refusing them would only risk rejecting a legacy frontend.
//! * **transfer_flags**: only `SHORT_NOT_OK` is honoured, other bits ignored.
//! * **Segments**: `nr_buffer_segs` ≤ 16 (plus `nr_frame_desc_segs` for iso);
//!   every used segment must satisfy offset + length ≤ 4096. Zero-length used
//!   segments are accepted and dropped (see [`Segments`]).
//! * **Length**: the transfer size is Σ data segment lengths (≤ 65536).
//!   `buffer_length` is ignored, as QEMU does: it is u16, so an aligned 64 KiB
//!   transfer arrives as 0, and comparing it would add a failure mode without
//!   adding safety.
//! * **Control**: endpoint 0 only; Σ ≤ 65535; the segments must provide at
//!   least wLength bytes. The pipe DIR bit is *not* required to match
//!   `bmRequestType` (Linux only warns about that mismatch); the backend uses
//!   the setup packet for the transfer direction.
//! * **Endpoint 0 is control only**: bulk/interrupt/iso to endpoint 0 → Inval.
//! * **Isochronous**: number_of_packets ≥ 1 and 16 × number_of_packets ≤ Σ
//!   descriptor segment lengths. Each descriptor's offset/length is guest
//!   memory read later; check it with [`IsoPacketDescriptor::checked_range`]
//!   and the set of packets with [`check_disjoint`] (no two packets share a
//!   byte, so their lengths add up to at most the data length).
//! * **Unlink**: `unlink_id` < 16 (the URB ring size, hence the id range of
//!   xen-hcd); submit ids are not restricted (the in-flight table copes).
//!
//! [`IsoPacketDescriptor::checked_range`]: crate::IsoPacketDescriptor::checked_range
//! [`check_disjoint`]: crate::check_disjoint

mod error;
mod segments;
#[cfg(test)]
mod tests;

pub use error::ValidateError;
pub use segments::Segments;

use crate::consts::{ISO_PACKET_DESCRIPTOR_SIZE, MAX_SEGMENTS_PER_REQUEST, URB_RING_SIZE};
use crate::{Direction, Pipe, RequestSegment, SetupPacket, TransferType, UrbRequest};

/// [`ISO_PACKET_DESCRIPTOR_SIZE`] in the `u32` the byte counts are kept in; a
/// separate constant (checked equal at build time) so no cast is needed.
const ISO_PACKET_DESCRIPTOR_BYTES: u32 = 16;
const _: () = assert!(ISO_PACKET_DESCRIPTOR_BYTES as usize == ISO_PACKET_DESCRIPTOR_SIZE);

/// A request that passed [`validate()`].
// Submit is ~290 bytes (two inline segment lists) against ~12 for Unlink;
// it is moved once into the backend's in-flight table, so boxing it would only
// add an allocation per URB.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidatedUrb {
    /// A transfer to perform.
    Submit(Submit),
    /// Cancel the in-flight request `unlink_id`.
    Unlink {
        /// Id of this unlink request (answered separately).
        id: u16,
        /// Root-hub port, 1..=num_ports.
        port: u8,
        /// Id of the request to cancel, < 16.
        unlink_id: u16,
        /// The pipe as sent (the original request's, with the unlink bit).
        pipe: Pipe,
    },
}

impl ValidatedUrb {
    /// The request id to answer.
    pub fn id(&self) -> u16 {
        match self {
            Self::Submit(s) => s.id,
            Self::Unlink { id, .. } => *id,
        }
    }
}

/// What kind of transfer a submit is, with its type-specific parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitKind {
    /// Control transfer on endpoint 0.
    Control(SetupPacket),
    /// Bulk transfer.
    Bulk,
    /// Interrupt transfer.
    Interrupt {
        /// `u.intr.interval` (a libusb backend may ignore it).
        interval: u16,
    },
    /// Isochronous transfer.
    Isochronous {
        /// `u.isoc.interval`.
        interval: u16,
        /// `u.isoc.start_frame`.
        start_frame: u16,
        /// Packets (≥ 1); their descriptors fit in `desc_segs`.
        number_of_packets: u16,
        /// Segments holding the 16-byte packet descriptors, as one byte
        /// stream (a descriptor may straddle two segments).
        desc_segs: Segments,
    },
}

/// A validated transfer. Invariants: `1 ≤ port ≤ num_ports`; endpoint 0 iff
/// control; every data segment fits its page and is non-empty; `data_len` =
/// Σ data segment lengths ≤ 65536; control: `data_len ≤ 65535` and
/// `wLength ≤ data_len`; iso: `16 × number_of_packets ≤ desc bytes` and data +
/// descriptor segments ≤ 16 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submit {
    id: u16,
    pipe: Pipe,
    kind: SubmitKind,
    short_not_ok: bool,
    data: Segments,
}

impl Submit {
    /// Request id to echo.
    pub fn id(&self) -> u16 {
        self.id
    }
    /// The pipe as sent.
    pub fn pipe(&self) -> Pipe {
        self.pipe
    }
    /// Root-hub port, 1..=num_ports.
    pub fn port(&self) -> u8 {
        self.pipe.port()
    }
    /// Guest USB device address (0..=127).
    pub fn devnum(&self) -> u8 {
        self.pipe.device()
    }
    /// Endpoint number (0 iff control).
    pub fn endpoint(&self) -> u8 {
        self.pipe.endpoint()
    }
    /// Pipe direction; this is how the data pages were granted (OUT pages
    /// may be read-only). For control, the transfer direction is
    /// [`SetupPacket::is_in`].
    pub fn direction(&self) -> Direction {
        self.pipe.direction()
    }
    /// Endpoint address (number | 0x80 for IN).
    pub fn endpoint_address(&self) -> u8 {
        self.pipe.endpoint_address()
    }
    /// Transfer type.
    pub fn transfer_type(&self) -> TransferType {
        self.pipe.transfer_type()
    }
    /// Type-specific parameters.
    pub fn kind(&self) -> &SubmitKind {
        &self.kind
    }
    /// The setup packet if this is a control transfer.
    pub fn setup(&self) -> Option<SetupPacket> {
        match self.kind {
            SubmitKind::Control(s) => Some(s),
            _ => None,
        }
    }
    /// `USBIF_SHORT_NOT_OK` (QEMU ignores it for control; so may we).
    pub fn short_not_ok(&self) -> bool {
        self.short_not_ok
    }
    /// Data segments, non-empty, in order.
    pub fn data_segments(&self) -> &[RequestSegment] {
        self.data.as_slice()
    }
    /// Σ data segment lengths (≤ 65536): the buffer size.
    pub fn data_len(&self) -> u32 {
        self.data.total_bytes()
    }
    /// Bytes the transfer moves at most: wLength for control (≤ data_len),
    /// data_len otherwise.
    pub fn transfer_len(&self) -> u32 {
        match self.kind {
            SubmitKind::Control(s) => u32::from(s.w_length),
            _ => self.data_len(),
        }
    }
}

/// Validates a request already copied out of the ring, for a controller
/// with `num_ports` ports. Never panics, whatever the bytes.
pub fn validate(req: &UrbRequest, num_ports: u8) -> Result<ValidatedUrb, ValidateError> {
    let pipe = req.pipe();
    let port = pipe.port();
    if port == 0 || port > num_ports {
        return Err(ValidateError::PortOutOfRange { port, num_ports });
    }
    if pipe.is_unlink() {
        let unlink_id = req.unlink_id();
        if usize::from(unlink_id) >= URB_RING_SIZE {
            return Err(ValidateError::UnlinkIdOutOfRange { unlink_id });
        }
        return Ok(ValidatedUrb::Unlink {
            id: req.id,
            port,
            unlink_id,
            pipe,
        });
    }

    let transfer_type = pipe.transfer_type();
    let nr_data = req.nr_buffer_segs;
    let nr_desc = match transfer_type {
        TransferType::Isochronous => req.isoc().nr_frame_desc_segs,
        _ => 0,
    };
    let too_many = ValidateError::TooManySegments {
        data: nr_data,
        desc: nr_desc,
    };
    let data_end = usize::from(nr_data);
    let desc_end = data_end.checked_add(usize::from(nr_desc)).ok_or(too_many)?;
    if desc_end > MAX_SEGMENTS_PER_REQUEST {
        return Err(too_many);
    }
    let data_raw = req.seg.get(..data_end).ok_or(too_many)?;
    let data = Segments::check(data_raw, 0)?;

    match (transfer_type, pipe.endpoint()) {
        (TransferType::Control, 0) => {}
        (TransferType::Control, endpoint) => {
            return Err(ValidateError::ControlOnNonZeroEndpoint { endpoint })
        }
        (transfer_type, 0) => {
            return Err(ValidateError::NonControlOnEndpointZero { transfer_type })
        }
        _ => {}
    }

    let kind = match transfer_type {
        TransferType::Control => {
            let setup = req.ctrl();
            let data_len = data.total_bytes();
            if data_len > u32::from(u16::MAX) {
                return Err(ValidateError::ControlBufferTooLarge { data_len });
            }
            if u32::from(setup.w_length) > data_len {
                return Err(ValidateError::ControlDataTooShort {
                    w_length: setup.w_length,
                    data_len,
                });
            }
            SubmitKind::Control(setup)
        }
        TransferType::Bulk => SubmitKind::Bulk,
        TransferType::Interrupt => SubmitKind::Interrupt {
            interval: req.intr_interval(),
        },
        TransferType::Isochronous => {
            let p = req.isoc();
            if p.number_of_packets == 0 {
                return Err(ValidateError::IsoNoPackets);
            }
            let desc_raw = req.seg.get(data_end..desc_end).ok_or(too_many)?;
            let desc_segs = Segments::check(desc_raw, data_end)?;
            // ≤ 65535 × 16: no overflow.
            let needed = u32::from(p.number_of_packets) * ISO_PACKET_DESCRIPTOR_BYTES;
            let available = desc_segs.total_bytes();
            if needed > available {
                return Err(ValidateError::IsoDescriptorsTooShort { needed, available });
            }
            SubmitKind::Isochronous {
                interval: p.interval,
                start_frame: p.start_frame,
                number_of_packets: p.number_of_packets,
                desc_segs,
            }
        }
    };

    Ok(ValidatedUrb::Submit(Submit {
        id: req.id,
        pipe,
        kind,
        short_not_ok: req.short_not_ok(),
        data,
    }))
}
