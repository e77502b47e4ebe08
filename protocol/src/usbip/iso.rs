//! `struct usbip_iso_packet_descriptor` on the wire (big-endian `offset`,
//! `length`, `actual_length`, `status`) and the checks vhci applies to them.

use thiserror::Error;

use super::ISO_PACKET_LEN;
use crate::wire::IsoPacketDescriptor;

/// Iso descriptors that do not fit their transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IsoError {
    /// The descriptor bytes are not a whole number of descriptors.
    #[error("{0} bytes are not a whole number of 16-byte iso descriptors")]
    Truncated(usize),
    /// A packet's byte range leaves the transfer buffer.
    #[error("iso packet {index} ({offset}+{length}) leaves the {buffer_len}-byte buffer")]
    OutOfBuffer {
        /// Packet index.
        index: usize,
        /// Its offset.
        offset: u32,
        /// Its length.
        length: u32,
        /// `transfer_buffer_length`.
        buffer_len: u32,
    },
    /// A packet reports more bytes than it has room for.
    #[error("iso packet {index} reports {actual_length} bytes of {length}")]
    ActualBeyondLength {
        /// Packet index.
        index: usize,
        /// Its `actual_length`.
        actual_length: u32,
        /// Its `length`.
        length: u32,
    },
    /// vhci refuses a reply whose packets' `actual_length`s do not add up to
    /// the URB's (`usbip_recv_iso`).
    #[error("iso packets add up to {sum} bytes, actual_length is {actual_length}")]
    SumMismatch {
        /// Σ per-packet `actual_length`.
        sum: u64,
        /// The reply's `actual_length`.
        actual_length: u32,
    },
    /// A reply must describe exactly the packets of its request.
    #[error("{got} iso descriptors for a request of {want} packets")]
    CountMismatch {
        /// Descriptors present.
        got: usize,
        /// Packets requested.
        want: u32,
    },
}

/// Decodes `bytes` (a whole number of descriptors) in wire order.
pub fn decode_iso_packets(bytes: &[u8]) -> Result<Vec<IsoPacketDescriptor>, IsoError> {
    if bytes.len() % ISO_PACKET_LEN != 0 {
        return Err(IsoError::Truncated(bytes.len()));
    }
    let word = |c: &[u8], i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
    Ok(bytes
        .chunks_exact(ISO_PACKET_LEN)
        .map(|c| IsoPacketDescriptor {
            offset: word(c, 0),
            length: word(c, 4),
            actual_length: word(c, 8),
            status: word(c, 12) as i32,
        })
        .collect())
}

/// Appends `packets` in wire order.
pub fn encode_iso_packets(packets: &[IsoPacketDescriptor], out: &mut Vec<u8>) {
    out.reserve(packets.len().saturating_mul(ISO_PACKET_LEN));
    for p in packets {
        out.extend_from_slice(&p.offset.to_be_bytes());
        out.extend_from_slice(&p.length.to_be_bytes());
        out.extend_from_slice(&p.actual_length.to_be_bytes());
        out.extend_from_slice(&p.status.to_be_bytes());
    }
}

/// Every packet lies inside a `buffer_len`-byte buffer.
///
/// WHY only this for requests: vhci copies the driver's descriptors
/// unchecked, and overlapping packets are legal for a URB; the usbif side
/// (`check_disjoint`) refuses them where staging would amplify.
pub(crate) fn check_in_buffer(
    packets: &[IsoPacketDescriptor],
    buffer_len: u32,
) -> Result<(), IsoError> {
    for (index, p) in packets.iter().enumerate() {
        let end = u64::from(p.offset) + u64::from(p.length);
        if end > u64::from(buffer_len) {
            return Err(IsoError::OutOfBuffer {
                index,
                offset: p.offset,
                length: p.length,
                buffer_len,
            });
        }
    }
    Ok(())
}

/// A reply's descriptors: inside the buffer, none reporting more than its
/// length, and their `actual_length`s summing to the reply's (vhci checks
/// the sum and packs IN data by it: `usbip_recv_iso`, `usbip_pad_iso`).
pub(crate) fn check_reply(
    packets: &[IsoPacketDescriptor],
    buffer_len: u32,
    actual_length: u32,
) -> Result<(), IsoError> {
    check_in_buffer(packets, buffer_len)?;
    let mut sum = 0u64;
    for (index, p) in packets.iter().enumerate() {
        if p.actual_length > p.length {
            return Err(IsoError::ActualBeyondLength {
                index,
                actual_length: p.actual_length,
                length: p.length,
            });
        }
        sum += u64::from(p.actual_length);
    }
    if sum != u64::from(actual_length) {
        return Err(IsoError::SumMismatch { sum, actual_length });
    }
    Ok(())
}
