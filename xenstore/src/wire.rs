//! The xenstored wire protocol (`xen/include/public/io/xs_wire.h`): the 16-byte
//! little-endian header, message types, framing and the NUL-separated argument rules.
//!
//! Everything here parses bytes that come from a peer (a hostile guest talking to the
//! embedded server, or a daemon answering the client), so every function returns a
//! [`WireError`] instead of panicking and no message ever allocates more than
//! [`HEADER_LEN`] + [`PAYLOAD_MAX`] bytes: the length is checked before the payload
//! is read or allocated.

use std::io::Read;

/// Size of `struct xsd_sockmsg`.
pub const HEADER_LEN: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: the largest payload either side may send.
pub const PAYLOAD_MAX: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`: the longest absolute path.
pub const ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX`: the longest relative path (before resolution).
pub const REL_PATH_MAX: usize = 2048;

/// Errors from framing or decoding one message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// An argument that should be a number is not one.
    #[error("argument {0:?} is not a valid number")]
    BadNumber(String),
    /// A `SET_PERMS` or `GET_PERMS` entry is not `<n|r|w|b><domid>`.
    #[error("permission entry {0:?} is malformed")]
    BadPerm(String),
    /// The buffer ends before the header or the payload it announces.
    #[error("message is truncated: need {needed} bytes, have {have}")]
    Incomplete {
        /// Bytes the header and its announced payload take.
        needed: usize,
        /// Bytes available.
        have: usize,
    },
    /// The payload does not end in the NUL its message type requires.
    #[error("payload is missing its terminating NUL")]
    MissingNul,
    /// The payload length in the header exceeds `XENSTORE_PAYLOAD_MAX`.
    #[error("payload length {0} exceeds the 4096-byte maximum")]
    TooLong(u32),
    /// The payload's NUL-separated argument count is not what the type requires.
    #[error("expected {expected} argument(s), found {found}")]
    WrongArgCount {
        /// Arguments the message type takes.
        expected: usize,
        /// Arguments the payload holds.
        found: usize,
    },
    /// The header names a message type this protocol does not define.
    #[error("unknown message type {0}")]
    UnknownType(u32),
    /// A string argument is not UTF-8.
    #[error("argument is not valid UTF-8")]
    NotUtf8,
}

/// Message types of `enum xsd_sockmsg_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MsgType {
    /// `XS_CONTROL` (formerly `XS_DEBUG`).
    Control = 0,
    /// `XS_DIRECTORY`: list a node's children.
    Directory = 1,
    /// `XS_READ`: read a value.
    Read = 2,
    /// `XS_GET_PERMS`: read a node's permissions.
    GetPerms = 3,
    /// `XS_WATCH`: register a watch.
    Watch = 4,
    /// `XS_UNWATCH`: remove a watch.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END` (`T` commits, `F` aborts).
    TransactionEnd = 7,
    /// `XS_INTRODUCE`: a new domain exists.
    Introduce = 8,
    /// `XS_RELEASE`: a domain is gone.
    Release = 9,
    /// `XS_GET_DOMAIN_PATH`: `/local/domain/<id>`.
    GetDomainPath = 10,
    /// `XS_WRITE`: write a value.
    Write = 11,
    /// `XS_MKDIR`: create a node.
    Mkdir = 12,
    /// `XS_RM`: remove a node and its subtree.
    Rm = 13,
    /// `XS_SET_PERMS`: replace a node's permissions.
    SetPerms = 14,
    /// `XS_WATCH_EVENT`: `path\0token\0`, server to client.
    WatchEvent = 15,
    /// `XS_ERROR`: an errno name such as `ENOENT\0`.
    Error = 16,
    /// `XS_IS_DOMAIN_INTRODUCED`.
    IsDomainIntroduced = 17,
    /// `XS_RESUME`.
    Resume = 18,
    /// `XS_SET_TARGET`.
    SetTarget = 19,
    /// `XS_RESTRICT` (obsolete).
    Restrict = 20,
    /// `XS_RESET_WATCHES`: drop every watch and transaction.
    ResetWatches = 21,
    /// `XS_DIRECTORY_PART`: one chunk of a long directory.
    DirectoryPart = 22,
}

impl TryFrom<u32> for MsgType {
    type Error = WireError;

    fn try_from(v: u32) -> Result<Self, WireError> {
        use MsgType::*;
        const ALL: [MsgType; 23] = [
            Control,
            Directory,
            Read,
            GetPerms,
            Watch,
            Unwatch,
            TransactionStart,
            TransactionEnd,
            Introduce,
            Release,
            GetDomainPath,
            Write,
            Mkdir,
            Rm,
            SetPerms,
            WatchEvent,
            Error,
            IsDomainIntroduced,
            Resume,
            SetTarget,
            Restrict,
            ResetWatches,
            DirectoryPart,
        ];
        usize::try_from(v)
            .ok()
            .and_then(|i| ALL.get(i).copied())
            .ok_or(WireError::UnknownType(v))
    }
}

/// The raw header as it sits on the wire, before the type and length are validated.
/// Kept separate from [`Message`] so a reader can still echo `req_id` in an error
/// reply for a message whose type it does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader {
    /// `enum xsd_sockmsg_type`, unchecked.
    pub msg_type: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload length, unchecked.
    pub len: u32,
}

impl RawHeader {
    /// Decodes the four little-endian words; cannot fail.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Self {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        RawHeader {
            msg_type: word(0),
            req_id: word(4),
            tx_id: word(8),
            len: word(12),
        }
    }

    /// Encodes the header in wire order.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        for (chunk, v) in
            out.chunks_exact_mut(4)
                .zip([self.msg_type, self.req_id, self.tx_id, self.len])
        {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The payload length as a `usize`, refusing anything above `XENSTORE_PAYLOAD_MAX`.
    pub fn payload_len(&self) -> Result<usize, WireError> {
        match usize::try_from(self.len) {
            Ok(n) if n <= PAYLOAD_MAX => Ok(n),
            _ => Err(WireError::TooLong(self.len)),
        }
    }
}

/// One framed xenstore message with a validated type and a payload of at most
/// [`PAYLOAD_MAX`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message type.
    pub msg_type: MsgType,
    /// Request id, echoed in the reply (0 in watch events).
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    payload: Vec<u8>,
}

impl Message {
    /// Builds a message, refusing a payload over [`PAYLOAD_MAX`].
    pub fn new(
        msg_type: MsgType,
        req_id: u32,
        tx_id: u32,
        payload: Vec<u8>,
    ) -> Result<Self, WireError> {
        if payload.len() > PAYLOAD_MAX {
            return Err(WireError::TooLong(
                u32::try_from(payload.len()).unwrap_or(u32::MAX),
            ));
        }
        Ok(Message {
            msg_type,
            req_id,
            tx_id,
            payload,
        })
    }

    /// An `XS_ERROR` reply carrying `errno_name` (such as `"ENOENT"`) NUL-terminated.
    pub fn error(req_id: u32, tx_id: u32, errno_name: &str) -> Self {
        let mut payload = Vec::with_capacity(errno_name.len() + 1);
        payload.extend_from_slice(errno_name.as_bytes());
        payload.push(0);
        payload.truncate(PAYLOAD_MAX);
        Message {
            msg_type: MsgType::Error,
            req_id,
            tx_id,
            payload,
        }
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Parses exactly one message from the front of `bytes`, returning it and the
    /// number of bytes consumed. Checks the length before touching the payload.
    pub fn parse(bytes: &[u8]) -> Result<(Message, usize), WireError> {
        let head: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(WireError::Incomplete {
                needed: HEADER_LEN,
                have: bytes.len(),
            })?;
        let raw = RawHeader::decode(head);
        let len = raw.payload_len()?;
        let total = HEADER_LEN + len;
        let payload = bytes.get(HEADER_LEN..total).ok_or(WireError::Incomplete {
            needed: total,
            have: bytes.len(),
        })?;
        let msg_type = MsgType::try_from(raw.msg_type)?;
        Ok((
            Message {
                msg_type,
                req_id: raw.req_id,
                tx_id: raw.tx_id,
                payload: payload.to_vec(),
            },
            total,
        ))
    }

    /// Header followed by payload, ready for one `write_all`.
    pub fn serialize(&self) -> Vec<u8> {
        let header = RawHeader {
            msg_type: self.msg_type as u32,
            req_id: self.req_id,
            tx_id: self.tx_id,
            // `new` bounds the payload to PAYLOAD_MAX, so this never saturates.
            len: u32::try_from(self.payload.len()).unwrap_or(u32::MAX),
        };
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&self.payload);
        out
    }

    /// The payload as exactly `n` NUL-terminated UTF-8 strings (`"a\0b\0"`).
    pub fn args(&self, n: usize) -> Result<Vec<&str>, WireError> {
        let all = nul_terminated_list(&self.payload)?;
        if all.len() != n {
            return Err(WireError::WrongArgCount {
                expected: n,
                found: all.len(),
            });
        }
        Ok(all)
    }

    /// The payload as any number of NUL-terminated UTF-8 strings (a directory reply,
    /// a permission list). The empty payload is the empty list.
    pub fn list(&self) -> Result<Vec<&str>, WireError> {
        nul_terminated_list(&self.payload)
    }

    /// The single argument of a one-argument request (`"path\0"`).
    pub fn one_arg(&self) -> Result<&str, WireError> {
        let mut args = self.args(1)?;
        args.pop().ok_or(WireError::WrongArgCount {
            expected: 1,
            found: 0,
        })
    }

    /// `XS_WRITE`'s payload: a NUL-terminated path, then the raw value with no
    /// terminator (values may be binary).
    pub fn path_and_value(&self) -> Result<(&str, &[u8]), WireError> {
        let nul = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::MissingNul)?;
        let (path, rest) = self.payload.split_at(nul);
        let path = std::str::from_utf8(path).map_err(|_| WireError::NotUtf8)?;
        Ok((path, rest.get(1..).unwrap_or(&[])))
    }

    /// True for an empty payload or a lone NUL: `TRANSACTION_START` and
    /// `RESET_WATCHES` take no argument, and clients disagree on which they send.
    pub fn is_empty_arg(&self) -> bool {
        matches!(self.payload.as_slice(), [] | [0])
    }
}

/// Splits `"a\0b\0"` into `["a", "b"]`; the payload must end in NUL unless empty.
fn nul_terminated_list(payload: &[u8]) -> Result<Vec<&str>, WireError> {
    let Some(body) = payload.strip_suffix(&[0]) else {
        return if payload.is_empty() {
            Ok(Vec::new())
        } else {
            Err(WireError::MissingNul)
        };
    };
    // At most PAYLOAD_MAX pieces, so the loop is bounded by the payload size.
    body.split(|&b| b == 0)
        .map(|s| std::str::from_utf8(s).map_err(|_| WireError::NotUtf8))
        .collect()
}

/// Builds a payload of NUL-terminated strings.
pub fn join_args(args: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(args.iter().map(|a| a.len() + 1).sum());
    for a in args {
        out.extend_from_slice(a.as_bytes());
        out.push(0);
    }
    out
}

/// Whether `path` is an absolute path in xenstored's canonical form: `/`, or `/`
/// followed by non-empty components of ASCII alphanumerics and `-_@` joined by
/// single `/`s with none trailing, at most [`ABS_PATH_MAX`] bytes. One rule for
/// the embedded server and the filtering proxy, so that what the proxy lets
/// through is exactly the path the daemon will act on (no second spelling of
/// the same node to slip past a prefix check).
pub fn is_valid_abs_path(path: &str) -> bool {
    let chars_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b));
    let shape_ok = path == "/" || (!path.ends_with('/') && !path.contains("//"));
    path.starts_with('/') && path.len() <= ABS_PATH_MAX && chars_ok && shape_ok
}

/// Parses a decimal argument (domid, transaction id, port, frame number).
pub fn parse_number<T: std::str::FromStr>(s: &str) -> Result<T, WireError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WireError::BadNumber(s.chars().take(32).collect()));
    }
    s.parse()
        .map_err(|_| WireError::BadNumber(s.chars().take(32).collect()))
}

/// Why [`read_message`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The stream ended or failed; nothing more can be read.
    #[error("xenstore connection read failed")]
    Io(#[source] std::io::Error),
    /// The header announced a payload over the maximum: the stream cannot be
    /// resynchronised, so the connection must be closed after replying.
    #[error("oversized message (req_id {req_id})")]
    Oversized {
        /// Request id, for the error reply.
        req_id: u32,
        /// Transaction id, for the error reply.
        tx_id: u32,
        /// The announced payload length.
        len: u32,
    },
    /// A well-framed message of unknown type; its payload was consumed, so the
    /// stream is still in sync and the reader may answer `EINVAL` and go on.
    #[error("unknown message type {msg_type} (req_id {req_id})")]
    UnknownType {
        /// The unknown type number.
        msg_type: u32,
        /// Request id, for the error reply.
        req_id: u32,
        /// Transaction id, for the error reply.
        tx_id: u32,
    },
}

/// Reads one whole message from a blocking stream. Allocates at most the announced
/// payload length, and only after checking it against [`PAYLOAD_MAX`].
pub fn read_message(r: &mut impl Read) -> Result<Message, ReadError> {
    let mut head = [0u8; HEADER_LEN];
    r.read_exact(&mut head).map_err(ReadError::Io)?;
    let raw = RawHeader::decode(&head);
    let len = raw.payload_len().map_err(|_| ReadError::Oversized {
        req_id: raw.req_id,
        tx_id: raw.tx_id,
        len: raw.len,
    })?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(ReadError::Io)?;
    match MsgType::try_from(raw.msg_type) {
        Ok(msg_type) => Ok(Message {
            msg_type,
            req_id: raw.req_id,
            tx_id: raw.tx_id,
            payload,
        }),
        Err(_) => Err(ReadError::UnknownType {
            msg_type: raw.msg_type,
            req_id: raw.req_id,
            tx_id: raw.tx_id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_is_little_endian() {
        let h = RawHeader {
            msg_type: 2,
            req_id: 0x0102_0304,
            tx_id: 7,
            len: 5,
        };
        let b = h.encode();
        assert_eq!(&b[..8], &[2, 0, 0, 0, 4, 3, 2, 1]);
        assert_eq!(RawHeader::decode(&b), h);
    }

    #[test]
    fn parse_checks_length_type_and_truncation() {
        let m = Message::new(MsgType::Read, 9, 0, b"/a\0".to_vec()).unwrap();
        let bytes = m.serialize();
        assert_eq!(Message::parse(&bytes).unwrap(), (m, 19));
        assert!(matches!(
            Message::parse(&bytes[..18]),
            Err(WireError::Incomplete { .. })
        ));
        let mut long = RawHeader {
            msg_type: 2,
            req_id: 1,
            tx_id: 0,
            len: 4097,
        }
        .encode()
        .to_vec();
        long.resize(5000, 0);
        assert_eq!(Message::parse(&long), Err(WireError::TooLong(4097)));
        let unknown = RawHeader {
            msg_type: 99,
            req_id: 1,
            tx_id: 0,
            len: 0,
        }
        .encode();
        assert_eq!(Message::parse(&unknown), Err(WireError::UnknownType(99)));
        assert_eq!(MsgType::try_from(20), Ok(MsgType::Restrict));
        assert_eq!(MsgType::try_from(23), Err(WireError::UnknownType(23)));
    }

    #[test]
    fn nul_rules() {
        let m = |p: &[u8]| Message::new(MsgType::Watch, 1, 0, p.to_vec()).unwrap();
        assert_eq!(m(b"/p\0tok\0").args(2).unwrap(), vec!["/p", "tok"]);
        assert_eq!(m(b"/p\0tok").args(2), Err(WireError::MissingNul));
        assert_eq!(
            m(b"/p\0").args(2),
            Err(WireError::WrongArgCount {
                expected: 2,
                found: 1
            })
        );
        assert_eq!(m(b"").list().unwrap(), Vec::<&str>::new());
        assert_eq!(m(b"\xff\0").list(), Err(WireError::NotUtf8));
        assert_eq!(
            m(b"/p\0v\0x").path_and_value().unwrap(),
            ("/p", &b"v\0x"[..])
        );
        assert_eq!(m(b"/p").path_and_value(), Err(WireError::MissingNul));
        assert!(m(b"\0").is_empty_arg() && m(b"").is_empty_arg() && !m(b"x\0").is_empty_arg());
        assert_eq!(
            parse_number::<u16>("65536"),
            Err(WireError::BadNumber("65536".into()))
        );
        assert_eq!(
            parse_number::<u16>("+1"),
            Err(WireError::BadNumber("+1".into()))
        );
        assert_eq!(parse_number::<u16>("17"), Ok(17));
    }

    #[test]
    fn canonical_absolute_paths() {
        for good in [
            "/",
            "/a",
            "/a/b-c_d/@e/0",
            &format!("/{}", "a".repeat(3071)),
        ] {
            assert!(is_valid_abs_path(good), "{good:?}");
        }
        for bad in [
            "",
            "a",
            "a/b",
            "@releaseDomain",
            "//",
            "/a/",
            "/a//b",
            "/a b",
            "/a.b",
            "/a\0",
            "/\u{e9}",
            &format!("/{}", "a".repeat(3072)),
        ] {
            assert!(!is_valid_abs_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn read_message_resyncs_after_unknown_type_and_refuses_oversize() {
        let mut bytes = RawHeader {
            msg_type: 77,
            req_id: 5,
            tx_id: 0,
            len: 2,
        }
        .encode()
        .to_vec();
        bytes.extend_from_slice(b"xy");
        bytes.extend(
            Message::new(MsgType::Read, 6, 0, b"/\0".to_vec())
                .unwrap()
                .serialize(),
        );
        bytes.extend(
            RawHeader {
                msg_type: 2,
                req_id: 8,
                tx_id: 0,
                len: u32::MAX,
            }
            .encode(),
        );
        let mut r = &bytes[..];
        assert!(matches!(
            read_message(&mut r),
            Err(ReadError::UnknownType {
                msg_type: 77,
                req_id: 5,
                ..
            })
        ));
        assert_eq!(read_message(&mut r).unwrap().req_id, 6);
        assert!(matches!(
            read_message(&mut r),
            Err(ReadError::Oversized { req_id: 8, .. })
        ));
    }
}
