//! Every usbif constant of the spec (section 2), with its value.
//!
//! The ring sizes are *computed* from the entry sizes exactly like ring.h's
//! `__CONST_RING_SIZE`, so a wrong struct size shows up as a wrong slot count
//! (and a failing compile-time assert) instead of silently disagreeing with
//! the guest.

use crate::wire::{ConnRequest, ConnResponse, UrbRequest, UrbResponse};

/// `USBIF_MAX_SEGMENTS_PER_REQUEST`: `seg[]` entries per URB request, data and
/// iso-descriptor segments together.
pub const MAX_SEGMENTS_PER_REQUEST: usize = 16;

/// `USBIF_MAX_PORTNR`: maximum root-hub ports per controller (ports 1..=31).
pub const MAX_PORTNR: u8 = 31;

/// `USBIF_RING_SIZE`: bytes of a ring page used for the slot computation.
/// Fixed to 4096 by Xen commit 04535bee06 whatever the host page size.
pub const RING_PAGE_SIZE: usize = 4096;

/// Size of the shared-ring header (`req_prod`, `req_event`, `rsp_prod`,
/// `rsp_event`, 48 bytes of padding) that precedes the slot array.
pub const RING_HEADER_SIZE: usize = 64;

/// Size of a granted page; a segment's `offset + length` must not exceed it.
pub const PAGE_SIZE: usize = 4096;

/// Largest transfer a request can describe: 16 page-aligned segments.
// CAST: 16 × 4096 = 65536; the assert below fails the build if it ever lost bits.
#[allow(clippy::cast_possible_truncation)]
pub const MAX_TRANSFER_BYTES: u32 = (MAX_SEGMENTS_PER_REQUEST * PAGE_SIZE) as u32;
const _: () = assert!(MAX_TRANSFER_BYTES as usize == MAX_SEGMENTS_PER_REQUEST * PAGE_SIZE);

/// Number of slots of a ring whose entries are `entry_size` bytes: the raw fit
/// `(4096 - 64) / entry_size` rounded *down* to a power of two (ring.h
/// `__RD32`). Returns 0 for an entry of size 0 or one that does not fit.
pub const fn ring_slots(entry_size: usize) -> usize {
    if entry_size == 0 {
        return 0;
    }
    let raw = (RING_PAGE_SIZE - RING_HEADER_SIZE) / entry_size;
    if raw == 0 {
        return 0;
    }
    1usize << (usize::BITS - 1 - raw.leading_zeros())
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Bytes of one URB ring slot (`union usbif_urb_sring_entry`): 148.
pub const URB_RING_ENTRY_SIZE: usize = max(size_of::<UrbRequest>(), size_of::<UrbResponse>());

/// Bytes of one conn ring slot (`union usbif_conn_sring_entry`): 4.
pub const CONN_RING_ENTRY_SIZE: usize = max(size_of::<ConnRequest>(), size_of::<ConnResponse>());

/// `USB_URB_RING_SIZE`: URB ring slots (16). Also the number of request ids
/// xen-hcd uses (0..=15).
pub const URB_RING_SIZE: usize = ring_slots(URB_RING_ENTRY_SIZE);

/// `USB_CONN_RING_SIZE`: conn ring slots (512).
pub const CONN_RING_SIZE: usize = ring_slots(CONN_RING_ENTRY_SIZE);

const _: () = assert!(URB_RING_ENTRY_SIZE == 148);
const _: () = assert!(CONN_RING_ENTRY_SIZE == 4);
const _: () = assert!(URB_RING_SIZE == 16);
const _: () = assert!(CONN_RING_SIZE == 512);

/// `USBIF_SHORT_NOT_OK`: the only defined `transfer_flags` bit; every other
/// bit is ignored (the old frontend sent raw Linux URB flags).
pub const SHORT_NOT_OK: u16 = 0x0001;

/// `USBIF_PIPE_PORT_MASK`: root-hub port, bits 0-4.
pub const PIPE_PORT_MASK: u32 = 0x0000_001f;
/// `USBIF_PIPE_UNLINK`: bit 5, set for unlink (cancel) requests.
pub const PIPE_UNLINK: u32 = 0x0000_0020;
/// `USBIF_PIPE_DIR`: bit 7, 1 = IN (device to host).
pub const PIPE_DIR: u32 = 0x0000_0080;
/// `USBIF_PIPE_DEV_MASK` (applied after shifting by [`PIPE_DEV_SHIFT`]).
pub const PIPE_DEV_MASK: u32 = 0x7f;
/// `USBIF_PIPE_DEV_SHIFT`.
pub const PIPE_DEV_SHIFT: u32 = 8;
/// `USBIF_PIPE_EP_MASK` (applied after shifting by [`PIPE_EP_SHIFT`]).
pub const PIPE_EP_MASK: u32 = 0xf;
/// `USBIF_PIPE_EP_SHIFT`.
pub const PIPE_EP_SHIFT: u32 = 15;
/// `USBIF_PIPE_TYPE_MASK` (applied after shifting by [`PIPE_TYPE_SHIFT`]).
pub const PIPE_TYPE_MASK: u32 = 3;
/// `USBIF_PIPE_TYPE_SHIFT`.
pub const PIPE_TYPE_SHIFT: u32 = 30;
/// `USBIF_PIPE_TYPE_ISOC`.
pub const PIPE_TYPE_ISOC: u32 = 0;
/// `USBIF_PIPE_TYPE_INT`.
pub const PIPE_TYPE_INT: u32 = 1;
/// `USBIF_PIPE_TYPE_CTRL`.
pub const PIPE_TYPE_CTRL: u32 = 2;
/// `USBIF_PIPE_TYPE_BULK`.
pub const PIPE_TYPE_BULK: u32 = 3;
/// Bits the header leaves undefined (6 and 19-29). They are ignored, not
/// rejected: they are not set by Linux, and rejecting them buys nothing.
pub const PIPE_UNDEFINED_BITS: u32 = 0x3ff8_0040;

/// Bytes of one Linux `usb_iso_packet_descriptor` in the descriptor segments.
pub const ISO_PACKET_DESCRIPTOR_SIZE: usize = 16;

/// Number of guest USB addresses (the backend's address table size).
pub const USB_MAX_ADDRESSES: usize = 128;

/// Grant-table constants (documentation of what the grant layer uses; the
/// `xen` crate owns the actual operations).
pub mod grant {
    /// `GTF_permit_access`: grant type "access" (bits 0-1).
    pub const GTF_PERMIT_ACCESS: u16 = 0x1;
    /// `GTF_readonly`: the peer may only read (xen-hcd's OUT data pages).
    pub const GTF_READONLY: u16 = 0x4;
    /// `GTF_reading`: set by Xen while the peer has the page mapped for reading.
    pub const GTF_READING: u16 = 0x8;
    /// `GTF_writing`: set by Xen while the peer has the page mapped writable.
    pub const GTF_WRITING: u16 = 0x10;
    /// `GNTMAP_host_map`: backend map flag.
    pub const GNTMAP_HOST_MAP: u32 = 0x2;
    /// `GNTMAP_readonly`: backend map flag for read-only grants.
    pub const GNTMAP_READONLY: u32 = 0x4;
    /// `GNTTABOP_copy`: the hypervisor copy op (segments must not cross a page).
    pub const GNTTABOP_COPY: u32 = 5;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_slots_match_ring_h() {
        assert_eq!(ring_slots(148), 16);
        assert_eq!(ring_slots(16), 128);
        assert_eq!(ring_slots(4), 512);
        assert_eq!(ring_slots(2), 1024);
        assert_eq!(ring_slots(4032), 1);
        assert_eq!(ring_slots(4033), 0);
        assert_eq!(ring_slots(0), 0);
        // raw fit 27 -> 16, 1008 -> 512: the rounding is downward.
        assert_eq!((RING_PAGE_SIZE - RING_HEADER_SIZE) / 148, 27);
        assert_eq!(URB_RING_SIZE * URB_RING_ENTRY_SIZE + RING_HEADER_SIZE, 2432);
        assert_eq!(
            CONN_RING_SIZE * CONN_RING_ENTRY_SIZE + RING_HEADER_SIZE,
            2112
        );
    }

    #[test]
    fn constant_values() {
        assert_eq!(MAX_SEGMENTS_PER_REQUEST, 16);
        assert_eq!(MAX_PORTNR, 31);
        assert_eq!(SHORT_NOT_OK, 1);
        assert_eq!(PIPE_PORT_MASK, 0x1f);
        assert_eq!(PIPE_UNLINK, 0x20);
        assert_eq!(PIPE_DIR, 0x80);
        assert_eq!(PIPE_DEV_MASK << PIPE_DEV_SHIFT, 0x7f00);
        assert_eq!(PIPE_EP_MASK << PIPE_EP_SHIFT, 0x7_8000);
        assert_eq!(PIPE_TYPE_MASK << PIPE_TYPE_SHIFT, 0xc000_0000);
        assert_eq!(MAX_TRANSFER_BYTES, 65536);
        // Undefined bits are exactly what no defined field covers.
        let defined = PIPE_PORT_MASK
            | PIPE_UNLINK
            | PIPE_DIR
            | (PIPE_DEV_MASK << PIPE_DEV_SHIFT)
            | (PIPE_EP_MASK << PIPE_EP_SHIFT)
            | (PIPE_TYPE_MASK << PIPE_TYPE_SHIFT);
        assert_eq!(defined & PIPE_UNDEFINED_BITS, 0);
        assert_eq!(defined | PIPE_UNDEFINED_BITS, u32::MAX);
        assert_eq!(grant::GTF_READONLY, 4);
        assert_eq!(grant::GNTMAP_READONLY, 4);
    }
}
