//! Blocking transfers on top of [`Frontend::submit`], with a timeout that
//! unlinks the URB, and the splitting of bulk transfers above the usbif limit.

use std::time::Duration;

use pvusb_protocol::{Direction, SetupPacket};

use crate::error::{FrontendError, UrbStatus};
use crate::frontend::Frontend;
use crate::urb::{Completion, Urb, BULK_CHUNK, MAX_URB_DATA};

impl Frontend {
    /// Submits `urb` and waits for its completion. On `timeout` the URB is
    /// unlinked with [`UrbStatus::TimedOut`] and the call waits (at most the
    /// unlink grace) for it to complete, so the buffer comes back.
    ///
    /// Fails with [`FrontendError::InvalidRequest`] when called inside a
    /// completion callback run by the worker thread, which would otherwise
    /// block the only thread that can deliver the response.
    pub fn transfer(&self, urb: Urb, timeout: Duration) -> Result<Completion, FrontendError> {
        self.check_may_block()?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let handle = self.submit(urb, move |c| {
            let _ = tx.send(c);
        });
        match rx.recv_timeout(timeout) {
            Ok(c) => Ok(c),
            Err(_) => {
                handle.unlink(UrbStatus::TimedOut);
                rx.recv_timeout(self.options().unlink_grace)
                    .map_err(|_| FrontendError::Timeout("the response to an unlinked URB"))
            }
        }
    }

    fn transfer_ok(&self, urb: Urb, timeout: Duration) -> Result<Completion, FrontendError> {
        let c = self.transfer(urb, timeout)?;
        if c.status.is_ok() {
            Ok(c)
        } else {
            Err(FrontendError::Transfer(c.status))
        }
    }

    /// A control transfer with an IN data stage of up to `setup.w_length`
    /// bytes; returns the bytes received.
    pub fn control_in(
        &self,
        port: u8,
        device: u8,
        setup: SetupPacket,
        timeout: Duration,
    ) -> Result<Vec<u8>, FrontendError> {
        if !setup.is_in() {
            return Err(FrontendError::InvalidRequest(
                "control_in needs an IN setup packet".into(),
            ));
        }
        let c = self.transfer_ok(Urb::control(port, device, setup, Vec::new()), timeout)?;
        Ok(c.into_data())
    }

    /// A control transfer with an OUT data stage (`data` must be `wLength`
    /// bytes, possibly none); returns the bytes transferred.
    pub fn control_out(
        &self,
        port: u8,
        device: u8,
        setup: SetupPacket,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, FrontendError> {
        if setup.is_in() && setup.w_length > 0 {
            return Err(FrontendError::InvalidRequest(
                "control_out needs an OUT setup packet".into(),
            ));
        }
        let c = self.transfer_ok(Urb::control(port, device, setup, data.to_vec()), timeout)?;
        Ok(c.actual_length)
    }

    /// A bulk IN of up to `len` bytes. Above [`MAX_URB_DATA`] the transfer is
    /// split into [`BULK_CHUNK`] pieces read one after the other; a short
    /// piece ends it (pieces are not pipelined, so no later piece can swallow
    /// data meant for the next transfer). `timeout` applies to each piece.
    pub fn bulk_in(
        &self,
        port: u8,
        device: u8,
        endpoint: u8,
        len: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, FrontendError> {
        let mut out = Vec::with_capacity(len);
        let chunk = if len > MAX_URB_DATA {
            BULK_CHUNK
        } else {
            len.max(1)
        };
        while out.len() < len || len == 0 {
            let want = chunk.min(len - out.len());
            let c = self.transfer_ok(Urb::bulk_in(port, device, endpoint, want), timeout)?;
            out.extend_from_slice(c.data());
            if c.actual_length < want || len == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// A bulk OUT of `data`. Above [`MAX_URB_DATA`] it is split into
    /// [`BULK_CHUNK`] pieces that are all submitted at once (queued locally
    /// beyond 16), so the ring stays full. Returns the bytes transferred;
    /// the first failed piece's status is the error.
    pub fn bulk_out(
        &self,
        port: u8,
        device: u8,
        endpoint: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, FrontendError> {
        if data.len() <= MAX_URB_DATA {
            let c = self.transfer_ok(
                Urb::bulk_out(port, device, endpoint, data.to_vec()),
                timeout,
            )?;
            return Ok(c.actual_length);
        }
        self.check_may_block()?;
        let pieces: Vec<&[u8]> = data.chunks(BULK_CHUNK).collect();
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut handles = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            let tx = tx.clone();
            let urb = Urb::bulk_out(port, device, endpoint, piece.to_vec());
            handles.push(self.submit(urb, move |c| {
                let _ = tx.send((i, c));
            }));
        }
        drop(tx);
        let mut results: Vec<Option<Completion>> = vec![None; pieces.len()];
        // `None` (a timeout too large to add): wait without a deadline.
        let deadline = std::time::Instant::now()
            .checked_add(timeout.saturating_mul(u32::try_from(pieces.len()).unwrap_or(u32::MAX)));
        let mut received = 0;
        while received < pieces.len() {
            let left = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(std::time::Instant::now())
            });
            match rx.recv_timeout(left) {
                Ok((i, c)) => {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(c);
                    }
                    received += 1;
                }
                Err(_) => {
                    for h in &handles {
                        h.unlink(UrbStatus::TimedOut);
                    }
                    return Err(FrontendError::Transfer(UrbStatus::TimedOut));
                }
            }
        }
        let mut total = 0;
        for c in results.into_iter().flatten() {
            if !c.status.is_ok() {
                return Err(FrontendError::Transfer(c.status));
            }
            total += c.actual_length;
        }
        Ok(total)
    }

    /// An interrupt IN of up to `len` bytes (polled by the backend every
    /// `interval`); returns the report.
    pub fn interrupt_in(
        &self,
        port: u8,
        device: u8,
        endpoint: u8,
        len: usize,
        interval: u16,
        timeout: Duration,
    ) -> Result<Vec<u8>, FrontendError> {
        let c = self.transfer_ok(
            Urb::interrupt_in(port, device, endpoint, len, interval),
            timeout,
        )?;
        Ok(c.into_data())
    }

    /// An isochronous IN of `packet_lengths.len()` packets; the completion has
    /// per-packet results (the URB status says whether the transfer ran).
    pub fn iso_in(
        &self,
        port: u8,
        device: u8,
        endpoint: u8,
        interval: u16,
        packet_lengths: Vec<u32>,
        timeout: Duration,
    ) -> Result<Completion, FrontendError> {
        let urb = Urb::isochronous(
            port,
            device,
            endpoint,
            Direction::In,
            interval,
            packet_lengths,
            Vec::new(),
        );
        self.transfer_ok(urb, timeout)
    }

    /// An isochronous OUT of `packets` (one slice per packet, sent back to
    /// back); the completion has per-packet results.
    pub fn iso_out(
        &self,
        port: u8,
        device: u8,
        endpoint: u8,
        interval: u16,
        packets: &[&[u8]],
        timeout: Duration,
    ) -> Result<Completion, FrontendError> {
        let lengths = packets
            .iter()
            .map(|p| u32::try_from(p.len()).unwrap_or(u32::MAX))
            .collect();
        let urb = Urb::isochronous(
            port,
            device,
            endpoint,
            Direction::Out,
            interval,
            lengths,
            packets.concat(),
        );
        self.transfer_ok(urb, timeout)
    }
}
