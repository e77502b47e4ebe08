//! The real Linux implementation over `/dev/xen/gntdev`, `/dev/xen/gntalloc` and
//! `/dev/xen/evtchn`.
//!
//! Why userspace devices and not hypercalls: they are what libxengnttab and
//! libxenevtchn use, they work in dom0 and in driver domains, and the kernel keeps
//! the bookkeeping (deferred grant release, event masking) that a daemon would
//! otherwise have to get right itself.
//!
//! `unsafe` lives only in `abi` (ioctls) and in the crate's `mmap` module.

mod abi;
mod evtchn;
mod gntalloc;
mod gntdev;

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::GrantError;

pub use evtchn::{LinuxEventChannel, LinuxEventChannels, EVTCHN_PATH};
pub use gntalloc::{GntallocPages, LinuxGrantAllocator, GNTALLOC_PATH};
pub use gntdev::{GntdevMapping, LinuxGrantMapper, GNTDEV_PATH};

/// Open a `/dev/xen` device read-write (close-on-exec, as std always does).
fn open_device(path: &Path, nonblocking: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = if nonblocking { libc::O_NONBLOCK } else { 0 };
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
}

/// The explanation for a missing device: it is the common case off Xen, so the
/// message says what to do rather than just "No such file".
fn missing_device(path: &Path) -> String {
    format!(
        "{} does not exist: not running on Xen, or the Xen device driver module is not loaded",
        path.display()
    )
}

/// Open a grant device (gntdev, gntalloc) for sharing between a handle and
/// the mappings that outlive it; a missing device gets [`missing_device`]'s text.
fn open_grant_device(path: &Path, op: &'static str) -> Result<Arc<File>, GrantError> {
    match open_device(path, false) {
        Ok(f) => Ok(Arc::new(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(GrantError::Unavailable(missing_device(path)))
        }
        Err(source) => Err(GrantError::Os { op, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventChannels, EvtchnError, GrantError};

    #[test]
    fn missing_devices_are_reported_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gntdev");
        assert!(
            matches!(LinuxGrantMapper::open_at(&p), Err(GrantError::Unavailable(m)) if m.contains("gntdev"))
        );
        let p = dir.path().join("gntalloc");
        assert!(matches!(
            LinuxGrantAllocator::open_at(&p),
            Err(GrantError::Unavailable(_))
        ));
        let p = dir.path().join("evtchn");
        let e = LinuxEventChannels::open_at(&p);
        assert!(matches!(e, Err(EvtchnError::Unavailable(_))));
    }

    #[test]
    fn a_device_that_is_not_xen_fails_with_an_os_error() {
        // /dev/null opens fine but rejects every ioctl: the error must be a value.
        let ch = LinuxEventChannels::open_at(Path::new("/dev/null")).unwrap();
        assert!(matches!(ch.alloc_unbound(1), Err(EvtchnError::Os { .. })));
        assert!(matches!(
            ch.bind_interdomain(1, 5),
            Err(EvtchnError::Os { .. })
        ));
        let g = LinuxGrantAllocator::open_at(Path::new("/dev/null")).unwrap();
        use crate::GrantAllocator;
        assert!(matches!(g.alloc(1, 1, true), Err(GrantError::Os { .. })));
        let m = LinuxGrantMapper::open_at(Path::new("/dev/null")).unwrap();
        use crate::{CopySeg, GrantMapper};
        assert!(matches!(m.map(1, &[8], true), Err(GrantError::Os { .. })));
        let seg = CopySeg::new(8, 0, 4);
        assert!(matches!(
            m.copy_from_guest(1, &[seg], &mut [0; 4]),
            Err(GrantError::Os { .. })
        ));
    }

    #[test]
    fn invalid_copy_segments_are_refused_before_the_ioctl() {
        let m = LinuxGrantMapper::open_at(Path::new("/dev/null")).unwrap();
        use crate::{CopySeg, GrantMapper};
        let crossing = CopySeg::new(8, 4000, 200);
        assert!(matches!(
            m.copy_from_guest(1, &[crossing], &mut [0; 200]),
            Err(GrantError::BadSegment(_))
        ));
        let seg = CopySeg::new(8, 0, 10);
        assert!(matches!(
            m.copy_to_guest(1, &[seg], &[0; 9]),
            Err(GrantError::BadSegment(_))
        ));
        assert!(matches!(
            m.map(1, &[], false),
            Err(GrantError::BadSegment(_))
        ));
    }
}
