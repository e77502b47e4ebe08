//! The narrow view of xenstore the toolstack needs.
//!
//! WHY a trait: the toolstack logic is tested against the embedded xenstore server
//! over its real wire protocol, but keeping the logic generic over this small trait
//! keeps the dependency one-directional and lets a future libxenstore-backed client
//! slot in without touching the command code.

use std::time::{Duration, Instant};

use pvusb_xenstore::{Access, Perm, Tx, XsClient, XsError, XsWatch};

/// One failed xenstore operation, already rendered as text (the client's error
/// type stays private to the transport crate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("xenstore {op} {path}: {reason}")]
pub struct StoreError {
    /// The operation that failed (`read`, `write`, ...).
    pub op: &'static str,
    /// The node it was applied to.
    pub path: String,
    /// The server's or the transport's reason.
    pub reason: String,
}

/// Access another domain gets to a node (xenstore `r`/`w`/`b`/`n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAccess {
    /// No access.
    None,
    /// Read only.
    Read,
}

/// What the toolstack needs from xenstore. Paths are absolute.
pub trait Store {
    /// A transaction handle (`Self::NO_TX` means "outside any transaction").
    type Tx: Copy;
    /// A registered watch; dropping it unregisters.
    type Watch: StoreWatch;
    /// The "no transaction" handle.
    const NO_TX: Self::Tx;

    /// Read a node; `None` when it does not exist.
    fn read(&self, tx: Self::Tx, path: &str) -> Result<Option<String>, StoreError>;
    /// Write (create) a node.
    fn write(&self, tx: Self::Tx, path: &str, value: &str) -> Result<(), StoreError>;
    /// Remove a node and its children; a missing node is not an error.
    fn rm(&self, tx: Self::Tx, path: &str) -> Result<(), StoreError>;
    /// Children of a node; a missing node has none.
    fn directory(&self, tx: Self::Tx, path: &str) -> Result<Vec<String>, StoreError>;
    /// Set a node's permissions: `owner` has full access, `others` lists grants.
    fn set_perms(
        &self,
        tx: Self::Tx,
        path: &str,
        owner: u16,
        others: &[(u16, NodeAccess)],
    ) -> Result<(), StoreError>;
    /// Start a transaction.
    fn transaction_start(&self) -> Result<Self::Tx, StoreError>;
    /// End a transaction; `Ok(false)` when a commit lost a conflict (EAGAIN).
    fn transaction_end(&self, tx: Self::Tx, commit: bool) -> Result<bool, StoreError>;
    /// Watch a path (fires once at registration, then on every change below it).
    fn watch(&self, path: &str) -> Result<Self::Watch, StoreError>;
}

/// A watch's event stream.
pub trait StoreWatch {
    /// Wait for the next event until `deadline`; `false` on timeout or when the
    /// connection is gone.
    fn wait_until(&self, deadline: Instant) -> bool;
}

/// How many times a conflicting transaction is retried before giving up: the
/// toolstack's transactions are short, so a persistent conflict means another
/// writer is looping on the same nodes and the user should hear about it.
const TX_RETRIES: u32 = 16;

/// Run `body` in a transaction, retrying on conflict, aborting on error.
pub fn in_transaction<S: Store, T>(
    store: &S,
    mut body: impl FnMut(S::Tx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    for _ in 0..TX_RETRIES {
        let tx = store.transaction_start()?;
        match body(tx) {
            Ok(value) => {
                if store.transaction_end(tx, true)? {
                    return Ok(value);
                }
            }
            Err(e) => {
                // The abort's own failure would hide the real one.
                let _ = store.transaction_end(tx, false);
                return Err(e);
            }
        }
    }
    Err(StoreError {
        op: "transaction",
        path: String::new(),
        reason: format!("still conflicting after {TX_RETRIES} retries"),
    })
}

fn err(op: &'static str, path: &str, e: XsError) -> StoreError {
    StoreError {
        op,
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

impl Store for XsClient {
    type Tx = Tx;
    type Watch = XsWatch;
    const NO_TX: Tx = Tx::NONE;

    fn read(&self, tx: Tx, path: &str) -> Result<Option<String>, StoreError> {
        XsClient::read(self, tx, path).map_err(|e| err("read", path, e))
    }
    fn write(&self, tx: Tx, path: &str, value: &str) -> Result<(), StoreError> {
        XsClient::write(self, tx, path, value).map_err(|e| err("write", path, e))
    }
    fn rm(&self, tx: Tx, path: &str) -> Result<(), StoreError> {
        XsClient::rm(self, tx, path).map_err(|e| err("rm", path, e))
    }
    fn directory(&self, tx: Tx, path: &str) -> Result<Vec<String>, StoreError> {
        XsClient::directory(self, tx, path).map_err(|e| err("directory", path, e))
    }
    fn set_perms(
        &self,
        tx: Tx,
        path: &str,
        owner: u16,
        others: &[(u16, NodeAccess)],
    ) -> Result<(), StoreError> {
        let mut perms = vec![Perm {
            domid: owner,
            access: Access::None,
        }];
        perms.extend(others.iter().map(|&(domid, a)| Perm {
            domid,
            access: match a {
                NodeAccess::None => Access::None,
                NodeAccess::Read => Access::Read,
            },
        }));
        XsClient::set_perms(self, tx, path, &perms).map_err(|e| err("set_perms", path, e))
    }
    fn transaction_start(&self) -> Result<Tx, StoreError> {
        XsClient::transaction_start(self).map_err(|e| err("transaction_start", "", e))
    }
    fn transaction_end(&self, tx: Tx, commit: bool) -> Result<bool, StoreError> {
        XsClient::transaction_end(self, tx, commit).map_err(|e| err("transaction_end", "", e))
    }
    fn watch(&self, path: &str) -> Result<XsWatch, StoreError> {
        XsClient::watch(self, path).map_err(|e| err("watch", path, e))
    }
}

impl StoreWatch for XsWatch {
    fn wait_until(&self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left == Duration::ZERO {
            return false;
        }
        self.receiver().recv_timeout(left).is_ok()
    }
}
