//! Backend-side grant access through `/dev/xen/gntdev`: map (ioctl + mmap) and
//! grant copy (`IOCTL_GNTDEV_GRANT_COPY`).

use std::ffi::c_void;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use super::abi::{self, gntst, GntdevCopyPtr, GntdevForeign, GntdevGrantCopySegment};
use crate::mmap::MmapRegion;
use crate::{check_copy_segments, CopySeg, DomId, GrantError, GrantMapper, GrantRef, PAGE_SIZE};

/// Where the grant-mapping device lives.
pub const GNTDEV_PATH: &str = "/dev/xen/gntdev";

/// Segments handed to the kernel per ioctl; a fixed stack batch so a copy does not
/// allocate.
const COPY_BATCH: usize = 32;

/// [`GrantMapper`] over `/dev/xen/gntdev`. One open device serves all mappings and
/// copies; it is shared with the mappings so they can unmap after the mapper is gone.
#[derive(Debug, Clone)]
pub struct LinuxGrantMapper {
    dev: Arc<File>,
}

impl LinuxGrantMapper {
    /// Open [`GNTDEV_PATH`].
    pub fn open() -> Result<Self, GrantError> {
        Self::open_at(Path::new(GNTDEV_PATH))
    }

    /// A gntdev device opened elsewhere: a confined backend worker gets it
    /// from its monitor, which opens one per worker, so that a worker's
    /// mappings are its own and end with it.
    pub fn from_file(dev: File) -> Self {
        Self { dev: Arc::new(dev) }
    }

    /// Open the gntdev device at `path` (tests, unusual device layouts).
    pub fn open_at(path: &Path) -> Result<Self, GrantError> {
        Ok(Self {
            dev: super::open_grant_device(path, "open gntdev")?,
        })
    }

    fn copy(
        &self,
        domid: DomId,
        segs: &[CopySeg],
        local: *mut u8,
        local_len: usize,
        to_guest: bool,
    ) -> Result<(), GrantError> {
        check_copy_segments(segs, local_len)?;
        let mut batch = [GntdevGrantCopySegment::ZERO; COPY_BATCH];
        // The grant ref of each batched segment, to name it in an error.
        let mut grefs = [0 as GrantRef; COPY_BATCH];
        let mut n = 0;
        let mut pos = 0usize;
        for s in segs {
            let at = pos;
            pos += usize::from(s.len);
            if s.len == 0 {
                continue; // nothing to copy; the hypervisor need not see it
            }
            let foreign = GntdevCopyPtr {
                foreign: GntdevForeign {
                    gref: s.gref,
                    offset: s.offset,
                    domid,
                },
            };
            // `at + len <= local_len` was checked by check_copy_segments.
            let virt = GntdevCopyPtr {
                virt: local.wrapping_add(at).cast::<c_void>(),
            };
            let (source, dest, flags) = if to_guest {
                (virt, foreign, abi::GNTCOPY_DEST_GREF)
            } else {
                (foreign, virt, abi::GNTCOPY_SOURCE_GREF)
            };
            batch[n] = GntdevGrantCopySegment {
                source,
                dest,
                len: s.len,
                flags,
                status: 0,
            };
            grefs[n] = s.gref;
            n += 1;
            if n == COPY_BATCH {
                self.flush(&mut batch[..n], &grefs[..n], domid, to_guest)?;
                n = 0;
            }
        }
        if n > 0 {
            self.flush(&mut batch[..n], &grefs[..n], domid, to_guest)?;
        }
        Ok(())
    }

    /// One `IOCTL_GNTDEV_GRANT_COPY`, then every segment's status.
    fn flush(
        &self,
        batch: &mut [GntdevGrantCopySegment],
        grefs: &[GrantRef],
        domid: DomId,
        to_guest: bool,
    ) -> Result<(), GrantError> {
        abi::gntdev_grant_copy(self.dev.as_fd(), batch).map_err(|source| GrantError::Os {
            op: "gntdev grant copy",
            source,
        })?;
        for (slot, &gref) in batch.iter().zip(grefs) {
            status_to_result(slot.status, gref, domid, to_guest)?;
        }
        Ok(())
    }
}

/// Translate a `GNTST_*` status into the matching [`GrantError`].
fn status_to_result(
    status: i16,
    gref: GrantRef,
    domid: DomId,
    write: bool,
) -> Result<(), GrantError> {
    match status {
        gntst::OKAY => Ok(()),
        gntst::BAD_GNTREF => Err(GrantError::BadRef { gref }),
        gntst::BAD_DOMAIN => Err(GrantError::NotGranted { gref, domid }),
        gntst::PERMISSION_DENIED if write => Err(GrantError::ReadOnly { gref }),
        gntst::PERMISSION_DENIED => Err(GrantError::NotGranted { gref, domid }),
        gntst::BAD_COPY_ARG => Err(GrantError::BadSegment(
            "the hypervisor rejected the copy arguments",
        )),
        other => Err(GrantError::Unavailable(format!(
            "grant copy of reference {gref} failed with hypervisor status {other}"
        ))),
    }
}

impl GrantMapper for LinuxGrantMapper {
    type Mapping = GntdevMapping;

    fn map(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<GntdevMapping, GrantError> {
        if refs.is_empty() {
            return Err(GrantError::BadSegment(
                "a mapping needs at least one grant reference",
            ));
        }
        let count = u32::try_from(refs.len()).map_err(|_| GrantError::Exhausted)?;
        let len = refs
            .len()
            .checked_mul(PAGE_SIZE)
            .ok_or(GrantError::Exhausted)?;
        let index =
            abi::gntdev_map(self.dev.as_fd(), domid, refs).map_err(|source| GrantError::Os {
                op: "gntdev map grant refs",
                source,
            })?;
        // Registered from here on: the guard unregisters on every path out.
        let guard = GntdevIndex {
            dev: Arc::clone(&self.dev),
            index,
            count,
        };
        // The kernel maps the grants at mmap time; a bad ref, a foreign grant or a
        // read-only grant mapped writable all fail here, without saying which ref.
        let region =
            MmapRegion::map_shared(self.dev.as_fd(), len, index, writable).map_err(|source| {
                GrantError::Os {
                    op: "mmap of grant references",
                    source,
                }
            })?;
        Ok(GntdevMapping {
            region,
            _index: guard,
        })
    }

    fn copy_from_guest(
        &self,
        domid: DomId,
        segs: &[CopySeg],
        dst: &mut [u8],
    ) -> Result<(), GrantError> {
        self.copy(domid, segs, dst.as_mut_ptr(), dst.len(), false)
    }

    fn copy_to_guest(&self, domid: DomId, segs: &[CopySeg], src: &[u8]) -> Result<(), GrantError> {
        // The kernel only reads the local side of a to-guest copy.
        self.copy(domid, segs, src.as_ptr().cast_mut(), src.len(), true)
    }
}

/// Registration of refs in the gntdev instance; unregistered on drop, which runs
/// after the mapping's munmap because of field order in [`GntdevMapping`].
#[derive(Debug)]
struct GntdevIndex {
    dev: Arc<File>,
    index: u64,
    count: u32,
}

impl Drop for GntdevIndex {
    fn drop(&mut self) {
        if let Err(e) = abi::gntdev_unmap(self.dev.as_fd(), self.index, self.count) {
            tracing::error!(error = %e, index = self.index, "gntdev unmap grant refs failed");
        }
    }
}

/// Foreign pages mapped through gntdev, contiguous; munmapped and unregistered on drop.
#[derive(Debug)]
pub struct GntdevMapping {
    // Field order matters: the region (munmap) drops before the index (ioctl).
    region: MmapRegion,
    _index: GntdevIndex,
}

shared_mem_via_region!(GntdevMapping);

impl crate::MappedPages for GntdevMapping {
    fn as_mut_ptr(&self) -> *mut u8 {
        self.region.as_mut_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypervisor_statuses_map_to_precise_errors() {
        assert!(status_to_result(0, 8, 1, false).is_ok());
        assert!(matches!(
            status_to_result(-3, 8, 1, false),
            Err(GrantError::BadRef { gref: 8 })
        ));
        assert!(matches!(
            status_to_result(-8, 8, 1, true),
            Err(GrantError::ReadOnly { gref: 8 })
        ));
        assert!(matches!(
            status_to_result(-8, 8, 1, false),
            Err(GrantError::NotGranted { gref: 8, domid: 1 })
        ));
        assert!(matches!(
            status_to_result(-12, 8, 1, false),
            Err(GrantError::Unavailable(_))
        ));
    }
}
