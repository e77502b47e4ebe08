//! The bytes of one transfer: a pooled buffer with room for what the device
//! layer puts in front of the data, or the guest's own pages mapped.
//!
//! WHY headroom: libusb wants a control transfer's 8-byte setup stage right
//! before its data in one buffer. Taking the pool buffer 8 bytes longer lets
//! the engine's grant copy land behind that room, so the device layer only
//! writes the 8 setup bytes instead of moving the whole data stage (and the
//! completion hands the data back without moving it again).
//!
//! WHY a mapped variant: for large bulk transfers the device may transfer
//! straight from and to the guest's pages (see `UrbEngine::set_map_min_bytes`);
//! no Rust reference to those bytes may exist (the guest can change them at
//! any time), so a mapped buffer derefs to nothing and its data is reached
//! through [`TransferBuffer::guest`] only.

use std::ops::{Deref, DerefMut};

use pvusb_xen::MappedSegments;

/// Bytes of a control transfer's setup stage, which libusb expects right
/// before the data stage.
pub const SETUP_STAGE_LEN: usize = 8;

/// See the module doc. Derefs to the data (empty for a mapped buffer).
#[derive(Debug, Default)]
pub struct TransferBuffer {
    /// Headroom, then the data.
    bytes: Vec<u8>,
    /// Bytes of headroom at the start of `bytes`.
    head: usize,
    /// The data lives in these guest pages instead (then `bytes` is empty).
    guest: Option<MappedSegments>,
}

impl TransferBuffer {
    /// `bytes` as the data, with no headroom.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            head: 0,
            guest: None,
        }
    }

    /// `bytes` whose first `head` bytes are headroom (all of them if it is
    /// shorter).
    pub fn with_head(bytes: Vec<u8>, head: usize) -> Self {
        let head = head.min(bytes.len());
        Self {
            bytes,
            head,
            guest: None,
        }
    }

    /// The data in the guest's mapped pages.
    pub fn mapped(guest: MappedSegments) -> Self {
        Self {
            bytes: Vec::new(),
            head: 0,
            guest: Some(guest),
        }
    }

    /// Bytes of headroom before the data.
    pub fn head(&self) -> usize {
        self.head
    }

    /// The guest pages holding the data, for a mapped buffer.
    pub fn guest(&self) -> Option<&MappedSegments> {
        self.guest.as_ref()
    }

    /// Bytes of data, wherever they live.
    pub fn data_len(&self) -> usize {
        match &self.guest {
            Some(g) => g.len(),
            None => self.bytes.len() - self.head,
        }
    }

    /// Headroom and data, as one buffer (what libusb transfers from for a
    /// control transfer).
    pub fn framed_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Makes sure there are `head` bytes of headroom; moves the data only if
    /// there are not (a buffer not made by the engine).
    pub fn reserve_head(&mut self, head: usize) {
        if self.head == head || self.guest.is_some() {
            return;
        }
        let data = self.bytes.split_off(self.head);
        self.bytes.clear();
        self.bytes.resize(head, 0);
        self.bytes.extend_from_slice(&data);
        self.head = head;
    }

    /// Cuts the data to its first `len` bytes (owned bytes only).
    pub fn truncate_data(&mut self, len: usize) {
        self.bytes.truncate(self.head.saturating_add(len));
    }

    /// The data alone, as a vector of its own (the headroom dropped).
    pub fn into_data(mut self) -> Vec<u8> {
        self.bytes.drain(..self.head);
        self.bytes
    }

    /// The owned bytes, headroom included, for the pool (a mapping is
    /// released here).
    pub fn into_vec(self) -> Vec<u8> {
        self.bytes
    }
}

impl From<Vec<u8>> for TransferBuffer {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl Deref for TransferBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes.get(self.head..).unwrap_or_default()
    }
}

impl DerefMut for TransferBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        let head = self.head;
        self.bytes.get_mut(head..).unwrap_or_default()
    }
}

impl PartialEq for TransferBuffer {
    /// Equal data (where it lives and the headroom do not matter).
    fn eq(&self, other: &Self) -> bool {
        self.guest.is_none() && other.guest.is_none() && **self == **other
    }
}

impl PartialEq<Vec<u8>> for TransferBuffer {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.guest.is_none() && **self == other[..]
    }
}

impl Eq for TransferBuffer {}

impl Clone for TransferBuffer {
    /// A copy of the owned bytes; a mapped buffer's clone is empty (the
    /// mapping has one owner: it must be released exactly once).
    fn clone(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            head: self.head,
            guest: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_sits_before_the_data() {
        let mut b = TransferBuffer::with_head(vec![0; SETUP_STAGE_LEN + 3], SETUP_STAGE_LEN);
        b.copy_from_slice(&[1, 2, 3]);
        b.framed_mut()[..SETUP_STAGE_LEN].copy_from_slice(&[9; SETUP_STAGE_LEN]);
        assert_eq!(&b[..], &[1, 2, 3]);
        assert_eq!(b.data_len(), 3);
        assert_eq!(b.framed_mut(), &[9, 9, 9, 9, 9, 9, 9, 9, 1, 2, 3]);
        assert_eq!(b.into_vec().len(), SETUP_STAGE_LEN + 3);
    }

    #[test]
    fn headroom_is_made_only_when_missing() {
        let mut b = TransferBuffer::new(vec![1, 2]);
        b.reserve_head(SETUP_STAGE_LEN);
        assert_eq!(b.head(), SETUP_STAGE_LEN);
        assert_eq!(&b[..], &[1, 2]);
        let ptr = b.framed_mut().as_ptr();
        b.reserve_head(SETUP_STAGE_LEN);
        assert_eq!(b.framed_mut().as_ptr(), ptr, "no second move");
        assert_eq!(b, vec![1, 2]);
    }
}
