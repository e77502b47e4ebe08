//! The simulated grant table of one granting domain: a sealed memfd of pages plus a
//! sealed memfd of per-reference metadata, both shared with mapping processes.
//!
//! Metadata layout, [`META_ENTRY`] bytes per reference, little-endian `u32`s:
//! - word 0, the grant word: bit 0 in use, bit 1 writable, bits 16-31 the domain
//!   the page is granted to. Written only by the granter; read by the mapping side
//!   (read-only mapping) before every copy.
//! - word 1, the mapped count: how many mappings the peers hold. Written only by the
//!   granter's rendezvous server, which counts mappings per connection so that the
//!   counts of a dead peer are released when its connection closes.
//!
//! Why the granter is the only writer: the mapping side is another, possibly
//! misbehaving, process; it sees the table through a read-only descriptor.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};

use nix::fcntl::{FallocateFlags, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use pvusb_support::lock_unpoisoned;

use crate::mmap::MmapRegion;
use crate::{DomId, GrantError, GrantRef, PAGE_SIZE};

/// References per table. The data memfd is sparse: unused pages cost nothing.
pub const NR_REFS: u32 = 4096;
/// The first references are reserved, as in Xen (`GNTTAB_NR_RESERVED_ENTRIES`), so
/// reference 0 is never valid.
pub const FIRST_REF: u32 = 8;
/// Bytes of metadata per reference.
pub(crate) const META_ENTRY: usize = 8;

const IN_USE: u32 = 1;
const WRITABLE: u32 = 2;

/// The grant word for a page granted to `domid`.
fn grant_word(domid: DomId, writable: bool) -> u32 {
    (u32::from(domid) << 16) | IN_USE | if writable { WRITABLE } else { 0 }
}

/// Decide whether `domid` may access `gref` whose grant word is `word`.
pub(crate) fn check_grant(
    word: u32,
    gref: GrantRef,
    domid: DomId,
    write: bool,
) -> Result<(), GrantError> {
    if word & IN_USE == 0 {
        return Err(GrantError::BadRef { gref });
    }
    if (word >> 16) != u32::from(domid) {
        return Err(GrantError::NotGranted { gref, domid });
    }
    if write && word & WRITABLE == 0 {
        return Err(GrantError::ReadOnly { gref });
    }
    Ok(())
}

/// Byte offset of `gref`'s page in the data memfd.
pub(crate) fn page_offset(gref: GrantRef) -> u64 {
    u64::from(gref) * PAGE_SIZE as u64
}

/// Who holds a reference, as the granter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// On the free list.
    Free,
    /// Granted and held by a `SimGrantedPages`.
    Granted,
    /// Grant ended by `try_end_access`; the pages object still holds the page.
    Revoked,
    /// Pages object dropped while a peer still mapped the page: freed on last unmap.
    Deferred,
}

#[derive(Debug)]
struct TableState {
    free: Vec<GrantRef>,
    owner: Vec<Owner>,
}

/// A granter's table. Shared (`Arc`) by the allocator, its pages and the server.
#[derive(Debug)]
pub(crate) struct GrantTable {
    data: File,
    meta_ro: File,
    meta: MmapRegion,
    state: Mutex<TableState>,
}

fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> GrantError {
    move |source| GrantError::Os { op, source }
}

/// A memfd of `len` bytes whose size is sealed, so a mapping process can trust it
/// not to shrink under its mappings (which would SIGBUS).
fn sealed_memfd(name: &std::ffi::CStr, len: u64) -> Result<File, GrantError> {
    let fd = memfd_create(
        name,
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )
    .map_err(|e| GrantError::Os {
        op: "memfd_create",
        source: e.into(),
    })?;
    let f = File::from(fd);
    f.set_len(len).map_err(os("size the grant table"))?;
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        FcntlArg::F_ADD_SEALS(seals),
    )
    .map_err(|e| GrantError::Os {
        op: "seal the grant table",
        source: e.into(),
    })?;
    Ok(f)
}

impl GrantTable {
    /// A fresh, empty table.
    pub(crate) fn new() -> Result<Self, GrantError> {
        let data = sealed_memfd(c"pvusb-grant-pages", u64::from(NR_REFS) * PAGE_SIZE as u64)?;
        let meta_len = NR_REFS as usize * META_ENTRY;
        let meta_file = sealed_memfd(c"pvusb-grant-meta", meta_len as u64)?;
        let meta = MmapRegion::map_shared(meta_file.as_fd(), meta_len, 0, true)
            .map_err(os("map the grant metadata"))?;
        // A second, read-only open of the same memfd for the peers.
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&meta_file)
        );
        let meta_ro = File::open(path).map_err(os("reopen the grant metadata read-only"))?;
        let free = (FIRST_REF..NR_REFS).rev().collect();
        let owner = vec![Owner::Free; NR_REFS as usize];
        Ok(Self {
            data,
            meta_ro,
            meta,
            state: Mutex::new(TableState { free, owner }),
        })
    }

    /// The page memfd (read-write: peers may map writable grants).
    pub(crate) fn data_file(&self) -> &File {
        &self.data
    }

    /// The metadata memfd, opened read-only.
    pub(crate) fn meta_file_ro(&self) -> &File {
        &self.meta_ro
    }

    fn lock(&self) -> MutexGuard<'_, TableState> {
        // A panic while holding the lock cannot leave the state half-updated in a
        // way that matters more than losing the table, so recover the guard.
        lock_unpoisoned(&self.state)
    }

    fn word(&self, gref: GrantRef, index: usize) -> Option<&AtomicU32> {
        self.meta
            .atomic_u32(gref as usize * META_ENTRY + index * 4)
            .ok()
    }

    fn set_grant(&self, gref: GrantRef, value: u32) {
        if let Some(w) = self.word(gref, 0) {
            w.store(value.to_le(), Ordering::Release);
        }
    }

    fn grant(&self, gref: GrantRef) -> u32 {
        self.word(gref, 0)
            .map_or(0, |w| u32::from_le(w.load(Ordering::Acquire)))
    }

    /// How many peer mappings `gref` has.
    pub(crate) fn mapped(&self, gref: GrantRef) -> u32 {
        self.word(gref, 1)
            .map_or(0, |w| u32::from_le(w.load(Ordering::Acquire)))
    }

    fn set_mapped(&self, gref: GrantRef, n: u32) {
        if let Some(w) = self.word(gref, 1) {
            w.store(n.to_le(), Ordering::Release);
        }
    }

    /// Allocate `count` zeroed pages granted to `peer`.
    pub(crate) fn alloc(
        &self,
        peer: DomId,
        count: usize,
        writable: bool,
    ) -> Result<Vec<GrantRef>, GrantError> {
        let mut st = self.lock();
        if count == 0 {
            return Err(GrantError::BadSegment(
                "an allocation needs at least one page",
            ));
        }
        if st.free.len() < count {
            return Err(GrantError::Exhausted);
        }
        let at = st.free.len() - count;
        let mut refs = st.free.split_off(at);
        refs.reverse();
        for &r in &refs {
            // Punching a hole zeroes the page and gives its memory back.
            let punched = nix::fcntl::fallocate(
                std::os::fd::AsRawFd::as_raw_fd(&self.data),
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                page_offset(r) as libc::off_t,
                PAGE_SIZE as libc::off_t,
            );
            if let Err(e) = punched {
                // Fall back to writing zeros (filesystems without hole punching).
                tracing::debug!(error = %e, "punching a grant page failed; zero-filling");
                self.data
                    .write_all_at(&[0u8; PAGE_SIZE], page_offset(r))
                    .map_err(os("zero a grant page"))?;
            }
            st.owner[r as usize] = Owner::Granted;
            self.set_mapped(r, 0);
            self.set_grant(r, grant_word(peer, writable));
        }
        Ok(refs)
    }

    /// End the grants of `refs` if no peer maps any of them (`try_end_access`).
    pub(crate) fn revoke(&self, refs: &[GrantRef]) -> Result<(), GrantError> {
        let mut st = self.lock();
        if let Some(&gref) = refs.iter().find(|&&r| self.mapped(r) > 0) {
            return Err(GrantError::StillMapped { gref });
        }
        for &r in refs {
            if st.owner[r as usize] == Owner::Granted {
                self.set_grant(r, 0);
                st.owner[r as usize] = Owner::Revoked;
            }
        }
        Ok(())
    }

    /// The pages object is gone: end the grants and free the pages, deferring those
    /// a peer still maps until their last unmap.
    pub(crate) fn release(&self, refs: &[GrantRef]) {
        let mut st = self.lock();
        for &r in refs {
            if !matches!(st.owner[r as usize], Owner::Granted | Owner::Revoked) {
                continue;
            }
            self.set_grant(r, 0);
            if self.mapped(r) > 0 {
                st.owner[r as usize] = Owner::Deferred;
            } else {
                st.owner[r as usize] = Owner::Free;
                st.free.push(r);
            }
        }
    }

    /// A peer `domid` maps `refs`: check every one, then count the mappings.
    pub(crate) fn map(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<(), GrantError> {
        let _st = self.lock();
        for &r in refs {
            if !(FIRST_REF..NR_REFS).contains(&r) {
                return Err(GrantError::BadRef { gref: r });
            }
            check_grant(self.grant(r), r, domid, writable)?;
            if self.mapped(r) >= u32::MAX / 2 {
                return Err(GrantError::Exhausted);
            }
        }
        for &r in refs {
            self.set_mapped(r, self.mapped(r) + 1);
        }
        Ok(())
    }

    /// A peer dropped one mapping of each of `refs` (already checked to be its own).
    pub(crate) fn unmap(&self, refs: &[GrantRef]) {
        for &r in refs {
            self.unmap_counted(r, 1);
        }
    }

    /// A peer dropped `n` mappings of `gref` (its connection closed).
    pub(crate) fn unmap_counted(&self, gref: GrantRef, n: u32) {
        let mut st = self.lock();
        let left = self.mapped(gref).saturating_sub(n);
        self.set_mapped(gref, left);
        if left == 0 && st.owner.get(gref as usize) == Some(&Owner::Deferred) {
            st.owner[gref as usize] = Owner::Free;
            st.free.push(gref);
        }
    }

    /// References currently free (for tests of the deferred release).
    #[cfg(test)]
    pub(crate) fn free_count(&self) -> usize {
        self.lock().free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_words_decide_access() {
        let w = grant_word(3, false);
        assert!(check_grant(w, 9, 3, false).is_ok());
        assert!(matches!(
            check_grant(w, 9, 3, true),
            Err(GrantError::ReadOnly { gref: 9 })
        ));
        assert!(matches!(
            check_grant(w, 9, 4, false),
            Err(GrantError::NotGranted { gref: 9, domid: 4 })
        ));
        assert!(matches!(
            check_grant(0, 9, 3, false),
            Err(GrantError::BadRef { gref: 9 })
        ));
        assert!(check_grant(grant_word(0, true), 9, 0, true).is_ok());
    }

    #[test]
    fn deferred_release_frees_on_last_unmap() {
        let t = GrantTable::new().unwrap();
        let before = t.free_count();
        let refs = t.alloc(5, 2, true).unwrap();
        assert_eq!(refs, vec![FIRST_REF, FIRST_REF + 1]);
        t.map(5, &refs[..1], true).unwrap();
        assert!(
            matches!(t.revoke(&refs), Err(GrantError::StillMapped { gref }) if gref == FIRST_REF)
        );
        t.release(&refs);
        assert_eq!(t.free_count(), before - 1);
        // Released: new maps are refused even though the page is not free yet.
        assert!(matches!(
            t.map(5, &refs[..1], false),
            Err(GrantError::BadRef { .. })
        ));
        t.unmap(&refs[..1]);
        assert_eq!(t.free_count(), before);
    }

    #[test]
    fn allocations_are_bounded() {
        let t = GrantTable::new().unwrap();
        assert!(matches!(
            t.alloc(1, NR_REFS as usize, true),
            Err(GrantError::Exhausted)
        ));
        assert!(t.map(1, &[NR_REFS], false).is_err());
        assert!(t.map(1, &[0], false).is_err());
    }
}
