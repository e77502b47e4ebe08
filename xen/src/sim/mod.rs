//! The simulated transport: grant tables and event channels between processes
//! (or threads) of one machine, without Xen. It is the embedded default and the
//! base of every test and benchmark.
//!
//! # Model
//!
//! Every participant is a [`SimXen`] handle with its own domain id, rooted at a
//! shared directory. The directory is how the sides find each other: a domain that
//! grants pages or allocates event-channel ports (the frontend) serves the UNIX
//! socket `dir/dom<id>.sock`, started lazily in a thread on its first
//! [`GrantAllocator::alloc`] or [`EventChannels::alloc_unbound`] (or eagerly with
//! [`SimXen::serve`]). The mapping domain (the backend) connects to it once per
//! peer, receives descriptors over `SCM_RIGHTS`, and afterwards copies straight
//! between its buffers and a mapping of the granter's page memfd, without socket
//! round trips or any other syscall.
//!
//! - Grant table: a sealed memfd of [`NR_REFS`] pages (sparse) plus a sealed memfd
//!   of metadata (grant word and mapped count per reference). References start at
//!   8, as on Xen. Map and copy check: reference in range, in use, granted to *my*
//!   domid, writable if written; otherwise the precise [`GrantError`]. Mapped
//!   counts are kept by the granter per connection, so a backend that dies (or
//!   restarts) releases its mappings when its connection closes.
//! - Event channels: an eventfd per direction and a socketpair whose hang-up tells
//!   each side that the other died ([`EvtchnError::PeerGone`] from `wait`/`ack`).
//!   A port is bound by one binder at a time, only the domain it was allocated
//!   for, and again after that binder closed or died (as on Xen). The pollable
//!   fd ([`AsFd`](std::os::fd::AsFd)) is an epoll fd that becomes readable on an
//!   event *or* on the peer's death, so event loops notice both.
//! - Hostile input (a reference out of range, a grant for another domain, a
//!   read-only grant written, a segment crossing a page, a malformed rendezvous
//!   message, a vanished peer) is answered with an error value; every socket read
//!   has a timeout, so nothing waits forever on a wedged peer.
//! - Copies and a granter's death: a grant copy makes no syscall, so it does
//!   not notice that the granter died. A copy after the death (before anything
//!   else noticed it) is checked against the grant words as the granter left
//!   them and moves data to or from its pages as they were left: the memfds stay
//!   valid while mapped, so this touches only the simulation's memory and can
//!   neither fault nor hang. The death is reported where a backend has to act on
//!   it: the event channel (its pollable fd wakes, `wait`/`ack` answer
//!   [`EvtchnError::PeerGone`]; the pvusb backend then tears the controller
//!   down) and every `map` or `bind_interdomain` (an error value). The first
//!   `map` that finds the granter gone also drops the cached connection, so
//!   copies after it fail with [`GrantError::Unavailable`]. Real Xen behaves
//!   alike: a backend learns of a dead guest from xenstore and its event
//!   channel, not from each copy. (Refusing such copies at once would cost a
//!   `poll` of the rendezvous socket on every copy.)
//! - Not a security boundary: a peer that receives the page memfd could read all
//!   of it. The checks reproduce Xen's *semantics* so that code tested here
//!   behaves the same on Xen.
//!
//! # Starting a simulated pair
//!
//! Both sides only need the same directory (any private directory, e.g. a
//! `tempfile::tempdir()`; socket paths must stay under ~100 bytes) and the peer's
//! domain id. In a test that runs the sides in two processes:
//!
//! ```no_run
//! use pvusb_xen::sim::SimXen;
//! use pvusb_xen::{EventChannel, EventChannels, GrantAllocator, GrantMapper, GrantedPages, SharedMem};
//! # let dir = std::path::Path::new("/tmp/pvusb-sim-doc");
//! // Frontend process (domain 1), granting to the backend (domain 0):
//! let front = SimXen::new(dir, 1);
//! let ring = front.alloc(0, 1, true)?;            // serves dir/dom1.sock from now on
//! let evtchn = front.alloc_unbound(0)?;
//! let (gref, port) = (ring.refs()[0], evtchn.port()); // publish these (xenstore)
//!
//! // Backend process (domain 0), after reading gref and port:
//! let back = SimXen::new(dir, 0);
//! let mapping = back.map(1, &[gref], true)?;      // connects to dir/dom1.sock once
//! let ch = back.bind_interdomain(1, port)?;
//! mapping.store_u32(0, 42)?;
//! ch.notify()?;
//!
//! // Frontend again:
//! assert!(evtchn.wait(Some(std::time::Duration::from_secs(5)))?);
//! assert_eq!(ring.load_u32(0)?, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same calls work with both handles in one process (threads), which is how
//! the in-process tests and the demo run. The two-process tests in
//! `xen/tests/sim_two_process.rs` re-execute the test binary
//! (`std::env::current_exe()` with `--exact <child test> --ignored --nocapture`)
//! and pass the directory and the role in environment variables.

mod evtchn;
mod grant;
mod peer;
mod server;
mod table;
mod wire;

use std::collections::HashMap;
use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pvusb_support::lock_unpoisoned;

pub use evtchn::SimEventChannel;
pub use grant::{SimGrantedPages, SimMapping};
pub use table::{FIRST_REF, NR_REFS};

use peer::{MapCount, PeerGrants};
use server::{Local, Server};
use wire::{Reply, Request};

use crate::{
    CopySeg, DomId, EventChannels, EvtchnError, EvtchnPort, GrantAllocator, GrantError,
    GrantMapper, GrantRef,
};

/// A simulated Xen as seen by one domain. Cheap to clone; every clone is the same
/// domain. The rendezvous server stops when the last clone is dropped, which the
/// peers observe exactly like the death of the domain.
#[derive(Debug, Clone)]
pub struct SimXen {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    local: Arc<Local>,
    server: Mutex<Option<Server>>,
    peers: Mutex<HashMap<DomId, Arc<PeerGrants>>>,
    /// Mappings of peers' grants this domain holds now.
    live_maps: Arc<AtomicUsize>,
}

impl SimXen {
    /// Domain `domid` of the simulation rooted at `dir`. Nothing happens on disk
    /// until the domain grants, allocates a port, or connects to a peer.
    pub fn new(dir: &Path, domid: DomId) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                local: Arc::new(Local::new(domid)),
                server: Mutex::new(None),
                peers: Mutex::new(HashMap::new()),
                live_maps: Arc::new(AtomicUsize::new(0)),
            }),
        }
    }

    /// Mappings of peers' grants this domain holds now (made by
    /// [`GrantMapper::map`] and not dropped yet): tests check that every
    /// mapping is released.
    pub fn live_mappings(&self) -> usize {
        self.inner.live_maps.load(Ordering::Relaxed)
    }

    /// This domain's id.
    pub fn domid(&self) -> DomId {
        self.inner.local.domid
    }

    /// The rendezvous directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The rendezvous socket of domain `domid` under `dir`.
    pub fn socket_path(dir: &Path, domid: DomId) -> PathBuf {
        server::socket_path(dir, domid)
    }

    /// Start serving `dir/dom<id>.sock` now (it otherwise starts on first use).
    /// Fails if another live process already serves this domain id.
    pub fn serve(&self) -> io::Result<()> {
        let mut server = lock_unpoisoned(&self.inner.server);
        if server.is_none() {
            *server = Some(Server::start(
                &self.inner.dir,
                Arc::clone(&self.inner.local),
            )?);
        }
        Ok(())
    }

    /// The cached connection to `peer`'s grant table, reconnecting if the cached one
    /// hung up (the granter died or restarted). For maps: one `poll` of the
    /// rendezvous socket, so a map of a dead granter is refused at once.
    fn peer(&self, peer: DomId) -> Result<Arc<PeerGrants>, GrantError> {
        let mut peers = lock_unpoisoned(&self.inner.peers);
        if let Some(p) = peers.get(&peer) {
            if p.alive() {
                return Ok(Arc::clone(p));
            }
            peers.remove(&peer);
        }
        let p = Arc::new(PeerGrants::connect(&self.inner.dir, self.domid(), peer)?);
        peers.insert(peer, Arc::clone(&p));
        Ok(p)
    }

    /// The cached connection to `peer`'s grant table for a copy: no liveness
    /// check (see "Copies and a granter's death" in the module docs); connects
    /// only when nothing is cached.
    fn peer_for_copy(&self, peer: DomId) -> Result<Arc<PeerGrants>, GrantError> {
        if let Some(p) = lock_unpoisoned(&self.inner.peers).get(&peer) {
            return Ok(Arc::clone(p));
        }
        self.peer(peer)
    }
}

impl GrantAllocator for SimXen {
    type Pages = SimGrantedPages;

    fn alloc(
        &self,
        peer: DomId,
        count: usize,
        writable: bool,
    ) -> Result<SimGrantedPages, GrantError> {
        self.serve()
            .map_err(|e| GrantError::Unavailable(format!("cannot serve grants: {e}")))?;
        let table = self.inner.local.table()?;
        let refs = table.alloc(peer, count, writable)?;
        SimGrantedPages::new(table, refs)
    }
}

impl GrantMapper for SimXen {
    type Mapping = SimMapping;

    fn map(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<SimMapping, GrantError> {
        let peer = self.peer(domid)?;
        let region = peer.map(refs, writable)?;
        Ok(SimMapping::new(
            region,
            MapCount {
                peer,
                refs: refs.to_vec(),
            },
            Arc::clone(&self.inner.live_maps),
        ))
    }

    fn copy_from_guest(
        &self,
        domid: DomId,
        segs: &[CopySeg],
        dst: &mut [u8],
    ) -> Result<(), GrantError> {
        self.peer_for_copy(domid)?.copy_from(segs, dst)
    }

    fn copy_to_guest(&self, domid: DomId, segs: &[CopySeg], src: &[u8]) -> Result<(), GrantError> {
        self.peer_for_copy(domid)?.copy_to(segs, src)
    }
}

impl EventChannels for SimXen {
    type Channel = SimEventChannel;

    fn alloc_unbound(&self, peer: DomId) -> Result<SimEventChannel, EvtchnError> {
        self.serve()
            .map_err(|e| EvtchnError::Unavailable(format!("cannot serve ports: {e}")))?;
        let local = &self.inner.local;
        let port = local
            .alloc_port()
            .ok_or_else(|| EvtchnError::Unavailable("out of ports".into()))?;
        let to_front = evtchn::new_eventfd()?;
        let to_back = evtchn::new_eventfd()?;
        let (link_front, link_back) = UnixStream::pair().map_err(|source| EvtchnError::Os {
            op: "socketpair",
            source,
        })?;
        let dup = |fd: &std::os::fd::OwnedFd| {
            fd.try_clone().map_err(|source| EvtchnError::Os {
                op: "dup eventfd",
                source,
            })
        };
        let front = SimEventChannel::new(
            port,
            dup(&to_front)?,
            dup(&to_back)?,
            link_front.into(),
            Some(Arc::clone(local)),
        )?;
        local.add_port(port, peer, [to_back, to_front, link_back.into()]);
        Ok(front)
    }

    fn bind_interdomain(
        &self,
        peer: DomId,
        remote_port: EvtchnPort,
    ) -> Result<SimEventChannel, EvtchnError> {
        let mut sock = peer::connect(&self.inner.dir, peer).map_err(EvtchnError::Unavailable)?;
        let unavailable =
            |e: io::Error| EvtchnError::Unavailable(format!("binding to domain {peer}: {e}"));
        Request::Bind {
            domid: self.domid(),
            port: remote_port,
        }
        .send(&mut sock)
        .map_err(unavailable)?;
        let (reply, fds) = Reply::recv(&sock).map_err(unavailable)?;
        match reply {
            Reply::Ok(_) => {}
            Reply::BadPort => {
                return Err(EvtchnError::BadPort {
                    domid: peer,
                    port: remote_port,
                })
            }
            other => {
                return Err(EvtchnError::Unavailable(format!(
                    "domain {peer} answered {other:?}"
                )))
            }
        }
        let [rx, tx, link]: [std::os::fd::OwnedFd; 3] = fds
            .try_into()
            .map_err(|_| EvtchnError::Unavailable("wrong number of descriptors".into()))?;
        let port = self
            .inner
            .local
            .alloc_port()
            .ok_or_else(|| EvtchnError::Unavailable("out of ports".into()))?;
        SimEventChannel::new(port, rx, tx, link, None)
    }
}
