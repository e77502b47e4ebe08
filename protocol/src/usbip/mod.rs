//! The USB/IP wire codec: what Linux's `vhci-hcd` sends to a device server
//! and what it expects back, byte-exact with `drivers/usb/usbip/`. Pure data:
//! no sockets, no `unsafe`.
//!
//! WHY it is here: a guest-side bridge will hand each pvUSB device to the
//! guest kernel's `vhci-hcd` over a socketpair and translate USB/IP ⇄ usbif.
//! Everything the kernel writes into that socket is parsed here, bounded,
//! before the bridge acts on it; everything the bridge writes back is checked
//! here, so the kernel never receives a message it would reject (vhci drops
//! the whole device on a malformed reply: `VDEV_EVENT_ERROR_TCP`).
//!
//! ## The wire format (`usbip_common.h`, `usbip_protocol.rst`)
//!
//! Every message starts with a 48-byte [`Header`]: a 20-byte basic part
//! (`command`, `seqnum`, `devid`, `direction`, `ep`) and a 28-byte union, all
//! fields big-endian (`usbip_header_correct_endian`). The setup packet keeps
//! its USB (little-endian) byte order. Then, per command:
//!
//! | command | after the header |
//! |---|---|
//! | `CMD_SUBMIT` (1) | OUT: `transfer_buffer_length` data bytes (IN: none); iso: `number_of_packets` 16-byte descriptors |
//! | `CMD_UNLINK` (2) | nothing |
//! | `RET_SUBMIT` (3) | IN: `actual_length` data bytes (iso: packets packed without padding); iso: the descriptors |
//! | `RET_UNLINK` (4) | nothing |
//!
//! A `RET_SUBMIT` header does not say its direction or whether it is
//! isochronous (the server sends `direction` and `ep` as 0; vhci takes both
//! from the URB it finds by `seqnum`), so reading one needs the
//! [`SubmitShape`] of the request it answers.
//!
//! ## Decoding, encoding, bounds
//!
//! * [`StreamDecoder`] takes bytes in any chunking and yields whole
//!   [`Message`]s; it buffers at most one message, whose size [`Limits`]
//!   bounds before a byte of its body is accepted. [`DeviceSide`] reads what
//!   vhci sends (commands), [`HostSide`] what a server sends (replies).
//! * [`Header::decode`] validates every field it can on its own: known
//!   command, direction 0 or 1, endpoint ≤ 15, lengths not negative and within
//!   [`Limits`], packet counts within [`Limits`] or the non-iso marker.
//! * Encoders ([`CmdSubmit::encode`], [`RetSubmit::encode`],
//!   [`Header::encode`]) refuse, never clamp, what the kernel would reject:
//!   data whose length disagrees with the header, `actual_length` beyond the
//!   request's buffer, iso descriptors outside the buffer or whose
//!   `actual_length`s do not add up. Clamping would silently hand a driver
//!   truncated data with a success status; an [`EncodeError`] makes the bridge
//!   answer the URB with an error status instead.

mod header;
mod iso;
mod message;
#[cfg(test)]
mod proptests;
mod stream;
#[cfg(test)]
mod tests;

pub use crate::pipe::Direction;
pub use header::{
    Basic, CmdSubmitHeader, CmdUnlinkHeader, Command, Header, HeaderError, RetSubmitHeader,
    RetUnlinkHeader,
};
pub use iso::{decode_iso_packets, encode_iso_packets, IsoError};
pub use message::{CmdSubmit, EncodeError, Message, RetSubmit, RetSubmitWire, SubmitShape};
pub use stream::{DecodeError, DeviceSide, Framing, HostSide, IsoEndpoints, StreamDecoder};

/// Bytes of every message header (`sizeof(struct usbip_header)`).
pub const HEADER_LEN: usize = 48;

/// Bytes of one `struct usbip_iso_packet_descriptor` on the wire.
pub const ISO_PACKET_LEN: usize = 16;

/// `number_of_packets` of a non-isochronous transfer as `usbip_protocol.rst`
/// specifies it. Linux's vhci sends `urb->number_of_packets` instead, which
/// is 0 for every non-iso URB; both mean "no descriptors follow".
pub const NON_ISO_PACKETS: u32 = 0xffff_ffff;

/// The kernel's own cap on packets per isochronous URB
/// (`USBIP_MAX_ISO_PACKETS` in `usbip_common.h`, enforced by the stub).
pub const USBIP_MAX_ISO_PACKETS: u32 = 1024;

/// Default cap on `transfer_buffer_length`: 1 MiB.
///
/// WHY a cap at all: the kernel's header type allows 2 GiB, and the bridge
/// must buffer OUT data and allocate IN data of that size before it can
/// answer. 1 MiB is 16 times the largest usbif request (64 KiB, which the
/// bridge splits or refuses anyway) and keeps what one hostile peer can make
/// a connection hold to about 1 MiB; [`Limits`] lets the bridge choose.
pub const DEFAULT_MAX_TRANSFER_LEN: u32 = 1 << 20;

/// How large a message the decoder accepts. The bound on buffered bytes is
/// [`Limits::max_message_len`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest `transfer_buffer_length` (and so OUT data, IN data and
    /// `actual_length`) accepted.
    pub max_transfer_len: u32,
    /// Largest `number_of_packets` of an isochronous transfer.
    pub max_iso_packets: u32,
}

impl Limits {
    /// [`DEFAULT_MAX_TRANSFER_LEN`] and [`USBIP_MAX_ISO_PACKETS`].
    pub const DEFAULT: Self = Self {
        max_transfer_len: DEFAULT_MAX_TRANSFER_LEN,
        max_iso_packets: USBIP_MAX_ISO_PACKETS,
    };

    /// The most bytes one message (header, data, descriptors) can span.
    pub fn max_message_len(&self) -> usize {
        let data =
            usize::try_from(self.max_transfer_len.min(i32::MAX as u32)).unwrap_or(usize::MAX);
        let iso = usize::try_from(self.max_iso_packets.min(i32::MAX as u32))
            .unwrap_or(usize::MAX)
            .saturating_mul(ISO_PACKET_LEN);
        HEADER_LEN.saturating_add(data).saturating_add(iso)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `number_of_packets` of a submit: whether descriptors follow, and how
/// many.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketCount {
    /// [`NON_ISO_PACKETS`] on the wire.
    NotIso,
    /// That many descriptors follow (0 is what vhci sends for non-iso URBs
    /// and for an iso URB with no packets; neither has descriptors).
    Count(u32),
}

impl PacketCount {
    /// The wire value.
    pub const fn to_wire(self) -> u32 {
        match self {
            Self::NotIso => NON_ISO_PACKETS,
            Self::Count(n) => n,
        }
    }

    /// Descriptors that follow the data.
    pub const fn descriptors(self) -> u32 {
        match self {
            Self::NotIso => 0,
            Self::Count(n) => n,
        }
    }
}
