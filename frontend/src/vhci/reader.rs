//! The reader thread: decodes what vhci writes, turns each `CMD_SUBMIT`
//! into a usbif URB (or a local answer) and each `CMD_UNLINK` into a
//! cancel, and stops reading when it has no credit left.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crossbeam_channel::Sender;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pvusb_protocol::usbip::{CmdSubmit, CmdUnlinkHeader, DeviceSide, Message, StreamDecoder};
use tracing::{debug, trace};

use super::answer::Answers;
use super::port_reset;
use super::split::{plan, Plan};
use super::table::{Entry, SharedTable};
use super::translate::{encode_ret_submit, encode_ret_unlink, error_reply, DeviceTarget, Request};
use super::watch::Event;
use super::{BridgeEnd, BridgeOptions};
use crate::error::UrbStatus;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

pub(super) struct Reader {
    table: Arc<SharedTable>,
    answers: Arc<Answers>,
    target: DeviceTarget,
    socket: UnixStream,
    /// To the bridge thread: why the reader stopped.
    events: Sender<Event>,
    options: BridgeOptions,
}

impl Reader {
    pub fn new(
        answers: Arc<Answers>,
        target: DeviceTarget,
        socket: UnixStream,
        events: Sender<Event>,
        options: BridgeOptions,
    ) -> Self {
        Self {
            table: answers.table(),
            answers,
            target,
            socket,
            events,
            options,
        }
    }

    /// Reads until the peer closes, the stream breaks or the bridge ends,
    /// then tells the bridge thread why.
    pub fn run(mut self) {
        let end = self.read_loop();
        debug!(port = self.target.port, %end, "vhci reader done");
        let _ = self.events.send(Event::ReaderDone(end));
    }

    fn read_loop(&mut self) -> BridgeEnd {
        let framing = DeviceSide {
            iso_endpoints: Some(self.target.endpoints.iso_endpoints()),
        };
        let mut decoder = StreamDecoder::new(framing, self.options.limits);
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if let Err(end) = wait_readable(&self.socket) {
                return end;
            }
            let n = match self.socket.read(&mut buf) {
                Ok(0) => return BridgeEnd::PeerClosed,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return BridgeEnd::Socket(e.kind()),
            };
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let (used, message) = match decoder.feed(rest) {
                    Ok(r) => r,
                    Err(e) => return BridgeEnd::Protocol(e.to_string()),
                };
                rest = &rest[used..];
                let Some(message) = message else { continue };
                if !self.table.take_credit(self.options.max_in_flight) {
                    // Ending: what is in flight is answered, then the bridge
                    // thread closes.
                    return BridgeEnd::Stopped;
                }
                let handled = match message {
                    Message::CmdSubmit(cmd) => self.submit(cmd),
                    Message::CmdUnlink(unlink) => {
                        self.unlink(unlink);
                        Ok(())
                    }
                    // The decoder's DeviceSide framing refuses replies.
                    Message::RetSubmit(_) | Message::RetUnlink(_) => Ok(()),
                };
                if let Err(end) = handled {
                    return end;
                }
            }
        }
    }

    /// Submits `cmd` on the frontend, or queues its local answer.
    fn submit(&self, cmd: CmdSubmit) -> Result<(), BridgeEnd> {
        let request = Request::of(&cmd);
        let seqnum = request.seqnum;
        if port_reset::starts_enumeration(&cmd) {
            let Some(front) = self.answers.front() else {
                return Err(BridgeEnd::ControllerGone);
            };
            port_reset::readdress(&front, &self.target);
        }
        let (urbs, split) = match plan(cmd, &self.target) {
            Ok(Plan::Single(urb)) => (vec![urb], None),
            Ok(Plan::Split(split, pieces)) => (pieces, Some(split)),
            Err(refusal) => {
                debug!(
                    seqnum,
                    reason = refusal.reason,
                    status = refusal.status,
                    "answered locally"
                );
                let bytes = encode_ret_submit(&request, &error_reply(&request, refusal.status));
                self.answers.reply(&bytes, 1);
                return Ok(());
            }
        };
        {
            let mut table = self.table.lock();
            if table.in_flight.contains_key(&seqnum) {
                // Two answers to one seqnum would make vhci drop the device
                // anyway; the peer's framing cannot be trusted any more.
                return Err(BridgeEnd::Protocol(format!(
                    "seqnum {seqnum} reused in flight"
                )));
            }
            table.in_flight.insert(
                seqnum,
                Entry {
                    request,
                    handles: Vec::new(),
                    split,
                    unlink_seqnum: None,
                },
            );
        }
        let mut handles = Vec::with_capacity(urbs.len());
        for (piece, urb) in urbs.into_iter().enumerate() {
            trace!(
                seqnum,
                piece,
                len = urb.buffer.len(),
                "CMD_SUBMIT submitted"
            );
            let Some(handle) = self.answers.submit(seqnum, piece, urb) else {
                return Err(BridgeEnd::ControllerGone);
            };
            handles.push(handle);
        }
        let cancel = {
            let mut table = self.table.lock();
            let ending = table.ending.is_some();
            match table.in_flight.get_mut(&seqnum) {
                Some(entry) => {
                    entry.handles = handles.clone();
                    // The bridge began to end while these were submitted.
                    ending
                }
                // Answered already: a piece ended the request before the
                // pieces behind it were submitted.
                None => handles.len() > 1,
            }
        };
        if cancel {
            for handle in &handles {
                handle.unlink(UrbStatus::Cancelled);
            }
        }
        Ok(())
    }

    /// Cancels the URB `unlink` names, or answers at once if it is done.
    fn unlink(&self, unlink: CmdUnlinkHeader) {
        let (seqnum, target) = (unlink.basic.seqnum, unlink.unlink_seqnum);
        let handle = {
            let mut table = self.table.lock();
            match table.in_flight.get_mut(&target) {
                Some(entry) if entry.unlink_seqnum.is_none() => {
                    entry.unlink_seqnum = Some(seqnum);
                    Some(entry.handles.clone())
                }
                _ => None,
            }
        };
        match handle {
            // Its completion answers: RET_UNLINK alone if the cancel took,
            // RET_SUBMIT then RET_UNLINK(0) if it had won.
            Some(handles) => {
                for handle in &handles {
                    handle.unlink(UrbStatus::Cancelled);
                }
            }
            // Already answered (its RET_SUBMIT went out or is queued before
            // this: a completion removes its entry and answers under the
            // answers' lock, which this waits for), or a second unlink:
            // nothing left to cancel.
            None => self.answers.reply(&encode_ret_unlink(seqnum, 0), 1),
        }
    }
}

/// Sleeps until the socket has data (or an error or the peer's close).
///
/// WHY `poll` before `read`, one system call more: a thread asleep in a
/// stream socket's `read` waits on the queue that the kernel also wakes
/// when the peer consumes what was sent on this socket (write space), and
/// vhci consumes every reply the worker sends. Each reply would wake the
/// reader for nothing, a switch in and out per request on the guest's vCPU.
/// `poll` for input only is not woken by write space.
fn wait_readable(socket: &UnixStream) -> Result<(), BridgeEnd> {
    loop {
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(BridgeEnd::Socket(io::Error::from(e).kind())),
        }
    }
}
