//! Isochronous packets between the caller's layout and libusb's: a caller
//! may place each packet at any offset of its buffer, libusb wants them back
//! to back. The engine already packs them (its grant copy lands in libusb's
//! layout), so [`is_packed`] lets the FFI use its buffer as is; [`gather`]
//! and [`scatter`] serve other callers. Safe code, kept out of the FFI
//! module so that it can be fuzzed without a device
//! (`fuzz/src/iso_layout.rs`).

use crate::usb::libusb::status::transfer_outcome;
use crate::usb::{IsoPacket, IsoPacketResult, TransferOutcome};

/// Whether `packets` lie back to back from offset 0 and fill exactly
/// `len` bytes: libusb's own layout, usable without staging.
pub fn is_packed(packets: &[IsoPacket], len: usize) -> bool {
    let mut at = 0usize;
    for p in packets {
        if p.offset as usize != at {
            return false;
        }
        at = match at.checked_add(p.length as usize) {
            Some(end) => end,
            None => return false,
        };
    }
    at == len
}

/// The results of packed `packets` (see [`is_packed`]) from libusb's
/// per-packet `(actual_length, status)`: one per packet, missing ones
/// failed. Returns the results and the total transferred.
pub fn results(packets: &[IsoPacket], iso: &[(u32, i32)]) -> (Vec<IsoPacketResult>, usize) {
    let mut total = 0usize;
    let results = packets
        .iter()
        .enumerate()
        .map(|(i, p)| match iso.get(i) {
            Some(&(got, status)) => {
                let got = got.min(p.length);
                total = total.saturating_add(got as usize);
                IsoPacketResult {
                    actual_length: got,
                    outcome: transfer_outcome(status),
                }
            }
            None => IsoPacketResult {
                actual_length: 0,
                outcome: TransferOutcome::Error,
            },
        })
        .collect();
    (results, total)
}

/// The contiguous libusb buffer for iso packets (OUT data gathered), or `None`
/// if a packet lies outside the buffer.
pub fn gather(packets: &[IsoPacket], buffer: &[u8], is_in: bool) -> Option<Vec<u8>> {
    let mut total = 0usize;
    for p in packets {
        let end = (p.offset as usize).checked_add(p.length as usize)?;
        if end > buffer.len() {
            return None;
        }
        total = total.checked_add(p.length as usize)?;
    }
    // The engine refuses overlapping packets; never stage more than the
    // buffer whatever the caller checked.
    if total > buffer.len() {
        return None;
    }
    if is_in {
        return Some(vec![0; total]);
    }
    let mut staging = Vec::with_capacity(total);
    for p in packets {
        staging.extend_from_slice(
            buffer.get(p.offset as usize..(p.offset as usize + p.length as usize))?,
        );
    }
    Some(staging)
}

/// Copies each packet's received bytes from the contiguous staging buffer
/// back to its offset in the caller's buffer (for OUT this rewrites the same
/// bytes) and turns libusb's per-packet `(actual_length, status)` into
/// results: one per packet, missing ones failed. Returns the results and the
/// total transferred.
pub fn scatter(
    packets: &[IsoPacket],
    staging: &[u8],
    iso: &[(u32, i32)],
    buffer: &mut [u8],
) -> (Vec<IsoPacketResult>, usize) {
    let mut results = Vec::with_capacity(packets.len());
    let mut pos = 0usize;
    let mut total = 0usize;
    for (i, p) in packets.iter().enumerate() {
        let Some(&(got, status)) = iso.get(i) else {
            results.push(IsoPacketResult {
                actual_length: 0,
                outcome: TransferOutcome::Error,
            });
            continue;
        };
        let got = got.min(p.length);
        let src = staging
            .get(pos..pos.saturating_add(got as usize))
            .unwrap_or_default();
        let start = p.offset as usize;
        if let Some(dst) = buffer.get_mut(start..start.saturating_add(src.len())) {
            dst.copy_from_slice(src);
        }
        pos = pos.saturating_add(p.length as usize);
        total = total.saturating_add(src.len());
        let actual_length = u32::try_from(src.len()).unwrap_or(0);
        results.push(IsoPacketResult {
            actual_length,
            outcome: transfer_outcome(status),
        });
    }
    (results, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TransferOutcome::{Completed, Stall};

    fn p(offset: u32, length: u32) -> IsoPacket {
        IsoPacket { offset, length }
    }

    /// Each packet's (actual length, outcome).
    fn lengths_and_outcomes(results: &[IsoPacketResult]) -> Vec<(u32, TransferOutcome)> {
        results
            .iter()
            .map(|r| (r.actual_length, r.outcome))
            .collect()
    }

    #[test]
    fn iso_scatter_places_packets_at_their_offsets() {
        let packets = [p(8, 4), p(0, 4), p(4, 2)];
        // libusb packed them back to back: [a a a a][b b b b][c c]; packet 0 short, 1 stalled.
        let staging = [1, 1, 1, 0, 2, 2, 2, 2, 3, 3];
        let iso = [(3, 0), (4, 4)];
        let mut buffer = vec![0xee; 12];
        let (results, total) = scatter(&packets, &staging, &iso, &mut buffer);
        assert_eq!(
            buffer,
            vec![2, 2, 2, 2, 0xee, 0xee, 0xee, 0xee, 1, 1, 1, 0xee]
        );
        assert_eq!(total, 7);
        let want = [(3, Completed), (4, Stall), (0, TransferOutcome::Error)];
        assert_eq!(lengths_and_outcomes(&results), want);
    }

    #[test]
    fn packed_layout_is_recognised_and_reported_without_moving_data() {
        assert!(is_packed(&[p(0, 4), p(4, 0), p(4, 2)], 6));
        assert!(is_packed(&[], 0));
        assert!(!is_packed(&[p(0, 4), p(4, 2)], 7), "buffer longer");
        assert!(!is_packed(&[p(0, 4), p(5, 2)], 7), "gap");
        assert!(!is_packed(&[p(4, 2), p(0, 4)], 6), "out of order");
        assert!(!is_packed(&[p(0, u32::MAX), p(u32::MAX, u32::MAX)], 0));
        let (r, total) = results(&[p(0, 4), p(4, 2), p(6, 1)], &[(9, 0), (1, 4)]);
        assert_eq!(total, 5);
        let want = [(4, Completed), (1, Stall), (0, TransferOutcome::Error)];
        assert_eq!(lengths_and_outcomes(&r), want);
    }

    #[test]
    fn iso_gather_checks_bounds_and_packs() {
        let buf: Vec<u8> = (0..10).collect();
        let packets = [p(6, 2), p(0, 3)];
        assert_eq!(gather(&packets, &buf, false), Some(vec![6, 7, 0, 1, 2]));
        assert_eq!(gather(&packets, &buf, true), Some(vec![0; 5]));
        assert_eq!(gather(&[p(9, 2)], &buf, false), None);
        assert_eq!(gather(&[p(u32::MAX, u32::MAX)], &buf, true), None);
    }
}
