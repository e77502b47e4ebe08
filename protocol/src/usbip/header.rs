//! The 48-byte `struct usbip_header`: its four variants, their validation,
//! and their big-endian encoding.

use thiserror::Error;

use super::{Direction, Limits, PacketCount, HEADER_LEN, NON_ISO_PACKETS};

/// `base.command`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// `USBIP_CMD_SUBMIT`: a URB, client (vhci) to server.
    CmdSubmit,
    /// `USBIP_CMD_UNLINK`: cancel a submitted URB, client to server.
    CmdUnlink,
    /// `USBIP_RET_SUBMIT`: a URB's result, server to client.
    RetSubmit,
    /// `USBIP_RET_UNLINK`: an unlink's result, server to client.
    RetUnlink,
}

impl Command {
    /// The wire code.
    pub const fn code(self) -> u32 {
        match self {
            Self::CmdSubmit => 1,
            Self::CmdUnlink => 2,
            Self::RetSubmit => 3,
            Self::RetUnlink => 4,
        }
    }

    /// The command of a wire code, if it is one of the four.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::CmdSubmit),
            2 => Some(Self::CmdUnlink),
            3 => Some(Self::RetSubmit),
            4 => Some(Self::RetUnlink),
            _ => None,
        }
    }
}

/// `struct usbip_header_basic` without `command` (the [`Header`] variant is
/// the command).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Basic {
    /// Request id, per connection; a reply carries its request's.
    pub seqnum: u32,
    /// `(busnum << 16) | devnum` from the client; 0 from the server.
    pub devid: u32,
    /// Transfer direction; `Out` (0) in every server message and in
    /// `CMD_UNLINK`.
    pub direction: Direction,
    /// Endpoint number, 0..=15; 0 in every server message and in
    /// `CMD_UNLINK`.
    pub ep: u8,
}

impl Basic {
    /// The zeroed basic header servers send (`setup_base_pdu` in `stub_tx.c`).
    pub const fn reply(seqnum: u32) -> Self {
        Self {
            seqnum,
            devid: 0,
            direction: Direction::Out,
            ep: 0,
        }
    }
}

/// `USBIP_CMD_SUBMIT`'s header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CmdSubmitHeader {
    /// Common part.
    pub basic: Basic,
    /// `URB_*` flags as the client's kernel had them.
    pub transfer_flags: u32,
    /// Buffer size; OUT data of exactly this size follows the header.
    pub transfer_buffer_length: u32,
    /// Iso start frame (0 otherwise).
    pub start_frame: i32,
    /// Iso packets, hence descriptors after the data.
    pub number_of_packets: PacketCount,
    /// Polling interval of interrupt and iso endpoints.
    pub interval: i32,
    /// The control setup packet, USB byte order; zeros when unused.
    pub setup: [u8; 8],
}

/// `USBIP_RET_SUBMIT`'s header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RetSubmitHeader {
    /// Common part ([`Basic::reply`] from a conforming server).
    pub basic: Basic,
    /// 0 or a negative errno, as `urb->status`.
    pub status: i32,
    /// Bytes transferred; IN data of this size follows the header.
    pub actual_length: u32,
    /// Iso start frame.
    pub start_frame: i32,
    /// Echo of the request's packet count.
    pub number_of_packets: PacketCount,
    /// Iso packets that failed.
    pub error_count: i32,
}

/// `USBIP_CMD_UNLINK`'s header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CmdUnlinkHeader {
    /// Common part; its `seqnum` is the unlink's own id.
    pub basic: Basic,
    /// The `seqnum` of the `CMD_SUBMIT` to cancel.
    pub unlink_seqnum: u32,
}

/// `USBIP_RET_UNLINK`'s header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RetUnlinkHeader {
    /// Common part; its `seqnum` is the `CMD_UNLINK`'s.
    pub basic: Basic,
    /// `-ECONNRESET` if the URB was cancelled, 0 if it had completed.
    pub status: i32,
}

/// One decoded `struct usbip_header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Header {
    /// `USBIP_CMD_SUBMIT`.
    CmdSubmit(CmdSubmitHeader),
    /// `USBIP_CMD_UNLINK`.
    CmdUnlink(CmdUnlinkHeader),
    /// `USBIP_RET_SUBMIT`.
    RetSubmit(RetSubmitHeader),
    /// `USBIP_RET_UNLINK`.
    RetUnlink(RetUnlinkHeader),
}

/// A header field the kernel would not send, or one beyond [`Limits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HeaderError {
    /// Not one of the four commands.
    #[error("unknown command code {0:#x}")]
    UnknownCommand(u32),
    /// `USBIP_DIR_OUT` is 0 and `USBIP_DIR_IN` 1.
    #[error("direction {0} is neither 0 (out) nor 1 (in)")]
    Direction(u32),
    /// USB endpoint numbers are 4 bits.
    #[error("endpoint {0} is above 15")]
    Endpoint(u32),
    /// A length that is an `__s32` on the wire and negative.
    #[error("{field} is negative ({value})")]
    NegativeLength {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: i32,
    },
    /// A length above [`Limits::max_transfer_len`].
    #[error("{field} {length} is above the {max}-byte limit")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its value.
        length: u32,
        /// The limit.
        max: u32,
    },
    /// Negative and not the non-iso marker −1.
    #[error("number_of_packets {0} is negative")]
    NegativePacketCount(i32),
    /// More packets than [`Limits::max_iso_packets`].
    #[error("{count} iso packets is above the limit of {max}")]
    TooManyPackets {
        /// The count.
        count: u32,
        /// The limit.
        max: u32,
    },
}

/// The widest limits the wire types allow, used to check what is encoded.
const WIRE_LIMITS: Limits = Limits {
    max_transfer_len: i32::MAX as u32,
    max_iso_packets: i32::MAX as u32,
};

impl Header {
    /// The command of this header.
    pub const fn command(&self) -> Command {
        match self {
            Self::CmdSubmit(_) => Command::CmdSubmit,
            Self::CmdUnlink(_) => Command::CmdUnlink,
            Self::RetSubmit(_) => Command::RetSubmit,
            Self::RetUnlink(_) => Command::RetUnlink,
        }
    }

    /// The common part.
    pub const fn basic(&self) -> &Basic {
        match self {
            Self::CmdSubmit(h) => &h.basic,
            Self::CmdUnlink(h) => &h.basic,
            Self::RetSubmit(h) => &h.basic,
            Self::RetUnlink(h) => &h.basic,
        }
    }

    /// Parses and validates 48 header bytes. Union bytes a command does not
    /// use are ignored, as the kernel ignores them.
    pub fn decode(bytes: &[u8; HEADER_LEN], limits: &Limits) -> Result<Self, HeaderError> {
        let word =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let signed = |i: usize| word(i) as i32;
        let command = Command::from_code(word(0)).ok_or(HeaderError::UnknownCommand(word(0)))?;
        let direction = match word(12) {
            0 => Direction::Out,
            1 => Direction::In,
            d => return Err(HeaderError::Direction(d)),
        };
        let ep = match u8::try_from(word(16)) {
            Ok(ep @ 0..=15) => ep,
            _ => return Err(HeaderError::Endpoint(word(16))),
        };
        let basic = Basic {
            seqnum: word(4),
            devid: word(8),
            direction,
            ep,
        };
        match command {
            Command::CmdSubmit => {
                let mut setup = [0u8; 8];
                setup.copy_from_slice(&bytes[40..48]);
                Ok(Self::CmdSubmit(CmdSubmitHeader {
                    basic,
                    transfer_flags: word(20),
                    transfer_buffer_length: length("transfer_buffer_length", signed(24), limits)?,
                    start_frame: signed(28),
                    number_of_packets: packet_count(word(32), limits)?,
                    interval: signed(36),
                    setup,
                }))
            }
            Command::RetSubmit => Ok(Self::RetSubmit(RetSubmitHeader {
                basic,
                status: signed(20),
                actual_length: length("actual_length", signed(24), limits)?,
                start_frame: signed(28),
                number_of_packets: packet_count(word(32), limits)?,
                error_count: signed(36),
            })),
            Command::CmdUnlink => Ok(Self::CmdUnlink(CmdUnlinkHeader {
                basic,
                unlink_seqnum: word(20),
            })),
            Command::RetUnlink => Ok(Self::RetUnlink(RetUnlinkHeader {
                basic,
                status: signed(20),
            })),
        }
    }

    /// The 48 wire bytes, unused union bytes zero. Refuses a header
    /// [`Header::decode`] would refuse with the widest limits (an endpoint
    /// above 15, a length or packet count that would be negative on the
    /// wire).
    pub fn encode(&self) -> Result<[u8; HEADER_LEN], HeaderError> {
        self.check(&WIRE_LIMITS)?;
        let mut out = [0u8; HEADER_LEN];
        // Big-endian words; the `__s32` fields go out as their two's-complement bytes.
        let mut put = |i: usize, be: [u8; 4]| out[i..i + 4].copy_from_slice(&be);
        let basic = self.basic();
        put(0, self.command().code().to_be_bytes());
        put(4, basic.seqnum.to_be_bytes());
        put(8, basic.devid.to_be_bytes());
        let direction = u32::from(basic.direction == Direction::In);
        put(12, direction.to_be_bytes());
        put(16, u32::from(basic.ep).to_be_bytes());
        match self {
            Self::CmdSubmit(h) => {
                put(20, h.transfer_flags.to_be_bytes());
                put(24, h.transfer_buffer_length.to_be_bytes());
                put(28, h.start_frame.to_be_bytes());
                put(32, h.number_of_packets.to_wire().to_be_bytes());
                put(36, h.interval.to_be_bytes());
                out[40..48].copy_from_slice(&h.setup);
            }
            Self::RetSubmit(h) => {
                put(20, h.status.to_be_bytes());
                put(24, h.actual_length.to_be_bytes());
                put(28, h.start_frame.to_be_bytes());
                put(32, h.number_of_packets.to_wire().to_be_bytes());
                put(36, h.error_count.to_be_bytes());
            }
            Self::CmdUnlink(h) => put(20, h.unlink_seqnum.to_be_bytes()),
            Self::RetUnlink(h) => put(20, h.status.to_be_bytes()),
        }
        Ok(out)
    }

    /// The checks of [`Header::decode`] on an already typed header.
    pub fn check(&self, limits: &Limits) -> Result<(), HeaderError> {
        let ep = self.basic().ep;
        if ep > 15 {
            return Err(HeaderError::Endpoint(u32::from(ep)));
        }
        let (field, len, packets) = match self {
            Self::CmdSubmit(h) => (
                "transfer_buffer_length",
                h.transfer_buffer_length,
                h.number_of_packets,
            ),
            Self::RetSubmit(h) => ("actual_length", h.actual_length, h.number_of_packets),
            Self::CmdUnlink(_) | Self::RetUnlink(_) => return Ok(()),
        };
        length(field, len as i32, limits)?;
        if let PacketCount::Count(n) = packets {
            // `Count(0xffff_ffff)` would read back as `NotIso`.
            if n == NON_ISO_PACKETS {
                return Err(HeaderError::NegativePacketCount(-1));
            }
            packet_count(n, limits)?;
        }
        Ok(())
    }
}

/// An `__s32` length: not negative, within the limit.
fn length(field: &'static str, value: i32, limits: &Limits) -> Result<u32, HeaderError> {
    let length = u32::try_from(value).map_err(|_| HeaderError::NegativeLength { field, value })?;
    if length > limits.max_transfer_len {
        return Err(HeaderError::TooLong {
            field,
            length,
            max: limits.max_transfer_len,
        });
    }
    Ok(length)
}

/// `number_of_packets`: the non-iso marker, or a count within the limit.
fn packet_count(wire: u32, limits: &Limits) -> Result<PacketCount, HeaderError> {
    if wire == NON_ISO_PACKETS {
        return Ok(PacketCount::NotIso);
    }
    // Above i32::MAX the wire's `__s32` is negative.
    if i32::try_from(wire).is_err() {
        return Err(HeaderError::NegativePacketCount(wire as i32));
    }
    let count = wire;
    if count > limits.max_iso_packets {
        return Err(HeaderError::TooManyPackets {
            count,
            max: limits.max_iso_packets,
        });
    }
    Ok(PacketCount::Count(count))
}
