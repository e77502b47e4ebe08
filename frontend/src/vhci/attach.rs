//! Attaching a bridge's socket to the guest kernel's vhci-hcd through
//! sysfs: find a free port of the right hub in `status`, write
//! `"<port> <sockfd> <devid> <speed>"` to `attach`, the port to `detach`.
//!
//! WHY a trait ([`VhciPorts`]): the daemon's per-port logic is tested
//! against a fake, and [`VhciHcd`] itself against a plain directory holding
//! `status` texts in the kernel's format, so neither needs the module.
//!
//! The kernel's side (`drivers/usb/usbip/vhci_sysfs.c`, `vhci.h`):
//! * `status_show` prints the header
//!   `hub port sta spd dev      sockfd local_busid`, then `port_show_vhci`
//!   one line per port, `hs` ports of controller N first, then its `ss`
//!   ports; the port number is global (`N * VHCI_PORTS + i`). Controller 0
//!   is `status`, controller N > 0 `status.N`, all in `vhci_hcd.0`.
//! * `sta` is `enum usbip_device_status` in decimal: `VDEV_ST_NULL` (4)
//!   is a free port.
//! * `attach_store` parses `"%u %u %u %u"` (port, sockfd, devid, speed),
//!   takes its own reference to the socket (`sockfd_lookup`), picks the
//!   `ss` hub for `speed >= USB_SPEED_SUPER`, and answers `EBUSY` if the
//!   port was taken meanwhile. `detach_store` parses the port.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use pvusb_protocol::Speed;
use thiserror::Error;
use tracing::{debug, info};

/// Where the kernel puts vhci-hcd's first controller.
pub const SYSFS_PLATFORM: &str = "/sys/devices/platform/vhci_hcd.0";

/// Where kernels that made vhci-hcd a faux device put it.
pub const SYSFS_FAUX: &str = "/sys/devices/faux/vhci_hcd.0";

/// `VDEV_ST_NULL` (`include/uapi/linux/usbip.h`): no device on the port.
pub const VDEV_ST_NULL: u32 = 4;

/// The kernel's `enum usb_device_speed` (`include/uapi/linux/usb/ch9.h`),
/// the speed field of `attach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhciSpeed {
    /// `USB_SPEED_LOW`.
    Low = 1,
    /// `USB_SPEED_FULL`.
    Full = 2,
    /// `USB_SPEED_HIGH`.
    High = 3,
    /// `USB_SPEED_SUPER`.
    Super = 5,
}

impl VhciSpeed {
    /// The usbif speed of a connected device; `None` for no device.
    pub fn of(speed: Speed) -> Option<Self> {
        match speed {
            Speed::None => None,
            Speed::Low => Some(Self::Low),
            Speed::Full => Some(Self::Full),
            Speed::High => Some(Self::High),
        }
    }

    /// The hub whose ports take a device of this speed.
    pub fn hub(self) -> Hub {
        match self {
            Self::Super => Hub::Super,
            _ => Hub::High,
        }
    }
}

/// One of the two root hubs of each vhci controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hub {
    /// `hs`: low, full and high speed devices.
    High,
    /// `ss`: super speed devices.
    Super,
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortLine {
    /// Its hub.
    pub hub: Hub,
    /// The global port number `attach` and `detach` take.
    pub port: u32,
    /// `enum usbip_device_status`; [`VDEV_ST_NULL`] is free.
    pub status: u32,
}

/// Why vhci-hcd could not be used.
#[derive(Debug, Error)]
pub enum AttachError {
    /// A write to `attach` or `detach` was refused.
    #[error("vhci-hcd refused `{value}` written to {path}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The device's speed has no vhci port (no device).
    #[error("no device to attach (speed none)")]
    NoSpeed,
    /// Every port of the hub is taken.
    #[error(
        "every vhci-hcd port for this speed is in use: detach one or load vhci-hcd with more ports"
    )]
    NoFreePort,
    /// The module is not loaded.
    #[error("vhci-hcd is not loaded: run `modprobe vhci-hcd`")]
    NotLoaded,
    /// Reading `status` failed.
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    /// A `status` line is not in the kernel's format.
    #[error("unexpected line in {path}: {line:?}")]
    Status {
        /// The file.
        path: PathBuf,
        /// The line.
        line: String,
    },
}

/// What the daemon needs from vhci-hcd, to be faked in tests.
pub trait VhciPorts: Send + Sync {
    /// Attaches the stream socket `sock` on a free port of the hub for
    /// `speed` and returns that port. The kernel takes its own reference
    /// to the socket: the caller may close its copy afterwards.
    fn attach(
        &self,
        sock: BorrowedFd<'_>,
        devid: u32,
        speed: VhciSpeed,
    ) -> Result<u32, AttachError>;
    /// Detaches `port` (the kernel then closes its end of the socket).
    fn detach(&self, port: u32) -> Result<(), AttachError>;
}

/// Shared: a test keeps a handle on the fake the server uses.
impl<T: VhciPorts + ?Sized> VhciPorts for std::sync::Arc<T> {
    fn attach(
        &self,
        sock: BorrowedFd<'_>,
        devid: u32,
        speed: VhciSpeed,
    ) -> Result<u32, AttachError> {
        (**self).attach(sock, devid, speed)
    }

    fn detach(&self, port: u32) -> Result<(), AttachError> {
        (**self).detach(port)
    }
}

/// The vhci-hcd sysfs directory (`vhci_hcd.0`).
#[derive(Debug, Clone)]
pub struct VhciHcd {
    dir: PathBuf,
}

impl VhciHcd {
    /// The loaded module's directory, or [`AttachError::NotLoaded`].
    pub fn open() -> Result<Self, AttachError> {
        [SYSFS_PLATFORM, SYSFS_FAUX]
            .iter()
            .map(Path::new)
            .find(|d| d.join("attach").exists())
            .ok_or(AttachError::NotLoaded)
            .and_then(Self::at)
    }

    /// The directory `dir` (a fake one in tests); checks that it has
    /// `attach` and `status`.
    pub fn at(dir: &Path) -> Result<Self, AttachError> {
        if !dir.join("attach").exists() || !dir.join("status").exists() {
            return Err(AttachError::NotLoaded);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Every port of every controller: `status`, `status.1`, … in order.
    pub fn ports(&self) -> Result<Vec<PortLine>, AttachError> {
        let mut all = Vec::new();
        for n in 0u32.. {
            let path = match n {
                0 => self.dir.join("status"),
                n => self.dir.join(format!("status.{n}")),
            };
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if n > 0 && e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(AttachError::Read(path, e)),
            };
            all.extend(parse_status(&text).map_err(|line| AttachError::Status {
                path: path.clone(),
                line,
            })?);
        }
        Ok(all)
    }

    fn write(&self, name: &str, value: &str) -> Result<(), AttachError> {
        let path = self.dir.join(name);
        // One write: sysfs stores take the whole value from one call.
        let result = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write(value.as_bytes()).map(|_| ()));
        result.map_err(|source| AttachError::Refused {
            path,
            value: value.to_owned(),
            source,
        })
    }
}

impl VhciPorts for VhciHcd {
    fn attach(
        &self,
        sock: BorrowedFd<'_>,
        devid: u32,
        speed: VhciSpeed,
    ) -> Result<u32, AttachError> {
        let hub = speed.hub();
        let free: Vec<u32> = self
            .ports()?
            .into_iter()
            .filter(|p| p.hub == hub && p.status == VDEV_ST_NULL)
            .map(|p| p.port)
            .collect();
        for port in free {
            let value = format!("{port} {} {devid} {}", sock.as_raw_fd(), speed as u32);
            match self.write("attach", &value) {
                Ok(()) => {
                    info!(port, devid, ?speed, "attached to vhci-hcd");
                    return Ok(port);
                }
                // Taken since `status` was read (another attacher): next.
                Err(AttachError::Refused { source, .. })
                    if source.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) =>
                {
                    debug!(port, "vhci port taken meanwhile, trying the next");
                }
                Err(e) => return Err(e),
            }
        }
        Err(AttachError::NoFreePort)
    }

    fn detach(&self, port: u32) -> Result<(), AttachError> {
        self.write("detach", &port.to_string())
    }
}

/// The port lines of one `status` text (header skipped), or the first
/// line that is not in the kernel's format.
pub fn parse_status(text: &str) -> Result<Vec<PortLine>, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h.starts_with("hub ") => {}
        Some(h) => return Err(h.to_owned()),
        None => return Ok(Vec::new()),
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = line.split_whitespace();
            let hub = match fields.next() {
                Some("hs") => Hub::High,
                Some("ss") => Hub::Super,
                _ => return Err(line.to_owned()),
            };
            let number = |f: Option<&str>| f.and_then(|s| s.parse::<u32>().ok());
            match (number(fields.next()), number(fields.next())) {
                (Some(port), Some(status)) => Ok(PortLine { hub, port, status }),
                _ => Err(line.to_owned()),
            }
        })
        .collect()
}

/// A `devid` for `attach`: vhci only echoes it in `CMD_SUBMIT`, which the
/// bridge ignores, so any stable value does; this one reads like usbip's
/// `(busnum << 16) | devnum` with the controller as bus and the port as
/// device.
pub fn devid(controller: u32, port: u8) -> u32 {
    ((controller.wrapping_add(1) & 0xffff) << 16) | u32::from(port)
}
