//! A granting domain and a mapping domain of the simulated transport, in one
//! process over a private directory: what the backend's grant copies cost
//! without the rest of the stack.

use pvusb_xen::sim::{SimGrantedPages, SimXen};
use pvusb_xen::{CopySeg, DomId, GrantAllocator, GrantError, GrantMapper, GrantedPages, PAGE_SIZE};

/// Domain id of the granting side (the frontend).
pub const FRONT_DOMID: DomId = 1;
/// Domain id of the copying side (the backend).
pub const BACK_DOMID: DomId = 0;
/// Pages granted: one URB's worth (16 segments).
pub const PAGES: usize = 16;

/// The pair; dropping it removes the directory.
#[derive(Debug)]
pub struct GrantPair {
    back: SimXen,
    /// The granting domain: its rendezvous server lives as long as this handle.
    _front: SimXen,
    pages: SimGrantedPages,
    // Last: the sockets live in it.
    _dir: tempfile::TempDir,
}

impl GrantPair {
    /// Grant [`PAGES`] writable pages from domain 1 to domain 0.
    pub fn new() -> Result<Self, GrantError> {
        let dir = pvusb_testkit::dir::create("pvusb-bench")
            .map_err(|e| GrantError::Unavailable(format!("cannot create a directory: {e}")))?;
        let front = SimXen::new(dir.path(), FRONT_DOMID);
        let pages = front.alloc(BACK_DOMID, PAGES, true)?;
        let back = SimXen::new(dir.path(), BACK_DOMID);
        Ok(Self {
            back,
            _front: front,
            pages,
            _dir: dir,
        })
    }

    /// `len` bytes spread evenly over 16 segments, one per granted page (the
    /// last takes the remainder): the worst case of a scattered guest buffer.
    pub fn segments(&self, len: usize) -> Vec<CopySeg> {
        let n = self.pages.refs().len().max(1);
        let each = (len / n).min(PAGE_SIZE);
        self.pages
            .refs()
            .iter()
            .enumerate()
            .map(|(i, &gref)| {
                let seg_len = if i + 1 == n {
                    len - each * (n - 1)
                } else {
                    each
                };
                CopySeg {
                    gref,
                    offset: 0,
                    len: seg_len.min(PAGE_SIZE) as u16,
                }
            })
            .collect()
    }

    /// The backend's copy out of the guest pages.
    pub fn copy_from_guest(&self, segs: &[CopySeg], dst: &mut [u8]) -> Result<(), GrantError> {
        self.back.copy_from_guest(FRONT_DOMID, segs, dst)
    }

    /// The backend's copy into the guest pages.
    pub fn copy_to_guest(&self, segs: &[CopySeg], src: &[u8]) -> Result<(), GrantError> {
        self.back.copy_to_guest(FRONT_DOMID, segs, src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_round_trips_through_the_granted_pages() {
        let pair = GrantPair::new().unwrap();
        for len in [4096, 16 * 1024, 63 * 1024] {
            let segs = pair.segments(len);
            assert_eq!(segs.len(), 16);
            assert_eq!(segs.iter().map(|s| usize::from(s.len)).sum::<usize>(), len);
            let src: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            pair.copy_to_guest(&segs, &src).unwrap();
            let mut dst = vec![0; len];
            pair.copy_from_guest(&segs, &mut dst).unwrap();
            assert_eq!(dst, src);
        }
    }
}
