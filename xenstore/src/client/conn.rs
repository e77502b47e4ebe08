//! One connection to xenstored: the transport (socket or `/dev/xen/xenbus`), the
//! request writer, and the reader thread that demultiplexes replies by `req_id` and
//! routes watch events by token.
//!
//! Waiters are registered in the same mutex that records whether the connection is
//! closed, so a request can never be registered after the reader has given up on the
//! connection: every waiter either gets its reply or `Closed`, never a hang.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pvusb_support::lock_unpoisoned;

use crate::error::XsError;
use crate::transport::Transport;
use crate::wire::{read_message, Message, MsgType, ReadError};

/// How long a request waits for its reply. Generous: xenstored can be slow under
/// load, and a dead daemon is detected by the connection closing, not by this.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Watch events queued per watch before further ones are dropped (with a log line).
/// Watch consumers re-read the tree on every event, so a flood of undrained events
/// carries no information the next read will not give.
pub(crate) const WATCH_QUEUE: usize = 4096;

/// A function the reader thread calls with the path of each event of a
/// watch. It must not block and must not call xenstore (it runs on the
/// thread that reads every answer of the connection).
pub type WatchNotify = Arc<dyn Fn(&str) + Send + Sync>;

/// Where a watch's events go.
enum WatchRoute {
    /// Queued for a receiver.
    Channel(Sender<String>),
    /// Handed to a function on the reader thread.
    Notify(WatchNotify),
}

impl std::fmt::Debug for WatchRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Channel(_) => "Channel",
            Self::Notify(_) => "Notify",
        })
    }
}

/// Waiters and watch routes, plus the closed flag they must be checked against.
#[derive(Debug, Default)]
struct Routes {
    closed: bool,
    pending: HashMap<u32, Sender<Message>>,
    watches: HashMap<String, WatchRoute>,
}

/// State shared between the callers and the reader thread.
#[derive(Debug, Default)]
struct Shared {
    routes: Mutex<Routes>,
}

impl Shared {
    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A poisoned lock only means another thread panicked mid-update of plain maps;
        // the maps are still usable.
        lock_unpoisoned(&self.routes)
    }
}

/// The live connection. Dropping it closes the transport and stops the reader.
#[derive(Debug)]
pub(crate) struct Connection {
    writer: Mutex<Transport>,
    shared: Arc<Shared>,
    endpoint: Option<PathBuf>,
    next_req: AtomicU32,
    next_token: AtomicU32,
    /// Dropping this end wakes the reader's poll, which is how a reader blocked on
    /// the xenbus device (which cannot be shut down) is told to stop.
    wake: Option<UnixStream>,
    reader: Option<JoinHandle<()>>,
}

impl Connection {
    /// Connects to a socket or opens the xenbus device at `path`.
    pub(crate) fn open(path: &Path) -> Result<Connection, XsError> {
        let connect_err = |source| XsError::Connect {
            path: path.to_owned(),
            source,
        };
        let transport = Transport::open(path).map_err(connect_err)?;
        Self::start(transport, Some(path.to_owned())).map_err(connect_err)
    }

    /// Runs the protocol over a socket someone else connected (a proxy's, handed
    /// over as an fd). The reader blocks in `poll` and `read`, so the socket is
    /// put in blocking mode first in case it arrived non-blocking.
    pub(crate) fn from_stream(stream: UnixStream) -> Result<Connection, XsError> {
        stream.set_nonblocking(false).map_err(XsError::Io)?;
        Self::start(Transport::Socket(stream), None).map_err(XsError::Io)
    }

    fn start(transport: Transport, endpoint: Option<PathBuf>) -> std::io::Result<Connection> {
        let read_half = transport.try_clone()?;
        let (wake, wake_rx) = UnixStream::pair()?;
        let shared = Arc::new(Shared::default());
        let reader_shared = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name("xenstore-reader".into())
            .spawn(move || reader_loop(read_half, wake_rx, &reader_shared))?;
        Ok(Connection {
            writer: Mutex::new(transport),
            shared,
            endpoint,
            next_req: AtomicU32::new(1),
            next_token: AtomicU32::new(1),
            wake: Some(wake),
            reader: Some(reader),
        })
    }

    /// The path this connection was opened from; `None` for a handed-over socket.
    pub(crate) fn endpoint(&self) -> Option<&Path> {
        self.endpoint.as_deref()
    }

    fn send(&self, msg: &Message) -> Result<(), XsError> {
        let bytes = msg.serialize();
        let mut w = lock_unpoisoned(&self.writer);
        w.write_all(&bytes).map_err(XsError::Io)
    }

    /// Sends a request and waits for its reply. Error replies are mapped to
    /// [`XsError`] using `path` for context.
    pub(crate) fn request(
        &self,
        ty: MsgType,
        tx: u32,
        payload: Vec<u8>,
        path: &str,
    ) -> Result<Message, XsError> {
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let msg = Message::new(ty, req_id, tx, payload)?;
        let (tx_reply, rx_reply) = bounded(1);
        {
            let mut routes = self.shared.routes();
            if routes.closed {
                return Err(XsError::Closed);
            }
            routes.pending.insert(req_id, tx_reply);
        }
        if let Err(e) = self.send(&msg) {
            self.shared.routes().pending.remove(&req_id);
            return Err(e);
        }
        let reply = match rx_reply.recv_timeout(REPLY_TIMEOUT) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                self.shared.routes().pending.remove(&req_id);
                return Err(XsError::Timeout);
            }
            Err(RecvTimeoutError::Disconnected) => return Err(XsError::Closed),
        };
        if reply.msg_type == MsgType::Error {
            let name = reply
                .args(1)
                .ok()
                .and_then(|a| a.first().map(|s| s.to_string()));
            let name =
                name.unwrap_or_else(|| String::from_utf8_lossy(reply.payload()).into_owned());
            return Err(XsError::from_errno(name.trim_end_matches('\0'), path));
        }
        if reply.msg_type != ty {
            return Err(XsError::BadReply {
                op: op_name(ty),
                reason: format!("reply has type {:?}", reply.msg_type),
            });
        }
        Ok(reply)
    }

    /// Sends a request whose reply nobody waits for (the reader drops it). Used by
    /// `XsWatch::drop`, which must not block.
    pub(crate) fn send_no_wait(&self, ty: MsgType, payload: Vec<u8>) -> Result<(), XsError> {
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        self.send(&Message::new(ty, req_id, 0, payload)?)
    }

    /// Registers a new watch route and returns its token and receiver.
    pub(crate) fn add_watch_route(&self) -> Result<(String, Receiver<String>), XsError> {
        let (tx, rx) = bounded(WATCH_QUEUE);
        Ok((self.add_route(WatchRoute::Channel(tx))?, rx))
    }

    /// Registers a watch route that calls `notify`; returns its token.
    pub(crate) fn add_watch_notify(&self, notify: WatchNotify) -> Result<String, XsError> {
        self.add_route(WatchRoute::Notify(notify))
    }

    fn add_route(&self, route: WatchRoute) -> Result<String, XsError> {
        let token = format!("pvusb-w{}", self.next_token.fetch_add(1, Ordering::Relaxed));
        let mut routes = self.shared.routes();
        if routes.closed {
            return Err(XsError::Closed);
        }
        routes.watches.insert(token.clone(), route);
        Ok(token)
    }

    pub(crate) fn remove_watch_route(&self, token: &str) {
        self.shared.routes().watches.remove(token);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        lock_unpoisoned(&self.writer).shutdown();
        drop(self.wake.take());
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn reader_loop(mut conn: Transport, wake: UnixStream, shared: &Shared) {
    loop {
        let (conn_ready, woken) = {
            let mut fds = [
                PollFd::new(conn.as_fd(), PollFlags::POLLIN),
                PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "xenstore reader poll failed");
                    break;
                }
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if woken {
            break;
        }
        if !conn_ready {
            continue;
        }
        match read_message(&mut conn) {
            Ok(msg) => dispatch(shared, msg),
            Err(ReadError::UnknownType {
                msg_type, req_id, ..
            }) => {
                tracing::warn!(
                    msg_type,
                    req_id,
                    "xenstore sent a message of unknown type; ignored"
                );
            }
            Err(ReadError::Oversized { len, .. }) => {
                tracing::warn!(
                    len,
                    "xenstore sent an oversized message; closing the connection"
                );
                break;
            }
            Err(ReadError::Io(e)) => {
                tracing::debug!(error = %e, "xenstore connection ended");
                break;
            }
        }
    }
    // Dropping every sender wakes every waiter with `Closed` and disconnects every
    // watch receiver, so consumers notice the loss.
    let mut routes = shared.routes();
    routes.closed = true;
    routes.pending.clear();
    routes.watches.clear();
}

fn dispatch(shared: &Shared, msg: Message) {
    if msg.msg_type == MsgType::WatchEvent {
        let Ok(args) = msg.list() else {
            tracing::warn!("xenstore sent a malformed watch event; ignored");
            return;
        };
        let (Some(path), Some(token)) = (args.first(), args.get(1)) else {
            tracing::warn!("xenstore sent a watch event without a token; ignored");
            return;
        };
        let routes = shared.routes();
        match routes.watches.get(*token) {
            Some(WatchRoute::Channel(tx)) => {
                if let Err(TrySendError::Full(_)) = tx.try_send((*path).to_owned()) {
                    tracing::warn!(token, "watch queue full; event dropped")
                }
            }
            Some(WatchRoute::Notify(notify)) => {
                // Called without the routes lock: it may drop a watch.
                let notify = Arc::clone(notify);
                drop(routes);
                notify(path);
            }
            None => tracing::debug!(token, "watch event for an unknown token"),
        }
        return;
    }
    let waiter = shared.routes().pending.remove(&msg.req_id);
    match waiter {
        Some(tx) => {
            let _ = tx.send(msg);
        }
        None => tracing::debug!(req_id = msg.req_id, "reply nobody waits for; dropped"),
    }
}

pub(crate) fn op_name(ty: MsgType) -> &'static str {
    match ty {
        MsgType::Directory => "directory",
        MsgType::Read => "read",
        MsgType::GetPerms => "get_perms",
        MsgType::Watch => "watch",
        MsgType::TransactionStart => "transaction_start",
        MsgType::GetDomainPath => "get_domain_path",
        MsgType::IsDomainIntroduced => "is_domain_introduced",
        _ => "request",
    }
}
