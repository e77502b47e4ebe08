//! Linux `struct usb_iso_packet_descriptor`, the records xen-hcd grants in an
//! isochronous request's descriptor segments (not part of the Xen header).

use bytemuck::{Pod, Zeroable};
use thiserror::Error;

/// One isochronous packet descriptor (16 bytes). `offset`/`length` come from
/// the frontend; the backend writes back only `actual_length` and `status`
/// (the pages around the records hold other guest kernel data).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct IsoPacketDescriptor {
    /// Frontend to backend: the packet's byte offset in the data buffer.
    pub offset: u32,
    /// Frontend to backend: the packet length.
    pub length: u32,
    /// Backend to frontend: bytes transferred.
    pub actual_length: u32,
    /// Backend to frontend: raw negative errno (not translated by xen-hcd).
    pub status: i32,
}

assert_layout!(
    IsoPacketDescriptor: size 16, align 4,
    offset @ 0, length @ 4, actual_length @ 8, status @ 12
);
// A descriptor page holds a whole number of records.
const _: () = assert!(4096 / size_of::<IsoPacketDescriptor>() == 256);

/// A descriptor that points outside the request's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IsoPacketError {
    /// The packet's byte range is not inside the data segments.
    #[error(
        "iso packet at offset {offset} with length {length} exceeds the {data_len}-byte buffer"
    )]
    OutOfBuffer {
        /// Packet offset as sent.
        offset: u32,
        /// Packet length as sent.
        length: u32,
        /// Bytes the data segments provide.
        data_len: u32,
    },
    /// Two packets share bytes of the data buffer.
    #[error("iso packets at offsets {first} and {second} overlap")]
    Overlap {
        /// Offset of the packet that starts first.
        first: u32,
        /// Offset of the packet that starts inside it.
        second: u32,
    },
}

/// Checks that the packets' byte ranges (each already inside the buffer, see
/// [`IsoPacketDescriptor::checked_range`]) share no byte; sorts `ranges`.
///
/// WHY: a device layer stages each packet separately, so a request whose
/// packets all name the same bytes would make it allocate and copy the sum of
/// the lengths (2048 packets of 32 KiB over one 32 KiB buffer is 64 MiB per
/// request). Disjoint ranges inside the buffer also bound that sum by the data
/// length. Empty packets overlap nothing.
pub fn check_disjoint(ranges: &mut [core::ops::Range<u32>]) -> Result<(), IsoPacketError> {
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    let mut prev: Option<&core::ops::Range<u32>> = None;
    for r in ranges.iter().filter(|r| !r.is_empty()) {
        if let Some(p) = prev {
            if r.start < p.end {
                return Err(IsoPacketError::Overlap {
                    first: p.start,
                    second: r.start,
                });
            }
        }
        prev = Some(r);
    }
    Ok(())
}

impl IsoPacketDescriptor {
    /// A packet as a frontend asks for it: `length` bytes at `offset` of the
    /// data buffer, no result yet.
    pub const fn request(offset: u32, length: u32) -> Self {
        Self {
            offset,
            length,
            actual_length: 0,
            status: 0,
        }
    }

    /// Checks a (guest-written, hostile) descriptor against the data length of
    /// its validated request and returns the byte range it may use.
    pub fn checked_range(&self, data_len: u32) -> Result<core::ops::Range<u32>, IsoPacketError> {
        let err = IsoPacketError::OutOfBuffer {
            offset: self.offset,
            length: self.length,
            data_len,
        };
        let end = self.offset.checked_add(self.length).ok_or(err)?;
        if end > data_len {
            return Err(err);
        }
        Ok(self.offset..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_packets_are_refused() {
        assert_eq!(check_disjoint(&mut [0..100, 100..200, 300..300]), Ok(()));
        assert_eq!(
            check_disjoint(&mut [200..300, 0..100, 5..5, 100..200]),
            Ok(())
        );
        assert_eq!(
            check_disjoint(&mut [0..100, 0..100]),
            Err(IsoPacketError::Overlap {
                first: 0,
                second: 0
            })
        );
        assert_eq!(
            check_disjoint(&mut [150..250, 0..200]),
            Err(IsoPacketError::Overlap {
                first: 0,
                second: 150
            })
        );
    }

    #[test]
    fn range_check() {
        let d = IsoPacketDescriptor {
            offset: 100,
            length: 50,
            ..Default::default()
        };
        assert_eq!(d.checked_range(150), Ok(100..150));
        assert!(d.checked_range(149).is_err());
        let d = IsoPacketDescriptor {
            offset: u32::MAX,
            length: 2,
            ..Default::default()
        };
        assert!(d.checked_range(u32::MAX).is_err());
    }
}
