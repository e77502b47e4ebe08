//! Simulated event channels: one eventfd per direction plus a socketpair whose
//! only job is to tell each side that the other has gone.
//!
//! Why a socketpair for liveness: an eventfd cannot report that its writer died,
//! a socket end does (`POLLHUP`/`POLLRDHUP`) the moment the peer process exits,
//! whatever the cause.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

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

/// One end of a simulated interdomain event channel.
#[derive(Debug)]
pub struct SimEventChannel {
    port: EvtchnPort,
    rx: File,
    tx: File,
    link: UnixStream,
    /// Readable when an event is pending or the peer is gone: the fd callers poll.
    epoll: Epoll,
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
        let e = |e: nix::Error| EvtchnError::Os {
            op: "epoll",
            source: e.into(),
        };
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
        Ok(Self {
            port,
            rx,
            tx,
            link,
            epoll,
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
        self.epoll.0.as_fd()
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
    fn wait(&self, timeout: Option<Duration>) -> Result<bool, EvtchnError> {
        let ready = crate::poll_readable(self.rx.as_fd(), Some(self.link.as_fd()), timeout)
            .map_err(os("poll eventfd"))?;
        if ready.readable && self.consume()? {
            return Ok(true);
        }
        if ready.hangup {
            return Err(EvtchnError::PeerGone);
        }
        Ok(false)
    }

    fn ack(&self) -> Result<bool, EvtchnError> {
        if self.consume()? {
            return Ok(true);
        }
        if crate::poll::hung_up(self.link.as_fd()).map_err(os("poll evtchn link"))? {
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
