//! Handing a device's node from the monitor to a confined worker.
//!
//! Before the descriptor leaves the monitor it is prepared so the worker
//! needs no privilege the monitor would rather keep:
//! 1. every interface of the active configuration is taken from whatever
//!    host driver still holds it and claimed on the descriptor
//!    (`USBDEVFS_DISCONNECT_CLAIM`). That is the policy of `claims.rs`,
//!    the toolstack's sysfs unbinding being the rule and this the safety
//!    net. Detach and claim are one step, so no driver binds in between;
//!    claims belong to the open file, not to the process, so the worker
//!    receives them with the descriptor, and its own claims of those
//!    interfaces succeed as no-ops.
//! 2. the descriptor's usbfs privileges are dropped for good
//!    (`USBDEVFS_DROP_PRIVILEGES`, Linux 4.10), every interface allowed.
//!
//! # What a descriptor with dropped privileges can still do
//!
//! From `drivers/usb/core/devio.c` (`usbdev_do_ioctl` and the `proc_*`
//! functions that test `ps->privileges_dropped`):
//! * refused with `EACCES`: `USBDEVFS_IOCTL` altogether (so detaching and
//!   re-attaching kernel drivers, and talking to a bound driver),
//!   `USBDEVFS_DISCONNECT_CLAIM` of an interface a driver holds, claiming
//!   an interface outside the mask (32 bits: an interface numbered 32 or
//!   more is usable only if the monitor claimed it), and `USBDEVFS_RESET`
//!   while a driver or another program holds an interface;
//! * unchanged: transfers, claiming and releasing interfaces, asking which
//!   driver holds one, SET_INTERFACE, CLEAR_HALT, and SET_CONFIGURATION
//!   (refused, as always, while anyone holds an interface).
//!
//! What that means for the worker's code paths:
//! * open (`claims.rs`): works. A host driver that binds after the handover
//!   (a device the kernel configured only after the monitor's wait below)
//!   cannot be detached: the open fails with [`UsbError::DriverBound`], and
//!   opening it again through the monitor detaches it again.
//! * SET_CONFIGURATION (`control_worker.rs`): works, but the kernel then
//!   offers the new configuration's interfaces to host drivers, and one that
//!   binds cannot be detached: the request completes with an error and a
//!   warning names the interface. (Re-setting the active configuration of a
//!   single-configuration device is skipped, so the usual case never
//!   reprobes.)
//! * SET_INTERFACE, CLEAR_HALT: unchanged.
//! * reset (`device.rs`): works. libusb releases the claims, resets, and
//!   re-claims with `USBDEVFS_DISCONNECT_CLAIM`; only a host driver that
//!   bound during the reset makes it fail ([`UsbError::DriverBound`]).
//! * giving the device back (`claims.rs`): the worker detached nothing, so
//!   it re-attaches nothing; drivers the monitor detached here stay detached
//!   (the toolstack rebinds what it unbound).
//!
//! On a kernel without `USBDEVFS_DROP_PRIVILEGES` (before 4.10) the
//! descriptor passes unrestricted, reported once. The residual risk: a
//! compromised worker can then detach and bind host drivers on that one
//! device's interfaces (`USBDEVFS_IOCTL`), e.g. bind a host input driver to
//! a guest-controlled device, or reach a bound driver's ioctls. It still
//! holds no other node and cannot open one.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use rusb::Context;

use super::claims::OPEN_SETTLE;
use super::ffi::usbfs;
use super::status::usb_error;
use super::LibusbHost;
use crate::usb::error::UsbError;
use crate::usb::opener::{NodeOpener, OpenedNode};
use crate::usb::proto::BusId;

/// Every interface the kernel's 32-bit mask can name.
const ALL_INTERFACES: u32 = u32::MAX;
/// Pause between looks at a device the kernel has not configured yet.
const SETTLE_POLL: Duration = Duration::from_millis(20);
/// Set once a kernel that cannot drop privileges was reported.
static UNRESTRICTED_REPORTED: AtomicBool = AtomicBool::new(false);

/// The daemon's opener for its worker processes: each node is prepared for
/// a confined worker ([`LibusbHost::open_node_for_worker`]).
impl NodeOpener for LibusbHost {
    fn open_node(&self, busid: &BusId) -> Result<OpenedNode, UsbError> {
        self.open_node_for_worker(busid)
    }
}

impl LibusbHost {
    /// Opens the device at `busid` for a confined worker: as the in-process
    /// opener does, then takes its interfaces from host drivers and drops
    /// the descriptor's privileges (see the module documentation for what
    /// the worker can still do with it).
    ///
    /// May block up to two seconds for a device the kernel has not
    /// configured yet (one plugged in a moment ago).
    pub fn open_node_for_worker(&self, busid: &BusId) -> Result<OpenedNode, UsbError> {
        let (device, node) = self.discovery.open(busid)?;
        let interfaces = active_interfaces(&device, *busid)?;
        take_interfaces(*busid, node.fd.as_fd(), &interfaces)?;
        restrict(*busid, node.fd.as_fd())?;
        Ok(node)
    }
}

/// The interface numbers of the active configuration, after waiting (up to
/// [`OPEN_SETTLE`]) for the kernel to configure a device plugged in a moment
/// ago: the drivers it binds then could not be detached by the worker.
/// Empty when the device stays unconfigured.
fn active_interfaces(device: &rusb::Device<Context>, busid: BusId) -> Result<Vec<u8>, UsbError> {
    let deadline = Instant::now() + OPEN_SETTLE;
    loop {
        // The daemon's context reads the active configuration from sysfs
        // on each call, so a configuration the kernel sets meanwhile shows.
        match device.active_config_descriptor() {
            Ok(config) => return Ok(config.interfaces().map(|i| i.number()).collect()),
            Err(rusb::Error::NotFound) if Instant::now() < deadline => {
                std::thread::sleep(SETTLE_POLL);
            }
            Err(rusb::Error::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(usb_error(busid, "read configuration", e)),
        }
    }
}

/// Detaches host drivers from and claims `interfaces` on `node`. Claims
/// made before a failure are released when the caller drops the node.
fn take_interfaces(busid: BusId, node: BorrowedFd<'_>, interfaces: &[u8]) -> Result<(), UsbError> {
    for &interface in interfaces {
        // Only to name the driver in the log.
        let driver = usbfs::driver_of(node, interface).ok().flatten();
        match usbfs::disconnect_and_claim(node, interface) {
            Ok(()) => {
                if let Some(driver) = driver {
                    tracing::warn!(%busid, interface, driver, "detached a host driver the toolstack left bound");
                }
            }
            // The configuration changed meanwhile: the worker claims what is there.
            Err(Errno::EINVAL | Errno::ENOENT) => {
                tracing::debug!(%busid, interface, "interface gone before it could be claimed");
            }
            // A kernel from before 2012. It has no DROP_PRIVILEGES (4.10)
            // either, so the worker's descriptor stays unrestricted and its
            // own claims detach drivers.
            Err(Errno::ENOTTY) => return Ok(()),
            // Another program holds it through usbfs: never taken from it.
            Err(Errno::EBUSY) => return Err(UsbError::Busy(busid)),
            Err(Errno::ENODEV) => return Err(UsbError::NoDevice(busid)),
            Err(e) => {
                return Err(UsbError::Io {
                    busid,
                    op: "detach and claim interface",
                    detail: format!("interface {interface}: {e}"),
                })
            }
        }
    }
    Ok(())
}

/// Drops `node`'s usbfs privileges; on a kernel that cannot, says so once
/// and leaves the node unrestricted (the module documentation has the risk).
fn restrict(busid: BusId, node: BorrowedFd<'_>) -> Result<(), UsbError> {
    match usbfs::drop_privileges(node, ALL_INTERFACES) {
        Ok(()) => Ok(()),
        Err(Errno::ENOTTY | Errno::EINVAL) => {
            if !UNRESTRICTED_REPORTED.swap(true, Ordering::Relaxed) {
                tracing::warn!(%busid, "the kernel cannot drop a usbfs node's privileges (Linux < 4.10): workers get device nodes unrestricted");
            }
            Ok(())
        }
        Err(Errno::ENODEV) => Err(UsbError::NoDevice(busid)),
        Err(e) => Err(UsbError::Io {
            busid,
            op: "drop the node's privileges",
            detail: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a kernel without the ioctls answers (`ENOTTY`, as any
    /// non-usbfs descriptor does) leaves the node usable, unrestricted.
    #[test]
    fn old_kernels_pass_the_node_unrestricted() {
        let busid: BusId = "1-2".parse().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(restrict(busid, null.as_fd()), Ok(()));
        assert_eq!(restrict(busid, null.as_fd()), Ok(()));
        assert_eq!(take_interfaces(busid, null.as_fd(), &[0, 1]), Ok(()));
        assert_eq!(take_interfaces(busid, null.as_fd(), &[]), Ok(()));
    }
}
