//! Bulk requests above usbif's per-URB limit, carried as several usbif
//! URBs on the same endpoint, all submitted at once.
//!
//! WHY: usb-storage on a high-speed device sends bulk URBs of up to
//! 120 KiB (`max_sectors` 240) and usbif's `buffer_length` is 16 bits.
//! WHY all at once: one round trip through the ring and dom0 per piece,
//! one after the other, cost the bridge a quarter of its throughput
//! against xen-hcd, which puts a whole scatter list on the ring at once
//! (Linux's `usb_sg_init` for a host controller without scatter-gather).
//! This does the same, with the same caveat: a piece that ends short ends
//! the request, and the pieces behind it are unlinked, but one the device
//! already started may have taken data meant for the driver's next URB.
//! A short data stage of a bulk request this large is an error path
//! (usb-storage resets the device after it). WHY [`BULK_CHUNK`] and not
//! [`MAX_URB_DATA`]: 63 KiB is a multiple of every max packet size, so no
//! piece but the last ends in a short packet, which the device would take
//! as the end of the transfer.
//!
//! Pure state: the completions drive it (see `answer.rs`); the bound on
//! the total is the decoder's [`pvusb_protocol::usbip::Limits`], which
//! bounds the pieces too.

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
    /// As pieces: the state and the pieces, in order.
    Split(Split, Vec<Urb>),
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
    let (split, pieces) = Split::start(&template, total, out);
    Ok(Plan::Split(split, pieces))
}

/// One split bulk request and what its pieces did.
#[derive(Debug)]
pub(super) struct Split {
    /// The request's length.
    total: usize,
    /// Each piece's length and, once it completed, its outcome.
    pieces: Vec<Piece>,
}

#[derive(Debug)]
struct Piece {
    len: usize,
    done: Option<PieceDone>,
}

#[derive(Debug)]
struct PieceDone {
    status: UrbStatus,
    /// At most the piece's length.
    actual: usize,
    /// Its buffer, cut to `actual`: the bytes received (IN) or sent (OUT,
    /// whose reply carries only their count).
    data: Vec<u8>,
}

impl Split {
    /// Bytes done by the pieces that completed in full from the first on,
    /// and the request's length.
    pub fn progress(&self) -> (usize, usize) {
        let done = self
            .pieces
            .iter()
            .map_while(|p| p.done.as_ref().filter(|d| d.actual == p.len))
            .map(|d| d.actual)
            .sum();
        (done, self.total)
    }

    /// The request of `total` bytes (`out` for OUT, empty for IN) and its
    /// pieces, in order. `out` is copied into the pieces and dropped, so
    /// the data is held once.
    pub fn start(template: &Urb, total: usize, out: Vec<u8>) -> (Self, Vec<Urb>) {
        let mut pieces = Vec::with_capacity(total.div_ceil(BULK_CHUNK));
        let mut urbs = Vec::with_capacity(pieces.capacity());
        let mut offset = 0;
        while offset < total {
            let len = BULK_CHUNK.min(total - offset);
            let buffer = match template.direction {
                Direction::In => vec![0; len],
                Direction::Out => out.get(offset..offset + len).unwrap_or_default().to_vec(),
            };
            urbs.push(Urb {
                buffer,
                // Short anywhere is short for the whole request.
                ..template.clone()
            });
            pieces.push(Piece { len, done: None });
            offset += len;
        }
        let split = Self { total, pieces };
        (split, urbs)
    }

    /// Takes piece `index`'s completion; returns the request's final
    /// completion once it is decided: every piece before the first that
    /// failed or ended short (or every piece) completed. A completion for
    /// a piece that does not exist or already completed is ignored.
    pub fn on_piece(&mut self, index: usize, c: Completion) -> Option<Completion> {
        let piece = self.pieces.get_mut(index)?;
        if piece.done.is_some() {
            return None;
        }
        let actual = c.actual_length.min(piece.len).min(c.buffer.len());
        let mut data = c.buffer;
        data.truncate(actual);
        piece.done = Some(PieceDone {
            status: c.status,
            actual,
            data,
        });
        for p in &self.pieces {
            let d = p.done.as_ref()?;
            if !d.status.is_ok() || d.actual < p.len {
                return Some(self.finish(d.status));
            }
        }
        Some(self.finish(UrbStatus::Ok))
    }

    /// The final completion with `status` and the bytes of the pieces up
    /// to the first one that did not complete in full (for an unlink or
    /// the bridge ending, and for [`Self::on_piece`]).
    pub fn finish(&mut self, status: UrbStatus) -> Completion {
        let mut actual = 0;
        let mut data = Vec::new();
        for p in &mut self.pieces {
            let Some(d) = p.done.as_mut() else {
                break;
            };
            actual += d.actual;
            data.append(&mut d.data);
            if !d.status.is_ok() || d.actual < p.len {
                break;
            }
        }
        Completion::of_transfer(status, actual, data)
    }
}
