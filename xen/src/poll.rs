//! Waiting for an fd to become readable, with a deadline that survives `EINTR`,
//! optionally watching a second fd for the peer hanging up.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Why only `POLLHUP`: the peer closing a UNIX stream socket (or the server
/// shutting it down) raises `POLLHUP` on our end, which poll reports unasked;
/// `POLLRDHUP` would be redundant and nix cannot even decode it in `revents`.
const HANGUP: PollFlags = PollFlags::POLLHUP
    .union(PollFlags::POLLERR)
    .union(PollFlags::POLLNVAL);

/// What [`poll_readable`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ready {
    /// The main fd has data.
    pub readable: bool,
    /// The liveness fd reported a hang-up (or an error).
    pub hangup: bool,
}

/// Milliseconds to wait, rounded up so a short timeout still waits.
fn to_poll_timeout(left: Duration) -> PollTimeout {
    let ms = left.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(i32::try_from(ms).unwrap_or(i32::MAX)).unwrap_or(PollTimeout::MAX)
}

/// Wait until `fd` is readable, `link` (if any) hung up, or `timeout` passed.
pub(crate) fn poll_readable(
    fd: BorrowedFd<'_>,
    link: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> io::Result<Ready> {
    let deadline = timeout.map(|t| Instant::now().checked_add(t));
    loop {
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLIN),
            PollFd::new(link.unwrap_or(fd), PollFlags::empty()),
        ];
        let n = if link.is_some() { 2 } else { 1 };
        let t = match deadline {
            None | Some(None) => PollTimeout::NONE,
            Some(Some(d)) => to_poll_timeout(d.saturating_duration_since(Instant::now())),
        };
        match poll(&mut fds[..n], t) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let rev = |p: &PollFd<'_>| p.revents().unwrap_or(PollFlags::empty());
        let readable = rev(&fds[0]).intersects(PollFlags::POLLIN | HANGUP);
        let hangup = n == 2 && rev(&fds[1]).intersects(HANGUP);
        if readable || hangup {
            return Ok(Ready { readable, hangup });
        }
        match deadline {
            Some(Some(d)) if Instant::now() >= d => return Ok(Ready { readable, hangup }),
            _ => {}
        }
    }
}

/// Whether `link` has hung up right now (no waiting).
pub(crate) fn hung_up(link: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [PollFd::new(link, PollFlags::empty())];
    loop {
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(fds[0]
        .revents()
        .unwrap_or(PollFlags::empty())
        .intersects(HANGUP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn hangups_and_timeouts_are_reported() {
        let (a, b) = UnixStream::pair().unwrap();
        let (c, d) = UnixStream::pair().unwrap();
        let r = poll_readable(a.as_fd(), Some(c.as_fd()), Some(Duration::from_millis(1))).unwrap();
        assert_eq!(
            r,
            Ready {
                readable: false,
                hangup: false
            }
        );
        assert!(!hung_up(c.as_fd()).unwrap());
        drop(d);
        assert!(hung_up(c.as_fd()).unwrap());
        let r = poll_readable(a.as_fd(), Some(c.as_fd()), None).unwrap();
        assert_eq!(
            r,
            Ready {
                readable: false,
                hangup: true
            }
        );
        drop(b);
        let r = poll_readable(a.as_fd(), None, None).unwrap();
        assert!(r.readable);
    }
}
