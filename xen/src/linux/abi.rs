//! The Linux `/dev/xen` ioctl ABI: structs byte-exact with
//! `include/uapi/xen/{gntdev,gntalloc,evtchn}.h`, request numbers, and safe
//! wrappers around the `ioctl` calls.
//!
//! Why own definitions: the only crates that carry them are a `no_std` hypercall
//! crate and a GPL dlopen wrapper (ruled out by the project), and the handful we
//! need are easy to pin with size tests.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::ioctl::ioctl_num_type;

/// `_IOC(_IOC_NONE, ty, nr, size)` for the generic ioctl layout used on x86 and
/// Arm, the architectures Xen runs on: dir in bits 30-31 (`_IOC_NONE` = 0), size
/// in bits 16-29, type in bits 8-15, number in bits 0-7.
const fn ioc_none(ty: u8, nr: u8, size: usize) -> ioctl_num_type {
    ((size as ioctl_num_type) << 16) | ((ty as ioctl_num_type) << 8) | nr as ioctl_num_type
}

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GntdevGrantRef {
    pub domid: u32,
    pub gref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with its one-element array (the size the
/// request number encodes); the real argument is followed by `count - 1` more refs.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GntdevMapGrantRef {
    pub count: u32,
    pub pad: u32,
    pub index: u64,
    pub refs: [GntdevGrantRef; 1],
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GntdevUnmapGrantRef {
    pub index: u64,
    pub count: u32,
    pub pad: u32,
}

/// The `foreign` member of the unions of `struct gntdev_grant_copy_segment`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GntdevForeign {
    pub gref: u32,
    pub offset: u16,
    pub domid: u16,
}

/// `union { void *virt; struct { ... } foreign; }` of a copy segment.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) union GntdevCopyPtr {
    pub virt: *mut c_void,
    pub foreign: GntdevForeign,
}

/// `struct gntdev_grant_copy_segment`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GntdevGrantCopySegment {
    pub source: GntdevCopyPtr,
    pub dest: GntdevCopyPtr,
    pub len: u16,
    pub flags: u16,
    pub status: i16,
}

impl std::fmt::Debug for GntdevGrantCopySegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GntdevGrantCopySegment")
            .field("len", &self.len)
            .field("flags", &self.flags)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl GntdevGrantCopySegment {
    /// An all-zero segment, to fill fixed-size batches.
    pub(crate) const ZERO: Self = Self {
        source: GntdevCopyPtr {
            foreign: GntdevForeign {
                gref: 0,
                offset: 0,
                domid: 0,
            },
        },
        dest: GntdevCopyPtr {
            foreign: GntdevForeign {
                gref: 0,
                offset: 0,
                domid: 0,
            },
        },
        len: 0,
        flags: 0,
        status: 0,
    };
}

/// `struct ioctl_gntdev_grant_copy`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct GntdevGrantCopy {
    pub count: u32,
    pub segments: *mut GntdevGrantCopySegment,
}

/// `struct ioctl_gntalloc_alloc_gref` with its one-element array.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GntallocAllocGref {
    pub domid: u16,
    pub flags: u16,
    pub count: u32,
    pub index: u64,
    pub gref_ids: [u32; 1],
}

/// `struct ioctl_gntalloc_dealloc_gref`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GntallocDeallocGref {
    pub index: u64,
    pub count: u32,
}

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EvtchnBindInterdomain {
    pub remote_domain: u32,
    pub remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EvtchnBindUnboundPort {
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify` (same layout).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EvtchnPortArg {
    pub port: u32,
}

/// `GNTCOPY_source_gref` (xen/interface/grant_table.h): the source is a grant.
pub(crate) const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: the destination is a grant.
pub(crate) const GNTCOPY_DEST_GREF: u16 = 1 << 1;
/// `GNTALLOC_FLAG_WRITABLE`.
pub(crate) const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// `GNTST_*` status codes a copy segment can carry.
pub(crate) mod gntst {
    pub const OKAY: i16 = 0;
    pub const BAD_DOMAIN: i16 = -2;
    pub const BAD_GNTREF: i16 = -3;
    pub const PERMISSION_DENIED: i16 = -8;
    pub const BAD_COPY_ARG: i16 = -10;
}

pub(crate) const IOCTL_GNTDEV_MAP_GRANT_REF: ioctl_num_type =
    ioc_none(b'G', 0, size_of::<GntdevMapGrantRef>());
pub(crate) const IOCTL_GNTDEV_UNMAP_GRANT_REF: ioctl_num_type =
    ioc_none(b'G', 1, size_of::<GntdevUnmapGrantRef>());
pub(crate) const IOCTL_GNTDEV_GRANT_COPY: ioctl_num_type =
    ioc_none(b'G', 8, size_of::<GntdevGrantCopy>());
pub(crate) const IOCTL_GNTALLOC_ALLOC_GREF: ioctl_num_type =
    ioc_none(b'G', 5, size_of::<GntallocAllocGref>());
pub(crate) const IOCTL_GNTALLOC_DEALLOC_GREF: ioctl_num_type =
    ioc_none(b'G', 6, size_of::<GntallocDeallocGref>());
pub(crate) const IOCTL_EVTCHN_BIND_INTERDOMAIN: ioctl_num_type =
    ioc_none(b'E', 1, size_of::<EvtchnBindInterdomain>());
pub(crate) const IOCTL_EVTCHN_BIND_UNBOUND_PORT: ioctl_num_type =
    ioc_none(b'E', 2, size_of::<EvtchnBindUnboundPort>());
pub(crate) const IOCTL_EVTCHN_UNBIND: ioctl_num_type =
    ioc_none(b'E', 3, size_of::<EvtchnPortArg>());
pub(crate) const IOCTL_EVTCHN_NOTIFY: ioctl_num_type =
    ioc_none(b'E', 4, size_of::<EvtchnPortArg>());

nix::ioctl_readwrite_bad!(
    raw_gntdev_map,
    IOCTL_GNTDEV_MAP_GRANT_REF,
    GntdevMapGrantRef
);
nix::ioctl_readwrite_bad!(
    raw_gntdev_unmap,
    IOCTL_GNTDEV_UNMAP_GRANT_REF,
    GntdevUnmapGrantRef
);
nix::ioctl_readwrite_bad!(raw_gntdev_copy, IOCTL_GNTDEV_GRANT_COPY, GntdevGrantCopy);
nix::ioctl_readwrite_bad!(
    raw_gntalloc_alloc,
    IOCTL_GNTALLOC_ALLOC_GREF,
    GntallocAllocGref
);
nix::ioctl_readwrite_bad!(
    raw_gntalloc_dealloc,
    IOCTL_GNTALLOC_DEALLOC_GREF,
    GntallocDeallocGref
);
nix::ioctl_readwrite_bad!(
    raw_evtchn_bind_interdomain,
    IOCTL_EVTCHN_BIND_INTERDOMAIN,
    EvtchnBindInterdomain
);
nix::ioctl_readwrite_bad!(
    raw_evtchn_bind_unbound,
    IOCTL_EVTCHN_BIND_UNBOUND_PORT,
    EvtchnBindUnboundPort
);
nix::ioctl_readwrite_bad!(raw_evtchn_unbind, IOCTL_EVTCHN_UNBIND, EvtchnPortArg);
nix::ioctl_readwrite_bad!(raw_evtchn_notify, IOCTL_EVTCHN_NOTIFY, EvtchnPortArg);

/// Words of a buffer holding a header of `header` bytes plus `count` array items
/// of `item` bytes, as `u64`s so it is 8-aligned like the C structs.
fn words_for(header: usize, item: usize, count: usize) -> io::Result<usize> {
    count
        .max(1)
        .checked_mul(item)
        .and_then(|a| a.checked_add(header))
        .map(|b| b.div_ceil(8))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too many grant references"))
}

/// `IOCTL_GNTDEV_MAP_GRANT_REF`: register `refs` of `domid`; returns the mmap index.
pub(crate) fn gntdev_map(fd: BorrowedFd<'_>, domid: u16, refs: &[u32]) -> io::Result<u64> {
    let count = u32::try_from(refs.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many grant references"))?;
    let mut buf = vec![0u64; words_for(16, 8, refs.len())?];
    // Layout: count u32, pad u32, index u64, then (domid u32, ref u32) pairs, all
    // native-endian; a u64 word holds one pair.
    buf[0] = u64::from(count);
    for (slot, &r) in buf[2..].iter_mut().zip(refs) {
        let mut pair = [0u8; 8];
        pair[..4].copy_from_slice(&u32::from(domid).to_ne_bytes());
        pair[4..].copy_from_slice(&r.to_ne_bytes());
        *slot = u64::from_ne_bytes(pair);
    }
    // SAFETY: `buf` is 8-aligned and holds the header plus `count` refs, exactly the
    // variable-length struct the kernel reads (and writes `index` into).
    unsafe { raw_gntdev_map(fd.as_raw_fd(), buf.as_mut_ptr().cast()) }?;
    Ok(buf[1])
}

/// `IOCTL_GNTDEV_UNMAP_GRANT_REF` (after the pages were munmapped).
pub(crate) fn gntdev_unmap(fd: BorrowedFd<'_>, index: u64, count: u32) -> io::Result<()> {
    let mut arg = GntdevUnmapGrantRef {
        index,
        count,
        pad: 0,
    };
    // SAFETY: `arg` is a valid, exclusively borrowed struct of the expected layout.
    unsafe { raw_gntdev_unmap(fd.as_raw_fd(), &mut arg) }?;
    Ok(())
}

/// `IOCTL_GNTDEV_GRANT_COPY` over `segs`; per-segment status is left in `status`.
///
/// The caller guarantees every `virt` pointer in `segs` points into a live buffer
/// of at least `len` bytes (writable when it is the destination): the public
/// wrappers in `gntdev.rs` only build segments over the caller's slices.
pub(crate) fn gntdev_grant_copy(
    fd: BorrowedFd<'_>,
    segs: &mut [GntdevGrantCopySegment],
) -> io::Result<()> {
    let count = u32::try_from(segs.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many segments"))?;
    let mut arg = GntdevGrantCopy {
        count,
        segments: segs.as_mut_ptr(),
    };
    // SAFETY: `arg` points at `count` initialised segments that live across the
    // call; their local buffers are valid per this function's contract.
    unsafe { raw_gntdev_copy(fd.as_raw_fd(), &mut arg) }?;
    Ok(())
}

/// `IOCTL_GNTALLOC_ALLOC_GREF`: returns (mmap index, refs).
pub(crate) fn gntalloc_alloc(
    fd: BorrowedFd<'_>,
    domid: u16,
    writable: bool,
    count: usize,
) -> io::Result<(u64, Vec<u32>)> {
    let n = u32::try_from(count)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many pages"))?;
    let mut buf = vec![0u64; words_for(16, 4, count)?];
    let flags = if writable { GNTALLOC_FLAG_WRITABLE } else { 0 };
    let mut head = [0u8; 8];
    head[..2].copy_from_slice(&domid.to_ne_bytes());
    head[2..4].copy_from_slice(&flags.to_ne_bytes());
    head[4..].copy_from_slice(&n.to_ne_bytes());
    buf[0] = u64::from_ne_bytes(head);
    // SAFETY: `buf` is 8-aligned and large enough for the header plus `count`
    // gref_ids, which the kernel fills in together with `index`.
    unsafe { raw_gntalloc_alloc(fd.as_raw_fd(), buf.as_mut_ptr().cast()) }?;
    let refs = buf[2..]
        .iter()
        .flat_map(|w| {
            let b = w.to_ne_bytes();
            [
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            ]
        })
        .take(count)
        .collect();
    Ok((buf[1], refs))
}

/// `IOCTL_GNTALLOC_DEALLOC_GREF`.
pub(crate) fn gntalloc_dealloc(fd: BorrowedFd<'_>, index: u64, count: u32) -> io::Result<()> {
    let mut arg = GntallocDeallocGref { index, count };
    // SAFETY: `arg` is a valid, exclusively borrowed struct of the expected layout.
    unsafe { raw_gntalloc_dealloc(fd.as_raw_fd(), &mut arg) }?;
    Ok(())
}

fn port_of(ret: libc::c_int) -> io::Result<u32> {
    u32::try_from(ret).map_err(|_| io::Error::other("negative event channel port"))
}

/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`: returns the local port.
pub(crate) fn evtchn_bind_interdomain(
    fd: BorrowedFd<'_>,
    domid: u16,
    port: u32,
) -> io::Result<u32> {
    let mut arg = EvtchnBindInterdomain {
        remote_domain: u32::from(domid),
        remote_port: port,
    };
    // SAFETY: `arg` is a valid, exclusively borrowed struct of the expected layout.
    port_of(unsafe { raw_evtchn_bind_interdomain(fd.as_raw_fd(), &mut arg) }?)
}

/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`: returns the local port.
pub(crate) fn evtchn_bind_unbound(fd: BorrowedFd<'_>, domid: u16) -> io::Result<u32> {
    let mut arg = EvtchnBindUnboundPort {
        remote_domain: u32::from(domid),
    };
    // SAFETY: `arg` is a valid, exclusively borrowed struct of the expected layout.
    port_of(unsafe { raw_evtchn_bind_unbound(fd.as_raw_fd(), &mut arg) }?)
}

/// `IOCTL_EVTCHN_UNBIND`.
pub(crate) fn evtchn_unbind(fd: BorrowedFd<'_>, port: u32) -> io::Result<()> {
    let mut arg = EvtchnPortArg { port };
    // SAFETY: `arg` is a valid, exclusively borrowed struct of the expected layout.
    unsafe { raw_evtchn_unbind(fd.as_raw_fd(), &mut arg) }?;
    Ok(())
}

/// `IOCTL_EVTCHN_NOTIFY`.
pub(crate) fn evtchn_notify(fd: BorrowedFd<'_>, port: u32) -> io::Result<()> {
    let mut arg = EvtchnPortArg { port };
    // SAFETY: `arg` is a valid, exclusively borrowed struct of the expected layout.
    unsafe { raw_evtchn_notify(fd.as_raw_fd(), &mut arg) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes as the C compiler lays out the uapi structs on 64-bit Linux.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn struct_sizes_match_the_uapi_headers() {
        assert_eq!(size_of::<GntdevGrantRef>(), 8);
        assert_eq!(size_of::<GntdevMapGrantRef>(), 24);
        assert_eq!(size_of::<GntdevUnmapGrantRef>(), 16);
        assert_eq!(size_of::<GntdevCopyPtr>(), 8);
        assert_eq!(size_of::<GntdevGrantCopySegment>(), 24);
        assert_eq!(std::mem::offset_of!(GntdevGrantCopySegment, dest), 8);
        assert_eq!(std::mem::offset_of!(GntdevGrantCopySegment, len), 16);
        assert_eq!(std::mem::offset_of!(GntdevGrantCopySegment, status), 20);
        assert_eq!(size_of::<GntdevGrantCopy>(), 16);
        assert_eq!(size_of::<GntallocAllocGref>(), 24);
        assert_eq!(std::mem::offset_of!(GntallocAllocGref, gref_ids), 16);
        assert_eq!(size_of::<GntallocDeallocGref>(), 16);
        assert_eq!(size_of::<EvtchnBindInterdomain>(), 8);
        assert_eq!(size_of::<EvtchnBindUnboundPort>(), 4);
        assert_eq!(size_of::<EvtchnPortArg>(), 4);
    }

    /// `_IOC(_IOC_NONE, type, nr, sizeof)` computed by hand from the headers.
    #[cfg(target_pointer_width = "64")]
    #[test]
    // `ioctl_num_type` is `c_ulong` on glibc but `c_int` on musl.
    #[allow(clippy::unnecessary_cast)]
    fn request_numbers_match_the_uapi_headers() {
        assert_eq!(IOCTL_GNTDEV_MAP_GRANT_REF as u64, 0x0018_4700);
        assert_eq!(IOCTL_GNTDEV_UNMAP_GRANT_REF as u64, 0x0010_4701);
        assert_eq!(IOCTL_GNTDEV_GRANT_COPY as u64, 0x0010_4708);
        assert_eq!(IOCTL_GNTALLOC_ALLOC_GREF as u64, 0x0018_4705);
        assert_eq!(IOCTL_GNTALLOC_DEALLOC_GREF as u64, 0x0010_4706);
        assert_eq!(IOCTL_EVTCHN_BIND_INTERDOMAIN as u64, 0x0008_4501);
        assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT as u64, 0x0004_4502);
        assert_eq!(IOCTL_EVTCHN_UNBIND as u64, 0x0004_4503);
        assert_eq!(IOCTL_EVTCHN_NOTIFY as u64, 0x0004_4504);
    }

    #[test]
    fn variable_length_buffers_hold_header_and_array() {
        assert_eq!(words_for(16, 8, 1).unwrap(), 3);
        assert_eq!(words_for(16, 8, 0).unwrap(), 3);
        assert_eq!(words_for(16, 4, 3).unwrap(), 4);
        assert!(words_for(16, 8, usize::MAX).is_err());
    }

    #[test]
    fn ioctls_on_a_non_xen_fd_fail_cleanly() {
        let f = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        assert!(gntdev_map(f.as_fd(), 1, &[8, 9]).is_err());
        assert!(gntalloc_alloc(f.as_fd(), 1, true, 2).is_err());
        assert!(evtchn_notify(f.as_fd(), 3).is_err());
    }
}
