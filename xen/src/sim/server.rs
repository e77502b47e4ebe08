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
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pvusb_support::lock_unpoisoned;

use super::evtchn::Link;
use super::table::{GrantTable, NR_REFS};
use super::wire::{Reply, Request};
use crate::{DomId, EvtchnPort, GrantError, GrantRef};

// The simulation's locks ignore poison (`lock_unpoisoned`): the guarded maps stay
// consistent between statements, so a panic elsewhere does not corrupt them.

/// The descriptors a binding peer receives: its receive eventfd, its send eventfd
/// and its end of the liveness socketpair.
pub(crate) type PeerEnd = [OwnedFd; 3];

/// An event channel port allocated by this domain.
#[derive(Debug)]
struct PortEntry {
    peer: DomId,
    /// The binder's receive and send eventfds (duplicated for every binder).
    eventfds: [OwnedFd; 2],
    /// The first binder's liveness end, created with the port; `None` once
    /// taken. Later binders get a fresh socketpair (see [`Local::take_port`]).
    first_link: Option<OwnedFd>,
}

/// State of this domain that the server threads share with the handles.
#[derive(Debug)]
pub(crate) struct Local {
    pub(crate) domid: DomId,
    table: Mutex<Option<Arc<GrantTable>>>,
    ports: Mutex<HashMap<EvtchnPort, PortEntry>>,
    /// The liveness links of this domain's own (allocated) channel ends, so that
    /// a re-bind can install a new one.
    links: Mutex<HashMap<EvtchnPort, Arc<Link>>>,
    next_port: AtomicU32,
    stopping: AtomicBool,
}

impl Local {
    pub(crate) fn new(domid: DomId) -> Self {
        Self {
            domid,
            table: Mutex::new(None),
            ports: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            next_port: AtomicU32::new(1),
            stopping: AtomicBool::new(false),
        }
    }

    /// This domain's grant table, created on first use.
    pub(crate) fn table(&self) -> Result<Arc<GrantTable>, GrantError> {
        let mut t = lock_unpoisoned(&self.table);
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
        let [rx, tx, link] = for_peer;
        lock_unpoisoned(&self.ports).insert(
            port,
            PortEntry {
                peer,
                eventfds: [rx, tx],
                first_link: Some(link),
            },
        );
    }

    /// Remember the liveness link of one of our own channel ends.
    pub(crate) fn register_link(&self, port: EvtchnPort, link: Arc<Link>) {
        lock_unpoisoned(&self.links).insert(port, link);
    }

    /// Forget a port (its owner closed it).
    pub(crate) fn remove_port(&self, port: EvtchnPort) {
        lock_unpoisoned(&self.ports).remove(&port);
        lock_unpoisoned(&self.links).remove(&port);
    }

    /// The peer end of `port` for `domid`: only the domain it was allocated for,
    /// and only while no one else holds it bound. Like Xen, a port whose binder
    /// closed its end (or died) is unbound again and may be bound anew: the new
    /// binder gets the same eventfds and a fresh liveness link.
    fn take_port(&self, domid: DomId, port: EvtchnPort) -> Option<PeerEnd> {
        let mut ports = lock_unpoisoned(&self.ports);
        let entry = ports.get_mut(&port)?;
        if entry.peer != domid {
            return None;
        }
        let [rx, tx] = &entry.eventfds;
        let (rx, tx) = (rx.try_clone().ok()?, tx.try_clone().ok()?);
        let link = match entry.first_link.take() {
            Some(first) => first,
            None => {
                let own = lock_unpoisoned(&self.links).get(&port).cloned()?;
                if !own.is_closed() {
                    return None; // still bound
                }
                let (mine, theirs) = UnixStream::pair().ok()?;
                if let Err(e) = own.replace(mine) {
                    tracing::warn!(port, error = %e, "cannot re-bind a port");
                    return None;
                }
                theirs.into()
            }
        };
        Some([rx, tx, link])
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
        // Anyone who can reach the directory may connect: a backend's
        // confined worker runs as another user (the simulation is not a
        // security boundary; the grant checks reproduce Xen's semantics).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
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
    /// Stops the accept thread three ways, any one of which suffices: the
    /// `stopping` flag (re-checked at least every [`STOP_CHECK`]), a byte on the
    /// wake socket, and closing it. WHY not the close alone: a hang-up is only
    /// reported once every copy of the descriptor is closed, and a copy can
    /// outlive us (a child process forked while it was open, before its exec),
    /// which left `join` below waiting forever.
    fn drop(&mut self) {
        self.local.stopping.store(true, Ordering::Release);
        if let Some(mut w) = self.wake.take() {
            let _ = io::Write::write(&mut w, &[1]);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for (_, c) in lock_unpoisoned(&self.conns).drain() {
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
        if local.stopping.load(Ordering::Acquire) {
            return;
        }
        match wait_for_accept(listener, wake) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::error!(error = %e, "rendezvous server poll failed; stopping");
                return;
            }
        }
        if local.stopping.load(Ordering::Acquire) {
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
            lock_unpoisoned(conns).insert(id, c);
        }
        let (l, c) = (Arc::clone(local), Arc::clone(conns));
        let spawned = std::thread::Builder::new()
            .name(format!("pvusb-sim-dom{}-conn", local.domid))
            .spawn(move || {
                serve_conn(sock, &l);
                lock_unpoisoned(&c).remove(&id);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a rendezvous connection thread");
            lock_unpoisoned(conns).remove(&id);
        }
    }
}

/// Longest the accept thread sleeps without re-checking `stopping`.
const STOP_CHECK: Duration = Duration::from_millis(250);

/// Waits (at most [`STOP_CHECK`]) until a peer connects or the wake socket is
/// readable or hung up. `Ok(true)`: try `accept`; `Ok(false)`: re-check.
fn wait_for_accept(listener: &UnixListener, wake: &UnixStream) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [
        PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        PollFd::new(wake.as_fd(), PollFlags::POLLIN),
    ];
    let timeout = PollTimeout::try_from(STOP_CHECK.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    let [l, _] = &fds;
    Ok(l.revents().is_some_and(|r| r.intersects(PollFlags::POLLIN)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimXen;
    use crate::{EventChannel, EventChannels, EvtchnError};
    use std::os::fd::AsFd;

    /// Liveness bound for the joins below (not a timing assertion).
    const LONG: Duration = Duration::from_secs(60);

    fn finishes(what: &str, f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        assert!(rx.recv_timeout(LONG).is_ok(), "{what} never finished");
    }

    #[test]
    fn drop_finishes_while_a_copy_of_the_wake_socket_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), Arc::new(Local::new(1))).unwrap();
        // What a child forked before its exec holds: a second reference to the
        // wake socket, so closing ours raises no hang-up on the other end.
        let copy = server.wake.as_ref().unwrap().try_clone().unwrap();
        finishes("Server::drop", move || drop(server));
        drop(copy);
    }

    #[test]
    fn dropping_a_domain_that_served_a_bound_port_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let front = SimXen::new(dir.path(), 1);
        let back = SimXen::new(dir.path(), 0);
        let f = front.alloc_unbound(0).unwrap();
        let b = back.bind_interdomain(1, f.port()).unwrap();
        b.notify().unwrap();
        assert!(f.wait(Some(LONG)).unwrap());
        finishes("dropping the serving domain", move || {
            drop(f);
            drop(front);
        });
        assert!(matches!(b.wait(Some(LONG)), Err(EvtchnError::PeerGone)));
    }

    #[test]
    fn a_port_is_bound_again_after_its_binder_closed() {
        let dir = tempfile::tempdir().unwrap();
        let front = SimXen::new(dir.path(), 1);
        let back = SimXen::new(dir.path(), 0);
        let other = SimXen::new(dir.path(), 3);
        let f = front.alloc_unbound(0).unwrap();
        let b = back.bind_interdomain(1, f.port()).unwrap();
        // Bound: nobody else, not even the same domain, binds it meanwhile.
        assert!(matches!(
            back.bind_interdomain(1, f.port()),
            Err(EvtchnError::BadPort { .. })
        ));
        f.notify().unwrap();
        assert!(b.wait(Some(LONG)).unwrap());
        drop(b);
        // The allocator learns that the binder went away, and the port stays.
        assert!(matches!(f.wait(Some(LONG)), Err(EvtchnError::PeerGone)));
        assert!(matches!(f.ack(), Err(EvtchnError::PeerGone)));
        // Only the domain it was allocated for may bind it again.
        assert!(other.bind_interdomain(1, f.port()).is_err());
        let b2 = back.bind_interdomain(1, f.port()).unwrap();
        assert!(!f.ack().unwrap(), "bound again: no longer gone");
        b2.notify().unwrap();
        assert!(f.wait(Some(LONG)).unwrap());
        f.notify().unwrap();
        assert!(b2.wait(Some(LONG)).unwrap());
        assert!(matches!(
            back.bind_interdomain(1, f.port()),
            Err(EvtchnError::BadPort { .. })
        ));
        // The pollable fd no longer reports the old binder's hang-up.
        let mut fds = [nix::poll::PollFd::new(
            f.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        assert_eq!(
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).unwrap(),
            0
        );
        // A binder that dies (here: drops) leaves it bindable once more.
        drop(b2);
        assert!(matches!(f.wait(Some(LONG)), Err(EvtchnError::PeerGone)));
        let b3 = back.bind_interdomain(1, f.port()).unwrap();
        b3.notify().unwrap();
        assert!(f.wait(Some(LONG)).unwrap());
    }

    #[test]
    fn a_re_bound_port_wakes_a_thread_waiting_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let front = SimXen::new(dir.path(), 1);
        let back = SimXen::new(dir.path(), 0);
        let f = Arc::new(front.alloc_unbound(0).unwrap());
        let port = f.port();
        let b = back.bind_interdomain(1, port).unwrap();
        drop(b);
        // The hang-up reaches the frontend's link through the server thread: wait
        // for it rather than polling once.
        assert!(matches!(f.wait(Some(LONG)), Err(EvtchnError::PeerGone)));
        let b2 = back.bind_interdomain(1, port).unwrap();
        let f2 = Arc::clone(&f);
        let waiter = std::thread::spawn(move || f2.wait(Some(LONG)));
        b2.notify().unwrap();
        assert!(waiter.join().unwrap().unwrap());
    }
}
