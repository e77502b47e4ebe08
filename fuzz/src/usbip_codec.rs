//! Fuzz target: the USB/IP codec (`pvusb_protocol::usbip`) on a hostile byte
//! stream, as the vhci-hcd bridge will read it from its socket.
//!
//! Input: a chunking byte (the stream is fed in pieces of varying size
//! derived from it), a flags byte (bit 0: the device side knows its iso
//! endpoints, from the next 4 bytes; bit 1: small limits that bodies can
//! reach, otherwise the defaults; bit 2: IN requests for the host side),
//! the host side's request shape (`transfer_buffer_length` u16, packet
//! count byte), then the stream. The same stream goes through the device
//! side (commands) and the host side (replies, every seqnum answering a
//! request of that shape).
//!
//! Oracles:
//! * every feed consumes at least one byte of a non-empty input, and the
//!   decoder never holds more than `Limits::max_message_len`;
//! * every decoded message re-encodes (the encoders accept everything the
//!   decoder does), into at most `max_message_len` bytes, and that encoding
//!   decodes in one piece to the same message.

use pvusb_protocol::usbip::{
    Basic, CmdSubmit, CmdSubmitHeader, CmdUnlinkHeader, DecodeError, DeviceSide, Direction,
    Framing, Header, HostSide, IsoEndpoints, Limits, Message, PacketCount, RetSubmit,
    RetSubmitHeader, RetUnlinkHeader, StreamDecoder, SubmitShape, NON_ISO_PACKETS,
};
use pvusb_protocol::IsoPacketDescriptor;

use crate::input::Input;

/// Limits a 4 KiB input can fill: bodies complete and descriptors parse.
const SMALL: Limits = Limits {
    max_transfer_len: 1024,
    max_iso_packets: 32,
};

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let chunking = input.u8();
    let flags = input.u8();
    let mask = input.u32();
    let shape_len = u32::from(u16::from_le_bytes([input.u8(), input.u8()]));
    let shape_packets = input.u8();
    let stream = &data[data.len().min(9)..];

    let limits = if flags & 2 != 0 {
        SMALL
    } else {
        Limits::DEFAULT
    };
    let device = DeviceSide {
        iso_endpoints: (flags & 1 != 0).then_some(IsoEndpoints(mask)),
    };
    drive(device, limits, stream, chunking, None);

    let shape = SubmitShape {
        direction: if flags & 4 != 0 {
            Direction::In
        } else {
            Direction::Out
        },
        transfer_buffer_length: shape_len.min(limits.max_transfer_len),
        number_of_packets: match shape_packets {
            0xff => PacketCount::NotIso,
            n => PacketCount::Count(u32::from(n) % (limits.max_iso_packets + 1)),
        },
    };
    drive(
        HostSide::new(move |_| Some(shape)),
        limits,
        stream,
        chunking,
        Some(shape),
    );
}

/// Feeds `stream` in varying pieces and checks every message that comes out.
fn drive<F: Framing + Clone>(
    framing: F,
    limits: Limits,
    stream: &[u8],
    chunking: u8,
    shape: Option<SubmitShape>,
) {
    let mut dec = StreamDecoder::new(framing.clone(), limits);
    let mut rest = stream;
    let mut step = 0usize;
    while !rest.is_empty() {
        step += 1;
        let piece = 1 + (usize::from(chunking) * step) % 97;
        let piece = &rest[..piece.min(rest.len())];
        match dec.feed(piece) {
            Ok((used, message)) => {
                assert!(
                    used > 0 && used <= piece.len(),
                    "fed {} took {used}",
                    piece.len()
                );
                assert!(dec.buffered() <= limits.max_message_len());
                rest = &rest[used..];
                if let Some(message) = message {
                    check_round_trip(framing.clone(), limits, &message, shape);
                }
            }
            Err(_) => {
                assert_eq!(dec.feed(rest), Err(DecodeError::AfterError));
                assert_eq!(dec.buffered(), 0);
                return;
            }
        }
    }
}

fn check_round_trip<F: Framing>(
    framing: F,
    limits: Limits,
    message: &Message,
    shape: Option<SubmitShape>,
) {
    let mut bytes = Vec::new();
    message
        .encode(shape.as_ref(), &mut bytes)
        .unwrap_or_else(|e| panic!("decoded {message:?} does not re-encode: {e}"));
    assert!(bytes.len() <= limits.max_message_len());
    let mut dec = StreamDecoder::new(framing, limits);
    let (used, again) = dec.feed(&bytes).expect("a re-encoded message decodes");
    assert_eq!(used, bytes.len());
    assert_eq!(again.as_ref(), Some(message));
}

fn iso(offset: u32, length: u32, actual_length: u32) -> IsoPacketDescriptor {
    IsoPacketDescriptor {
        offset,
        length,
        actual_length,
        status: 0,
    }
}

/// Prefix for the seeds: chunking, flags, iso mask, host shape.
fn prefix(flags: u8, mask: u32, shape_len: u16, packets: u8) -> Vec<u8> {
    let mut v = vec![7, flags];
    v.extend_from_slice(&mask.to_le_bytes());
    v.extend_from_slice(&shape_len.to_le_bytes());
    v.push(packets);
    v
}

/// Appends a successful `RET_SUBMIT` carrying `in_data` (and the iso packets)
/// to the `seqnum` IN request of a `buffer_len`-byte buffer, encoded against
/// the shape of that request as the host side checks it.
fn encode_in_reply(
    out: &mut Vec<u8>,
    seqnum: u32,
    buffer_len: u32,
    start_frame: i32,
    in_data: Vec<u8>,
    iso_packets: Vec<IsoPacketDescriptor>,
) {
    let number_of_packets =
        PacketCount::Count(u32::try_from(iso_packets.len()).expect("a seed's packets fit u32"));
    let shape = SubmitShape {
        direction: Direction::In,
        transfer_buffer_length: buffer_len,
        number_of_packets,
    };
    Message::RetSubmit(RetSubmit {
        header: RetSubmitHeader {
            basic: Basic::reply(seqnum),
            status: 0,
            actual_length: u32::try_from(in_data.len()).expect("a seed's data fits u32"),
            start_frame,
            number_of_packets,
            error_count: 0,
        },
        in_data,
        iso_packets,
    })
    .encode(Some(&shape), out)
    .expect("seed encodes");
}

/// Seeds: vhci's GET_DESCRIPTOR and an OUT bulk with data, an iso IN request
/// with descriptors on a known iso endpoint, an unlink, a reply stream for
/// the host side (IN data and a RET_UNLINK), an iso reply, and a header with
/// the spec's non-iso marker followed by garbage.
pub fn seeds() -> Vec<Vec<u8>> {
    let basic = |seqnum, direction, ep| Basic {
        seqnum,
        devid: 0x0001_0002,
        direction,
        ep,
    };
    let submit = |seqnum, direction, ep, len: u32, packets: PacketCount| CmdSubmitHeader {
        basic: basic(seqnum, direction, ep),
        transfer_flags: if direction == Direction::In { 0x200 } else { 0 },
        transfer_buffer_length: len,
        start_frame: 0,
        number_of_packets: packets,
        interval: 0,
        setup: [0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00],
    };
    let mut cmds = prefix(2, 0, 0, 0);
    let messages = [
        Message::CmdSubmit(CmdSubmit {
            header: submit(1, Direction::In, 0, 18, PacketCount::Count(0)),
            out_data: vec![],
            iso_packets: vec![],
        }),
        Message::CmdSubmit(CmdSubmit {
            header: submit(2, Direction::Out, 2, 31, PacketCount::Count(0)),
            out_data: b"USBC\x01\0\0\0\x24\0\0\0\x80\0\x06\x12\0\0\0\x24\0\0\0\0\0\0\0\0\0\0\0"
                .to_vec(),
            iso_packets: vec![],
        }),
        Message::CmdUnlink(CmdUnlinkHeader {
            basic: basic(3, Direction::Out, 0),
            unlink_seqnum: 1,
        }),
    ];
    for m in &messages {
        m.encode(None, &mut cmds).expect("seed encodes");
    }

    let mut iso_cmd = prefix(3, 1 << (16 + 3), 0, 0);
    Message::CmdSubmit(CmdSubmit {
        header: submit(4, Direction::In, 3, 384, PacketCount::Count(2)),
        out_data: vec![],
        iso_packets: vec![iso(0, 192, 0), iso(192, 192, 0)],
    })
    .encode(None, &mut iso_cmd)
    .expect("seed encodes");

    let mut rets = prefix(2 | 4, 0, 64, 0);
    let descriptor = vec![
        0x12, 0x01, 0x00, 0x02, 0, 0, 0, 64, 0x6b, 0x1d, 0x04, 0x01, 0, 1, 1, 2, 3, 1,
    ];
    encode_in_reply(&mut rets, 5, 64, 0, descriptor, vec![]);
    Message::RetUnlink(RetUnlinkHeader {
        basic: Basic::reply(6),
        status: -104,
    })
    .encode(None, &mut rets)
    .expect("seed encodes");

    let mut iso_ret = prefix(2 | 4, 0, 384, 2);
    let iso_packets = vec![iso(0, 192, 60), iso(192, 192, 40)];
    encode_in_reply(&mut iso_ret, 4, 384, 9, vec![0x5a; 100], iso_packets);

    let mut marker = prefix(0, 0, 0, 0xff);
    let mut header = Header::CmdSubmit(submit(7, Direction::Out, 1, 4, PacketCount::NotIso))
        .encode()
        .expect("seed encodes");
    header[32..36].copy_from_slice(&NON_ISO_PACKETS.to_be_bytes());
    marker.extend_from_slice(&header);
    marker.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 9, 0xff, 0xff]);

    vec![cmds, iso_cmd, rets, iso_ret, marker]
}

#[cfg(test)]
mod tests {
    crate::clean_run_tests!(3000, 400);

    #[test]
    fn seeds_decode_to_messages() {
        use super::*;
        // The command seeds produce messages on the device side.
        let seeds = seeds();
        let mut dec = StreamDecoder::new(DeviceSide::default(), SMALL);
        let mut rest = &seeds[0][9..];
        let mut count = 0;
        while !rest.is_empty() {
            let (used, m) = dec.feed(rest).expect("seed decodes");
            rest = &rest[used..];
            count += usize::from(m.is_some());
        }
        assert_eq!(count, 3);
    }
}
