//! The shared ring page of Xen's `ring.h` (`DEFINE_RING_TYPES`): header layout, slot
//! geometry and raw, bounds-checked access to both.
//!
//! ```text
//! offset 0   req_prod   u32   written by the front
//! offset 4   req_event  u32   written by the back  ("notify me when req_prod passes this")
//! offset 8   rsp_prod   u32   written by the back
//! offset 12  rsp_event  u32   written by the front ("notify me when rsp_prod passes this")
//! offset 16  pvt + pad  48 bytes, zeroed by the front
//! offset 64  slot[0..N] each max(size_of Req, size_of Rsp) bytes
//! ```
//!
//! [`Sring`] knows nothing about who is front or back; [`crate::FrontRing`] and
//! [`crate::BackRing`] add the private indexes and the protocol rules, and the
//! `mock` module uses `Sring` directly to write hostile values.

use crate::error::RingError;
use crate::shared::SharedMem;

/// Offset of `req_prod` in the shared page.
pub const REQ_PROD: usize = 0;
/// Offset of `req_event` in the shared page.
pub const REQ_EVENT: usize = 4;
/// Offset of `rsp_prod` in the shared page.
pub const RSP_PROD: usize = 8;
/// Offset of `rsp_event` in the shared page.
pub const RSP_EVENT: usize = 12;
/// Offset of the first slot; bytes 16..64 are `pvt` and `__pad`.
pub const HEADER_SIZE: usize = 64;

/// Size of one slot: the slot array is a union of request and response.
pub const fn entry_size<Req, Rsp>() -> usize {
    let (req, rsp) = (size_of::<Req>(), size_of::<Rsp>());
    if req > rsp {
        req
    } else {
        rsp
    }
}

/// Number of slots of a ring in `region` bytes with `entry`-byte slots: as many as fit
/// after the header, rounded down to a power of two so an index is masked with
/// `N - 1` (ring.h `__CONST_RING_SIZE` / `__RD32`). 0 when not even one slot fits.
pub const fn ring_size(region: usize, entry: usize) -> u32 {
    if entry == 0 || region < HEADER_SIZE {
        return 0;
    }
    let fit = (region - HEADER_SIZE) / entry;
    if fit == 0 {
        return 0;
    }
    // ring.h indexes are 32-bit; cap before rounding so the shift stays in range.
    let fit = if fit > u32::MAX as usize {
        u32::MAX as usize
    } else {
        fit
    };
    // CAST: bounded to u32::MAX just above (`try_from` and `min` are not const).
    #[allow(clippy::cast_possible_truncation)]
    let fit = fit as u32;
    1 << (31 - fit.leading_zeros())
}

/// Number of slots of the `Req`/`Rsp` ring in a region of `region` bytes.
pub const fn ring_size_for<Req, Rsp>(region: usize) -> u32 {
    ring_size(region, entry_size::<Req, Rsp>())
}

/// Whether a producer that moved its index from `old` to `new` must notify a peer
/// that asked to be woken when the index passes `event`: `event` lies in `(old, new]`,
/// computed in wrapping u32 arithmetic exactly like `RING_PUSH_*_AND_CHECK_NOTIFY`.
pub const fn notify_needed(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// Raw access to a shared ring page: the four header indexes and the slots.
///
/// Every method is one bounds-checked copy or one 32-bit atomic; nothing is cached,
/// so two calls may see different values if the peer writes in between.
#[derive(Debug, Clone)]
pub struct Sring<M> {
    mem: M,
    size: u32,
    slot_size: usize,
}

impl<M: SharedMem> Sring<M> {
    /// Lay a ring with `slot_size`-byte slots over `mem` (which starts at the header).
    pub fn new(mem: M, slot_size: usize) -> Result<Self, RingError> {
        let size = ring_size(mem.size(), slot_size);
        if size == 0 {
            return Err(RingError::RegionTooSmall {
                region: mem.size(),
                entry: slot_size,
            });
        }
        Ok(Self {
            mem,
            size,
            slot_size,
        })
    }

    /// Lay the ring of `Req`/`Rsp` over `mem`.
    pub fn for_types<Req, Rsp>(mem: M) -> Result<Self, RingError> {
        Self::new(mem, entry_size::<Req, Rsp>())
    }

    /// Number of slots (a power of two).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Size of one slot in bytes.
    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    /// The underlying shared memory.
    pub fn mem(&self) -> &M {
        &self.mem
    }

    /// Give back the underlying shared memory.
    pub fn into_mem(self) -> M {
        self.mem
    }

    /// `SHARED_RING_INIT`: empty ring, both event indexes at 1 (so the first message
    /// in either direction notifies), `pvt` and padding zeroed. Only the front does
    /// this, before advertising the page to the back.
    pub fn init(&self) -> Result<(), RingError> {
        self.mem.store_u32(REQ_PROD, 0)?;
        self.mem.store_u32(RSP_PROD, 0)?;
        self.mem.store_u32(REQ_EVENT, 1)?;
        self.mem.store_u32(RSP_EVENT, 1)?;
        self.mem.write(16, &[0u8; HEADER_SIZE - 16])?;
        Ok(())
    }

    /// Byte offset of the slot that free-running index `idx` maps to.
    pub fn slot_offset(&self, idx: u32) -> usize {
        // `size` is a power of two, so masking keeps the slot below `size`, and the
        // constructor checked that `size` slots fit in the region: no overflow.
        HEADER_SIZE + (idx & (self.size - 1)) as usize * self.slot_size
    }

    /// Copy the entry at index `idx` out of the ring (one copy).
    pub fn read_slot<T: bytemuck::Pod>(&self, idx: u32) -> Result<T, RingError> {
        self.check_entry::<T>()?;
        Ok(self.mem.read_obj(self.slot_offset(idx))?)
    }

    /// Copy `value` into the slot at index `idx`.
    pub fn write_slot<T: bytemuck::Pod>(&self, idx: u32, value: &T) -> Result<(), RingError> {
        self.check_entry::<T>()?;
        Ok(self.mem.write_obj(self.slot_offset(idx), value)?)
    }

    /// Copy raw bytes out of the slot at index `idx` (at most one slot).
    pub fn read_slot_bytes(&self, idx: u32, buf: &mut [u8]) -> Result<(), RingError> {
        self.check_len(buf.len())?;
        Ok(self.mem.read(self.slot_offset(idx), buf)?)
    }

    /// Copy raw bytes into the slot at index `idx` (at most one slot).
    pub fn write_slot_bytes(&self, idx: u32, bytes: &[u8]) -> Result<(), RingError> {
        self.check_len(bytes.len())?;
        Ok(self.mem.write(self.slot_offset(idx), bytes)?)
    }

    fn check_entry<T>(&self) -> Result<(), RingError> {
        self.check_len(size_of::<T>())
    }

    fn check_len(&self, len: usize) -> Result<(), RingError> {
        if len > self.slot_size {
            return Err(RingError::EntryTooLarge {
                entry: len,
                slot: self.slot_size,
            });
        }
        Ok(())
    }

    /// Acquire-load `req_prod`.
    pub fn req_prod(&self) -> Result<u32, RingError> {
        Ok(self.mem.load_u32(REQ_PROD)?)
    }
    /// Acquire-load `req_event`.
    pub fn req_event(&self) -> Result<u32, RingError> {
        Ok(self.mem.load_u32(REQ_EVENT)?)
    }
    /// Acquire-load `rsp_prod`.
    pub fn rsp_prod(&self) -> Result<u32, RingError> {
        Ok(self.mem.load_u32(RSP_PROD)?)
    }
    /// Acquire-load `rsp_event`.
    pub fn rsp_event(&self) -> Result<u32, RingError> {
        Ok(self.mem.load_u32(RSP_EVENT)?)
    }
    /// Release-store `req_prod`.
    pub fn set_req_prod(&self, value: u32) -> Result<(), RingError> {
        Ok(self.mem.store_u32(REQ_PROD, value)?)
    }
    /// Release-store `req_event`.
    pub fn set_req_event(&self, value: u32) -> Result<(), RingError> {
        Ok(self.mem.store_u32(REQ_EVENT, value)?)
    }
    /// Release-store `rsp_prod`.
    pub fn set_rsp_prod(&self, value: u32) -> Result<(), RingError> {
        Ok(self.mem.store_u32(RSP_PROD, value)?)
    }
    /// Release-store `rsp_event`.
    pub fn set_rsp_event(&self, value: u32) -> Result<(), RingError> {
        Ok(self.mem.store_u32(RSP_EVENT, value)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::HeapMem;

    const _: () = assert!(ring_size(4096, 148) == 16);
    const _: () = assert!(ring_size(4096, 4) == 512);

    #[test]
    fn ring_sizes_are_the_largest_power_of_two_that_fits() {
        assert_eq!(ring_size(4096, 148), 16);
        assert_eq!(ring_size(4096, 4), 512);
        assert_eq!(ring_size(4096, 16), 128);
        assert_eq!(ring_size(4096, 4032), 1);
        assert_eq!(ring_size(4096, 4033), 0);
        assert_eq!(ring_size(63, 1), 0);
        assert_eq!(ring_size(4096, 0), 0);
        assert_eq!(ring_size(usize::MAX, 1), 1 << 31);
        assert_eq!(ring_size_for::<[u8; 148], [u8; 16]>(4096), 16);
        assert_eq!(ring_size_for::<[u8; 2], [u8; 4]>(4096), 512);
        assert_eq!(entry_size::<[u8; 2], [u8; 4]>(), 4);
    }

    #[test]
    fn notify_rule_matches_ring_h() {
        // Peer asked for an event at 5; we publish 3 -> 6: notify.
        assert!(notify_needed(3, 6, 5));
        assert!(notify_needed(3, 6, 6));
        // Event already passed or not reached yet: no notify.
        assert!(!notify_needed(3, 6, 3));
        assert!(!notify_needed(3, 6, 7));
        // Nothing published: never notify.
        assert!(!notify_needed(6, 6, 6));
        // Across the 2^32 wrap.
        assert!(notify_needed(u32::MAX - 1, 2, 0));
        assert!(notify_needed(u32::MAX - 1, 2, u32::MAX));
        assert!(!notify_needed(u32::MAX - 1, 2, 3));
        assert!(!notify_needed(u32::MAX - 1, 2, u32::MAX - 1));
    }

    #[test]
    fn init_writes_the_shared_ring_init_header() {
        let mem = HeapMem::page();
        mem.write(0, &[0xFF; 64]).unwrap();
        let sring = Sring::new(&mem, 148).unwrap();
        sring.init().unwrap();
        let mut header = [0u8; 64];
        mem.read(0, &mut header).unwrap();
        let mut expected = [0u8; 64];
        expected[4] = 1;
        expected[12] = 1;
        assert_eq!(header, expected);
        assert_eq!(sring.slot_offset(0), 64);
        assert_eq!(sring.slot_offset(17), 64 + 148);
        assert_eq!(sring.slot_offset(u32::MAX), 64 + 15 * 148);
    }

    #[test]
    fn oversized_entries_and_regions_are_rejected() {
        assert_eq!(
            Sring::new(HeapMem::new(100), 40).unwrap_err(),
            RingError::RegionTooSmall {
                region: 100,
                entry: 40
            }
        );
        let sring = Sring::new(HeapMem::page(), 4).unwrap();
        assert_eq!(
            sring.write_slot(0, &[0u8; 8]).unwrap_err(),
            RingError::EntryTooLarge { entry: 8, slot: 4 }
        );
        assert!(sring.write_slot_bytes(0, &[0u8; 5]).is_err());
    }
}
