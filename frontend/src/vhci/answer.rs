//! [`Answers`]: every `RET_SUBMIT` and `RET_UNLINK` goes to vhci from here,
//! written by the thread that learned the answer.
//!
//! WHY no writer thread in between: each hand-off to another thread is a
//! wake-up and a context switch per URB, which on a guest's single vCPU is
//! a large share of a small transfer's time. A completion is therefore
//! answered on the frontend's worker thread (its callback), a local answer
//! on the reader thread, each with a non-blocking send.
//!
//! WHY a backlog: the worker thread serves every device of the controller
//! and must never wait for vhci to read. When the socket is full the rest
//! of the message, and every answer after it, goes to a backlog that the
//! bridge's own thread ([`super::watch`]) writes with blocking sends. Order
//! on the socket is the order of answers.
//!
//! Lock order: `out`, then the table. A completion removes its entry and
//! writes its answer under `out`, so the reader, which answers an unlink
//! for a URB no longer in the table under `out` too, never writes that
//! `RET_UNLINK` before the URB's `RET_SUBMIT`. No lock is held while a URB
//! is submitted or cancelled: either may complete at once, on this thread.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crossbeam_channel::Sender;
use nix::errno::Errno;
use nix::sys::socket::{sendmsg, MsgFlags};
use pvusb_support::{lock_unpoisoned, Chain};
use tracing::{debug, trace};

use super::table::{Entry, SharedTable};
use super::translate::{
    encode_ret_unlink, error_reply, reply_for, ret_submit_wire, DeviceTarget, Request,
};
use super::watch::Event;
use crate::error::UrbStatus;
use crate::frontend::{Frontend, UrbHandle};
use crate::urb::{Completion, Urb};

/// The socket's write side and what waits to be written.
#[derive(Debug)]
struct Out {
    socket: UnixStream,
    /// Messages for the bridge thread, in order, each with the credits it
    /// gives back once written.
    backlog: VecDeque<(Vec<u8>, usize)>,
    /// The bridge thread is writing a message it took from the backlog:
    /// new answers queue behind it.
    draining: bool,
    /// Cleared after a failed write: nothing more is written.
    ok: bool,
}

/// Answers vhci for one bridge; shared by the reader, the completion
/// callbacks and the bridge thread.
#[derive(Debug)]
pub(super) struct Answers {
    table: Arc<SharedTable>,
    target: DeviceTarget,
    /// Weak: the frontend holds the completion callbacks, which hold this.
    front: Weak<Frontend>,
    out: Mutex<Out>,
    /// Wakes the bridge thread: a backlog to write, or a failed socket.
    wake: Sender<Event>,
}

impl Answers {
    pub fn new(
        table: Arc<SharedTable>,
        target: DeviceTarget,
        front: Weak<Frontend>,
        socket: UnixStream,
        wake: Sender<Event>,
    ) -> Self {
        Self {
            table,
            target,
            front,
            out: Mutex::new(Out {
                socket,
                backlog: VecDeque::new(),
                draining: false,
                ok: true,
            }),
            wake,
        }
    }

    /// The frontend, unless it is gone.
    pub fn front(&self) -> Option<Arc<Frontend>> {
        self.front.upgrade()
    }

    /// The in-flight table these answers settle.
    pub fn table(&self) -> Arc<SharedTable> {
        Arc::clone(&self.table)
    }

    fn out(&self) -> MutexGuard<'_, Out> {
        // Every update of `Out` is a single field write or queue operation.
        lock_unpoisoned(&self.out)
    }

    /// Submits `urb`, the whole request or piece `piece` of a split one,
    /// for `CMD_SUBMIT` `seqnum`; its completion is answered by
    /// [`Self::completed`].
    pub fn submit(self: &Arc<Self>, seqnum: u32, piece: usize, urb: Urb) -> Option<UrbHandle> {
        let front = self.front.upgrade()?;
        let answers = Arc::clone(self);
        Some(front.submit(urb, move |completion| {
            answers.completed(seqnum, piece, completion);
        }))
    }

    /// A local answer (a refusal, or the `RET_UNLINK` of a URB already
    /// answered) that gives `credits` back once written.
    pub fn reply(&self, bytes: &[u8], credits: usize) {
        let mut out = self.out();
        self.emit(&mut out, &[bytes], credits);
    }

    /// Answers a completed URB: `RET_SUBMIT`, and if vhci unlinked it,
    /// `RET_UNLINK` (alone when the cancel took effect, since vhci gives the
    /// URB back on it and would drop the device on a later `RET_SUBMIT`
    /// for an unknown seqnum). A piece of a split request answers once the
    /// request's outcome is decided; pieces still in flight then are
    /// unlinked, and their completions find no entry.
    pub fn completed(self: &Arc<Self>, seqnum: u32, piece: usize, completion: Completion) {
        trace!(seqnum, piece, status = ?completion.status, "usbif completion");
        let mut out = self.out();
        let mut table = self.table.lock();
        let ending = table.ending.is_some();
        let Some(entry) = table.in_flight.get_mut(&seqnum) else {
            return;
        };
        let completion = match entry.split.as_mut() {
            None => completion,
            Some(split) => match split.on_piece(piece, completion) {
                Some(c) => c,
                None => return,
            },
        };
        let Some(entry) = table.in_flight.remove(&seqnum) else {
            return;
        };
        drop(table);
        let Entry {
            request,
            handles,
            split,
            unlink_seqnum,
        } = entry;
        self.answer(&mut out, request, unlink_seqnum, completion, ending);
        drop(out);
        if split.is_some() {
            // Pieces behind one that ended the request must not take more
            // of the device's data (a no-op for those already complete).
            // No lock is held: a cancel may complete at once, here.
            for handle in &handles {
                handle.unlink(UrbStatus::Cancelled);
            }
        }
    }

    /// Writes the answer of a finished request.
    fn answer(
        &self,
        out: &mut Out,
        request: Request,
        unlink_seqnum: Option<u32>,
        completion: Completion,
        ending: bool,
    ) {
        let seqnum = request.seqnum;
        if let Some(unlink) = unlink_seqnum {
            if completion.status == UrbStatus::Cancelled {
                let econnreset = -(Errno::ECONNRESET as i32);
                self.emit(out, &[&encode_ret_unlink(unlink, econnreset)], 2);
                return;
            }
        }
        let reply = if ending && !completion.status.is_ok() {
            // Whatever the frontend made of the cancel (cancelled, no
            // device, shutdown), for vhci the device is gone.
            error_reply(&request, -(Errno::ENODEV as i32))
        } else {
            reply_for(&request, completion)
        };
        let wire = ret_submit_wire(&request, &reply);
        match unlink_seqnum {
            None => self.emit(out, &wire.parts(), 1),
            Some(unlink) => {
                // It finished before the cancel: its RET_SUBMIT goes first,
                // the unlink found nothing to cancel.
                let [header, data, descriptors] = wire.parts();
                let ret_unlink = encode_ret_unlink(unlink, 0);
                self.emit(out, &[header, data, descriptors, &ret_unlink], 2);
            }
        }
        trace!(seqnum, "RET_SUBMIT written");
    }

    /// Sends `parts` now if nothing is queued and the socket takes them,
    /// else queues what is left for the bridge thread.
    fn emit(&self, out: &mut Out, parts: &[&[u8]], credits: usize) {
        if !out.ok {
            return;
        }
        let mut sent = 0;
        if out.backlog.is_empty() && !out.draining {
            match send_now(&out.socket, parts) {
                Ok(n) => sent = n,
                Err(e) => {
                    debug!(
                        port = self.target.port,
                        "vhci socket write failed: {e}",
                        e = Chain(&e)
                    );
                    out.ok = false;
                    let _ = self.wake.send(Event::SocketFailed(e.kind()));
                    return;
                }
            }
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if sent == total {
            self.table.release(credits);
            return;
        }
        let rest: Vec<u8> = unsent(parts, sent).flatten().copied().collect();
        out.backlog.push_back((rest, credits));
        let _ = self.wake.send(Event::Backlog);
    }

    /// Writes the backlog with blocking sends on `socket` (the bridge
    /// thread's clone), until it is empty or a write fails.
    pub fn drain_backlog(&self, mut socket: &UnixStream) -> Result<(), io::ErrorKind> {
        loop {
            let (bytes, credits) = {
                let mut out = self.out();
                let next = if out.ok {
                    out.backlog.pop_front()
                } else {
                    None
                };
                out.draining = next.is_some();
                match next {
                    Some(message) => message,
                    None => {
                        out.backlog.clear();
                        return Ok(());
                    }
                }
            };
            // Blocking, bounded by the socket's write timeout.
            if let Err(e) = socket.write_all(&bytes) {
                debug!(
                    port = self.target.port,
                    "vhci socket write failed: {e}",
                    e = Chain(&e)
                );
                let mut out = self.out();
                out.ok = false;
                out.draining = false;
                out.backlog.clear();
                return Err(e.kind());
            }
            self.table.release(credits);
        }
    }

    /// Nothing waits to be written.
    pub fn flushed(&self) -> bool {
        let out = self.out();
        !out.ok || (out.backlog.is_empty() && !out.draining)
    }
}

/// What is left of `parts` once their first `sent` bytes went out, as the
/// non-empty tails of the parts, in order.
fn unsent<'a>(parts: &'a [&'a [u8]], sent: usize) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut skip = sent;
    parts.iter().filter_map(move |p| {
        let from = skip.min(p.len());
        skip -= from;
        p.get(from..).filter(|tail| !tail.is_empty())
    })
}

/// Sends as much of `parts` as the socket takes without blocking; returns
/// the bytes sent.
fn send_now(socket: &UnixStream, parts: &[&[u8]]) -> io::Result<usize> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut sent = 0;
    while sent < total {
        let slices: Vec<IoSlice<'_>> = unsent(parts, sent).map(IoSlice::new).collect();
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendmsg::<()>(socket.as_raw_fd(), &slices, &[], flags, None) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::vhci::EndpointTypes;

    /// Answers on one end of a socket pair whose other end nobody reads yet.
    fn answers() -> (Arc<Answers>, UnixStream, crossbeam_channel::Receiver<Event>) {
        let (ours, peer) = UnixStream::pair().unwrap();
        let (wake, woken) = crossbeam_channel::unbounded();
        let target = DeviceTarget {
            port: 1,
            address: 1,
            endpoints: EndpointTypes::default(),
        };
        let table = Arc::new(SharedTable::default());
        let answers = Answers::new(table, target, Weak::new(), ours, wake);
        (Arc::new(answers), peer, woken)
    }

    /// Answers that the socket cannot take wait in order behind the first
    /// one that did not fit, the thread that answers never blocks, and the
    /// bridge thread's blocking drain delivers every byte in order.
    #[test]
    fn a_full_socket_backlogs_answers_in_order_without_blocking() {
        let (answers, mut peer, woken) = answers();
        let message = |i: u8| vec![i; 100_000];
        // Far more than a socket buffer holds; each call returns at once.
        for i in 0..20u8 {
            answers.reply(&message(i), 0);
        }
        assert!(!answers.flushed(), "the socket cannot have taken 2 MB");
        assert!(matches!(woken.try_recv(), Ok(Event::Backlog)));
        let ours = answers.out().socket.try_clone().unwrap();
        let drainer = {
            let answers = Arc::clone(&answers);
            std::thread::spawn(move || answers.drain_backlog(&ours))
        };
        let mut got = vec![0u8; 20 * 100_000];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(drainer.join().unwrap(), Ok(()));
        assert!(answers.flushed());
        for (i, chunk) in got.chunks(100_000).enumerate() {
            assert!(
                chunk.iter().all(|&b| usize::from(b) == i),
                "message {i} out of order"
            );
        }
    }

    /// A peer that went away ends the answers: the failure wakes the bridge
    /// thread and nothing more is written.
    #[test]
    fn a_closed_peer_is_reported_once() {
        let (answers, peer, woken) = answers();
        drop(peer);
        answers.reply(&[1, 2, 3], 1);
        answers.reply(&[4], 1);
        assert!(matches!(woken.try_recv(), Ok(Event::SocketFailed(_))));
        assert!(woken.try_recv().is_err(), "one report, then silence");
        assert!(answers.flushed());
    }
}
