//! Simulated event channels: one eventfd per direction plus a socketpair whose
//! only job is to tell each side that the other has gone.
//!
//! Why a socketpair for liveness: an eventfd cannot report that its writer died,
//! a socket end does (`POLLHUP`/`POLLRDHUP`) the moment the peer process exits,
//! whatever the cause.
//!
//! Re-binding (as on Xen): when the binder closes its end (or dies), the
//! allocator's port goes back to unbound and the domain it was allocated for may
//! bind it again — a restarted backend daemon binds the port the frontend still
//! publishes in xenstore. The allocator's end reports [`EvtchnError::PeerGone`]
//! while its port is unbound after a close (that is the simulation's only way to
//! say "the backend went away"; Xen itself says nothing), and works again as soon
//! as a new binder arrives: the rendezvous server installs a fresh liveness link
//! in the allocator's [`Link`], the eventfds stay the same.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use pvusb_support::lock_unpoisoned;

use super::server::Local;
use crate::{EventChannel, EvtchnError, EvtchnPort};

fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> EvtchnError {
    move |source| EvtchnError::Os { op, source }
}

/// A fresh non-blocking eventfd.
pub(crate) fn new_eventfd() -> Result<OwnedFd, EvtchnError> {
    let ev = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| EvtchnError::Os {
            op: "eventfd",
            source: e.into(),
        })?;
    ev.as_fd().try_clone_to_owned().map_err(os("dup eventfd"))
}

/// The liveness side of one channel end: the current socketpair end and the
/// epoll fd callers poll. Shared with the rendezvous server on the allocating
/// side, which replaces the link when the port is bound again.
#[derive(Debug)]
pub(crate) struct Link {
    current: Mutex<Arc<UnixStream>>,
    /// Readable when an event is pending or the peer is gone.
    epoll: Epoll,
}

fn epoll_err(e: nix::Error) -> EvtchnError {
    EvtchnError::Os {
        op: "epoll",
        source: e.into(),
    }
}

impl Link {
    /// The link currently in use (cheap: an `Arc` clone, no syscall).
    fn current(&self) -> Arc<UnixStream> {
        Arc::clone(&lock_unpoisoned(&self.current))
    }

    /// Whether the other end of the current link is closed (binder gone).
    pub(crate) fn is_closed(&self) -> bool {
        crate::poll::hung_up(self.current().as_fd()).unwrap_or(true)
    }

    /// Installs a fresh link (a new binder): the old one leaves the epoll set so
    /// its hang-up is no longer reported.
    pub(crate) fn replace(&self, new: UnixStream) -> Result<(), EvtchnError> {
        new.set_nonblocking(true)
            .map_err(os("configure evtchn link"))?;
        let mut cur = lock_unpoisoned(&self.current);
        // Deleting may fail if it was never added; either way it is gone after.
        let _ = self.epoll.delete(&**cur);
        self.epoll
            .add(&new, EpollEvent::new(EpollFlags::EPOLLRDHUP, 1))
            .map_err(epoll_err)?;
        *cur = Arc::new(new);
        Ok(())
    }
}

/// One end of a simulated interdomain event channel.
#[derive(Debug)]
pub struct SimEventChannel {
    port: EvtchnPort,
    rx: File,
    tx: File,
    link: Arc<Link>,
    /// The allocating side removes its port from the server on drop.
    owner: Option<Arc<Local>>,
}

impl SimEventChannel {
    pub(crate) fn new(
        port: EvtchnPort,
        rx: OwnedFd,
        tx: OwnedFd,
        link: OwnedFd,
        owner: Option<Arc<Local>>,
    ) -> Result<Self, EvtchnError> {
        let e = epoll_err;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(e)?;
        epoll
            .add(&rx, EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .map_err(e)?;
        epoll
            .add(&link, EpollEvent::new(EpollFlags::EPOLLRDHUP, 1))
            .map_err(e)?;
        // The peer's descriptors could be anything: make sure none can block us.
        for fd in [&rx, &tx] {
            nix::fcntl::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(fd),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(e)?;
        }
        let (rx, tx, link) = (File::from(rx), File::from(tx), UnixStream::from(link));
        link.set_nonblocking(true)
            .map_err(os("configure evtchn link"))?;
        let link = Arc::new(Link {
            current: Mutex::new(Arc::new(link)),
            epoll,
        });
        if let Some(local) = &owner {
            local.register_link(port, Arc::clone(&link));
        }
        Ok(Self {
            port,
            rx,
            tx,
            link,
            owner,
        })
    }

    /// Consume a pending event (eventfd counter to zero).
    fn consume(&self) -> Result<bool, EvtchnError> {
        let mut buf = [0u8; 8];
        match (&self.rx).read(&mut buf) {
            Ok(8) => Ok(true),
            Ok(_) => Err(EvtchnError::Unavailable("short eventfd read".into())),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                Ok(false)
            }
            Err(source) => Err(EvtchnError::Os {
                op: "read eventfd",
                source,
            }),
        }
    }
}

impl AsFd for SimEventChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.link.epoll.0.as_fd()
    }
}

impl EventChannel for SimEventChannel {
    fn port(&self) -> EvtchnPort {
        self.port
    }

    /// One `write` of 1 to the peer's eventfd: events coalesce like a pending bit.
    fn notify(&self) -> Result<(), EvtchnError> {
        match (&self.tx).write(&1u64.to_ne_bytes()) {
            Ok(_) => Ok(()),
            // Counter saturated: an event is pending anyway.
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            Err(source) => Err(EvtchnError::Os {
                op: "write eventfd",
                source,
            }),
        }
    }

    /// Pending events are reported before a peer's death, so the last event a
    /// dying peer sent is not lost.
    /// A link replaced while waiting (the port was bound again) is not a death:
    /// the wait goes on with the new one.
    fn wait(&self, timeout: Option<Duration>) -> Result<bool, EvtchnError> {
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        loop {
            let link = self.link.current();
            let left = match deadline {
                None | Some(None) => None,
                Some(Some(d)) => Some(d.saturating_duration_since(Instant::now())),
            };
            let ready = crate::poll_readable(self.rx.as_fd(), Some(link.as_fd()), left)
                .map_err(os("poll eventfd"))?;
            if ready.readable && self.consume()? {
                return Ok(true);
            }
            if !ready.hangup {
                return Ok(false);
            }
            if Arc::ptr_eq(&link, &self.link.current()) {
                return Err(EvtchnError::PeerGone);
            }
        }
    }

    fn ack(&self) -> Result<bool, EvtchnError> {
        if self.consume()? {
            return Ok(true);
        }
        let link = self.link.current();
        if crate::poll::hung_up(link.as_fd()).map_err(os("poll evtchn link"))? {
            return Err(EvtchnError::PeerGone);
        }
        Ok(false)
    }
}

impl Drop for SimEventChannel {
    fn drop(&mut self) {
        if let Some(local) = &self.owner {
            local.remove_port(self.port);
        }
    }
}
