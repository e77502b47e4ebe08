//! A filtering xenstore proxy for confined workers.
//!
//! Why: the backend daemon runs each guest USB controller in an unprivileged
//! worker process, and that worker still has to read and write a few xenstore
//! nodes. A real xenstore connection in dom0 is root-equivalent (it could rewrite
//! any guest's configuration), so a worker gets a UNIX socket to a [`Proxy`]
//! instead. The proxy opens a private upstream connection per worker and
//! forwards only the requests the worker's [`Scope`] allows; everything else is
//! answered `EACCES` by the proxy itself, so the worker's client sees an error,
//! never a hang.
//!
//! What passes (everything the worker sends is presumed hostile):
//!
//! | request | needs |
//! |---|---|
//! | `READ`, `DIRECTORY`, `GET_PERMS`, `WATCH` | [`Access::Read`] on the path |
//! | `WRITE`, `MKDIR`, `RM` | [`Access::Write`] on the path |
//! | `UNWATCH`, `TRANSACTION_START`, `TRANSACTION_END` | nothing (per connection) |
//!
//! Paths must be canonical and absolute ([`crate::wire::is_valid_abs_path`]):
//! a relative path would resolve against dom0's home and a special one
//! (`@releaseDomain`) would report on every guest. Arguments must have exactly
//! their `xs_wire.h` shape. Every other request type is refused. A message
//! whose header announces more than [`crate::wire::PAYLOAD_MAX`] bytes, or a
//! type the protocol does not define, cannot be answered in sync and closes the
//! worker's connection. Replies and watch events come back unchanged: the
//! upstream connection is the worker's alone, so all of it is the worker's own.
//!
//! Two things pass on purpose: a write creates the node's missing parents, as
//! xenstored always does (empty nodes that hold nothing), and a `DIRECTORY`
//! too big for one reply gets `E2BIG` with no way around it, since
//! `DIRECTORY_PART` is refused (the directories a worker reads are small).
//!
//! ```
//! use std::os::unix::net::UnixStream;
//! use std::sync::Arc;
//! use pvusb_xenstore::proxy::{PrefixScope, Proxy};
//! use pvusb_xenstore::{Tx, XsClient, XsError, XsServer};
//!
//! let dir = tempfile::tempdir()?;
//! let socket = dir.path().join("xenstored.sock");
//! let _server = XsServer::start(&socket)?;
//! let (worker_end, proxy_end) = UnixStream::pair()?;
//! let scope = PrefixScope::new().write("/local/domain/0/backend/vusb/1/0");
//! let proxy = Proxy::spawn(&socket, proxy_end, Arc::new(scope), "vusb-1-0".into())?;
//! let worker = XsClient::from_stream(worker_end)?; // in the worker process
//! worker.write(Tx::NONE, "/local/domain/0/backend/vusb/1/0/state", "2")?;
//! let denied = worker.write(Tx::NONE, "/local/domain/2/device/vusb/0/state", "6");
//! assert!(matches!(denied, Err(XsError::Access(_))));
//! assert_eq!(proxy.denied(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod filter;
mod limit;
mod pump;
mod scope;

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};

pub use scope::PrefixScope;

/// Whether the proxy would forward `msg`, a request as a worker sent it,
/// under `scope`: the filter's verdict alone, for tests and the fuzz
/// campaign (the proxy itself also bounds sizes and rate-limits its log).
pub fn would_forward(msg: &crate::wire::Message, scope: &dyn Scope) -> bool {
    filter::check(msg, scope).is_ok()
}

use crate::error::XsError;
use crate::transport::Transport;
use pump::Link;

/// How long dropping a [`ProxyHandle`] waits for its threads. Both are woken
/// by the shutdown at once; the bound is for a thread stuck in a device write,
/// which is then left to finish on its own rather than hang the monitor.
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The access a request needs on its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `READ`, `DIRECTORY`, `GET_PERMS`, `WATCH`.
    Read,
    /// `WRITE`, `MKDIR`, `RM`.
    Write,
}

/// What a worker may touch. Called only with canonical absolute paths (see
/// [`crate::wire::is_valid_abs_path`]), so an implementation can compare
/// strings without normalising them first.
pub trait Scope: Send + Sync + 'static {
    /// Whether a request needing `access` on `path` may be forwarded.
    fn allows(&self, path: &str, access: Access) -> bool;
}

/// Starts filtering proxies.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Serves `worker` (the untrusted side) until it hangs up, the upstream
    /// connection ends, or the handle is dropped. Opens its own upstream
    /// connection to `upstream` (a socket, or the `/dev/xen/xenbus` device, as
    /// [`crate::XsClient::connect`]). `label` names the proxy in logs and in
    /// its threads' names (`xsproxy-<label>-up`, `-down`).
    pub fn spawn(
        upstream: &Path,
        worker: UnixStream,
        scope: Arc<dyn Scope>,
        label: String,
    ) -> Result<ProxyHandle, XsError> {
        let upstream_conn = Transport::open(upstream).map_err(|source| XsError::Connect {
            path: upstream.to_owned(),
            source,
        })?;
        // The threads block in reads; on a socket handed over non-blocking the
        // first read with nothing to read would fail and end the proxy.
        worker.set_nonblocking(false).map_err(XsError::Io)?;
        worker
            .set_write_timeout(Some(pump::WORKER_WRITE_TIMEOUT))
            .map_err(XsError::Io)?;
        let (wake, wake_rx) = UnixStream::pair().map_err(XsError::Io)?;
        let link = Arc::new(Link::new(label, &worker, &upstream_conn, wake).map_err(XsError::Io)?);
        let upstream_read = upstream_conn.try_clone().map_err(XsError::Io)?;
        let (done_tx, done) = bounded::<()>(0);
        let name = thread_label(&link.label);

        let down_link = Arc::clone(&link);
        let down_done = done_tx.clone();
        let down = std::thread::Builder::new()
            .name(format!("xsproxy-{name}-down"))
            .spawn(move || {
                let _done = down_done;
                pump::down(&down_link, upstream_read, wake_rx);
            });
        let down = match down {
            Ok(t) => t,
            Err(e) => {
                link.stop();
                return Err(XsError::Io(e));
            }
        };
        let up_link = Arc::clone(&link);
        let up = std::thread::Builder::new()
            .name(format!("xsproxy-{name}-up"))
            .spawn(move || {
                let _done = done_tx;
                pump::up(&up_link, worker, upstream_conn, &*scope);
            });
        let up = match up {
            Ok(t) => t,
            Err(e) => {
                // `down` is woken by this and ends on its own.
                link.stop();
                return Err(XsError::Io(e));
            }
        };
        Ok(ProxyHandle {
            link,
            threads: vec![up, down],
            done,
        })
    }
}

/// A running proxy. Dropping it shuts both connections down and waits (for at
/// most a couple of seconds) for its threads.
#[derive(Debug)]
pub struct ProxyHandle {
    link: Arc<Link>,
    threads: Vec<JoinHandle<()>>,
    /// Disconnects once every proxy thread has ended (each holds a sender).
    done: Receiver<()>,
}

impl ProxyHandle {
    /// Whether the proxy still serves its worker (false once either side hung
    /// up or was cut off).
    pub fn is_running(&self) -> bool {
        self.link.is_running()
    }

    /// How many requests were refused.
    pub fn denied(&self) -> u64 {
        self.link.denied()
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.link.stop();
        let deadline = Instant::now() + JOIN_TIMEOUT;
        let all_ended = match self.done.recv_deadline(deadline) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    proxy = self.link.label.as_str(),
                    "xenstore proxy threads did not stop in time; leaving them"
                );
                false
            }
        };
        for t in self.threads.drain(..) {
            // Once every thread has dropped its sender, each is past its loop
            // and the join is immediate.
            if all_ended || t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// The label as it may appear in a thread name: a NUL would make the spawn
/// panic, so only plain ASCII is kept, and bounded (the kernel shows only the
/// first 15 bytes anyway; the whole name stays visible to Rust's panic
/// messages).
fn thread_label(label: &str) -> String {
    label
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(32)
        .collect()
}
