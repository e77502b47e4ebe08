//! Messages of the simulation's rendezvous socket.
//!
//! A request is a 12-byte header (`kind`, `arg`, `count`, little-endian `u32`s)
//! followed by `count` little-endian `u32`s. Every request gets one reply of 16
//! bytes (`status`, `a`, `b`, `c`) with the passed descriptors attached.
//!
//! Both sides treat what they receive as hostile: counts are bounded before any
//! allocation, unknown kinds and codes are errors, and a short read is an error.

use std::io::{self, Read, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::table::NR_REFS;
use crate::fdpass;
use crate::{EvtchnPort, GrantError, GrantRef};

/// Most `u32`s a request may carry.
pub(crate) const MAX_COUNT: u32 = NR_REFS;

/// What a client asks the granter's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Open the grant table of the server's domain; `arg` is the caller's domid.
    Grants { domid: u16 },
    /// Count a mapping of `refs` by this connection's domain.
    Map { writable: bool, refs: Vec<GrantRef> },
    /// Drop one mapping of each of `refs`.
    Unmap { refs: Vec<GrantRef> },
    /// Bind the unbound `port` (allocated for `domid`).
    Bind { domid: u16, port: EvtchnPort },
}

const GRANTS: u32 = 1;
const MAP: u32 = 2;
const UNMAP: u32 = 3;
const BIND: u32 = 4;

impl Request {
    /// Send the request.
    pub(crate) fn send(&self, sock: &mut UnixStream) -> io::Result<()> {
        let (kind, arg, items): (u32, u32, &[u32]) = match self {
            Request::Grants { domid } => (GRANTS, u32::from(*domid), &[]),
            Request::Map { writable, refs } => (MAP, u32::from(*writable), refs),
            Request::Unmap { refs } => (UNMAP, 0, refs),
            Request::Bind { domid, port } => (BIND, u32::from(*domid), std::slice::from_ref(port)),
        };
        let count = u32::try_from(items.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut buf = Vec::with_capacity(12 + items.len() * 4);
        for v in [kind, arg, count].iter().chain(items) {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        sock.write_all(&buf)
    }

    /// Receive one request; `Ok(None)` on a clean end of stream.
    pub(crate) fn recv(sock: &mut UnixStream) -> io::Result<Option<Request>> {
        let mut head = [0u8; 12];
        match sock.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (kind, arg, count) = (word(0), word(4), word(8));
        if count > MAX_COUNT {
            return Err(invalid("request carries too many items"));
        }
        let mut body = vec![0u8; count as usize * 4];
        sock.read_exact(&mut body)?;
        let items: Vec<u32> = body
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let domid = || u16::try_from(arg).map_err(|_| invalid("domain id out of range"));
        Ok(Some(match kind {
            GRANTS => Request::Grants { domid: domid()? },
            MAP if arg <= 1 => Request::Map {
                writable: arg == 1,
                refs: items,
            },
            UNMAP => Request::Unmap { refs: items },
            BIND => match items[..] {
                [port] => Request::Bind {
                    domid: domid()?,
                    port,
                },
                _ => return Err(invalid("bind carries one port")),
            },
            _ => return Err(invalid("unknown request")),
        }))
    }
}

/// Error codes of a reply.
const OK: u32 = 0;
const BAD_REF: u32 = 1;
const NOT_GRANTED: u32 = 2;
const READ_ONLY: u32 = 3;
const BAD_PORT: u32 = 4;
const EXHAUSTED: u32 = 5;
const REFUSED: u32 = 6;

/// A server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Success, with one value (number of refs for `Grants`, 0 otherwise).
    Ok(u32),
    /// A grant error about one reference (`domid` for `NotGranted`).
    Grant {
        code: u32,
        gref: GrantRef,
        domid: u16,
    },
    /// The port cannot be bound.
    BadPort,
    /// Anything else the server refused (bad request, internal failure).
    Refused,
}

impl Reply {
    /// The reply for a grant error.
    pub(crate) fn from_grant_error(e: &GrantError) -> Reply {
        match *e {
            GrantError::BadRef { gref } => Reply::Grant {
                code: BAD_REF,
                gref,
                domid: 0,
            },
            GrantError::NotGranted { gref, domid } => Reply::Grant {
                code: NOT_GRANTED,
                gref,
                domid,
            },
            GrantError::ReadOnly { gref } => Reply::Grant {
                code: READ_ONLY,
                gref,
                domid: 0,
            },
            GrantError::Exhausted => Reply::Grant {
                code: EXHAUSTED,
                gref: 0,
                domid: 0,
            },
            _ => Reply::Refused,
        }
    }

    /// The grant error a reply stands for (`None` for `Ok`).
    pub(crate) fn grant_error(self) -> Option<GrantError> {
        match self {
            Reply::Ok(_) => None,
            Reply::Grant {
                code: BAD_REF,
                gref,
                ..
            } => Some(GrantError::BadRef { gref }),
            Reply::Grant {
                code: NOT_GRANTED,
                gref,
                domid,
            } => Some(GrantError::NotGranted { gref, domid }),
            Reply::Grant {
                code: READ_ONLY,
                gref,
                ..
            } => Some(GrantError::ReadOnly { gref }),
            Reply::Grant {
                code: EXHAUSTED, ..
            } => Some(GrantError::Exhausted),
            _ => Some(GrantError::Unavailable(
                "the granting domain refused the request".into(),
            )),
        }
    }

    fn words(self) -> [u32; 4] {
        match self {
            Reply::Ok(v) => [OK, v, 0, 0],
            Reply::Grant { code, gref, domid } => [code, gref, u32::from(domid), 0],
            Reply::BadPort => [BAD_PORT, 0, 0, 0],
            Reply::Refused => [REFUSED, 0, 0, 0],
        }
    }

    /// Send the reply with `fds` attached.
    pub(crate) fn send(self, sock: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
        let mut buf = [0u8; 16];
        for (c, w) in buf.chunks_exact_mut(4).zip(self.words()) {
            c.copy_from_slice(&w.to_le_bytes());
        }
        fdpass::send_with_fds(sock, &buf, fds)
    }

    /// Receive a reply and its descriptors.
    pub(crate) fn recv(sock: &UnixStream) -> io::Result<(Reply, Vec<OwnedFd>)> {
        let mut buf = [0u8; 16];
        let fds = fdpass::recv_with_fds(sock, &mut buf)?;
        let w = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        let reply = match w(0) {
            OK => Reply::Ok(w(4)),
            code @ (BAD_REF | NOT_GRANTED | READ_ONLY | EXHAUSTED) => Reply::Grant {
                code,
                gref: w(4),
                domid: u16::try_from(w(8)).map_err(|_| invalid("domain id out of range"))?,
            },
            BAD_PORT => Reply::BadPort,
            REFUSED => Reply::Refused,
            _ => return Err(invalid("unknown reply")),
        };
        Ok((reply, fds))
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_hostile_ones_are_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let reqs = [
            Request::Grants { domid: 7 },
            Request::Map {
                writable: true,
                refs: vec![8, 9],
            },
            Request::Unmap { refs: vec![8] },
            Request::Bind { domid: 0, port: 3 },
        ];
        for r in &reqs {
            r.send(&mut a).unwrap();
            assert_eq!(Request::recv(&mut b).unwrap().as_ref(), Some(r));
        }
        // Oversized count: refused before allocating.
        let mut bad = Vec::new();
        for v in [MAP, 0, u32::MAX] {
            bad.extend_from_slice(&v.to_le_bytes());
        }
        a.write_all(&bad).unwrap();
        assert!(Request::recv(&mut b).is_err());
        let (mut a, mut b) = UnixStream::pair().unwrap();
        for v in [99u32, 0, 0] {
            a.write_all(&v.to_le_bytes()).unwrap();
        }
        assert!(Request::recv(&mut b).is_err());
        drop(a);
        assert_eq!(Request::recv(&mut b).unwrap(), None);
    }

    #[test]
    fn replies_carry_errors_and_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        Reply::Ok(4096)
            .send(&a, &[std::os::fd::AsRawFd::as_raw_fd(&f)])
            .unwrap();
        let (r, fds) = Reply::recv(&b).unwrap();
        assert_eq!((r, fds.len()), (Reply::Ok(4096), 1));
        let e = GrantError::NotGranted { gref: 9, domid: 3 };
        Reply::from_grant_error(&e).send(&a, &[]).unwrap();
        let (r, _) = Reply::recv(&b).unwrap();
        assert!(matches!(
            r.grant_error(),
            Some(GrantError::NotGranted { gref: 9, domid: 3 })
        ));
    }
}
