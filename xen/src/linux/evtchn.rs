//! Event channels through `/dev/xen/evtchn`, one open device per channel so that
//! each channel has its own pollable fd.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::abi;
use crate::{poll_readable, DomId, EventChannel, EventChannels, EvtchnError, EvtchnPort};

/// Where the event-channel device lives.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";

/// Opens a fresh evtchn device for one channel: a confined backend worker
/// cannot open device nodes, so its monitor opens them and passes the
/// descriptor ([`LinuxEventChannels::with_device_source`]).
pub type EvtchnDeviceSource = Arc<dyn Fn() -> std::io::Result<File> + Send + Sync>;

/// [`EventChannels`] over `/dev/xen/evtchn`.
#[derive(Clone)]
pub struct LinuxEventChannels {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Path(PathBuf),
    Opener(EvtchnDeviceSource),
}

impl std::fmt::Debug for LinuxEventChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Path(p) => f
                .debug_struct("LinuxEventChannels")
                .field("path", p)
                .finish(),
            Source::Opener(_) => f.write_str("LinuxEventChannels(brokered)"),
        }
    }
}

impl LinuxEventChannels {
    /// Check that [`EVTCHN_PATH`] can be opened; channels open it again each.
    pub fn open() -> Result<Self, EvtchnError> {
        Self::open_at(Path::new(EVTCHN_PATH))
    }

    /// Use the evtchn device at `path`.
    pub fn open_at(path: &Path) -> Result<Self, EvtchnError> {
        open_evtchn(path)?;
        Ok(Self {
            source: Source::Path(path.to_owned()),
        })
    }

    /// Channels on devices that `source` opens (one per channel, so that
    /// closing a channel unbinds it). The file must be an evtchn device
    /// opened read-write; it is switched to non-blocking here.
    pub fn with_device_source(source: EvtchnDeviceSource) -> Self {
        Self {
            source: Source::Opener(source),
        }
    }

    fn device(&self) -> Result<File, EvtchnError> {
        match &self.source {
            Source::Path(p) => open_evtchn(p),
            Source::Opener(open) => {
                let file = open().map_err(|source| EvtchnError::Os {
                    op: "open evtchn through the monitor",
                    source,
                })?;
                nix::fcntl::fcntl(
                    file.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                )
                .map_err(|e| EvtchnError::Os {
                    op: "make evtchn non-blocking",
                    source: e.into(),
                })?;
                Ok(file)
            }
        }
    }
}

fn open_evtchn(path: &Path) -> Result<File, EvtchnError> {
    match super::open_device(path, true) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(EvtchnError::Unavailable(super::missing_device(path)))
        }
        Err(source) => Err(EvtchnError::Os {
            op: "open evtchn",
            source,
        }),
    }
}

impl EventChannels for LinuxEventChannels {
    type Channel = LinuxEventChannel;

    fn alloc_unbound(&self, peer: DomId) -> Result<LinuxEventChannel, EvtchnError> {
        let dev = self.device()?;
        let port =
            abi::evtchn_bind_unbound(dev.as_fd(), peer).map_err(|source| EvtchnError::Os {
                op: "evtchn bind unbound port",
                source,
            })?;
        Ok(LinuxEventChannel { dev, port })
    }

    fn bind_interdomain(
        &self,
        peer: DomId,
        remote_port: EvtchnPort,
    ) -> Result<LinuxEventChannel, EvtchnError> {
        let dev = self.device()?;
        match abi::evtchn_bind_interdomain(dev.as_fd(), peer, remote_port) {
            Ok(port) => Ok(LinuxEventChannel { dev, port }),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {
                Err(EvtchnError::BadPort {
                    domid: peer,
                    port: remote_port,
                })
            }
            Err(source) => Err(EvtchnError::Os {
                op: "evtchn bind interdomain",
                source,
            }),
        }
    }
}

/// One bound port on its own `/dev/xen/evtchn` fd (non-blocking). Unbound on drop.
#[derive(Debug)]
pub struct LinuxEventChannel {
    dev: File,
    port: EvtchnPort,
}

impl LinuxEventChannel {
    /// Read pending ports and unmask ours. The driver masks a port when it fires
    /// and queues its number for reading; writing the number back unmasks it.
    fn consume(&self) -> Result<bool, EvtchnError> {
        let mut buf = [0u8; 4 * 16];
        let n = match (&self.dev).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(false),
            Err(source) => {
                return Err(EvtchnError::Os {
                    op: "read evtchn",
                    source,
                })
            }
        };
        // Only our port is bound on this fd, but check rather than trust.
        let ours = buf[..n - n % 4]
            .chunks_exact(4)
            .any(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) == self.port);
        if ours {
            (&self.dev)
                .write_all(&self.port.to_ne_bytes())
                .map_err(|source| EvtchnError::Os {
                    op: "unmask evtchn",
                    source,
                })?;
        }
        Ok(ours)
    }
}

impl AsFd for LinuxEventChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dev.as_fd()
    }
}

impl EventChannel for LinuxEventChannel {
    fn port(&self) -> EvtchnPort {
        self.port
    }

    fn notify(&self) -> Result<(), EvtchnError> {
        abi::evtchn_notify(self.dev.as_fd(), self.port).map_err(|source| EvtchnError::Os {
            op: "evtchn notify",
            source,
        })
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool, EvtchnError> {
        let ready =
            poll_readable(self.dev.as_fd(), None, timeout).map_err(|source| EvtchnError::Os {
                op: "poll evtchn",
                source,
            })?;
        if ready.readable {
            self.consume()
        } else {
            Ok(false)
        }
    }

    fn ack(&self) -> Result<bool, EvtchnError> {
        self.consume()
    }
}

impl Drop for LinuxEventChannel {
    fn drop(&mut self) {
        // Closing the fd would unbind too; the explicit call makes a failure visible.
        if let Err(e) = abi::evtchn_unbind(self.dev.as_fd(), self.port) {
            tracing::debug!(error = %e, port = self.port, "evtchn unbind failed");
        }
    }
}
