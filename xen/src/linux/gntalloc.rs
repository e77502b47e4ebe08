//! Frontend-side grants through `/dev/xen/gntalloc`: the kernel allocates the
//! pages, grants them, and defers their release while the peer maps them.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use super::abi;
use crate::mmap::MmapRegion;
use crate::{DomId, GrantAllocator, GrantError, GrantRef, GrantedPages, PAGE_SIZE};

/// Where the grant-allocation device lives.
pub const GNTALLOC_PATH: &str = "/dev/xen/gntalloc";

/// [`GrantAllocator`] over `/dev/xen/gntalloc`.
#[derive(Debug, Clone)]
pub struct LinuxGrantAllocator {
    dev: Arc<File>,
}

impl LinuxGrantAllocator {
    /// Open [`GNTALLOC_PATH`].
    pub fn open() -> Result<Self, GrantError> {
        Self::open_at(Path::new(GNTALLOC_PATH))
    }

    /// Open the gntalloc device at `path`.
    pub fn open_at(path: &Path) -> Result<Self, GrantError> {
        Ok(Self {
            dev: super::open_grant_device(path, "open gntalloc")?,
        })
    }
}

impl GrantAllocator for LinuxGrantAllocator {
    type Pages = GntallocPages;

    fn alloc(
        &self,
        peer: DomId,
        count: usize,
        writable: bool,
    ) -> Result<GntallocPages, GrantError> {
        if count == 0 {
            return Err(GrantError::BadSegment(
                "an allocation needs at least one page",
            ));
        }
        let n = u32::try_from(count).map_err(|_| GrantError::Exhausted)?;
        let len = count.checked_mul(PAGE_SIZE).ok_or(GrantError::Exhausted)?;
        let (index, refs) =
            abi::gntalloc_alloc(self.dev.as_fd(), peer, writable, count).map_err(|source| {
                match source.raw_os_error() {
                    Some(libc::ENOSPC) | Some(libc::ENOMEM) => GrantError::Exhausted,
                    _ => GrantError::Os {
                        op: "gntalloc alloc gref",
                        source,
                    },
                }
            })?;
        let guard = GntallocIndex {
            dev: Arc::clone(&self.dev),
            index,
            count: n,
        };
        // Our own view is always writable: the flag only restricts the peer.
        let region =
            MmapRegion::map_shared(self.dev.as_fd(), len, index, true).map_err(|source| {
                GrantError::Os {
                    op: "mmap of allocated grant pages",
                    source,
                }
            })?;
        Ok(GntallocPages {
            region,
            refs,
            _index: guard,
        })
    }
}

/// The allocation's registration; `IOCTL_GNTALLOC_DEALLOC_GREF` on drop, after the
/// munmap (field order in [`GntallocPages`]).
#[derive(Debug)]
struct GntallocIndex {
    dev: Arc<File>,
    index: u64,
    count: u32,
}

impl Drop for GntallocIndex {
    fn drop(&mut self) {
        if let Err(e) = abi::gntalloc_dealloc(self.dev.as_fd(), self.index, self.count) {
            tracing::error!(error = %e, index = self.index, "gntalloc dealloc gref failed");
        }
    }
}

/// Pages allocated and granted by gntalloc, mapped contiguously in our address space.
#[derive(Debug)]
pub struct GntallocPages {
    // Field order matters: munmap (region) before DEALLOC_GREF (index).
    region: MmapRegion,
    refs: Vec<GrantRef>,
    _index: GntallocIndex,
}

shared_mem_via_region!(GntallocPages);

impl GrantedPages for GntallocPages {
    fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// Always `Ok`: gntalloc gives userspace no way to ask whether the peer still
    /// maps a page, and no way to revoke a grant while we keep our own mapping.
    /// What it does guarantee is the part that matters for safety: on drop the
    /// kernel ends each grant once the peer has unmapped it (its deferred-release
    /// list), and the page is never handed back to us or anyone else before that.
    /// So a frontend that calls this, gets `Ok`, and drops the pages is correct; it
    /// just cannot learn *when* the peer let go (watch the backend's xenstore state
    /// for that, as xen-hcd does).
    fn try_end_access(&self) -> Result<(), GrantError> {
        Ok(())
    }
}
