//! Fuzz target: isochronous packet layouts on their way to libusb and back
//! (`pvusb_backend::usb::libusb::iso_layout`), behind the engine's checks.
//!
//! Input: data length (u16), direction (1 byte), packet count (1 byte, at
//! most [`MAX_PACKETS`]), then per packet offset and length (u16 each), then
//! per packet what the device reports (actual length u16, status byte).
//!
//! Oracles:
//! * what the engine accepts (every packet inside the buffer, no two
//!   sharing a byte, as `read_iso` checks) gathers into at most the data
//!   length, and OUT data is the packets' bytes in packet order;
//! * a layout the engine refuses is still never staged beyond its buffer
//!   (`gather` is the defence in depth the amplification fix added);
//! * scatter writes only inside accepted packets, never more than each
//!   packet's length, and its total is the sum of the per-packet results.

use pvusb_backend::usb::libusb::iso_layout::{gather, scatter};
use pvusb_backend::usb::IsoPacket;
use pvusb_protocol::{check_disjoint, IsoPacketDescriptor};

use crate::input::Input;

/// Packets per input (the engine allows up to a ring's worth of descriptor
/// pages; a small bound keeps the target fast and covers the same logic).
pub const MAX_PACKETS: usize = 64;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let data_len = usize::from(u16::from_le_bytes([input.u8(), input.u8()]));
    let is_in = input.u8() & 1 == 1;
    let count = usize::from(input.u8()) % (MAX_PACKETS + 1);
    let mut packets = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = u32::from(u16::from_le_bytes([input.u8(), input.u8()]));
        let length = u32::from(u16::from_le_bytes([input.u8(), input.u8()]));
        packets.push(IsoPacket { offset, length });
    }
    let results: Vec<(u32, i32)> = (0..count)
        .map(|_| {
            let got = u32::from(u16::from_le_bytes([input.u8(), input.u8()]));
            let status = -i32::from(input.u8() % 120);
            (got, status)
        })
        .collect();
    let buffer: Vec<u8> = (0..data_len).map(|i| (i % 251) as u8).collect();

    let data_len32 = u32::try_from(data_len).unwrap_or(u32::MAX);
    let accepted = engine_accepts(&packets, data_len32);
    let staged = gather(&packets, &buffer, is_in);
    if let Some(staging) = &staged {
        assert!(
            staging.len() <= buffer.len(),
            "staged {} bytes for a {}-byte buffer",
            staging.len(),
            buffer.len()
        );
    }
    if !accepted {
        return;
    }
    let staging = staged.expect("an accepted layout gathers");
    let sum: usize = packets.iter().map(|p| p.length as usize).sum();
    assert_eq!(staging.len(), sum);
    if !is_in {
        let want: Vec<u8> = packets
            .iter()
            .flat_map(|p| buffer[p.offset as usize..(p.offset + p.length) as usize].to_vec())
            .collect();
        assert_eq!(staging, want, "OUT data gathered in packet order");
    }
    // The device answers into the staging buffer; scatter places it back.
    let device_data: Vec<u8> = (0..staging.len()).map(|i| (i % 7) as u8 + 1).collect();
    let mut out = vec![0u8; data_len];
    let (per_packet, total) = scatter(&packets, &device_data, &results, &mut out);
    assert_eq!(per_packet.len(), packets.len());
    let mut written = vec![false; data_len];
    let mut sum_actual = 0usize;
    for (p, r) in packets.iter().zip(&per_packet) {
        assert!(r.actual_length <= p.length, "{r:?} longer than {p:?}");
        let start = p.offset as usize;
        for w in written
            .iter_mut()
            .skip(start)
            .take(r.actual_length as usize)
        {
            *w = true;
        }
        sum_actual += r.actual_length as usize;
    }
    assert_eq!(total, sum_actual, "total is the sum of the packets");
    for (i, (&b, &w)) in out.iter().zip(&written).enumerate() {
        assert!(
            w || b == 0,
            "byte {i} written outside every packet's result"
        );
    }
}

/// The engine's checks (`read_iso` in the engine's resources): each packet inside the
/// buffer, and no two sharing a byte.
fn engine_accepts(packets: &[IsoPacket], data_len: u32) -> bool {
    let mut ranges = Vec::with_capacity(packets.len());
    for p in packets {
        let d = IsoPacketDescriptor {
            offset: p.offset,
            length: p.length,
            ..IsoPacketDescriptor::default()
        };
        match d.checked_range(data_len) {
            Ok(r) => ranges.push(r),
            Err(_) => return false,
        }
    }
    check_disjoint(&mut ranges).is_ok()
}

/// Inputs that reach each path: a disjoint OUT layout out of order with a
/// gap and an empty packet, the same as IN with short and failed packets,
/// the amplification layout (every packet over the same bytes), and one
/// packet past the end.
pub fn seeds() -> Vec<Vec<u8>> {
    let build = |data_len: u16, is_in: bool, packets: &[(u16, u16)], results: &[(u16, u8)]| {
        let mut v = Vec::new();
        v.extend_from_slice(&data_len.to_le_bytes());
        v.push(u8::from(is_in));
        v.push(u8::try_from(packets.len()).unwrap_or(0));
        for &(o, l) in packets {
            v.extend_from_slice(&o.to_le_bytes());
            v.extend_from_slice(&l.to_le_bytes());
        }
        for &(g, s) in results {
            v.extend_from_slice(&g.to_le_bytes());
            v.push(s);
        }
        v
    };
    let layout = [(300, 100), (0, 100), (100, 0), (150, 100)];
    let results = [(100, 0), (40, 0), (0, 0), (100, 32)];
    vec![
        build(400, false, &layout, &results),
        build(400, true, &layout, &results),
        build(1000, true, &[(0, 1000); 16], &[(1000, 0); 16]),
        build(100, false, &[(90, 20)], &[(20, 0)]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::clean_run_tests!(2000, 300);

    #[test]
    fn the_amplification_layout_is_refused() {
        let packets = vec![
            IsoPacket {
                offset: 0,
                length: 1000
            };
            16
        ];
        assert!(!engine_accepts(&packets, 1000));
        assert_eq!(gather(&packets, &[0u8; 1000], true), None);
    }
}
