//! The client's error type: transport failures, protocol violations by the daemon,
//! and the daemon's own errno strings mapped to variants callers can match on.

use crate::wire::WireError;

/// Errors from [`crate::XsClient`] operations.
#[derive(Debug, thiserror::Error)]
pub enum XsError {
    /// The daemon denied access to the path (`EACCES`).
    #[error("access to xenstore path {0} denied")]
    Access(String),
    /// The transaction conflicted or the daemon asked to retry (`EAGAIN`).
    #[error("xenstore asked to retry (transaction conflict)")]
    Again,
    /// The daemon's reply did not have the shape the request calls for.
    #[error("xenstore sent a malformed reply to {op}: {reason}")]
    BadReply {
        /// The operation whose reply was malformed.
        op: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// The connection is gone (daemon exited, socket closed, or the reader stopped).
    #[error("xenstore connection closed")]
    Closed,
    /// Neither the socket nor the device could be opened.
    #[error("cannot connect to xenstore at {path}")]
    Connect {
        /// The socket or device path tried last.
        path: std::path::PathBuf,
        /// Why opening it failed.
        #[source]
        source: std::io::Error,
    },
    /// The node already exists (`EEXIST`).
    #[error("xenstore entry already exists")]
    Exists,
    /// The request was refused as malformed (`EINVAL`), e.g. a bad path.
    #[error("xenstore rejected the request as invalid")]
    Invalid,
    /// Writing to or reading from the connection failed.
    #[error("xenstore connection I/O failed")]
    Io(#[source] std::io::Error),
    /// The path does not exist (`ENOENT`) where absence is an error.
    #[error("xenstore path {0} does not exist")]
    NotFound(String),
    /// A quota was exceeded (`EQUOTA`, `ENOSPC`).
    #[error("xenstore quota exceeded")]
    Quota,
    /// Any other errno string from the daemon.
    #[error("xenstore returned error {0}")]
    Server(String),
    /// No reply arrived within the reply timeout.
    #[error("xenstore did not reply in time")]
    Timeout,
    /// The value or reply exceeds a size limit (`E2BIG`).
    #[error("xenstore value or reply too big")]
    TooBig,
    /// A message could not be framed or decoded.
    #[error("xenstore wire protocol error")]
    Wire(#[from] WireError),
}

impl XsError {
    /// Maps an `XS_ERROR` payload's errno name to a variant, with the request's path
    /// for the variants that carry one.
    pub fn from_errno(name: &str, path: &str) -> XsError {
        match name {
            "EACCES" | "EPERM" => XsError::Access(path.to_owned()),
            "EAGAIN" => XsError::Again,
            "EEXIST" => XsError::Exists,
            "EINVAL" => XsError::Invalid,
            "ENOENT" => XsError::NotFound(path.to_owned()),
            "EQUOTA" | "ENOSPC" => XsError::Quota,
            "E2BIG" => XsError::TooBig,
            other => XsError::Server(other.chars().take(64).collect()),
        }
    }
}
