//! Guest memory as the URB engine sees it: grant copies over a request's
//! segments. WHY a trait of its own: the engine (and its fuzz target) can run
//! against any memory model, while the daemon plugs in a [`GrantMapper`].

use pvusb_protocol::RequestSegment;
use pvusb_xen::{CopySeg, DomId, GrantError, GrantMapper, MappedSegments};

/// Copies to and from one guest's granted pages.
pub trait GuestMemory {
    /// Copies the segments, in order, into `dst` (Σ lengths = `dst.len()`).
    fn copy_from(&self, segs: &[CopySeg], dst: &mut [u8]) -> Result<(), GrantError>;
    /// Copies `src` into the segments, in order (Σ lengths = `src.len()`).
    fn copy_to(&self, segs: &[CopySeg], src: &[u8]) -> Result<(), GrantError>;
    /// Maps the segments as one contiguous run of bytes (writable for IN
    /// data), if they are page-contiguous (see
    /// [`GrantMapper::map_segments`]). Memories that cannot map refuse, and
    /// the engine copies instead.
    fn map(&self, segs: &[CopySeg], writable: bool) -> Result<MappedSegments, GrantError> {
        let _ = (segs, writable);
        Err(GrantError::Unavailable(
            "this guest memory cannot be mapped".into(),
        ))
    }
}

/// A frontend domain's memory through a grant mapper (grant copy, or a
/// mapping owned by the one transfer that uses it, so nothing stays mapped
/// once a request is answered: spec 11).
#[derive(Debug)]
pub struct GrantedMemory<'a, G> {
    /// The grant implementation.
    pub grants: &'a G,
    /// The frontend domain.
    pub domid: DomId,
}

impl<G: GrantMapper> GuestMemory for GrantedMemory<'_, G> {
    fn copy_from(&self, segs: &[CopySeg], dst: &mut [u8]) -> Result<(), GrantError> {
        self.grants.copy_from_guest(self.domid, segs, dst)
    }
    fn copy_to(&self, segs: &[CopySeg], src: &[u8]) -> Result<(), GrantError> {
        self.grants.copy_to_guest(self.domid, segs, src)
    }
    fn map(&self, segs: &[CopySeg], writable: bool) -> Result<MappedSegments, GrantError> {
        self.grants.map_segments(self.domid, segs, writable)
    }
}

/// At most 16 copy segments, on the stack (no allocation per URB).
#[derive(Debug, Clone, Copy)]
pub struct SegList {
    segs: [CopySeg; 16],
    len: usize,
}

impl SegList {
    /// The copy segments covering the first `bytes` bytes of `segs` (fewer if
    /// the segments are shorter: the caller sized `bytes` from them).
    pub fn prefix(segs: &[RequestSegment], bytes: usize) -> Self {
        let mut out = SegList {
            segs: [CopySeg {
                gref: 0,
                offset: 0,
                len: 0,
            }; 16],
            len: 0,
        };
        let mut left = bytes;
        for (slot, s) in out.segs.iter_mut().zip(segs) {
            if left == 0 {
                break;
            }
            let take = s.length.min(u16::try_from(left).unwrap_or(u16::MAX));
            *slot = CopySeg {
                gref: s.gref,
                offset: s.offset,
                len: take,
            };
            left -= usize::from(take);
            out.len += 1;
        }
        out
    }

    /// The first `bytes` bytes of these segments.
    pub fn truncated(&self, bytes: usize) -> Self {
        let mut out = *self;
        let mut left = bytes;
        out.len = 0;
        for s in self.as_slice() {
            if left == 0 {
                break;
            }
            let take = s.len.min(u16::try_from(left).unwrap_or(u16::MAX));
            if let Some(slot) = out.segs.get_mut(out.len) {
                *slot = CopySeg { len: take, ..*s };
            }
            left -= usize::from(take);
            out.len += 1;
        }
        out
    }

    /// Appends to `out` the segments covering bytes `start..start + len` of
    /// these segments; `false` (nothing appended) if they are shorter.
    ///
    /// WHY: an isochronous packet sits at any offset of the guest's buffer;
    /// copying each packet's range lands the data packed, where libusb
    /// transfers it from, in the one grant copy.
    pub fn append_range(&self, start: usize, len: usize, out: &mut Vec<CopySeg>) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        if end > self.total() {
            return false;
        }
        let mut at = 0usize;
        for s in self.as_slice() {
            let seg_end = at + usize::from(s.len);
            // A position of these segments as an offset into `s`, clamped to it.
            let inside =
                |pos: usize| u16::try_from(pos.saturating_sub(at)).map_or(s.len, |p| p.min(s.len));
            let (from, to) = (inside(start), inside(end));
            if from < to {
                out.push(CopySeg {
                    gref: s.gref,
                    offset: s.offset + from,
                    len: to - from,
                });
            }
            at = seg_end;
            if at >= end {
                break;
            }
        }
        true
    }

    /// The segments.
    pub fn as_slice(&self) -> &[CopySeg] {
        self.segs.get(..self.len).unwrap_or(&[])
    }

    /// Σ lengths.
    pub fn total(&self) -> usize {
        self.as_slice().iter().map(|s| usize::from(s.len)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 8092 bytes: the last 3996 of page 8, then all of page 9.
    fn two_pages_from_offset_100() -> [RequestSegment; 2] {
        [
            RequestSegment::new(8, 100, 3996),
            RequestSegment::new(9, 0, 4096),
        ]
    }

    #[test]
    fn prefix_cuts_inside_a_segment() {
        let segs = two_pages_from_offset_100();
        let p = SegList::prefix(&segs, 5000);
        assert_eq!(p.as_slice().len(), 2);
        assert_eq!(p.as_slice()[1].len, 1004);
        assert_eq!(p.total(), 5000);
        assert_eq!(SegList::prefix(&segs, 0).total(), 0);
        assert_eq!(SegList::prefix(&segs, 100_000).total(), 8092);
    }

    #[test]
    fn a_range_maps_to_the_segments_it_spans() {
        let segs = two_pages_from_offset_100();
        let list = SegList::prefix(&segs, 8092);
        let mut out = Vec::new();
        assert!(list.append_range(3990, 10, &mut out));
        let got: Vec<(u32, u16, u16)> = out.iter().map(|s| (s.gref, s.offset, s.len)).collect();
        assert_eq!(got, vec![(8, 4090, 6), (9, 0, 4)]);
        out.clear();
        assert!(list.append_range(5, 0, &mut out));
        assert!(out.is_empty());
        assert!(!list.append_range(8000, 93, &mut out));
        assert!(!list.append_range(usize::MAX, 2, &mut out));
        assert!(out.is_empty());
    }

    /// Every range of a small list, against a byte-by-byte reference: the
    /// appended segments cover exactly the range's guest bytes, in order,
    /// with no empty segment; a range past the end appends nothing.
    #[test]
    fn every_range_covers_exactly_its_bytes() {
        let segs = [
            RequestSegment::new(1, 10, 5),
            RequestSegment::new(2, 0, 7),
            RequestSegment::new(3, 100, 3),
        ];
        let list = SegList::prefix(&segs, 15);
        let bytes: Vec<(u32, u16)> = segs
            .iter()
            .flat_map(|s| (s.offset..s.offset + s.length).map(move |o| (s.gref, o)))
            .collect();
        for start in 0..=17 {
            for len in 0..=17 {
                let mut out = Vec::new();
                let ok = list.append_range(start, len, &mut out);
                assert_eq!(ok, start + len <= bytes.len(), "{start}+{len}");
                assert!(out.iter().all(|c| c.len > 0), "{start}+{len}: {out:?}");
                let got: Vec<(u32, u16)> = out
                    .iter()
                    .flat_map(|c| (c.offset..c.offset + c.len).map(move |o| (c.gref, o)))
                    .collect();
                let want = if ok {
                    &bytes[start..start + len]
                } else {
                    &[][..]
                };
                assert_eq!(got, want, "{start}+{len}");
            }
        }
    }
}
