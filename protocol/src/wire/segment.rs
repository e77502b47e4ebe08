//! `struct usbif_request_segment`: one granted page of a request.

use bytemuck::{Pod, Zeroable};

use crate::consts::PAGE_SIZE;

/// One grant reference plus the byte range used inside that 4 KiB page
/// (8 bytes, align 4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RequestSegment {
    /// Grant of one 4 KiB page.
    pub gref: u32,
    /// Start of the data inside the page.
    pub offset: u16,
    /// Bytes used in the page; `offset + length` must be ≤ 4096.
    pub length: u16,
}

assert_layout!(RequestSegment: size 8, align 4, gref @ 0, offset @ 4, length @ 6);

impl RequestSegment {
    /// A segment covering `length` bytes at `offset` of the page `gref`.
    pub const fn new(gref: u32, offset: u16, length: u16) -> Self {
        Self {
            gref,
            offset,
            length,
        }
    }

    /// Whether the byte range stays inside one page, the rule every peer
    /// (QEMU, the old usbback, the grant-copy op) enforces.
    pub const fn fits_in_page(&self) -> bool {
        // u16 + u16 cannot overflow usize (widening casts; `From` is not const).
        self.offset as usize + self.length as usize <= PAGE_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_little_endian_in_appendix_a_order() {
        let seg = RequestSegment::new(0x0403_0201, 0x0605, 0x0807);
        assert_eq!(bytemuck::bytes_of(&seg), &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn page_fit() {
        assert!(RequestSegment::new(0, 0, 4096).fits_in_page());
        assert!(RequestSegment::new(0, 4095, 1).fits_in_page());
        assert!(RequestSegment::new(0, 4096, 0).fits_in_page());
        assert!(!RequestSegment::new(0, 4095, 2).fits_in_page());
        assert!(!RequestSegment::new(0, 0, 4097).fits_in_page());
        assert!(!RequestSegment::new(0, u16::MAX, u16::MAX).fits_in_page());
    }
}
