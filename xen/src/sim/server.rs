//! The granting domain's rendezvous server: a UNIX socket `dir/dom<id>.sock` that
//! hands peers the grant-table memfds and the descriptors of event channels, and
//! keeps the per-connection mapping counts.
//!
//! Why a server and not just files in the directory: descriptors (memfds,
//! eventfds, socketpairs) can only travel between processes over a UNIX socket,
//! and a connection that closes is the one reliable sign that a peer died, which is
//! what lets the table release a dead backend's mappings.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::table::{GrantTable, NR_REFS};
use super::wire::{Reply, Request};
use crate::{DomId, EvtchnPort, GrantError, GrantRef};

/// Lock, recovering from a poisoned mutex: the guarded maps stay consistent
/// between statements, so a panic elsewhere does not corrupt them.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The descriptors a binding peer receives: its receive eventfd, its send eventfd
/// and its end of the liveness socketpair.
pub(crate) type PeerEnd = [OwnedFd; 3];

/// An event channel port allocated by this domain.
#[derive(Debug)]
struct PortEntry {
    peer: DomId,
    /// `None` once bound: a port binds once.
    for_peer: Option<PeerEnd>,
}

/// State of this domain that the server threads share with the handles.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) domid: DomId,
    table: Mutex<Option<Arc<GrantTable>>>,
    ports: Mutex<HashMap<EvtchnPort, PortEntry>>,
    next_port: AtomicU32,
    stopping: AtomicBool,
}

impl Local {
    pub(crate) fn new(domid: DomId) -> Self {
        Self {
            domid,
            table: Mutex::new(None),
            ports: Mutex::new(HashMap::new()),
            next_port: AtomicU32::new(1),
            stopping: AtomicBool::new(false),
        }
    }

    /// This domain's grant table, created on first use.
    pub(crate) fn table(&self) -> Result<Arc<GrantTable>, GrantError> {
        let mut t = lock(&self.table);
        if let Some(t) = &*t {
            return Ok(Arc::clone(t));
        }
        let new = Arc::new(GrantTable::new()?);
        *t = Some(Arc::clone(&new));
        Ok(new)
    }

    /// A fresh local port number (ports start at 1; 0 is never valid, as in Xen).
    pub(crate) fn alloc_port(&self) -> Option<EvtchnPort> {
        self.next_port
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_add(1))
            .ok()
    }

    /// Register an unbound port whose other end `peer` may bind.
    pub(crate) fn add_port(&self, port: EvtchnPort, peer: DomId, for_peer: PeerEnd) {
        lock(&self.ports).insert(
            port,
            PortEntry {
                peer,
                for_peer: Some(for_peer),
            },
        );
    }

    /// Forget a port (its owner closed it).
    pub(crate) fn remove_port(&self, port: EvtchnPort) {
        lock(&self.ports).remove(&port);
    }

    /// Take the peer end of `port` for `domid`: only the domain it was allocated
    /// for, only once.
    fn take_port(&self, domid: DomId, port: EvtchnPort) -> Option<PeerEnd> {
        let mut ports = lock(&self.ports);
        let entry = ports.get_mut(&port)?;
        if entry.peer != domid {
            return None;
        }
        entry.for_peer.take()
    }
}

/// Path of domain `domid`'s rendezvous socket in `dir`.
pub(crate) fn socket_path(dir: &Path, domid: DomId) -> PathBuf {
    dir.join(format!("dom{domid}.sock"))
}

/// A running server; stops (and disconnects every peer) on drop.
#[derive(Debug)]
pub(crate) struct Server {
    path: PathBuf,
    local: Arc<Local>,
    wake: Option<UnixStream>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<HashMap<u64, UnixStream>>>,
}

impl Server {
    /// Bind `dir/dom<id>.sock` and serve it from a thread.
    pub(crate) fn start(dir: &Path, local: Arc<Local>) -> io::Result<Server> {
        let path = socket_path(dir, local.domid);
        if UnixStream::connect(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "domain {} is already served by another process",
                    local.domid
                ),
            ));
        }
        // A stale socket of a dead process: replace it.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let (wake, wake_rx) = UnixStream::pair()?;
        let conns = Arc::new(Mutex::new(HashMap::new()));
        let (l2, c2) = (Arc::clone(&local), Arc::clone(&conns));
        let accept = std::thread::Builder::new()
            .name(format!("pvusb-sim-dom{}", local.domid))
            .spawn(move || accept_loop(&listener, &wake_rx, &l2, &c2))?;
        Ok(Server {
            path,
            local,
            wake: Some(wake),
            accept: Some(accept),
            conns,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.local.stopping.store(true, Ordering::Release);
        drop(self.wake.take());
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (_, c) in lock(&self.conns).drain() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(
    listener: &UnixListener,
    wake: &UnixStream,
    local: &Arc<Local>,
    conns: &Arc<Mutex<HashMap<u64, UnixStream>>>,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    loop {
        let ready = match crate::poll_readable(listener.as_fd(), Some(wake.as_fd()), None) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "rendezvous server poll failed; stopping");
                return;
            }
        };
        if ready.hangup {
            return;
        }
        let sock = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!(error = %e, "rendezvous accept failed");
                continue;
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if let Ok(c) = sock.try_clone() {
            lock(conns).insert(id, c);
        }
        let (l, c) = (Arc::clone(local), Arc::clone(conns));
        let spawned = std::thread::Builder::new()
            .name(format!("pvusb-sim-dom{}-conn", local.domid))
            .spawn(move || {
                serve_conn(sock, &l);
                lock(&c).remove(&id);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a rendezvous connection thread");
            lock(conns).remove(&id);
        }
    }
}

/// One peer connection: requests in order until it closes, then release what it
/// still maps (unless the whole server is stopping, in which case the table is
/// being abandoned and its counts no longer matter).
fn serve_conn(mut sock: UnixStream, local: &Local) {
    let mut peer: Option<(DomId, Arc<GrantTable>)> = None;
    let mut mapped: HashMap<GrantRef, u32> = HashMap::new();
    loop {
        let req = match Request::recv(&mut sock) {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "dropping a rendezvous connection");
                break;
            }
        };
        let sent = match req {
            Request::Grants { domid } if peer.is_none() => match local.table() {
                Ok(t) => {
                    let fds = [t.data_file().as_raw_fd(), t.meta_file_ro().as_raw_fd()];
                    let r = Reply::Ok(NR_REFS).send(&sock, &fds);
                    peer = Some((domid, t));
                    r
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the grant table");
                    Reply::Refused.send(&sock, &[])
                }
            },
            Request::Map { writable, refs } => match &peer {
                Some((domid, t)) => match t.map(*domid, &refs, writable) {
                    Ok(()) => {
                        for r in refs {
                            *mapped.entry(r).or_insert(0) += 1;
                        }
                        Reply::Ok(0).send(&sock, &[])
                    }
                    Err(e) => Reply::from_grant_error(&e).send(&sock, &[]),
                },
                None => Reply::Refused.send(&sock, &[]),
            },
            Request::Unmap { refs } => {
                if let Some((_, t)) = &peer {
                    // Only what this connection mapped: a peer cannot release
                    // another peer's mappings.
                    let own: Vec<GrantRef> = refs
                        .into_iter()
                        .filter(|r| match mapped.get_mut(r) {
                            Some(n) if *n > 0 => {
                                *n -= 1;
                                true
                            }
                            _ => false,
                        })
                        .collect();
                    t.unmap(&own);
                }
                Reply::Ok(0).send(&sock, &[])
            }
            Request::Bind { domid, port } => match local.take_port(domid, port) {
                Some(end) => {
                    let fds = [end[0].as_raw_fd(), end[1].as_raw_fd(), end[2].as_raw_fd()];
                    Reply::Ok(0).send(&sock, &fds)
                    // `end` drops here: the server keeps no copy of the peer end.
                }
                None => Reply::BadPort.send(&sock, &[]),
            },
            Request::Grants { .. } => Reply::Refused.send(&sock, &[]),
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "rendezvous reply failed");
            break;
        }
    }
    if let Some((_, t)) = peer {
        if !local.stopping.load(Ordering::Acquire) {
            for (r, n) in mapped {
                t.unmap_counted(r, n);
            }
        }
    }
}
