//! The proxy's two threads and what they share.
//!
//! `up` reads the worker's requests, filters them and writes the allowed ones
//! upstream (answering the others itself); `down` forwards everything the
//! daemon sends on this private connection (replies and watch events) to the
//! worker. Both write to the worker under one lock, so messages never
//! interleave. Whichever ends first calls [`Link::stop`], which shuts both
//! connections down and wakes the other thread: a proxy is never half alive.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pvusb_support::{lock_unpoisoned, Chain};

use super::filter::check;
use super::limit::LogBudget;
use super::Scope;
use crate::transport::Transport;
use crate::wire::{read_message, Message, ReadError};

/// How long one message may wait for the worker to make room in its socket.
/// The worker's client reads on a thread of its own, so a worker that leaves
/// its replies unread this long is stuck or hostile, and loses its xenstore.
pub(super) const WORKER_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The state both threads and the handle share.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) label: String,
    running: AtomicBool,
    denied: AtomicU64,
    /// Written by both threads, one whole message per lock.
    to_worker: Mutex<UnixStream>,
    /// A clone of the worker's socket that is never locked, so [`Self::stop`]
    /// can shut it down while a thread is blocked writing to it.
    worker: UnixStream,
    /// A clone of the upstream connection, likewise only for shutting down.
    upstream: Transport,
    /// Shut down to wake `down` when upstream is the xenbus device, which
    /// cannot be shut down itself.
    wake: UnixStream,
}

impl Link {
    pub(super) fn new(
        label: String,
        worker: &UnixStream,
        upstream: &Transport,
        wake: UnixStream,
    ) -> std::io::Result<Link> {
        Ok(Link {
            label,
            running: AtomicBool::new(true),
            denied: AtomicU64::new(0),
            to_worker: Mutex::new(worker.try_clone()?),
            worker: worker.try_clone()?,
            upstream: upstream.try_clone()?,
            wake,
        })
    }

    /// Ends the proxy: both connections are shut down and both threads woken.
    /// Idempotent.
    pub(super) fn stop(&self) {
        self.running.store(false, Ordering::SeqCst);
        let _ = self.worker.shutdown(std::net::Shutdown::Both);
        self.upstream.shutdown();
        let _ = self.wake.shutdown(std::net::Shutdown::Both);
    }

    pub(super) fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    pub(super) fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    fn send_to_worker(&self, msg: &Message) -> std::io::Result<()> {
        let bytes = msg.serialize();
        lock_unpoisoned(&self.to_worker).write_all(&bytes)
    }
}

/// Worker to upstream: filter, forward or refuse, until either side ends.
pub(super) fn up(link: &Link, mut worker: UnixStream, mut upstream: Transport, scope: &dyn Scope) {
    let mut budget = LogBudget::new();
    let label = link.label.as_str();
    loop {
        let msg = match read_message(&mut worker) {
            Ok(msg) => msg,
            Err(ReadError::Oversized { len, .. }) => {
                tracing::warn!(
                    proxy = label,
                    len,
                    "xenstore proxy: worker sent an oversized message; closing its connection"
                );
                break;
            }
            Err(ReadError::UnknownType { msg_type, .. }) => {
                tracing::warn!(
                    proxy = label,
                    msg_type,
                    "xenstore proxy: worker sent a message of unknown type; closing its connection"
                );
                break;
            }
            Err(ReadError::Io(e)) => {
                tracing::debug!(proxy = label, error = %e, "xenstore proxy: worker side ended");
                break;
            }
        };
        match check(&msg, scope) {
            Ok(()) => {
                if let Err(e) = upstream.write_all(&msg.serialize()) {
                    tracing::debug!(proxy = label, error = %e, "xenstore proxy: upstream write failed");
                    break;
                }
            }
            Err(refusal) => {
                link.denied.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = budget.admit(Instant::now()) {
                    tracing::warn!(
                        proxy = label,
                        req_id = msg.req_id,
                        suppressed,
                        "xenstore proxy refused a request: {}",
                        Chain(&refusal)
                    );
                }
                let reply = Message::error(msg.req_id, msg.tx_id, "EACCES");
                if let Err(e) = link.send_to_worker(&reply) {
                    tracing::debug!(proxy = label, error = %e, "xenstore proxy: worker write failed");
                    break;
                }
            }
        }
    }
    link.stop();
}

/// Upstream to worker: forward replies and watch events unchanged.
pub(super) fn down(link: &Link, mut upstream: Transport, wake: UnixStream) {
    let label = link.label.as_str();
    loop {
        let (upstream_ready, woken) = {
            let mut fds = [
                PollFd::new(upstream.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(proxy = label, error = %e, "xenstore proxy: poll failed");
                    break;
                }
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if woken {
            break;
        }
        if !upstream_ready {
            continue;
        }
        let msg = match read_message(&mut upstream) {
            Ok(msg) => msg,
            // xenstored never sends either; if it did, the worker could not be
            // given a faithful copy, and dropping a reply would leave the worker
            // waiting for it, so the worker loses its connection instead.
            Err(ReadError::Oversized { len, .. }) => {
                tracing::warn!(
                    proxy = label,
                    len,
                    "xenstore proxy: upstream sent an oversized message; closing"
                );
                break;
            }
            Err(ReadError::UnknownType { msg_type, .. }) => {
                tracing::warn!(
                    proxy = label,
                    msg_type,
                    "xenstore proxy: upstream sent a message of unknown type; closing"
                );
                break;
            }
            Err(ReadError::Io(e)) => {
                tracing::debug!(proxy = label, error = %e, "xenstore proxy: upstream ended");
                break;
            }
        };
        if let Err(e) = link.send_to_worker(&msg) {
            tracing::debug!(proxy = label, error = %e, "xenstore proxy: worker write failed");
            break;
        }
    }
    link.stop();
}
