//! The errno names the server answers with in `XS_ERROR` replies.

/// A refusal, sent to the client as its errno name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Errno {
    Access,
    Again,
    Busy,
    Exists,
    Invalid,
    NoEnt,
    NoSys,
    Quota,
    TooBig,
}

impl Errno {
    /// The string xenstored puts on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Errno::Access => "EACCES",
            Errno::Again => "EAGAIN",
            Errno::Busy => "EBUSY",
            Errno::Exists => "EEXIST",
            Errno::Invalid => "EINVAL",
            Errno::NoEnt => "ENOENT",
            Errno::NoSys => "ENOSYS",
            Errno::Quota => "EQUOTA",
            Errno::TooBig => "E2BIG",
        }
    }
}

impl From<crate::wire::WireError> for Errno {
    fn from(_: crate::wire::WireError) -> Errno {
        Errno::Invalid
    }
}
