//! An embedded xenstored: the same wire protocol as [`crate::XsClient`] speaks,
//! over a UNIX socket, for machines without Xen (the simulation, the demo and the
//! tests).
//!
//! It keeps xenstored's semantics where pvusb depends on them: per-node owner and
//! permission lists checked per connection domain (children inherit on creation),
//! transactions that fail with `EAGAIN` when something they read changed, watches
//! that fire once on registration and then on every change at or below their path,
//! `@introduceDomain`/`@releaseDomain`, and quotas.
//!
//! Domains: every connection is dom0 (privileged) unless it declares another domid
//! with `XS_CONTROL "pvusb-domid\0<n>\0"` ([`crate::XsClient::connect_as`]). That
//! declaration is a **simulation feature** standing in for the per-domain rings of
//! real Xen, and is refused unless [`ServerConfig::trust_declared_domids`] is set.
//!
//! Threads: one acceptor, and a reader and a writer per connection. State lives
//! behind one mutex that is never held across I/O.

mod conn;
mod errno;
#[doc(hidden)]
pub mod fuzzing;
mod path;
mod state;
mod tree;

use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pvusb_support::lock_unpoisoned;

use state::State;

/// Limits and trust settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Honour `XS_CONTROL "pvusb-domid"` declarations (simulation only).
    pub trust_declared_domids: bool,
    /// Largest node value, in bytes (`E2BIG` beyond; xenstored's default quota).
    pub max_value_len: usize,
    /// Nodes an unprivileged domain may own (`EQUOTA` beyond).
    pub max_nodes_per_domain: usize,
    /// Watches per connection (`EQUOTA` beyond).
    pub max_watches_per_connection: usize,
    /// Open transactions per connection (`EQUOTA` beyond).
    pub max_transactions_per_connection: usize,
    /// Messages queued for a connection before it counts as stuck and is dropped.
    pub max_queued_messages: usize,
    /// Simultaneous connections; further ones are closed at once.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            trust_declared_domids: false,
            max_value_len: 2048,
            max_nodes_per_domain: 1000,
            max_watches_per_connection: 128,
            max_transactions_per_connection: 10,
            max_queued_messages: 1024,
            max_connections: 256,
        }
    }
}

impl ServerConfig {
    /// The defaults with declared domids trusted, as the simulation needs.
    pub fn simulation() -> Self {
        ServerConfig {
            trust_declared_domids: true,
            ..ServerConfig::default()
        }
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket path is held by a live server.
    #[error("a xenstore server is already listening on {0}")]
    AlreadyRunning(PathBuf),
    /// Binding the socket failed.
    #[error("cannot listen on {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// Creating a thread or the wake-up pipe failed.
    #[error("cannot start the xenstore server threads")]
    Spawn(#[source] std::io::Error),
}

/// What the acceptor and the connection threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: ServerConfig,
    state: Mutex<State>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // The handler never leaves the state half-updated across a panic point we
        // know of; recovering keeps one bug from taking every client down.
        lock_unpoisoned(&self.state)
    }
}

/// Entry points of the embedded server.
#[derive(Debug)]
pub struct XsServer;

impl XsServer {
    /// Starts a server with the default configuration (declared domids not trusted).
    pub fn start(socket_path: &Path) -> Result<XsServerHandle, ServerError> {
        Self::start_with(socket_path, ServerConfig::default())
    }

    /// Starts a server in background threads; the handle stops it when dropped.
    pub fn start_with(
        socket_path: &Path,
        config: ServerConfig,
    ) -> Result<XsServerHandle, ServerError> {
        let listener = bind(socket_path)?;
        let (wake, wake_rx) = UnixStream::pair().map_err(ServerError::Spawn)?;
        let shared = Arc::new(Shared {
            config: config.clone(),
            state: Mutex::new(State::new(config)),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor_shared = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("xs-accept".into())
            .spawn(move || accept_loop(&listener, &wake_rx, &acceptor_shared))
            .map_err(ServerError::Spawn)?;
        tracing::info!(socket = %socket_path.display(), "embedded xenstore listening");
        Ok(XsServerHandle {
            socket_path: socket_path.to_owned(),
            shared,
            wake: Some(wake),
            acceptor: Some(acceptor),
        })
    }

    /// Runs a server until `wait` returns (the foreground `pvusb xenstored`, whose
    /// `wait` blocks until SIGTERM or SIGINT), then stops it cleanly.
    pub fn run(
        socket_path: &Path,
        config: ServerConfig,
        wait: impl FnOnce(),
    ) -> Result<(), ServerError> {
        let handle = Self::start_with(socket_path, config)?;
        wait();
        drop(handle);
        Ok(())
    }
}

/// Binds the socket, replacing a stale socket file left by a crashed server but
/// never one a live server answers on.
fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let bind_err = |source| ServerError::Bind {
        path: path.to_owned(),
        source,
    };
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::AlreadyRunning(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(bind_err)?;
            UnixListener::bind(path).map_err(bind_err)
        }
        Err(e) => Err(bind_err(e)),
    }
}

fn accept_loop(listener: &UnixListener, wake: &UnixStream, shared: &Arc<Shared>) {
    let mut next_id: u64 = 1;
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!(error = %e, "xenstore acceptor poll failed; stopping");
                return;
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return;
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!(error = %e, "xenstore accept failed");
                continue;
            }
        };
        if shared.lock().connection_count() >= shared.config.max_connections {
            tracing::debug!("too many xenstore connections; refusing one");
            continue;
        }
        let id = next_id;
        next_id = next_id.wrapping_add(1);
        match conn::spawn(shared, id, stream) {
            Ok(handles) => {
                let mut threads = lock_unpoisoned(&shared.threads);
                threads.retain(|t| !t.is_finished());
                threads.extend(handles);
            }
            Err(e) => tracing::warn!(error = %e, "cannot start a xenstore connection"),
        }
    }
}

/// A running server. Dropping it disconnects every client, joins every thread and
/// removes the socket file.
#[derive(Debug)]
pub struct XsServerHandle {
    socket_path: PathBuf,
    shared: Arc<Shared>,
    wake: Option<UnixStream>,
    acceptor: Option<JoinHandle<()>>,
}

impl XsServerHandle {
    /// Where clients connect.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }
}

impl Drop for XsServerHandle {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.shared.lock().kill_all();
        let threads = std::mem::take(&mut *lock_unpoisoned(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket_path);
        tracing::info!(socket = %self.socket_path.display(), "embedded xenstore stopped");
    }
}
