//! The link between the daemon (the monitor) and one worker process: a UNIX
//! stream socket carrying length-prefixed JSON messages, with file
//! descriptors attached to a message's first byte (`SCM_RIGHTS`).
//!
//! WHY JSON: the link carries a few messages per second (setup, port
//! changes, device descriptors, counters), never URBs; readable messages are
//! worth more than the bytes. Everything the worker sends is hostile to the
//! monitor (a worker may be compromised): frames are bounded, reads time out,
//! and a malformed frame ends the link, which ends the worker.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use pvusb_xen::fdpass::{recv_with_fds, send_with_fds, MAX_FDS};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest frame a worker may send (counters of 31 ports fit many times).
pub const MAX_FROM_WORKER: usize = 64 << 10;

/// Largest frame the monitor sends (the setup carries the device rules).
pub const MAX_TO_WORKER: usize = 1 << 20;

/// How long a frame may take to arrive once its first byte did.
const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer closed the link.
    #[error("the other side closed the link")]
    Closed,
    /// A frame longer than allowed.
    #[error("frame of {0} bytes is over the limit")]
    TooLong(usize),
    /// A frame that is not a message.
    #[error("malformed message")]
    Malformed(#[source] serde_json::Error),
    /// A message with more descriptors than it may carry.
    #[error("{got} descriptors where {want} were expected")]
    Descriptors {
        /// Received.
        got: usize,
        /// Expected.
        want: usize,
    },
    /// The socket failed.
    #[error("link socket")]
    Io(#[source] io::Error),
}

impl From<io::Error> for LinkError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset => LinkError::Closed,
            _ => LinkError::Io(e),
        }
    }
}

/// Sends one message with `fds` attached.
pub fn send<T: Serialize>(sock: &UnixStream, msg: &T, fds: &[RawFd]) -> Result<(), LinkError> {
    if fds.len() > MAX_FDS {
        return Err(LinkError::Descriptors {
            got: fds.len(),
            want: MAX_FDS,
        });
    }
    let body = serde_json::to_vec(msg).map_err(LinkError::Malformed)?;
    let len = u32::try_from(body.len()).map_err(|_| LinkError::TooLong(body.len()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    send_with_fds(sock, &frame, fds)?;
    Ok(())
}

/// Sends one message with owned descriptors (closed here after sending).
pub fn send_owned<T: Serialize>(
    sock: &UnixStream,
    msg: &T,
    fds: Vec<OwnedFd>,
) -> Result<(), LinkError> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    send(sock, msg, &raw)
}

/// Receives one message of at most `max` bytes and its descriptors. Blocks
/// until its first byte (or the socket's own read timeout, as an `Io`
/// error of kind `WouldBlock`/`TimedOut`); then the rest must follow within
/// two seconds (`FRAME_TIMEOUT`).
pub fn recv<T: DeserializeOwned>(
    sock: &UnixStream,
    max: usize,
) -> Result<(T, Vec<OwnedFd>), LinkError> {
    let mut header = [0u8; 4];
    let fds = recv_with_fds(sock, &mut header)?;
    let len = usize::try_from(u32::from_le_bytes(header)).unwrap_or(usize::MAX);
    if len > max {
        return Err(LinkError::TooLong(len));
    }
    let mut body = vec![0u8; len];
    let before = sock.read_timeout().map_err(LinkError::Io)?;
    sock.set_read_timeout(Some(FRAME_TIMEOUT))
        .map_err(LinkError::Io)?;
    let read = (&*sock).read_exact(&mut body);
    sock.set_read_timeout(before).map_err(LinkError::Io)?;
    read?;
    let msg = serde_json::from_slice(&body).map_err(LinkError::Malformed)?;
    Ok((msg, fds))
}

/// Whether a receive error is only the socket's read timeout.
pub fn is_timeout(e: &LinkError) -> bool {
    matches!(e, LinkError::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn messages_and_descriptors_cross_and_hostile_frames_end_the_link() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        send(
            &a,
            &vec!["x".to_owned(), "y".to_owned()],
            &[file.as_raw_fd()],
        )
        .unwrap();
        let (msg, fds): (Vec<String>, _) = recv(&b, 1024).unwrap();
        assert_eq!(msg, ["x", "y"]);
        assert_eq!(fds.len(), 1);

        // Over the limit: refused before any allocation of that size.
        (&a).write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(matches!(
            recv::<String>(&b, 1024),
            Err(LinkError::TooLong(_))
        ));

        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&3u32.to_le_bytes()).unwrap();
        (&a).write_all(b"{{{").unwrap();
        assert!(matches!(
            recv::<String>(&b, 1024),
            Err(LinkError::Malformed(_))
        ));

        drop(a);
        assert!(matches!(recv::<String>(&b, 1024), Err(LinkError::Closed)));
    }

    #[test]
    fn a_frame_that_stops_half_way_times_out() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&10u32.to_le_bytes()).unwrap();
        (&a).write_all(b"{").unwrap();
        let started = std::time::Instant::now();
        assert!(recv::<String>(&b, 1024).is_err());
        assert!(started.elapsed() >= FRAME_TIMEOUT);
        drop(a);
    }
}
