//! The embedded xenstore of a simulated world: `pvusb_xenstore`'s server on
//! a socket in the world's directory.
//!
//! Why here: every world needs one, started the same way (the simulation's
//! configuration, which trusts the domid a client declares, so a frontend
//! in the same process can act as its guest), and this is the one place
//! that starts it.

use std::path::Path;

use pvusb_xenstore::{
    Access, Perm, ServerConfig, ServerError, Tx, XsClient, XsError, XsServer, XsServerHandle,
};
use tempfile::TempDir;

/// The socket's name in the world's directory.
pub(crate) const SOCKET: &str = "xs.sock";

/// A running embedded xenstore; stopped (and its socket removed) on drop.
#[derive(Debug)]
pub struct Xenstore {
    server: XsServerHandle,
    /// The directory of a [`Xenstore::temp`] server. Last: the socket
    /// lives in it.
    _dir: Option<TempDir>,
}

impl Xenstore {
    /// Starts a server on `<dir>/xs.sock` with the simulation's configuration.
    pub fn start_in(dir: &Path) -> Result<Self, ServerError> {
        Self::start_with(dir, ServerConfig::simulation())
    }

    /// Starts a server on `<dir>/xs.sock` with `config`.
    fn start_with(dir: &Path, config: ServerConfig) -> Result<Self, ServerError> {
        let server = XsServer::start_with(&dir.join(SOCKET), config)?;
        Ok(Self { server, _dir: None })
    }

    /// A server with `config` alone in a fresh directory: what the xenstore
    /// crate's own tests need, no world around it. Panics on failure.
    pub fn temp(config: ServerConfig) -> Self {
        let dir = crate::dir::create("pvx").expect("a directory for xenstore");
        let server = Self::start_with(dir.path(), config).expect("the embedded xenstore starts");
        Self {
            _dir: Some(dir),
            ..server
        }
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        self.server.socket_path()
    }

    /// A new connection as domain 0.
    pub fn connect(&self) -> Result<XsClient, XsError> {
        XsClient::connect(self.path())
    }

    /// A new connection as domain 0 (tests: panics on failure).
    pub fn dom0(&self) -> XsClient {
        self.connect().expect("a xenstore connection")
    }

    /// A new connection declaring itself `domid` (tests: panics on failure).
    pub fn dom(&self, domid: u16) -> XsClient {
        XsClient::connect_as(self.path(), domid).expect("a xenstore connection")
    }

    /// Makes `/local/domain/<domid>` and gives it to that domain (owner,
    /// nobody else may read it), as the toolstack does for a new guest: the
    /// domain's relative paths and quota then work as in a real guest.
    pub fn give_home(&self, domid: u16) {
        let home = format!("/local/domain/{domid}");
        let dom0 = self.dom0();
        dom0.mkdir(Tx::NONE, &home).expect("dom0 makes a home");
        let owner = Perm {
            domid,
            access: Access::None,
        };
        dom0.set_perms(Tx::NONE, &home, &[owner])
            .expect("dom0 gives the home away");
    }
}

/// The value at `path` read outside any transaction, `None` when there is no
/// node (tests: panics when the read fails).
pub fn value_at(xs: &XsClient, path: &str) -> Option<String> {
    xs.read(Tx::NONE, path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The domain owning `path` (its first permission entry), read outside any
/// transaction (tests: panics when the read fails).
pub fn owner_of(xs: &XsClient, path: &str) -> u16 {
    let perms = xs
        .get_perms(Tx::NONE, path)
        .unwrap_or_else(|e| panic!("reading the permissions of {path}: {e}"));
    perms.first().expect("a node has an owner").domid
}
