//! The synchronous xenstore client used by the backend, the frontend and the
//! toolstack. One [`XsClient`] is one connection; it is `Send + Sync`, so threads
//! share it through an `Arc` and may have requests in flight concurrently.

mod conn;
mod watch;

use std::path::{Path, PathBuf};

use conn::Connection;
pub use conn::WatchNotify;
pub use watch::{XsNotifyWatch, XsWatch};

use crate::error::XsError;
use crate::perms::{perms_to_payload, Perm};
use crate::wire::{join_args, parse_number, Message, MsgType};

/// The xenstored socket libxenstore tries first.
pub const DEFAULT_SOCKET: &str = "/run/xenstored/socket";
/// The kernel's xenbus device, used when no daemon socket is reachable (in a domU).
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";
/// The environment variable that overrides where xenstore is found.
pub const PATH_ENV: &str = "XENSTORED_PATH";
/// How many times [`XsClient::transaction`] retries a conflicting transaction.
pub const TRANSACTION_RETRIES: usize = 50;
/// The `XS_CONTROL` command with which a connection declares its domid to the
/// embedded server (a simulation feature, see [`crate::server`]).
pub const DECLARE_DOMID_COMMAND: &str = "pvusb-domid";

/// A transaction id; [`Tx::NONE`] means "outside any transaction".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tx(u32);

impl Tx {
    /// No transaction.
    pub const NONE: Tx = Tx(0);

    /// The id as sent in the header.
    pub fn id(self) -> u32 {
        self.0
    }
}

/// A connection to xenstored, the xenbus device, or the embedded server.
#[derive(Debug)]
pub struct XsClient {
    conn: std::sync::Arc<Connection>,
}

impl XsClient {
    /// Finds xenstore as libxenstore does: `XENSTORED_PATH` if set, else
    /// `/run/xenstored/socket`, else `/dev/xen/xenbus`.
    pub fn connect_default() -> Result<Self, XsError> {
        if let Some(p) = std::env::var_os(PATH_ENV) {
            return Self::connect(&PathBuf::from(p));
        }
        Self::connect(Path::new(DEFAULT_SOCKET))
            .or_else(|_| Self::connect(Path::new(XENBUS_DEVICE)))
    }

    /// Connects to a UNIX socket or opens a character device such as
    /// `/dev/xen/xenbus`; both speak the same protocol.
    pub fn connect(path: &Path) -> Result<Self, XsError> {
        Ok(XsClient {
            conn: std::sync::Arc::new(Connection::open(path)?),
        })
    }

    /// Speaks xenstore over an already-connected socket: a confined worker gets
    /// its filtering proxy's socket as an inherited fd and has no path to open.
    pub fn from_stream(stream: std::os::unix::net::UnixStream) -> Result<Self, XsError> {
        Ok(XsClient {
            conn: std::sync::Arc::new(Connection::from_stream(stream)?),
        })
    }

    /// The socket or device path this client connected to (`None` for
    /// [`Self::from_stream`]), so a supervisor can open further connections, one
    /// per confined worker, to the same xenstore.
    pub fn endpoint(&self) -> Option<&Path> {
        self.conn.endpoint()
    }

    /// Connects to the embedded server and declares `domid` as this connection's
    /// domain. Only the embedded server started with `trust_declared_domids` honours
    /// this; anything else refuses it and this returns the error.
    pub fn connect_as(path: &Path, domid: u16) -> Result<Self, XsError> {
        let client = Self::connect(path)?;
        let payload = join_args(&[DECLARE_DOMID_COMMAND, &domid.to_string()]);
        client
            .conn
            .request(MsgType::Control, 0, payload, DECLARE_DOMID_COMMAND)?;
        Ok(client)
    }

    fn path_request(&self, ty: MsgType, tx: Tx, path: &str) -> Result<Message, XsError> {
        self.conn.request(ty, tx.0, join_args(&[path]), path)
    }

    /// Reads a node's value; a missing node is `Ok(None)`.
    pub fn read(&self, tx: Tx, path: &str) -> Result<Option<String>, XsError> {
        match self.path_request(MsgType::Read, tx, path) {
            Ok(reply) => String::from_utf8(reply.payload().to_vec())
                .map(Some)
                .map_err(|_| XsError::BadReply {
                    op: "read",
                    reason: format!("value of {path} is not UTF-8"),
                }),
            Err(XsError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a node, creating it and any missing parents.
    pub fn write(&self, tx: Tx, path: &str, value: &str) -> Result<(), XsError> {
        let mut payload = join_args(&[path]);
        payload.extend_from_slice(value.as_bytes());
        self.conn
            .request(MsgType::Write, tx.0, payload, path)
            .map(drop)
    }

    /// Creates a node (and missing parents) with an empty value; existing is fine.
    pub fn mkdir(&self, tx: Tx, path: &str) -> Result<(), XsError> {
        self.path_request(MsgType::Mkdir, tx, path).map(drop)
    }

    /// Removes a node and everything below it; a missing node is fine.
    pub fn rm(&self, tx: Tx, path: &str) -> Result<(), XsError> {
        match self.path_request(MsgType::Rm, tx, path) {
            Ok(_) | Err(XsError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The names of a node's children; a missing node has none.
    pub fn directory(&self, tx: Tx, path: &str) -> Result<Vec<String>, XsError> {
        match self.path_request(MsgType::Directory, tx, path) {
            Ok(reply) => reply
                .list()
                .map(|l| {
                    l.into_iter()
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .map_err(|e| XsError::BadReply {
                    op: "directory",
                    reason: e.to_string(),
                }),
            Err(XsError::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Whether a node exists (a node we may not read is an `Access` error).
    pub fn exists(&self, tx: Tx, path: &str) -> Result<bool, XsError> {
        match self.path_request(MsgType::Read, tx, path) {
            Ok(_) => Ok(true),
            Err(XsError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A node's permission list (owner first).
    pub fn get_perms(&self, tx: Tx, path: &str) -> Result<Vec<Perm>, XsError> {
        let reply = self.path_request(MsgType::GetPerms, tx, path)?;
        let bad = |e: crate::wire::WireError| XsError::BadReply {
            op: "get_perms",
            reason: e.to_string(),
        };
        let list = reply.list().map_err(bad)?;
        let perms = list
            .into_iter()
            .map(Perm::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        if perms.is_empty() {
            return Err(XsError::BadReply {
                op: "get_perms",
                reason: "empty permission list".into(),
            });
        }
        Ok(perms)
    }

    /// Replaces a node's permission list; the first entry is the owner and default.
    pub fn set_perms(&self, tx: Tx, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        if perms.is_empty() {
            return Err(XsError::Invalid);
        }
        let mut payload = join_args(&[path]);
        payload.extend(perms_to_payload(perms));
        self.conn
            .request(MsgType::SetPerms, tx.0, payload, path)
            .map(drop)
    }

    /// Starts a transaction.
    pub fn transaction_start(&self) -> Result<Tx, XsError> {
        let reply = self
            .conn
            .request(MsgType::TransactionStart, 0, vec![0], "")?;
        let id = reply
            .one_arg()
            .and_then(parse_number::<u32>)
            .map_err(|e| XsError::BadReply {
                op: "transaction_start",
                reason: e.to_string(),
            })?;
        if id == 0 {
            return Err(XsError::BadReply {
                op: "transaction_start",
                reason: "transaction id 0".into(),
            });
        }
        Ok(Tx(id))
    }

    /// Commits (`commit = true`) or aborts a transaction. `Ok(false)` means the
    /// commit conflicted (`EAGAIN`) and nothing was applied.
    pub fn transaction_end(&self, tx: Tx, commit: bool) -> Result<bool, XsError> {
        let arg = if commit { "T" } else { "F" };
        match self
            .conn
            .request(MsgType::TransactionEnd, tx.0, join_args(&[arg]), "")
        {
            Ok(_) => Ok(true),
            Err(XsError::Again) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs `f` in a transaction and commits it, retrying the whole thing on a
    /// conflict up to [`TRANSACTION_RETRIES`] times; any other error aborts.
    pub fn transaction<T>(
        &self,
        mut f: impl FnMut(Tx) -> Result<T, XsError>,
    ) -> Result<T, XsError> {
        for _ in 0..TRANSACTION_RETRIES {
            let tx = self.transaction_start()?;
            match f(tx) {
                Ok(value) => {
                    if self.transaction_end(tx, true)? {
                        return Ok(value);
                    }
                }
                Err(XsError::Again) => {
                    let _ = self.transaction_end(tx, false);
                }
                Err(e) => {
                    let _ = self.transaction_end(tx, false);
                    return Err(e);
                }
            }
        }
        Err(XsError::Again)
    }

    /// Watches `path` and everything below it (or a special path such as
    /// `@releaseDomain`). The watch fires once right away, as xenstored does, then on
    /// every change; the receiver yields the changed paths. Dropping the
    /// [`XsWatch`] unregisters it.
    pub fn watch(&self, path: &str) -> Result<XsWatch, XsError> {
        XsWatch::register(std::sync::Arc::clone(&self.conn), path)
    }

    /// Watches `path`, calling `notify` with each event's path on the
    /// connection's reader thread (it must not block nor call xenstore).
    /// Like [`Self::watch`], the first event fires at once.
    pub fn watch_notify(&self, path: &str, notify: WatchNotify) -> Result<XsNotifyWatch, XsError> {
        XsNotifyWatch::register(std::sync::Arc::clone(&self.conn), path, notify)
    }

    /// A request about one domain, outside any transaction: its only
    /// argument is the domid.
    fn domain_query(&self, msg_type: MsgType, domid: u16) -> Result<Message, XsError> {
        self.conn
            .request(msg_type, 0, join_args(&[&domid.to_string()]), "")
    }

    /// The home path of a domain, `/local/domain/<domid>`.
    pub fn get_domain_path(&self, domid: u16) -> Result<String, XsError> {
        self.domain_query(MsgType::GetDomainPath, domid)?
            .one_arg()
            .map(str::to_owned)
            .map_err(|e| XsError::BadReply {
                op: "get_domain_path",
                reason: e.to_string(),
            })
    }

    /// Tells xenstore a domain exists (`XS_INTRODUCE`); fires `@introduceDomain`.
    pub fn introduce_domain(&self, domid: u16, mfn: u64, port: u32) -> Result<(), XsError> {
        let args = [domid.to_string(), mfn.to_string(), port.to_string()];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.conn
            .request(MsgType::Introduce, 0, join_args(&args), "")
            .map(drop)
    }

    /// Tells xenstore a domain is gone (`XS_RELEASE`); fires `@releaseDomain`.
    pub fn release_domain(&self, domid: u16) -> Result<(), XsError> {
        self.domain_query(MsgType::Release, domid).map(drop)
    }

    /// Whether xenstore knows the domain.
    pub fn is_domain_introduced(&self, domid: u16) -> Result<bool, XsError> {
        match self
            .domain_query(MsgType::IsDomainIntroduced, domid)?
            .one_arg()
        {
            Ok("T") => Ok(true),
            Ok("F") => Ok(false),
            other => Err(XsError::BadReply {
                op: "is_domain_introduced",
                reason: format!("{other:?}"),
            }),
        }
    }
}
