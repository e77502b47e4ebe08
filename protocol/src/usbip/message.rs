//! Whole messages (header, data, iso descriptors): what follows each header,
//! and the encoders that refuse what vhci would reject.

use thiserror::Error;

use super::header::RetUnlinkHeader;
use super::header::{CmdSubmitHeader, CmdUnlinkHeader, Header, HeaderError, RetSubmitHeader};
use super::iso::{self, encode_iso_packets, IsoError};
use super::{Direction, PacketCount, HEADER_LEN, ISO_PACKET_LEN};
use crate::wire::IsoPacketDescriptor;

/// What a reply must agree with: the parts of its `CMD_SUBMIT` that decide
/// the reply's layout. vhci keeps them in the URB it finds by `seqnum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubmitShape {
    /// IN replies carry data, OUT replies none.
    pub direction: Direction,
    /// The buffer `actual_length` and every iso packet must fit.
    pub transfer_buffer_length: u32,
    /// Descriptors the reply carries: as many as the request had.
    pub number_of_packets: PacketCount,
}

/// A `CMD_SUBMIT` with what follows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CmdSubmit {
    /// The header.
    pub header: CmdSubmitHeader,
    /// OUT: exactly `transfer_buffer_length` bytes (iso: with the padding
    /// between packets, as vhci sends the whole buffer). IN: empty.
    pub out_data: Vec<u8>,
    /// One per packet, `actual_length`/`status` as the driver left them.
    pub iso_packets: Vec<IsoPacketDescriptor>,
}

/// A `RET_SUBMIT` with what follows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetSubmit {
    /// The header.
    pub header: RetSubmitHeader,
    /// IN: exactly `actual_length` bytes (iso: the packets' received bytes
    /// back to back, in packet order). OUT: empty.
    pub in_data: Vec<u8>,
    /// One per requested packet; empty for non-iso.
    pub iso_packets: Vec<IsoPacketDescriptor>,
}

/// One whole message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    /// `USBIP_CMD_SUBMIT`.
    CmdSubmit(CmdSubmit),
    /// `USBIP_CMD_UNLINK`.
    CmdUnlink(CmdUnlinkHeader),
    /// `USBIP_RET_SUBMIT`.
    RetSubmit(RetSubmit),
    /// `USBIP_RET_UNLINK`.
    RetUnlink(RetUnlinkHeader),
}

/// A message an encoder will not write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The header itself is not encodable.
    #[error("invalid header")]
    Header(#[source] HeaderError),
    /// The data does not have the length the header announces.
    #[error("{got} data bytes where the header announces {want}")]
    DataLength {
        /// Bytes given.
        got: usize,
        /// Bytes the header and direction call for.
        want: u32,
    },
    /// `actual_length` beyond the request's buffer (vhci: "should not
    /// happen, probably malicious packet").
    #[error("actual_length {actual_length} exceeds the {buffer_len}-byte buffer")]
    ActualBeyondBuffer {
        /// The reply's `actual_length`.
        actual_length: u32,
        /// The request's `transfer_buffer_length`.
        buffer_len: u32,
    },
    /// The packet count disagrees with the descriptors or the request.
    #[error("number_of_packets {header:?} does not match the request's {request:?}")]
    PacketCount {
        /// In the header being encoded.
        header: PacketCount,
        /// In the request (or, for a request, its descriptors).
        request: PacketCount,
    },
    /// The iso descriptors do not fit the transfer.
    #[error("invalid iso descriptors")]
    Iso(#[source] IsoError),
    /// A `RET_SUBMIT`'s layout depends on its request, which was not given.
    #[error("RET_SUBMIT without the shape of its request")]
    NoRequest,
}

impl CmdSubmitHeader {
    /// Data bytes that follow this header (OUT only).
    pub fn data_len(&self) -> u32 {
        match self.basic.direction {
            Direction::Out => self.transfer_buffer_length,
            Direction::In => 0,
        }
    }

    /// What the reply must agree with.
    pub fn shape(&self) -> SubmitShape {
        SubmitShape {
            direction: self.basic.direction,
            transfer_buffer_length: self.transfer_buffer_length,
            number_of_packets: self.number_of_packets,
        }
    }
}

impl RetSubmitHeader {
    /// Data bytes that follow this header, given its request.
    pub fn data_len(&self, request: &SubmitShape) -> u32 {
        match request.direction {
            Direction::In => self.actual_length,
            Direction::Out => 0,
        }
    }
}

/// Bytes `packets` iso descriptors take.
pub(crate) fn iso_len(packets: PacketCount) -> usize {
    usize::try_from(packets.descriptors())
        .unwrap_or(usize::MAX)
        .saturating_mul(ISO_PACKET_LEN)
}

impl CmdSubmit {
    /// Checks what follows the header against it: data length, one
    /// descriptor per packet, every packet inside the buffer.
    pub fn check(&self) -> Result<(), EncodeError> {
        let want = self.header.data_len();
        if self.out_data.len() != want as usize {
            return Err(EncodeError::DataLength {
                got: self.out_data.len(),
                want,
            });
        }
        let packets = self.header.number_of_packets;
        if self.iso_packets.len() != packets.descriptors() as usize {
            return Err(EncodeError::PacketCount {
                header: packets,
                request: PacketCount::Count(
                    u32::try_from(self.iso_packets.len()).unwrap_or(u32::MAX),
                ),
            });
        }
        iso::check_in_buffer(&self.iso_packets, self.header.transfer_buffer_length)
            .map_err(EncodeError::Iso)
    }

    /// Appends the wire bytes (header, OUT data, descriptors), as
    /// `vhci_send_cmd_submit` writes them, after [`CmdSubmit::check`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let header = Header::CmdSubmit(self.header)
            .encode()
            .map_err(EncodeError::Header)?;
        self.check()?;
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.out_data);
        encode_iso_packets(&self.iso_packets, out);
        Ok(())
    }
}

impl RetSubmit {
    /// Checks the reply against its request the way vhci will
    /// (`vhci_recv_ret_submit`): `actual_length` within the buffer, IN data of
    /// exactly `actual_length` bytes (none for OUT), the request's packet
    /// count, each packet inside the buffer with `actual_length` ≤ `length`,
    /// and their sum equal to the reply's `actual_length`.
    pub fn check(&self, request: &SubmitShape) -> Result<(), EncodeError> {
        let h = &self.header;
        if h.actual_length > request.transfer_buffer_length {
            return Err(EncodeError::ActualBeyondBuffer {
                actual_length: h.actual_length,
                buffer_len: request.transfer_buffer_length,
            });
        }
        let want = h.data_len(request);
        if self.in_data.len() != want as usize {
            return Err(EncodeError::DataLength {
                got: self.in_data.len(),
                want,
            });
        }
        let (got, asked) = (h.number_of_packets, request.number_of_packets);
        if got.descriptors() != asked.descriptors()
            || self.iso_packets.len() != asked.descriptors() as usize
        {
            return Err(EncodeError::PacketCount {
                header: got,
                request: asked,
            });
        }
        if asked.descriptors() == 0 {
            return Ok(());
        }
        iso::check_reply(
            &self.iso_packets,
            request.transfer_buffer_length,
            h.actual_length,
        )
        .map_err(EncodeError::Iso)
    }

    /// Appends the wire bytes (header, IN data, descriptors), as
    /// `stub_send_ret_submit` writes them, after [`RetSubmit::check`].
    pub fn encode(&self, request: &SubmitShape, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let wire = self.wire(request)?;
        out.reserve(wire.len());
        for part in wire.parts() {
            out.extend_from_slice(part);
        }
        Ok(())
    }

    /// The wire bytes in three parts, after [`RetSubmit::check`]; the IN
    /// data is borrowed, not copied.
    ///
    /// WHY: a reply of up to a megabyte goes to the socket in one vectored
    /// write, without first being copied behind its header.
    pub fn wire(&self, request: &SubmitShape) -> Result<RetSubmitWire<'_>, EncodeError> {
        let header = Header::RetSubmit(self.header)
            .encode()
            .map_err(EncodeError::Header)?;
        self.check(request)?;
        let mut descriptors = Vec::new();
        encode_iso_packets(&self.iso_packets, &mut descriptors);
        Ok(RetSubmitWire {
            header,
            data: &self.in_data,
            descriptors,
        })
    }
}

/// A checked `RET_SUBMIT` as it goes on the wire, in order: header, IN
/// data, iso descriptors ([`RetSubmit::wire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetSubmitWire<'a> {
    /// The encoded header.
    pub header: [u8; HEADER_LEN],
    /// The IN data (empty for OUT).
    pub data: &'a [u8],
    /// The encoded iso descriptors (empty for non-iso).
    pub descriptors: Vec<u8>,
}

impl RetSubmitWire<'_> {
    /// The three parts, for a vectored write.
    pub fn parts(&self) -> [&[u8]; 3] {
        [&self.header, self.data, &self.descriptors]
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        HEADER_LEN + self.data.len() + self.descriptors.len()
    }

    /// Never: a message has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }
}

fn encode_header(header: Header, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.extend_from_slice(&header.encode().map_err(EncodeError::Header)?);
    Ok(())
}

impl Message {
    /// Appends the wire bytes. A `RET_SUBMIT` needs its request's shape
    /// (`None` refuses it: its layout cannot be checked without one).
    pub fn encode(
        &self,
        request: Option<&SubmitShape>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        match self {
            Self::CmdSubmit(m) => m.encode(out),
            Self::RetSubmit(m) => {
                let shape = request.ok_or(EncodeError::NoRequest)?;
                m.encode(shape, out)
            }
            // Unlinks are a header and nothing else.
            Self::CmdUnlink(h) => encode_header(Header::CmdUnlink(*h), out),
            Self::RetUnlink(h) => encode_header(Header::RetUnlink(*h), out),
        }
    }
}
