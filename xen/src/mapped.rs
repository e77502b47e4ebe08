//! A request's data segments mapped as one contiguous region, for a device
//! that transfers straight from and to the guest's pages (no grant copy).
//!
//! WHY only page-contiguous layouts: the pages are mapped side by side, so
//! the data is one run of bytes only if every segment but the first starts
//! at offset 0 and every segment but the last ends at the page end (what a
//! guest's page-aligned buffer looks like). Anything else is refused with
//! [`GrantError::NotContiguous`] and the caller copies instead.
//!
//! WHY raw pointers leave this crate here and nowhere else: the device layer
//! (libusb) takes a `*mut u8` and lets the kernel read or write the bytes;
//! no Rust reference to guest memory is ever formed. The pointer stays valid
//! as long as the [`MappedSegments`] lives, so whoever hands it to the kernel
//! keeps the value until the transfer is back.

use std::fmt;

use crate::{CopySeg, GrantError, GrantRef, MemError, SharedMem, PAGE_SIZE};

/// Most pages a request's data can span (usbif: 16 segments).
pub const MAX_MAPPED_PAGES: usize = 16;

/// A contiguous mapping of grant pages that can hand its address to a
/// device layer. Implemented by the mapping types of both transports.
pub trait MappedPages: SharedMem + Send + Sync + fmt::Debug + 'static {
    /// The first byte of the mapping; valid for [`SharedMem::size`] bytes
    /// while `self` lives (the peer may change the bytes at any time).
    fn as_mut_ptr(&self) -> *mut u8;
}

/// Where a page-contiguous segment list puts its data inside the mapping of
/// its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentLayout {
    /// Offset of the first byte (the first segment's offset).
    pub start: usize,
    /// Bytes of data (Σ segment lengths).
    pub len: usize,
}

impl SegmentLayout {
    /// The layout of `segs` if they form one run of bytes once their pages
    /// are mapped side by side (see the module doc), else
    /// [`GrantError::NotContiguous`]. Everything is checked: the segments
    /// come from a guest.
    pub fn of(segs: &[CopySeg]) -> Result<Self, GrantError> {
        let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
            return Err(GrantError::NotContiguous("no segments"));
        };
        if segs.len() > MAX_MAPPED_PAGES {
            return Err(GrantError::NotContiguous("too many segments"));
        }
        let mut len = 0usize;
        for (i, s) in segs.iter().enumerate() {
            let end = usize::from(s.offset) + usize::from(s.len);
            if end > PAGE_SIZE {
                return Err(GrantError::NotContiguous(
                    "a segment crosses the end of its page",
                ));
            }
            if i > 0 && s.offset != 0 {
                return Err(GrantError::NotContiguous(
                    "a segment after the first does not start its page",
                ));
            }
            if i + 1 < segs.len() && end != PAGE_SIZE {
                return Err(GrantError::NotContiguous(
                    "a segment before the last does not end its page",
                ));
            }
            len += usize::from(s.len);
        }
        if len == 0 || last.len == 0 {
            return Err(GrantError::NotContiguous("no data"));
        }
        Ok(Self {
            start: usize::from(first.offset),
            len,
        })
    }

    /// The grant references of `segs` in order (as many as
    /// [`SegmentLayout::of`] accepted).
    pub fn refs(segs: &[CopySeg]) -> ([GrantRef; MAX_MAPPED_PAGES], usize) {
        let mut refs = [0; MAX_MAPPED_PAGES];
        let mut n = 0;
        for (slot, s) in refs.iter_mut().zip(segs) {
            *slot = s.gref;
            n += 1;
        }
        (refs, n)
    }
}

/// A request's data in guest pages mapped into our address space: owns the
/// mapping (unmapped on drop) and knows where the data lies in it.
pub struct MappedSegments {
    pages: Box<dyn MappedPages>,
    layout: SegmentLayout,
    writable: bool,
}

impl fmt::Debug for MappedSegments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedSegments")
            .field("layout", &self.layout)
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}

impl MappedSegments {
    /// The data of `layout` inside `pages`; `None` if it does not fit.
    pub fn new(pages: Box<dyn MappedPages>, layout: SegmentLayout, writable: bool) -> Option<Self> {
        let end = layout.start.checked_add(layout.len)?;
        (end <= pages.size()).then_some(Self {
            pages,
            layout,
            writable,
        })
    }

    /// The first byte of the data, valid for [`MappedSegments::len`] bytes
    /// (writable only if [`MappedSegments::writable`]) while `self` lives.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.pages.as_mut_ptr().wrapping_add(self.layout.start)
    }

    /// Bytes of data.
    pub fn len(&self) -> usize {
        self.layout.len
    }

    /// Whether there is no data (never: [`SegmentLayout::of`] refuses it).
    pub fn is_empty(&self) -> bool {
        self.layout.len == 0
    }

    /// Whether the pages are mapped writable (IN data can be stored).
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Copies data bytes from `offset` into `buf` (bounds-checked).
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), MemError> {
        self.check(offset, buf.len())?;
        self.pages.read(self.layout.start + offset, buf)
    }

    /// Copies `buf` into the data at `offset` (bounds-checked).
    pub fn write(&self, offset: usize, buf: &[u8]) -> Result<(), MemError> {
        self.check(offset, buf.len())?;
        self.pages.write(self.layout.start + offset, buf)
    }

    fn check(&self, offset: usize, len: usize) -> Result<(), MemError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.layout.len => Ok(()),
            _ => Err(MemError::OutOfBounds {
                offset,
                len,
                size: self.layout.len,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(offset: u16, len: u16) -> CopySeg {
        CopySeg {
            gref: 8,
            offset,
            len,
        }
    }

    #[test]
    fn page_contiguous_segments_are_one_run() {
        let page = PAGE_SIZE as u16;
        assert_eq!(
            SegmentLayout::of(&[seg(100, page - 100), seg(0, page), seg(0, 5)]).unwrap(),
            SegmentLayout {
                start: 100,
                len: 2 * PAGE_SIZE - 100 + 5
            }
        );
        assert_eq!(
            SegmentLayout::of(&[seg(7, 9)]).unwrap(),
            SegmentLayout { start: 7, len: 9 }
        );
    }

    #[test]
    fn other_layouts_are_refused() {
        let page = PAGE_SIZE as u16;
        let refused =
            |segs: &[CopySeg]| matches!(SegmentLayout::of(segs), Err(GrantError::NotContiguous(_)));
        assert!(refused(&[]));
        assert!(refused(&[seg(0, 0)]));
        assert!(refused(&[seg(0, 100), seg(0, 100)]), "gap after the first");
        assert!(refused(&[seg(0, page), seg(1, 100)]), "second not at 0");
        assert!(refused(&[seg(4000, 200)]), "crosses its page");
        assert!(refused(&[seg(u16::MAX, u16::MAX)]));
        assert!(refused(&[seg(0, page); MAX_MAPPED_PAGES + 1]));
        assert!(!refused(&[seg(0, page); MAX_MAPPED_PAGES]));
    }
}
