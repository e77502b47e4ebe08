//! The incremental decoder a socket reader feeds: bytes in, whole messages
//! out, never more than one bounded message buffered.

use thiserror::Error;

use super::header::{Command, Header, HeaderError};
use super::iso::{decode_iso_packets, IsoError};
use super::message::{iso_len, CmdSubmit, EncodeError, Message, RetSubmit, SubmitShape};
use super::{Direction, Limits, PacketCount, HEADER_LEN};

/// Why the stream cannot go on. Every error is final: the peer's framing can
/// no longer be trusted, so the caller closes the connection (vhci itself
/// does the same on a bad reply: `VDEV_EVENT_ERROR_TCP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The header is malformed or beyond the limits.
    #[error("invalid header")]
    Header(#[source] HeaderError),
    /// A command this side never receives (a reply sent to the server side,
    /// or a command sent to the client side).
    #[error("{0:?} is not sent to this side")]
    UnexpectedCommand(Command),
    /// Descriptors announced for an endpoint [`IsoEndpoints`] says is not
    /// isochronous.
    #[error("{count} iso packets for non-isochronous endpoint {ep} {direction:?}")]
    NonIsoWithPackets {
        /// Endpoint number.
        ep: u8,
        /// Its direction.
        direction: Direction,
        /// Packets announced.
        count: u32,
    },
    /// A `RET_SUBMIT` whose `seqnum` names no request in flight.
    #[error("RET_SUBMIT for seqnum {0}, which is not in flight")]
    UnknownSeqnum(u32),
    /// The body disagrees with its header or its request.
    #[error("message does not match its header or request")]
    Invalid(#[source] EncodeError),
    /// An earlier error ended the stream.
    #[error("the stream already failed")]
    AfterError,
}

/// Which messages one side of the connection reads, and how a reply finds
/// the request that decides its layout.
pub trait Framing {
    /// Accepts or refuses `header`; for a `RET_SUBMIT`, returns the shape of
    /// the request it answers.
    fn accept(&mut self, header: &Header) -> Result<Option<SubmitShape>, DecodeError>;
}

/// Which endpoints are isochronous: bit `ep` for OUT, bit `16 + ep` for IN.
///
/// WHY: the header does not say whether a transfer is isochronous; vhci
/// sends descriptors when the URB's pipe is (`vhci_send_cmd_submit`) and
/// `number_of_packets` as the URB had it, 0 for other URBs. A bridge that
/// knows the endpoints (from the configuration descriptor) can refuse a
/// packet count on a bulk endpoint instead of trusting it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IsoEndpoints(pub u32);

impl IsoEndpoints {
    fn bit(direction: Direction, ep: u8) -> u32 {
        let shift = u32::from(ep & 0xf) + if direction == Direction::In { 16 } else { 0 };
        1 << shift
    }

    /// This set plus endpoint `ep` in `direction` (unchanged if `ep` > 15,
    /// which no header can name).
    pub fn with(self, direction: Direction, ep: u8) -> Self {
        if ep > 15 {
            return self;
        }
        Self(self.0 | Self::bit(direction, ep))
    }

    /// Whether endpoint `ep` in `direction` is isochronous.
    pub fn contains(self, direction: Direction, ep: u8) -> bool {
        ep <= 15 && self.0 & Self::bit(direction, ep) != 0
    }
}

/// The device (server) side: reads `CMD_SUBMIT` and `CMD_UNLINK` from vhci.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceSide {
    /// If known, the isochronous endpoints; `None` trusts
    /// `number_of_packets` as vhci does.
    pub iso_endpoints: Option<IsoEndpoints>,
}

impl Framing for DeviceSide {
    fn accept(&mut self, header: &Header) -> Result<Option<SubmitShape>, DecodeError> {
        match header {
            Header::CmdSubmit(h) => {
                let (direction, ep) = (h.basic.direction, h.basic.ep);
                let count = h.number_of_packets.descriptors();
                if let Some(iso) = self.iso_endpoints {
                    if count > 0 && !iso.contains(direction, ep) {
                        return Err(DecodeError::NonIsoWithPackets {
                            ep,
                            direction,
                            count,
                        });
                    }
                }
                Ok(None)
            }
            Header::CmdUnlink(_) => Ok(None),
            other => Err(DecodeError::UnexpectedCommand(other.command())),
        }
    }
}

/// The client (vhci) side: reads `RET_SUBMIT` and `RET_UNLINK`, finding
/// each reply's request with `lookup(seqnum)` (which should forget it, as
/// vhci does, so a second reply is refused).
#[derive(Clone)]
pub struct HostSide<F> {
    lookup: F,
}

impl<F> std::fmt::Debug for HostSide<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSide").finish_non_exhaustive()
    }
}

impl<F: FnMut(u32) -> Option<SubmitShape>> HostSide<F> {
    /// A client side resolving requests with `lookup`.
    pub fn new(lookup: F) -> Self {
        Self { lookup }
    }
}

impl<F: FnMut(u32) -> Option<SubmitShape>> Framing for HostSide<F> {
    fn accept(&mut self, header: &Header) -> Result<Option<SubmitShape>, DecodeError> {
        match header {
            Header::RetSubmit(h) => {
                let seqnum = h.basic.seqnum;
                (self.lookup)(seqnum)
                    .map(Some)
                    .ok_or(DecodeError::UnknownSeqnum(seqnum))
            }
            Header::RetUnlink(_) => Ok(None),
            other => Err(DecodeError::UnexpectedCommand(other.command())),
        }
    }
}

/// A header whose body is being read.
#[derive(Debug)]
struct Pending {
    header: Header,
    shape: Option<SubmitShape>,
    data_len: usize,
    body_len: usize,
    body: Vec<u8>,
}

/// Feed it bytes as they arrive; it returns each message once complete.
///
/// It holds at most one message: 48 header bytes, then a body whose length
/// the validated header (and [`Limits`]) fixed before any of it is taken, so
/// what it buffers never exceeds [`Limits::max_message_len`]. The body
/// buffer grows with the bytes received, not with what a header announces.
#[derive(Debug)]
pub struct StreamDecoder<F> {
    framing: F,
    limits: Limits,
    header: [u8; HEADER_LEN],
    header_filled: usize,
    pending: Option<Pending>,
    failed: bool,
}

impl<F: Framing> StreamDecoder<F> {
    /// A decoder at a message boundary.
    pub fn new(framing: F, limits: Limits) -> Self {
        Self {
            framing,
            limits,
            header: [0; HEADER_LEN],
            header_filled: 0,
            pending: None,
            failed: false,
        }
    }

    /// The framing (e.g. to update [`DeviceSide::iso_endpoints`] after a
    /// `SET_INTERFACE`).
    pub fn framing_mut(&mut self) -> &mut F {
        &mut self.framing
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes of an unfinished message held; 0 at a message boundary (the
    /// only place a clean end of stream may happen).
    pub fn buffered(&self) -> usize {
        self.header_filled
            + self
                .pending
                .as_ref()
                .map_or(0, |p| HEADER_LEN + p.body.len())
    }

    /// Consumes bytes from the front of `input`, up to the end of the
    /// current message, and returns how many it took and the message if it
    /// completed. Call again with the rest of `input` until it is empty.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), DecodeError> {
        if self.failed {
            return Err(DecodeError::AfterError);
        }
        let mut used = 0;
        let result = self.feed_inner(input, &mut used);
        match result {
            Ok(message) => Ok((used, message)),
            Err(e) => {
                self.failed = true;
                self.pending = None;
                self.header_filled = 0;
                Err(e)
            }
        }
    }

    fn feed_inner(
        &mut self,
        input: &[u8],
        used: &mut usize,
    ) -> Result<Option<Message>, DecodeError> {
        if self.pending.is_none() {
            let take = (HEADER_LEN - self.header_filled).min(input.len());
            self.header[self.header_filled..self.header_filled + take]
                .copy_from_slice(&input[..take]);
            self.header_filled += take;
            *used += take;
            if self.header_filled < HEADER_LEN {
                return Ok(None);
            }
            self.header_filled = 0;
            let pending = self
                .start(Header::decode(&self.header, &self.limits).map_err(DecodeError::Header)?)?;
            if pending.body_len == 0 {
                return assemble(pending).map(Some);
            }
            self.pending = Some(pending);
        }
        let Some(pending) = self.pending.as_mut() else {
            return Ok(None);
        };
        let rest = &input[*used..];
        let take = (pending.body_len - pending.body.len()).min(rest.len());
        pending.body.extend_from_slice(&rest[..take]);
        *used += take;
        if pending.body.len() < pending.body_len {
            return Ok(None);
        }
        match self.pending.take() {
            Some(pending) => assemble(pending).map(Some),
            None => Ok(None),
        }
    }

    /// Accepts a header and fixes the length of its body.
    fn start(&mut self, header: Header) -> Result<Pending, DecodeError> {
        let shape = self.framing.accept(&header)?;
        let (data_len, packets) = match (&header, &shape) {
            (Header::CmdSubmit(h), _) => (h.data_len(), h.number_of_packets),
            (Header::RetSubmit(h), Some(shape)) => {
                if h.actual_length > shape.transfer_buffer_length {
                    return Err(DecodeError::Invalid(EncodeError::ActualBeyondBuffer {
                        actual_length: h.actual_length,
                        buffer_len: shape.transfer_buffer_length,
                    }));
                }
                if h.number_of_packets.descriptors() != shape.number_of_packets.descriptors() {
                    return Err(DecodeError::Invalid(EncodeError::PacketCount {
                        header: h.number_of_packets,
                        request: shape.number_of_packets,
                    }));
                }
                (h.data_len(shape), h.number_of_packets)
            }
            (Header::RetSubmit(_), None) => {
                return Err(DecodeError::Invalid(EncodeError::NoRequest))
            }
            _ => (0, PacketCount::NotIso),
        };
        let data_len = data_len as usize;
        Ok(Pending {
            header,
            shape,
            data_len,
            body_len: data_len.saturating_add(iso_len(packets)),
            body: Vec::new(),
        })
    }
}

/// Splits a complete body into data and descriptors and checks them.
fn assemble(pending: Pending) -> Result<Message, DecodeError> {
    let Pending {
        header,
        shape,
        data_len,
        mut body,
        ..
    } = pending;
    // `body` holds data_len bytes and then the descriptors by construction;
    // a shorter one is refused rather than indexed past.
    let descriptors = body
        .get(data_len..)
        .ok_or(DecodeError::Invalid(EncodeError::Iso(IsoError::Truncated(
            body.len(),
        ))))?;
    let iso_packets =
        decode_iso_packets(descriptors).map_err(|e| DecodeError::Invalid(EncodeError::Iso(e)))?;
    body.truncate(data_len);
    let message = match header {
        Header::CmdSubmit(header) => {
            let m = CmdSubmit {
                header,
                out_data: body,
                iso_packets,
            };
            m.check().map_err(DecodeError::Invalid)?;
            Message::CmdSubmit(m)
        }
        Header::RetSubmit(header) => {
            let m = RetSubmit {
                header,
                in_data: body,
                iso_packets,
            };
            let shape = shape.ok_or(DecodeError::Invalid(EncodeError::NoRequest))?;
            m.check(&shape).map_err(DecodeError::Invalid)?;
            Message::RetSubmit(m)
        }
        Header::CmdUnlink(h) => Message::CmdUnlink(h),
        Header::RetUnlink(h) => Message::RetUnlink(h),
    };
    Ok(message)
}
