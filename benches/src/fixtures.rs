//! Well-formed usbif requests as xen-hcd would send them, for validation and
//! ring benches.

use pvusb_protocol::consts::PAGE_SIZE;
use pvusb_protocol::usb::request::{DIR_IN, GET_STATUS, RECIP_DEVICE, TYPE_STANDARD};
use pvusb_protocol::{Direction, Pipe, RequestSegment, SetupPacket, TransferType, UrbRequest};

/// Root-hub port the fixtures address.
pub const PORT: u8 = 1;
/// Number of ports the fixtures validate against.
pub const NUM_PORTS: u8 = 8;
/// Device address the fixtures address.
pub const DEVICE: u8 = 2;
/// Bulk/iso endpoint number.
pub const ENDPOINT: u8 = 1;
/// First grant reference of the fixtures' data pages.
pub const FIRST_GREF: u32 = 8;

fn pipe(ty: TransferType, dir: Direction, endpoint: u8) -> Pipe {
    // Constant, in-range fields: encoding cannot fail.
    Pipe::new(ty, dir, DEVICE, endpoint, PORT).unwrap_or(Pipe::from_raw(0))
}

/// `len` bytes split into at most 16 page-aligned segments of one page each,
/// the way xen-hcd maps a buffer that starts on a page boundary.
pub fn page_segments(len: usize) -> Vec<RequestSegment> {
    let mut segs = Vec::new();
    let mut left = len;
    let mut gref = FIRST_GREF;
    while left > 0 {
        let n = left.min(PAGE_SIZE);
        segs.push(RequestSegment::new(gref, 0, n as u16));
        left -= n;
        gref += 1;
    }
    segs
}

/// GET_STATUS on the device: the smallest control transfer (2-byte data stage).
pub fn control_get_status(id: u16) -> UrbRequest {
    let setup = SetupPacket::new(DIR_IN | TYPE_STANDARD | RECIP_DEVICE, GET_STATUS, 0, 0, 2);
    let pipe = pipe(TransferType::Control, Direction::In, 0);
    UrbRequest::control(id, pipe, setup, &page_segments(2)).unwrap_or_default()
}

/// A bulk transfer of `len` bytes (≤ 64 KiB) on endpoint 1.
pub fn bulk(id: u16, dir: Direction, len: usize) -> UrbRequest {
    let pipe = pipe(TransferType::Bulk, dir, ENDPOINT);
    UrbRequest::bulk(id, pipe, false, &page_segments(len)).unwrap_or_default()
}

/// An isochronous IN transfer of `packets` packets of `packet_len` bytes, with
/// its descriptor page after the data pages.
pub fn iso_in(id: u16, packets: u16, packet_len: usize) -> UrbRequest {
    let pipe = pipe(TransferType::Isochronous, Direction::In, ENDPOINT);
    let data = page_segments(usize::from(packets) * packet_len);
    let desc_gref = FIRST_GREF + data.len() as u32;
    let desc_len = usize::from(packets) * pvusb_protocol::consts::ISO_PACKET_DESCRIPTOR_SIZE;
    let desc = [RequestSegment::new(desc_gref, 0, desc_len as u16)];
    UrbRequest::isochronous(id, pipe, 1, 0, packets, &data, &desc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvusb_protocol::{validate, ValidatedUrb};

    fn valid(req: &UrbRequest) -> bool {
        matches!(validate(req, NUM_PORTS), Ok(ValidatedUrb::Submit(_)))
    }

    #[test]
    fn every_fixture_passes_validation() {
        assert!(valid(&control_get_status(3)));
        for len in [0, 64, 4096, 16 * 1024, 63 * 1024, 64 * 1024] {
            assert!(valid(&bulk(1, Direction::In, len)), "bulk in {len}");
            assert!(valid(&bulk(1, Direction::Out, len)), "bulk out {len}");
        }
        assert!(valid(&iso_in(5, 8, 192)));
    }

    #[test]
    fn segments_cover_the_length_in_pages() {
        let segs = page_segments(63 * 1024);
        assert_eq!(segs.len(), 16);
        assert_eq!(
            segs.iter().map(|s| u32::from(s.length)).sum::<u32>(),
            63 * 1024
        );
        assert!(page_segments(0).is_empty());
    }
}
