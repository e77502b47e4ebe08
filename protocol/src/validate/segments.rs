//! A bounded, validated list of request segments.

use core::fmt;

use super::ValidateError;
use crate::consts::MAX_SEGMENTS_PER_REQUEST;
use crate::RequestSegment;

/// Segments of a validated request: each fits in its page and has a non-zero
/// length. Zero-length segments are accepted on the wire (they move no
/// bytes, and QEMU accepts them) but are dropped here, so a backend never
/// touches their grant references. At most 16 entries, no allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    segs: [RequestSegment; MAX_SEGMENTS_PER_REQUEST],
    len: u8,
    bytes: u32,
}

impl Segments {
    /// No segments.
    pub const EMPTY: Segments = Segments {
        segs: [RequestSegment::new(0, 0, 0); MAX_SEGMENTS_PER_REQUEST],
        len: 0,
        bytes: 0,
    };

    /// Checks `raw` (the used slice of `seg[]`, beginning at `seg[first]`).
    /// `raw` must hold at most 16 entries (callers slice `seg[]`).
    pub(crate) fn check(raw: &[RequestSegment], first: usize) -> Result<Self, ValidateError> {
        let mut out = Self::EMPTY;
        for (i, s) in raw.iter().enumerate() {
            if !s.fits_in_page() {
                return Err(ValidateError::SegmentOutOfPage {
                    index: first + i,
                    offset: s.offset,
                    length: s.length,
                });
            }
            if s.length == 0 {
                continue;
            }
            if let Some(slot) = out.segs.get_mut(usize::from(out.len)) {
                *slot = *s;
                out.len += 1;
                // ≤ 16 × 4096: no overflow.
                out.bytes += u32::from(s.length);
            }
        }
        Ok(out)
    }

    /// The segments, in transfer order.
    pub fn as_slice(&self) -> &[RequestSegment] {
        self.segs.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Number of (non-empty) segments.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Σ lengths (≤ 65536).
    pub fn total_bytes(&self) -> u32 {
        self.bytes
    }
}

impl fmt::Debug for Segments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}
