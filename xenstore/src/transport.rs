//! The byte stream under a xenstore connection: a UNIX socket to xenstored (or
//! to the embedded server, or to a filtering proxy) or the xenbus character
//! device. Shared by the client and the proxy, which both open "the same
//! xenstore" from a path.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// A socket to xenstored or the xenbus character device.
#[derive(Debug)]
pub(crate) enum Transport {
    Socket(UnixStream),
    Device(File),
}

impl Transport {
    /// Connects to `path` if it is a socket, else opens it read-write as a
    /// device (`/dev/xen/xenbus`); both speak the same protocol.
    pub(crate) fn open(path: &Path) -> std::io::Result<Transport> {
        let meta = std::fs::metadata(path)?;
        if meta.file_type().is_socket() {
            Ok(Transport::Socket(UnixStream::connect(path)?))
        } else {
            Ok(Transport::Device(
                OpenOptions::new().read(true).write(true).open(path)?,
            ))
        }
    }

    pub(crate) fn try_clone(&self) -> std::io::Result<Transport> {
        Ok(match self {
            Transport::Socket(s) => Transport::Socket(s.try_clone()?),
            Transport::Device(f) => Transport::Device(f.try_clone()?),
        })
    }

    /// Wakes every thread blocked on a socket (a device cannot be shut down;
    /// its readers must poll a wake-up fd as well).
    pub(crate) fn shutdown(&self) {
        if let Transport::Socket(s) = self {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Socket(s) => s.read(buf),
            Transport::Device(f) => f.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Transport::Socket(s) => s.write(buf),
            Transport::Device(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl AsFd for Transport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Transport::Socket(s) => s.as_fd(),
            Transport::Device(f) => f.as_fd(),
        }
    }
}
