//! Memory that another party (a guest, a peer process) may change at any time.
//!
//! Why a trait and not `&[u8]`: a page shared with a guest can change under our
//! feet, so forming a Rust reference to it would be undefined behaviour and would
//! invite double fetches. Everything goes through bounds-checked copies in and out
//! (`read`/`write`) and through single aligned 32-bit atomics for the ring indexes
//! (`load_u32`/`store_u32`), the only shared words either side reads twice.

use std::sync::atomic::{AtomicU32, Ordering};

/// An access to shared memory that fell outside the region or was misaligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// `offset + len` is beyond the end of the region.
    #[error("access at offset {offset} of {len} bytes is outside a region of {size} bytes")]
    OutOfBounds {
        /// Start of the access.
        offset: usize,
        /// Length of the access.
        len: usize,
        /// Size of the region.
        size: usize,
    },
    /// A 32-bit atomic access at an offset that is not a multiple of 4.
    #[error("32-bit access at unaligned offset {0}")]
    Unaligned(usize),
}

/// Bounds-checked, volatile access to a region of shared memory.
///
/// Implementations: [`HeapMem`] (process-local, for tests and benches), and in
/// `pvusb-xen` the mmap-backed mappings of grant pages (real gntdev/gntalloc and the
/// simulated memfd grant table).
pub trait SharedMem: Send + Sync {
    /// Size of the region in bytes.
    fn size(&self) -> usize;
    /// Copy `buf.len()` bytes starting at `offset` out of the region.
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), MemError>;
    /// Copy `buf` into the region at `offset`.
    fn write(&self, offset: usize, buf: &[u8]) -> Result<(), MemError>;
    /// Load an aligned little-endian `u32` with acquire ordering.
    fn load_u32(&self, offset: usize) -> Result<u32, MemError>;
    /// Store an aligned little-endian `u32` with release ordering.
    fn store_u32(&self, offset: usize, value: u32) -> Result<(), MemError>;

    /// Copy a plain-old-data value out of the region (one copy; the caller then
    /// owns a value the peer can no longer change).
    fn read_obj<T: bytemuck::Pod>(&self, offset: usize) -> Result<T, MemError>
    where
        Self: Sized,
    {
        let mut value = T::zeroed();
        self.read(offset, bytemuck::bytes_of_mut(&mut value))?;
        Ok(value)
    }

    /// Copy a plain-old-data value into the region.
    fn write_obj<T: bytemuck::Pod>(&self, offset: usize, value: &T) -> Result<(), MemError>
    where
        Self: Sized,
    {
        self.write(offset, bytemuck::bytes_of(value))
    }
}

/// Check that `[offset, offset + len)` lies inside a region of `size` bytes.
pub fn check_range(offset: usize, len: usize, size: usize) -> Result<(), MemError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(MemError::OutOfBounds { offset, len, size }),
    }
}

/// Check a 32-bit atomic access.
pub fn check_u32(offset: usize, size: usize) -> Result<(), MemError> {
    check_range(offset, 4, size)?;
    if offset % 4 != 0 {
        return Err(MemError::Unaligned(offset));
    }
    Ok(())
}

/// The part of one word of a [`HeapMem`] that a byte access covers.
struct WordPiece {
    /// Index of the word.
    word: usize,
    /// First byte of the piece inside the word (0..4).
    lane: usize,
    /// Where the piece starts in the caller's buffer.
    at: usize,
    /// Bytes in the piece (1..=4).
    n: usize,
}

/// The word pieces of the `len` bytes at `offset`, in order. Word-wise: one
/// atomic access per 4 bytes (ring slots are 4-aligned, so the common case is
/// whole words), partial words only at the edges. With `offset + len <= 4 *
/// words`, every `word` is a valid index and every `at..at + n` lies inside
/// the caller's `len`-byte buffer.
fn word_pieces(offset: usize, len: usize) -> impl Iterator<Item = WordPiece> {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= len {
            return None;
        }
        let byte = offset + at;
        let lane = byte % 4;
        let n = (4 - lane).min(len - at);
        let piece = WordPiece {
            word: byte / 4,
            lane,
            at,
            n,
        };
        at += n;
        Some(piece)
    })
}

/// Process-local shared memory made of atomic words, so it can be shared between
/// threads without any `unsafe`. Used by unit tests, the ring mock and benches.
#[derive(Debug)]
pub struct HeapMem {
    words: Box<[AtomicU32]>,
}

impl HeapMem {
    /// A zeroed region of `size` bytes (rounded up to a multiple of 4).
    pub fn new(size: usize) -> Self {
        let words = (0..size.div_ceil(4)).map(|_| AtomicU32::new(0)).collect();
        Self { words }
    }

    /// A zeroed 4096-byte page, the size of every usbif ring.
    pub fn page() -> Self {
        Self::new(4096)
    }
}

impl SharedMem for HeapMem {
    fn size(&self) -> usize {
        self.words.len() * 4
    }

    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
        check_range(offset, buf.len(), self.size())?;
        // Indexing below cannot panic: check_range proved offset + len <= 4 * words
        // (see `word_pieces`).
        for WordPiece { word, lane, at, n } in word_pieces(offset, buf.len()) {
            let bytes = self.words[word].load(Ordering::Relaxed).to_le_bytes();
            buf[at..at + n].copy_from_slice(&bytes[lane..lane + n]);
        }
        Ok(())
    }

    fn write(&self, offset: usize, buf: &[u8]) -> Result<(), MemError> {
        check_range(offset, buf.len(), self.size())?;
        // Indexing cannot panic: see `read`.
        for WordPiece { word, lane, at, n } in word_pieces(offset, buf.len()) {
            let src = &buf[at..at + n];
            if n == 4 {
                let v = u32::from_le_bytes([src[0], src[1], src[2], src[3]]);
                self.words[word].store(v, Ordering::Relaxed);
            } else {
                // Partial word: an atomic read-modify-write, so bytes of the same
                // word that someone else writes concurrently are kept intact.
                let _ =
                    self.words[word].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                        let mut bytes = old.to_le_bytes();
                        bytes[lane..lane + n].copy_from_slice(src);
                        Some(u32::from_le_bytes(bytes))
                    });
            }
        }
        Ok(())
    }

    fn load_u32(&self, offset: usize) -> Result<u32, MemError> {
        check_u32(offset, self.size())?;
        // In bounds: check_u32 proved offset + 4 <= 4 * words.
        Ok(self.words[offset / 4].load(Ordering::Acquire))
    }

    fn store_u32(&self, offset: usize, value: u32) -> Result<(), MemError> {
        check_u32(offset, self.size())?;
        // In bounds: check_u32 proved offset + 4 <= 4 * words.
        self.words[offset / 4].store(value, Ordering::Release);
        Ok(())
    }
}

/// `SharedMem` through a pointer: every method goes to the memory pointed at,
/// so an `Arc`, a box or a borrow of a memory is that memory.
macro_rules! shared_mem_through_pointer {
    ($($pointer:ty),+) => {$(
        impl<T: SharedMem + ?Sized> SharedMem for $pointer {
            fn size(&self) -> usize {
                (**self).size()
            }
            fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
                (**self).read(offset, buf)
            }
            fn write(&self, offset: usize, buf: &[u8]) -> Result<(), MemError> {
                (**self).write(offset, buf)
            }
            fn load_u32(&self, offset: usize) -> Result<u32, MemError> {
                (**self).load_u32(offset)
            }
            fn store_u32(&self, offset: usize, value: u32) -> Result<(), MemError> {
                (**self).store_u32(offset, value)
            }
        }
    )+};
}

shared_mem_through_pointer!(std::sync::Arc<T>, &T, Box<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaligned_round_trips_keep_neighbours() {
        let mem = HeapMem::new(32);
        mem.write(0, &[0xAA; 32]).unwrap();
        let data: Vec<u8> = (1..=11).collect();
        mem.write(3, &data).unwrap();
        let mut all = [0u8; 32];
        mem.read(0, &mut all).unwrap();
        assert_eq!(&all[..3], &[0xAA; 3]);
        assert_eq!(&all[3..14], &data[..]);
        assert_eq!(&all[14..], &[0xAA; 18]);
        let mut mid = [0u8; 5];
        mem.read(5, &mut mid).unwrap();
        assert_eq!(mid, [3, 4, 5, 6, 7]);
    }

    #[test]
    fn out_of_bounds_and_unaligned_are_errors() {
        let mem = HeapMem::new(16);
        let mut buf = [0u8; 4];
        assert_eq!(
            mem.read(14, &mut buf),
            Err(MemError::OutOfBounds {
                offset: 14,
                len: 4,
                size: 16
            })
        );
        assert!(mem.write(usize::MAX, &buf).is_err());
        assert_eq!(mem.load_u32(2), Err(MemError::Unaligned(2)));
        assert!(mem.store_u32(16, 1).is_err());
    }

    #[test]
    fn pod_objects_round_trip() {
        let mem = HeapMem::new(64);
        mem.write_obj(8, &[1u32, 2, 3]).unwrap();
        assert_eq!(mem.read_obj::<[u32; 3]>(8).unwrap(), [1, 2, 3]);
        assert_eq!(mem.load_u32(12).unwrap(), 2);
        assert!(mem.read_obj::<[u8; 8]>(60).is_err());
    }
}
