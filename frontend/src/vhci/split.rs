//! Bulk requests above usbif's per-URB limit, carried as a sequence of
//! usbif URBs on the same endpoint, each submitted when the previous one
//! completed.
//!
//! WHY: usb-storage on a high-speed device sends bulk URBs of up to
//! 120 KiB (`max_sectors` 240) and usbif's `buffer_length` is 16 bits.
//! WHY sequential and not pipelined: a short IN piece ends the transfer,
//! and a piece already queued behind it would swallow data meant for the
//! driver's next URB. WHY [`BULK_CHUNK`] and not [`MAX_URB_DATA`]: 63 KiB
//! is a multiple of every max packet size, so no piece but the last ends
//! in a short packet, which the device would take as the end of the
//! transfer.
//!
//! Pure state: the completions drive it (see `answer.rs`); the bound on
//! the total is the decoder's [`pvusb_protocol::usbip::Limits`].

use pvusb_protocol::usb::EndpointType;
use pvusb_protocol::usbip::CmdSubmit;
use pvusb_protocol::Direction;

use super::translate::{urb_for, DeviceTarget, Refusal, URB_SHORT_NOT_OK};
use crate::error::UrbStatus;
use crate::urb::{Completion, Urb, UrbKind, BULK_CHUNK, MAX_URB_DATA};

/// How a `CMD_SUBMIT` is carried.
#[derive(Debug)]
pub(super) enum Plan {
    /// As one usbif URB.
    Single(Urb),
    /// As pieces: the state and the first piece.
    Split(Split, Urb),
}

/// The plan for `cmd`: a bulk request above [`MAX_URB_DATA`] is split,
/// everything else is [`urb_for`]'s (which refuses other large requests).
pub(super) fn plan(cmd: CmdSubmit, target: &DeviceTarget) -> Result<Plan, Refusal> {
    let h = &cmd.header;
    let total = h.transfer_buffer_length as usize;
    let bulk = target.endpoints.get(h.basic.direction, h.basic.ep) == Some(EndpointType::Bulk);
    if total <= MAX_URB_DATA || !bulk || h.number_of_packets.descriptors() != 0 {
        return urb_for(cmd, target).map(Plan::Single);
    }
    let template = Urb {
        port: target.port,
        device: target.address,
        endpoint: h.basic.ep,
        direction: h.basic.direction,
        kind: UrbKind::Bulk,
        buffer: Vec::new(),
        short_not_ok: h.transfer_flags & URB_SHORT_NOT_OK != 0,
    };
    let out = match h.basic.direction {
        Direction::In => Vec::new(),
        Direction::Out => cmd.out_data,
    };
    let (split, first) = Split::start(&template, total, out);
    Ok(Plan::Split(split, first))
}

/// One split bulk request and how far it got.
#[derive(Debug)]
pub(super) struct Split {
    port: u8,
    device: u8,
    endpoint: u8,
    direction: Direction,
    short_not_ok: bool,
    /// The request's length.
    total: usize,
    /// OUT: the whole data (handed back in the final completion).
    out: Vec<u8>,
    /// IN: the data received so far.
    received: Vec<u8>,
    /// Bytes transferred by the finished pieces.
    done: usize,
    /// Length of the piece in flight.
    piece: usize,
}

/// What follows a piece's completion.
#[derive(Debug)]
pub(super) enum Step {
    /// Submit this next piece.
    Next(Urb),
    /// The request is over; answer it with this completion.
    Done(Completion),
}

impl Split {
    /// Bytes done by the finished pieces, and the request's length.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.total)
    }

    /// The request of `total` bytes (`out` for OUT, empty for IN) and its
    /// first piece.
    pub fn start(template: &Urb, total: usize, out: Vec<u8>) -> (Self, Urb) {
        let mut split = Self {
            port: template.port,
            device: template.device,
            endpoint: template.endpoint,
            direction: template.direction,
            short_not_ok: template.short_not_ok,
            total,
            out,
            received: Vec::new(),
            done: 0,
            piece: 0,
        };
        let first = split.next_piece();
        (split, first)
    }

    fn next_piece(&mut self) -> Urb {
        let len = BULK_CHUNK.min(self.total - self.done);
        self.piece = len;
        let buffer = match self.direction {
            Direction::In => vec![0; len],
            Direction::Out => self
                .out
                .get(self.done..self.done + len)
                .unwrap_or_default()
                .to_vec(),
        };
        Urb {
            port: self.port,
            device: self.device,
            endpoint: self.endpoint,
            direction: self.direction,
            kind: UrbKind::Bulk,
            buffer,
            // Short anywhere is short for the whole request.
            short_not_ok: self.short_not_ok,
        }
    }

    /// Takes a piece's completion: the next piece, or the end (an error,
    /// a short piece, or everything transferred).
    pub fn on_piece(&mut self, c: Completion) -> Step {
        let actual = c.actual_length.min(self.piece).min(c.buffer.len());
        if self.direction == Direction::In {
            self.received
                .extend_from_slice(c.buffer.get(..actual).unwrap_or_default());
        }
        self.done += actual;
        if !c.status.is_ok() || actual < self.piece || self.done >= self.total {
            return Step::Done(self.finish(c.status));
        }
        Step::Next(self.next_piece())
    }

    /// The final completion with `status` and the bytes so far (for an
    /// unlink or the bridge ending between pieces).
    pub fn finish(&mut self, status: UrbStatus) -> Completion {
        let buffer = match self.direction {
            Direction::In => std::mem::take(&mut self.received),
            Direction::Out => std::mem::take(&mut self.out),
        };
        Completion {
            status,
            actual_length: self.done,
            buffer,
            start_frame: 0,
            error_count: 0,
            iso_packets: Vec::new(),
        }
    }
}
