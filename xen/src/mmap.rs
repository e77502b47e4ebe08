//! Raw shared mappings (`mmap`) behind a bounds-checked, volatile accessor.
//!
//! Why this module exists: memory mapped from a grant (real gntdev/gntalloc or the
//! simulated memfd grant table) can be changed by the peer at any time, so no Rust
//! reference to its bytes is ever formed. Every access is bounds-checked; short
//! (structured) copies use volatile loads/stores, payload-sized ones `memcpy`
//! through the raw pointer (see `copy_from_shared` for why both are sound), and
//! the only references handed out are to `AtomicU32`, which is sound for memory
//! other parties mutate concurrently.
//!
//! This is one of the two places of the crate where `unsafe` is allowed; every block
//! carries a `// SAFETY:` comment.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{compiler_fence, AtomicU32, Ordering};

use nix::sys::mman::{MapFlags, ProtFlags};
use pvusb_ring::shared::{check_range, check_u32};

use crate::{MemError, SharedMem, PAGE_SIZE};

/// One `mmap`ed region, unmapped on drop.
///
/// Read-only regions (`PROT_READ`) refuse writes with
/// [`MemError::OutOfBounds`] reporting a writable size of 0, because a store into
/// them would fault (the shared `MemError` has no read-only variant).
#[derive(Debug)]
pub(crate) struct MmapRegion {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the region is plain memory owned by this value; all accesses go through
// raw-pointer copies (volatile or memcpy) or atomics, never through references,
// and are as valid from any thread as from the one that mapped it.
unsafe impl Send for MmapRegion {}
// SAFETY: as above, shared access only uses raw-pointer copies and atomics.
unsafe impl Sync for MmapRegion {}

fn prot(writable: bool) -> ProtFlags {
    if writable {
        ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
    } else {
        ProtFlags::PROT_READ
    }
}

fn nonzero(len: usize) -> io::Result<NonZeroUsize> {
    NonZeroUsize::new(len)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"))
}

fn offset_i64(offset: u64) -> io::Result<libc::off_t> {
    libc::off_t::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mapping offset too large"))
}

impl MmapRegion {
    /// Map `len` bytes of `fd` at `offset`, shared (gntdev/gntalloc: the offset is
    /// the "index" the ioctl returned).
    pub(crate) fn map_shared(
        fd: BorrowedFd<'_>,
        len: usize,
        offset: u64,
        writable: bool,
    ) -> io::Result<Self> {
        let length = nonzero(len)?;
        let offset = offset_i64(offset)?;
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so no
        // existing memory is replaced; the result is owned by the returned value.
        let ptr = unsafe {
            nix::sys::mman::mmap(
                None,
                length,
                prot(writable),
                MapFlags::MAP_SHARED,
                fd,
                offset,
            )
        }?;
        Ok(Self {
            base: ptr.cast(),
            len,
            writable,
        })
    }

    /// Map the pages at file offsets `page_offsets` of `fd`, in order, into one
    /// contiguous region: a `PROT_NONE` reservation first, then each run of
    /// consecutive pages with `MAP_FIXED` inside it.
    pub(crate) fn map_pages(
        fd: BorrowedFd<'_>,
        page_offsets: &[u64],
        writable: bool,
    ) -> io::Result<Self> {
        let len = page_offsets
            .len()
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too many pages"))?;
        let length = nonzero(len)?;
        // SAFETY: a fresh anonymous PROT_NONE reservation chosen by the kernel; it
        // replaces nothing and is owned by `region` right below.
        let ptr = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                length,
                ProtFlags::PROT_NONE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )
        }?;
        // From here on, an early return unmaps the whole reservation.
        let region = Self {
            base: ptr.cast(),
            len,
            writable,
        };
        let mut i = 0;
        while i < page_offsets.len() {
            let start = page_offsets[i];
            let mut run = 1;
            while i + run < page_offsets.len()
                && Some(page_offsets[i + run]) == start.checked_add((run * PAGE_SIZE) as u64)
            {
                run += 1;
            }
            let addr = NonZeroUsize::new(region.base.as_ptr() as usize + i * PAGE_SIZE)
                .ok_or_else(|| io::Error::other("null mapping address"))?;
            // SAFETY: `addr .. addr + run pages` lies inside our own reservation
            // (i + run <= page count), so MAP_FIXED only replaces memory this value
            // owns and nobody references.
            unsafe {
                nix::sys::mman::mmap(
                    Some(addr),
                    nonzero(run * PAGE_SIZE)?,
                    prot(writable),
                    MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                    fd,
                    offset_i64(start)?,
                )
            }?;
            i += run;
        }
        Ok(region)
    }

    /// The first byte of the region, for a device layer that lets the
    /// kernel transfer into it (see [`crate::MappedPages`]); valid for
    /// `len` bytes while `self` lives.
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Whether the region was mapped writable.
    #[cfg(test)]
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }

    /// The aligned 32-bit word at `offset`, for atomics shared with other processes.
    pub(crate) fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, MemError> {
        check_u32(offset, self.len)?;
        // SAFETY: `offset + 4 <= len` and `offset % 4 == 0` were checked and the base
        // is page aligned, so the pointer is in bounds and aligned for AtomicU32; the
        // mapping lives as long as `&self`. Other processes may mutate the word, which
        // is exactly what atomics permit.
        Ok(unsafe { AtomicU32::from_ptr(self.base.as_ptr().wrapping_add(offset).cast::<u32>()) })
    }

    fn check_writable(&self, offset: usize, len: usize) -> Result<(), MemError> {
        if self.writable {
            Ok(())
        } else {
            Err(MemError::OutOfBounds {
                offset,
                len,
                size: 0,
            })
        }
    }
}

impl SharedMem for MmapRegion {
    fn size(&self) -> usize {
        self.len
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
        check_range(offset, buf.len(), self.len)?;
        // SAFETY: `offset + buf.len() <= len` was checked, so the source range is
        // inside the mapping; `buf` is a distinct local buffer.
        unsafe {
            copy_from_shared(
                self.base.as_ptr().wrapping_add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    fn write(&self, offset: usize, buf: &[u8]) -> Result<(), MemError> {
        check_range(offset, buf.len(), self.len)?;
        self.check_writable(offset, buf.len())?;
        // SAFETY: the destination range is inside a writable mapping (both checked);
        // `buf` is a distinct local buffer.
        unsafe {
            copy_to_shared(
                buf.as_ptr(),
                self.base.as_ptr().wrapping_add(offset),
                buf.len(),
            )
        };
        Ok(())
    }

    fn load_u32(&self, offset: usize) -> Result<u32, MemError> {
        Ok(u32::from_le(
            self.atomic_u32(offset)?.load(Ordering::Acquire),
        ))
    }

    fn store_u32(&self, offset: usize, value: u32) -> Result<(), MemError> {
        self.check_writable(offset, 4)?;
        self.atomic_u32(offset)?
            .store(value.to_le(), Ordering::Release);
        Ok(())
    }
}

impl Drop for MmapRegion {
    fn drop(&mut self) {
        // SAFETY: base/len describe exactly the mapping this value created and owns;
        // no reference into it outlives `self` (atomic_u32 borrows `self`).
        if let Err(e) = unsafe { nix::sys::mman::munmap(self.base.cast::<c_void>(), self.len) } {
            tracing::error!(error = %e, "munmap of a shared region failed");
        }
    }
}

/// Copies at least this long are payload and move with `memcpy`
/// ([`copy_nonoverlapping`](std::ptr::copy_nonoverlapping)); shorter ones with
/// volatile words.
///
/// WHY a length threshold: everything structured that crosses a shared
/// mapping is short (a urb ring entry is 148 bytes, a conn ring entry 4, ring
/// indexes are atomics and never come here), while URB payload is as long as a
/// transfer, up to 17 pages. Structured data keeps the strict volatile path
/// (see [`copy_from_shared`]); payload gets memcpy's speed, which is what the
/// bulk figures of `pvusb bench` are bound by.
const PLAIN_COPY_MIN: usize = 256;

/// The word the volatile copies move: the widest naturally aligned access a
/// volatile load or store is guaranteed to perform as one instruction.
type Word = u64;
const WORD: usize = size_of::<Word>();
/// Words per unrolled step (32 bytes): independent loads first, then the
/// stores, so the CPU overlaps them.
const UNROLL: usize = 4;

/// How many bytes from `ptr` until it is `WORD` aligned (at most `len`).
fn head_len(ptr: usize, len: usize) -> usize {
    ((WORD - ptr % WORD) % WORD).min(len)
}

/// Copy `len` bytes out of shared memory at `src` into private memory at
/// `dst`: with `memcpy` from [`PLAIN_COPY_MIN`] bytes on, with volatile aligned
/// words below.
///
/// WHY memcpy for payload is sound here. The shared side is another party's
/// memory (a page of the peer's memfd, or a grant mapped by gntdev): nothing in
/// this program writes it while we copy, no Rust reference to it is ever formed
/// (only the raw pointer of the mapping, after the bounds check of the caller),
/// and the abstract machine cannot observe the peer's stores, so for the
/// compiler these are plain reads of memory nobody in the program modifies —
/// exactly how every device model copies guest payload (QEMU's
/// `address_space_rw`, rust-vmm's `vm-memory` and crosvm's `VolatileSlice`
/// bulk copies). What a racing peer can cause at the machine level is a torn
/// value: bytes partly old, partly new. For opaque payload bytes that is
/// harmless (a guest racing its own buffer gets what it wrote, in some order).
///
/// WHY short copies stay volatile. Short copies are the structured ones (ring
/// entries, copied out once and then validated): the validation is only
/// sound if every later use reads the *private* copy. Volatile loads can be
/// neither repeated nor re-derived from the source. A plain copy could, in
/// principle, have a later read of the private copy satisfied by reading the
/// shared source again (memcpy forwarding), i.e. a second fetch after the
/// check. For the long copies a compiler fence follows the memcpy, which the
/// optimiser must assume may change any escaped memory (the mapping is), so no
/// read after it can be forwarded to the source; payload is not validated
/// anyway. Reads of single words that must be atomic (ring indexes) go through
/// [`MmapRegion::atomic_u32`], never here.
///
/// # Safety
/// `src` must be valid for `len` bytes of reads, `dst` for `len` bytes of writes,
/// and the ranges must not overlap.
unsafe fn copy_from_shared(src: *const u8, dst: *mut u8, len: usize) {
    if len >= PLAIN_COPY_MIN {
        // SAFETY: both ranges are valid for `len` bytes and disjoint (the
        // contract); `src` is never referenced, only read through the raw
        // pointer, and concurrent stores by the peer (outside this program)
        // can only tear payload bytes (see the doc comment above).
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        compiler_fence(Ordering::SeqCst);
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { volatile_copy_from_shared(src, dst, len) }
}

/// The volatile path of [`copy_from_shared`]: every access to the shared side
/// is volatile (the compiler must neither elide, duplicate nor widen it) and
/// made with aligned 8-byte words, four per step, whatever the alignment of the
/// private side (which is accessed with ordinary unaligned loads and stores: it
/// is our own buffer, borrowed exclusively by the caller).
///
/// # Safety
/// As [`copy_from_shared`].
unsafe fn volatile_copy_from_shared(src: *const u8, dst: *mut u8, len: usize) {
    let head = head_len(src as usize, len);
    let mut i = 0;
    while i < head {
        // SAFETY: i < head <= len: inside the source range per the contract.
        let b = unsafe { src.wrapping_add(i).read_volatile() };
        // SAFETY: i < len: inside the destination range.
        unsafe { dst.wrapping_add(i).write(b) };
        i += 1;
    }
    // From here on the source is WORD aligned; the destination is written
    // unaligned. i + 32 <= len keeps the whole step inside both ranges.
    while i + UNROLL * WORD <= len {
        let s = src.wrapping_add(i).cast::<Word>();
        // SAFETY: aligned, in range (see above).
        let w0 = unsafe { s.read_volatile() };
        // SAFETY: aligned, in range.
        let w1 = unsafe { s.wrapping_add(1).read_volatile() };
        // SAFETY: aligned, in range.
        let w2 = unsafe { s.wrapping_add(2).read_volatile() };
        // SAFETY: aligned, in range.
        let w3 = unsafe { s.wrapping_add(3).read_volatile() };
        // SAFETY: in range; unaligned store into the private buffer.
        unsafe {
            dst.wrapping_add(i)
                .cast::<[Word; UNROLL]>()
                .write_unaligned([w0, w1, w2, w3])
        };
        i += UNROLL * WORD;
    }
    while i + WORD <= len {
        // SAFETY: aligned, i + 8 <= len.
        let w = unsafe { src.wrapping_add(i).cast::<Word>().read_volatile() };
        // SAFETY: i + 8 <= len; unaligned store into the private buffer.
        unsafe { dst.wrapping_add(i).cast::<Word>().write_unaligned(w) };
        i += WORD;
    }
    while i < len {
        // SAFETY: i < len.
        let b = unsafe { src.wrapping_add(i).read_volatile() };
        // SAFETY: i < len.
        unsafe { dst.wrapping_add(i).write(b) };
        i += 1;
    }
}

/// Copy `len` bytes from private memory at `src` into shared memory at `dst`:
/// the mirror of [`copy_from_shared`], for the same reasons (memcpy from
/// [`PLAIN_COPY_MIN`] bytes on, volatile aligned words on the shared side
/// below, ordinary unaligned loads on the private side).
///
/// # Safety
/// `src` must be valid for `len` bytes of reads, `dst` for `len` bytes of writes,
/// and the ranges must not overlap.
unsafe fn copy_to_shared(src: *const u8, dst: *mut u8, len: usize) {
    if len >= PLAIN_COPY_MIN {
        // The fence first: every store to our private source made before this
        // point is done before the copy reads it, and none is sunk past it.
        compiler_fence(Ordering::SeqCst);
        // SAFETY: both ranges are valid for `len` bytes and disjoint (the
        // contract); `dst` is never referenced, only written through the raw
        // pointer; a peer reading concurrently may see a torn payload, which is
        // the peer's own race.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        compiler_fence(Ordering::SeqCst);
        return;
    }
    // SAFETY: forwarded contract.
    unsafe { volatile_copy_to_shared(src, dst, len) }
}

/// The volatile path of [`copy_to_shared`].
///
/// # Safety
/// As [`copy_to_shared`].
unsafe fn volatile_copy_to_shared(src: *const u8, dst: *mut u8, len: usize) {
    let head = head_len(dst as usize, len);
    let mut i = 0;
    while i < head {
        // SAFETY: i < head <= len: inside the source range per the contract.
        let b = unsafe { src.wrapping_add(i).read() };
        // SAFETY: i < len: inside the destination range.
        unsafe { dst.wrapping_add(i).write_volatile(b) };
        i += 1;
    }
    // From here on the destination is WORD aligned; the source is read
    // unaligned. i + 32 <= len keeps the whole step inside both ranges.
    while i + UNROLL * WORD <= len {
        // SAFETY: in range; unaligned load from the private buffer.
        let w = unsafe {
            src.wrapping_add(i)
                .cast::<[Word; UNROLL]>()
                .read_unaligned()
        };
        let d = dst.wrapping_add(i).cast::<Word>();
        // SAFETY: aligned, in range.
        unsafe { d.write_volatile(w[0]) };
        // SAFETY: aligned, in range.
        unsafe { d.wrapping_add(1).write_volatile(w[1]) };
        // SAFETY: aligned, in range.
        unsafe { d.wrapping_add(2).write_volatile(w[2]) };
        // SAFETY: aligned, in range.
        unsafe { d.wrapping_add(3).write_volatile(w[3]) };
        i += UNROLL * WORD;
    }
    while i + WORD <= len {
        // SAFETY: i + 8 <= len; unaligned load from the private buffer.
        let w = unsafe { src.wrapping_add(i).cast::<Word>().read_unaligned() };
        // SAFETY: aligned, i + 8 <= len.
        unsafe { dst.wrapping_add(i).cast::<Word>().write_volatile(w) };
        i += WORD;
    }
    while i < len {
        // SAFETY: i < len.
        let b = unsafe { src.wrapping_add(i).read() };
        // SAFETY: i < len.
        unsafe { dst.wrapping_add(i).write_volatile(b) };
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    fn memfd(pages: usize) -> std::fs::File {
        let fd = nix::sys::memfd::memfd_create(
            c"mmap-test",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .unwrap();
        let f = std::fs::File::from(fd);
        f.set_len((pages * PAGE_SIZE) as u64).unwrap();
        f
    }

    #[test]
    fn scattered_pages_form_one_contiguous_region() {
        let mut f = memfd(4);
        for p in 0..4u8 {
            f.write_all(&[p + 1; PAGE_SIZE]).unwrap();
        }
        let offs = [3 * PAGE_SIZE as u64, 0, PAGE_SIZE as u64];
        let r = MmapRegion::map_pages(f.as_fd(), &offs, true).unwrap();
        assert_eq!(r.size(), 3 * PAGE_SIZE);
        let mut b = [0u8; 2];
        r.read(PAGE_SIZE - 1, &mut b).unwrap();
        assert_eq!(b, [4, 1]);
        r.write(2 * PAGE_SIZE + 5, &[9, 9, 9]).unwrap();
        let mut back = [0u8; 3];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut back, PAGE_SIZE as u64 + 5).unwrap();
        assert_eq!(back, [9, 9, 9]);
        assert!(r.read(3 * PAGE_SIZE - 1, &mut b).is_err());
        assert_eq!(r.load_u32(3), Err(MemError::Unaligned(3)));
    }

    #[test]
    fn read_only_region_refuses_writes_without_faulting() {
        let f = memfd(1);
        let r = MmapRegion::map_shared(f.as_fd(), PAGE_SIZE, 0, false).unwrap();
        assert!(!r.writable());
        assert!(r.write(0, &[1]).is_err());
        assert!(r.store_u32(0, 1).is_err());
        assert_eq!(r.load_u32(0), Ok(0));
    }

    #[test]
    fn unaligned_copies_round_trip() {
        let f = memfd(1);
        let r = MmapRegion::map_shared(f.as_fd(), PAGE_SIZE, 0, true).unwrap();
        let data: Vec<u8> = (0..100u8).collect();
        for off in 0..9 {
            r.write(off, &data).unwrap();
            let mut out = vec![0u8; 100];
            r.read(off, &mut out).unwrap();
            assert_eq!(out, data);
            let mut odd = vec![0u8; 37];
            r.read(off + 3, &mut odd).unwrap();
            assert_eq!(odd[..], data[3..40]);
        }
    }

    /// Every combination of shared-side and private-side misalignment, and
    /// lengths around the unrolled step and around the switch to `memcpy`
    /// ([`PLAIN_COPY_MIN`]), copies exactly the bytes asked for.
    #[test]
    fn copies_at_every_alignment_touch_only_their_range() {
        const AREA: usize = 1200;
        let f = memfd(1);
        let r = MmapRegion::map_shared(f.as_fd(), PAGE_SIZE, 0, true).unwrap();
        let pattern: Vec<u8> = (0..AREA as u32).map(|i| (i * 7 + 1) as u8).collect();
        let lens = [
            0,
            1,
            7,
            8,
            9,
            31,
            32,
            33,
            63,
            64,
            65,
            100,
            PLAIN_COPY_MIN - 1,
            PLAIN_COPY_MIN,
            PLAIN_COPY_MIN + 1,
            1000,
        ];
        for shared_off in 0..9 {
            for private_off in 0..9 {
                for len in lens {
                    r.write(0, &[0u8; AREA]).unwrap();
                    let src = &pattern[private_off..private_off + len];
                    r.write(shared_off, src).unwrap();
                    let mut all = [0u8; AREA];
                    r.read(0, &mut all).unwrap();
                    assert!(all[..shared_off].iter().all(|&b| b == 0));
                    assert_eq!(&all[shared_off..shared_off + len], src);
                    assert!(all[shared_off + len..].iter().all(|&b| b == 0));
                    let mut back = vec![0xeeu8; len + 18];
                    r.read(shared_off, &mut back[private_off..private_off + len])
                        .unwrap();
                    assert!(back[..private_off].iter().all(|&b| b == 0xee));
                    assert_eq!(&back[private_off..private_off + len], src);
                    assert!(back[private_off + len..].iter().all(|&b| b == 0xee));
                }
            }
        }
    }
}
