//! The usbfs ioctls the monitor issues on a device node before it hands the
//! node to a confined worker (see `handoff`): which driver holds an
//! interface, detach-and-claim, and dropping the node's privileges. libusb
//! offers none of them on a bare descriptor.
//!
//! Layouts and request codes are those of `<linux/usbdevice_fs.h>`; the
//! kernel matches a request code including its encoded size, so a wrong
//! struct size fails with `ENOTTY` instead of being misread.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::raw::c_uint;

use nix::errno::Errno;

/// `USBDEVFS_MAXDRIVERNAME + 1`: a driver name and its NUL.
const DRIVER_NAME_LEN: usize = 256;

/// `USBDEVFS_DISCONNECT_CLAIM_EXCEPT_DRIVER`: detach any driver but the one named.
const DISCONNECT_CLAIM_EXCEPT_DRIVER: c_uint = 0x02;

/// `struct usbdevfs_getdriver`.
#[repr(C)]
struct GetDriver {
    interface: c_uint,
    driver: [u8; DRIVER_NAME_LEN],
}

/// `struct usbdevfs_disconnect_claim`.
#[repr(C)]
struct DisconnectClaim {
    interface: c_uint,
    flags: c_uint,
    driver: [u8; DRIVER_NAME_LEN],
}

// `USBDEVFS_GETDRIVER` is declared `_IOW` although the kernel writes the name
// back: the "bad" form passes the declared code with a mutable pointer.
nix::ioctl_readwrite_bad!(
    raw_get_driver,
    nix::request_code_write!(b'U', 8, size_of::<GetDriver>()),
    GetDriver
);
// `USBDEVFS_DISCONNECT_CLAIM` is declared `_IOR`; the kernel only reads it.
nix::ioctl_read!(raw_disconnect_claim, b'U', 27, DisconnectClaim);
nix::ioctl_write_ptr!(raw_drop_privileges, b'U', 30, u32);

/// The name of the driver bound to `interface` (`"usbfs"` when a program
/// holds it), `None` when none is (`ENODATA`).
pub(in crate::usb::libusb) fn driver_of(
    node: BorrowedFd<'_>,
    interface: u8,
) -> nix::Result<Option<String>> {
    let mut query = GetDriver {
        interface: c_uint::from(interface),
        driver: [0; DRIVER_NAME_LEN],
    };
    // SAFETY: `node` is open for the call; `query` is a valid, writable
    // `usbdevfs_getdriver` whose size the request code encodes, so whatever
    // driver answers the code reads and writes only inside it.
    match unsafe { raw_get_driver(node.as_raw_fd(), &mut query) } {
        Ok(_) => {}
        Err(Errno::ENODATA) => return Ok(None),
        Err(e) => return Err(e),
    }
    // The kernel NUL-terminates (strscpy); a name without one is cut at the end.
    let name = CStr::from_bytes_until_nul(&query.driver)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(&query.driver).into_owned());
    Ok(Some(name))
}

/// Detaches whatever driver other than usbfs is bound to `interface` and
/// claims the interface for this open file, in one step under the device's
/// lock (`USBDEVFS_DISCONNECT_CLAIM`, Linux 3.x), so no driver can bind in
/// between. An interface another program holds through usbfs is refused
/// (`EBUSY`), never taken from it.
pub(in crate::usb::libusb) fn disconnect_and_claim(
    node: BorrowedFd<'_>,
    interface: u8,
) -> nix::Result<()> {
    let mut request = DisconnectClaim {
        interface: c_uint::from(interface),
        flags: DISCONNECT_CLAIM_EXCEPT_DRIVER,
        driver: [0; DRIVER_NAME_LEN],
    };
    if let Some(name) = request.driver.get_mut(..5) {
        name.copy_from_slice(b"usbfs");
    }
    // SAFETY: `node` is open for the call; `request` is a valid, initialised
    // `usbdevfs_disconnect_claim` whose size the request code encodes, so
    // whatever driver answers the code accesses only this value.
    unsafe { raw_disconnect_claim(node.as_raw_fd(), &mut request) }.map(drop)
}

/// Drops the open file's usbfs privileges for good
/// (`USBDEVFS_DROP_PRIVILEGES`, Linux 4.10): only interfaces in
/// `allowed_interfaces` (bit n = interface n; the kernel's mask has 32 bits)
/// can be claimed from now on, and detaching drivers is refused. What else
/// changes is in `handoff`'s module documentation.
pub(in crate::usb::libusb) fn drop_privileges(
    node: BorrowedFd<'_>,
    allowed_interfaces: u32,
) -> nix::Result<()> {
    // SAFETY: `node` is open for the call; the pointer is to a live `u32`,
    // the size the request code encodes, which the kernel only reads.
    unsafe { raw_drop_privileges(node.as_raw_fd(), &allowed_interfaces) }.map(drop)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// The structs match the kernel's, and so do the request codes built
    /// from them (values from `<linux/usbdevice_fs.h>` on x86 and arm).
    #[test]
    // CAST: ioctl request numbers are 32-bit; nix types them c_ulong (glibc) or
    // c_int (musl), and `as u32` keeps exactly those 32 bits either way.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn layouts_and_request_codes_match_the_kernel() {
        assert_eq!(size_of::<GetDriver>(), 260);
        assert_eq!(size_of::<DisconnectClaim>(), 264);
        if cfg!(any(
            target_arch = "x86_64",
            target_arch = "x86",
            target_arch = "aarch64",
            target_arch = "arm"
        )) {
            let get_driver = nix::request_code_write!(b'U', 8, 260);
            let disconnect_claim = nix::request_code_read!(b'U', 27, 264);
            let drop_privileges = nix::request_code_write!(b'U', 30, 4);
            assert_eq!(get_driver as u32, 0x4104_5508);
            assert_eq!(disconnect_claim as u32, 0x8108_551b);
            assert_eq!(drop_privileges as u32, 0x4004_551e);
        }
    }

    /// On anything but a usbfs node the helpers return an error value
    /// (`ENOTTY`), never panic.
    #[test]
    fn non_usbfs_descriptors_are_refused() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let file = tempfile::tempfile().unwrap();
        let (pipe, _writer) = nix::unistd::pipe().unwrap();
        for fd in [null.as_fd(), file.as_fd(), pipe.as_fd()] {
            assert_eq!(drop_privileges(fd, u32::MAX), Err(Errno::ENOTTY));
            assert_eq!(disconnect_and_claim(fd, 0), Err(Errno::ENOTTY));
            assert_eq!(driver_of(fd, 0), Err(Errno::ENOTTY));
        }
    }
}
