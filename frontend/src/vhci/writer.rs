//! The writer thread: answers completions on the socket in the order they
//! arrive, watches the port, and decides when and why the bridge ends.

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use nix::errno::Errno;
use tracing::{debug, info, trace};

use super::reader::submit_piece;
use super::split::Step;
use super::table::{Entry, SharedTable};
use super::translate::{
    encode_ret_submit, encode_ret_unlink, error_reply, reply_for, DeviceTarget,
};
use super::BridgeEnd;
use crate::error::UrbStatus;
use crate::frontend::Frontend;
use crate::ports::PortEvent;
use crate::urb::Completion;

/// How often the writer looks at the drain deadline while ending.
const TICK: Duration = Duration::from_millis(100);

/// What the reader and the completion callbacks tell the writer.
#[derive(Debug)]
pub(super) enum Event {
    /// URB `seqnum` completed on the frontend.
    Completed {
        /// Its `CMD_SUBMIT`'s seqnum.
        seqnum: u32,
        /// Its outcome.
        completion: Completion,
    },
    /// Bytes the reader decided on (a refusal or an unlink of a finished
    /// URB), answering `credits` commands.
    Reply { bytes: Vec<u8>, credits: usize },
    /// The reader stopped.
    ReaderDone(BridgeEnd),
    /// [`super::Bridge::stop`].
    Stop,
}

pub(super) struct Writer {
    table: Arc<SharedTable>,
    target: DeviceTarget,
    socket: UnixStream,
    /// Cleared after a failed write: nothing more is written.
    socket_ok: bool,
    events: Receiver<Event>,
    /// For the completions of the pieces of split requests it submits.
    resubmit: Sender<Event>,
    port_events: Receiver<PortEvent>,
    front: Arc<Frontend>,
    drain_timeout: Duration,
    /// Set when the bridge started ending.
    drain_deadline: Option<Instant>,
}

impl Writer {
    pub fn new(
        table: Arc<SharedTable>,
        target: DeviceTarget,
        socket: UnixStream,
        events: (Sender<Event>, Receiver<Event>),
        port_events: Receiver<PortEvent>,
        front: Arc<Frontend>,
        drain_timeout: Duration,
    ) -> Self {
        let (resubmit, events) = events;
        Self {
            table,
            target,
            socket,
            socket_ok: true,
            events,
            resubmit,
            port_events,
            front,
            drain_timeout,
            drain_deadline: None,
        }
    }

    /// Runs until the bridge has ended and the socket is shut down.
    pub fn run(mut self) -> BridgeEnd {
        loop {
            select! {
                recv(self.events) -> event => match event {
                    Ok(event) => self.handle(event),
                    // Unreachable while the writer holds `self`; treat as a stop.
                    Err(_) => self.begin_end(BridgeEnd::Stopped),
                },
                recv(self.port_events) -> event => match event {
                    Ok(event) => self.port_event(event),
                    Err(_) => self.begin_end(BridgeEnd::ControllerGone),
                },
                default(TICK) => {}
            }
            if let Some(deadline) = self.drain_deadline {
                let drained = self.table.lock().in_flight.is_empty();
                if drained || Instant::now() >= deadline {
                    break;
                }
            }
        }
        // vhci sees the end of stream and detaches the port.
        let _ = self.socket.shutdown(Shutdown::Both);
        let end = self
            .table
            .lock()
            .ending
            .clone()
            .unwrap_or(BridgeEnd::Stopped);
        info!(port = self.target.port, %end, "vhci bridge ended");
        end
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Completed { seqnum, completion } => self.completed(seqnum, completion),
            Event::Reply { bytes, credits } => {
                self.write(&bytes);
                self.table.release(credits);
            }
            Event::ReaderDone(end) => self.begin_end(end),
            Event::Stop => self.begin_end(BridgeEnd::Stopped),
        }
    }

    fn port_event(&mut self, event: PortEvent) {
        let port = self.target.port;
        let end = match event {
            PortEvent::Disconnected { port: p }
            | PortEvent::Reset { port: p }
            | PortEvent::Connected { port: p, .. }
                if p == port =>
            {
                Some(BridgeEnd::DeviceGone(port))
            }
            PortEvent::ControllerDisconnected | PortEvent::ControllerDead { .. } => {
                Some(BridgeEnd::ControllerGone)
            }
            // Events were dropped: look at the port as it is now.
            PortEvent::Lagged { .. } => {
                let here = self
                    .front
                    .port(port)
                    .map(|p| p.connected() && p.address == Some(self.target.address))
                    .unwrap_or(false);
                (!here).then_some(BridgeEnd::DeviceGone(port))
            }
            _ => None,
        };
        if let Some(end) = end {
            self.begin_end(end);
        }
    }

    /// Answers a completed URB: `RET_SUBMIT`, and if vhci unlinked it,
    /// `RET_UNLINK` (alone when the cancel took effect, since vhci gives
    /// the URB back on it and would drop the device on a later
    /// `RET_SUBMIT` for an unknown seqnum).
    fn completed(&mut self, seqnum: u32, mut completion: Completion) {
        let (entry, ending) = {
            let mut table = self.table.lock();
            let ending = table.ending.is_some();
            if let Some(entry) = table.in_flight.get_mut(&seqnum) {
                match self.advance(seqnum, entry, completion, ending) {
                    Some(c) => completion = c,
                    None => return,
                }
            }
            (table.in_flight.remove(&seqnum), ending)
        };
        let Some(Entry {
            request,
            unlink_seqnum,
            ..
        }) = entry
        else {
            return;
        };
        let econnreset = -(Errno::ECONNRESET as i32);
        match unlink_seqnum {
            Some(unlink) if completion.status == UrbStatus::Cancelled => {
                self.write(&encode_ret_unlink(unlink, econnreset));
                self.table.release(2);
                return;
            }
            _ => {}
        }
        let reply = if ending && !completion.status.is_ok() {
            // Whatever the frontend made of the cancel (cancelled, no
            // device, shutdown), for vhci the device is gone.
            error_reply(&request, -(Errno::ENODEV as i32))
        } else {
            reply_for(&request, &completion)
        };
        self.write(&encode_ret_submit(&request, &reply));
        trace!(seqnum, "RET_SUBMIT written");
        let mut credits = 1;
        if let Some(unlink) = unlink_seqnum {
            // It finished before the cancel: its RET_SUBMIT went first,
            // the unlink found nothing to cancel.
            self.write(&encode_ret_unlink(unlink, 0));
            credits += 1;
        }
        self.table.release(credits);
    }

    /// A split request's piece completed: submits the next piece (`None`)
    /// or returns the request's final completion. Called under the table
    /// lock, so an unlink either sees the new piece's handle or is seen
    /// here, and never cancels a piece that is already done while the
    /// next one runs on.
    fn advance(
        &self,
        seqnum: u32,
        entry: &mut Entry,
        completion: Completion,
        ending: bool,
    ) -> Option<Completion> {
        let Some(split) = entry.split.as_mut() else {
            return Some(completion);
        };
        match split.on_piece(completion) {
            Step::Done(c) => Some(c),
            // vhci asked for it back between pieces: the cancel took effect.
            Step::Next(_) if entry.unlink_seqnum.is_some() => {
                Some(split.finish(UrbStatus::Cancelled))
            }
            Step::Next(_) if ending => Some(split.finish(UrbStatus::NoDev)),
            Step::Next(urb) => {
                debug!(
                    seqnum,
                    len = urb.buffer.len(),
                    "next piece of a split bulk request"
                );
                entry.handle = Some(submit_piece(&self.front, &self.resubmit, seqnum, urb));
                None
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if !self.socket_ok {
            return;
        }
        if let Err(e) = self.socket.write_all(bytes) {
            debug!(port = self.target.port, "vhci socket write failed: {e}");
            self.socket_ok = false;
            self.begin_end(BridgeEnd::Socket(e.kind()));
        }
    }

    /// Starts ending (once): every URB in flight is cancelled and will be
    /// answered `-ENODEV` as it completes, within the drain timeout.
    fn begin_end(&mut self, end: BridgeEnd) {
        let Some(handles) = self.table.begin_end(end) else {
            return;
        };
        self.drain_deadline = Some(Instant::now() + self.drain_timeout);
        for handle in handles {
            handle.unlink(UrbStatus::NoDev);
        }
    }
}
