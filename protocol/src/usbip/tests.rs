//! Byte vectors from the kernel's layout (and the captures in
//! `usbip_protocol.rst`) and the validation rules; the property tests are
//! in `proptests.rs`.

use super::*;
use crate::wire::IsoPacketDescriptor;

/// Hex words and bytes, spaces ignored.
fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Decodes every message of `bytes` fed `chunk` bytes at a time.
pub(super) fn decode_all<F: Framing>(
    framing: F,
    limits: Limits,
    bytes: &[u8],
    chunk: usize,
) -> Result<Vec<Message>, DecodeError> {
    let mut dec = StreamDecoder::new(framing, limits);
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        let mut rest = piece;
        while !rest.is_empty() {
            let (used, msg) = dec.feed(rest)?;
            assert!(dec.buffered() <= limits.max_message_len());
            rest = &rest[used..];
            out.extend(msg);
        }
    }
    assert_eq!(dec.buffered(), 0, "stream ends at a message boundary");
    Ok(out)
}

pub(super) fn device() -> DeviceSide {
    DeviceSide::default()
}

/// GET_DESCRIPTOR(DEVICE, 18) as `vhci_send_cmd_submit` writes it: IN on
/// ep 0, `URB_DIR_IN` (0x200) set by usbcore, `number_of_packets` 0 (a
/// non-iso URB's), setup in USB byte order.
const GET_DESCRIPTOR: &str = "00000001 00000001 00010002 00000001 00000000
    00000200 00000012 00000000 00000000 00000000 8006000100001200";

#[test]
fn get_descriptor_as_vhci_sends_it() {
    let bytes = hex(GET_DESCRIPTOR);
    assert_eq!(bytes.len(), HEADER_LEN);
    let msgs = decode_all(device(), Limits::DEFAULT, &bytes, 48).unwrap();
    let want = CmdSubmit {
        header: CmdSubmitHeader {
            basic: Basic {
                seqnum: 1,
                devid: 0x0001_0002,
                direction: Direction::In,
                ep: 0,
            },
            transfer_flags: 0x200,
            transfer_buffer_length: 18,
            start_frame: 0,
            number_of_packets: PacketCount::Count(0),
            interval: 0,
            setup: [0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00],
        },
        out_data: vec![],
        iso_packets: vec![],
    };
    assert_eq!(msgs, vec![Message::CmdSubmit(want.clone())]);
    let mut again = Vec::new();
    want.encode(&mut again).unwrap();
    assert_eq!(again, bytes);
}

/// The HID capture at the end of `usbip_protocol.rst`: interrupt IN and OUT
/// commands and their replies. Note `number_of_packets` is 0 there (vhci),
/// not the 0xffffffff the table asks for, and `start_frame` is -1.
const CMD_INTR_IN: &str = "00000001 00000d05 0001000f 00000001 00000001 00000200 00000040
    ffffffff 00000000 00000004 00000000 00000000";
const CMD_INTR_OUT: &str = "00000001 00000d06 0001000f 00000000 00000001 00000000 00000040
    ffffffff 00000000 00000004 00000000 00000000";
const RET_INTR_OUT: &str = "00000003 00000d06 00000000 00000000 00000000 00000000 00000040
    ffffffff 00000000 00000000 00000000 00000000";
const RET_INTR_IN: &str = "00000003 00000d05 00000000 00000000 00000000 00000000 00000040
    ffffffff 00000000 00000000 00000000 00000000";

fn padded(prefix: &str, len: usize) -> Vec<u8> {
    let mut v = hex(prefix);
    v.resize(len, 0);
    v
}

#[test]
fn the_documented_hid_capture_decodes_both_ways() {
    let out_data = padded("ffffffff860008a784ce5ae2123763", 64);
    let in_data = padded("ffffffff860011a784ce5ae2123763612891b10201000004", 64);
    let mut cmds = hex(CMD_INTR_IN);
    cmds.extend(hex(CMD_INTR_OUT));
    cmds.extend(&out_data);
    let msgs = decode_all(device(), Limits::DEFAULT, &cmds, 7).unwrap();
    let [Message::CmdSubmit(cmd_in), Message::CmdSubmit(cmd_out)] = &msgs[..] else {
        panic!("{msgs:?}");
    };
    assert_eq!(cmd_in.header.basic.ep, 1);
    assert_eq!(cmd_in.header.start_frame, -1);
    assert_eq!(cmd_in.header.number_of_packets, PacketCount::Count(0));
    assert_eq!(cmd_in.header.interval, 4);
    assert_eq!(cmd_out.out_data, out_data);

    let shapes = [
        (0xd05, cmd_in.header.shape()),
        (0xd06, cmd_out.header.shape()),
    ];
    let mut rets = hex(RET_INTR_OUT);
    rets.extend(hex(RET_INTR_IN));
    rets.extend(&in_data);
    let lookup = |seq: u32| {
        shapes
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, shape)| *shape)
    };
    let msgs = decode_all(HostSide::new(lookup), Limits::DEFAULT, &rets, 5).unwrap();
    let [Message::RetSubmit(ret_out), Message::RetSubmit(ret_in)] = &msgs[..] else {
        panic!("{msgs:?}");
    };
    assert_eq!(ret_out.header.actual_length, 64);
    assert!(ret_out.in_data.is_empty());
    assert_eq!(ret_in.in_data, in_data);
    let mut again = Vec::new();
    ret_out.encode(&shapes[1].1, &mut again).unwrap();
    ret_in.encode(&shapes[0].1, &mut again).unwrap();
    assert_eq!(again, rets);
}

#[test]
fn unlink_and_its_reply() {
    // vhci_send_cmd_unlink: its own seqnum, devid, ep 0, the target seqnum.
    let cmd = hex(
        "00000002 00000005 00010002 00000000 00000000 00000004 0000000000000000
        0000000000000000 0000000000000000",
    );
    let msgs = decode_all(device(), Limits::DEFAULT, &cmd, 48).unwrap();
    let want = CmdUnlinkHeader {
        basic: Basic {
            seqnum: 5,
            devid: 0x0001_0002,
            direction: Direction::Out,
            ep: 0,
        },
        unlink_seqnum: 4,
    };
    assert_eq!(msgs, vec![Message::CmdUnlink(want)]);
    let mut again = Vec::new();
    Message::CmdUnlink(want).encode(None, &mut again).unwrap();
    assert_eq!(again, cmd);

    let ret = RetUnlinkHeader {
        basic: Basic::reply(5),
        status: -104, // -ECONNRESET
    };
    let bytes = Header::RetUnlink(ret).encode().unwrap();
    assert_eq!(
        &bytes[..24],
        &hex("00000004 00000005 00000000 00000000 00000000 ffffff98")[..]
    );
    assert!(bytes[24..].iter().all(|&b| b == 0));
    let none = |_| None;
    let msgs = decode_all(HostSide::new(none), Limits::DEFAULT, &bytes, 1).unwrap();
    assert_eq!(msgs, vec![Message::RetUnlink(ret)]);
}

pub(super) fn iso(
    offset: u32,
    length: u32,
    actual_length: u32,
    status: i32,
) -> IsoPacketDescriptor {
    IsoPacketDescriptor {
        offset,
        length,
        actual_length,
        status,
    }
}

fn iso_in_request() -> CmdSubmit {
    CmdSubmit {
        header: CmdSubmitHeader {
            basic: Basic {
                seqnum: 9,
                devid: 0x0001_0003,
                direction: Direction::In,
                ep: 3,
            },
            transfer_flags: 0x0202, // URB_ISO_ASAP | URB_DIR_IN
            transfer_buffer_length: 384,
            start_frame: 0,
            number_of_packets: PacketCount::Count(2),
            interval: 1,
            setup: [0; 8],
        },
        out_data: vec![],
        iso_packets: vec![iso(0, 192, 0, 0), iso(192, 192, 0, 0)],
    }
}

#[test]
fn iso_in_request_and_packed_reply() {
    let req = iso_in_request();
    let mut bytes = Vec::new();
    req.encode(&mut bytes).unwrap();
    assert_eq!(bytes.len(), HEADER_LEN + 2 * ISO_PACKET_LEN);
    assert_eq!(
        &bytes[48..64],
        &hex("00000000 000000c0 00000000 00000000")[..]
    );
    let iso_eps = IsoEndpoints::default().with(Direction::In, 3);
    let side = DeviceSide {
        iso_endpoints: Some(iso_eps),
    };
    assert_eq!(
        decode_all(side, Limits::DEFAULT, &bytes, 3).unwrap(),
        vec![Message::CmdSubmit(req.clone())]
    );

    // The reply packs the received bytes without the padding (stub_tx.c).
    let shape = req.header.shape();
    let ret = RetSubmit {
        header: RetSubmitHeader {
            basic: Basic::reply(9),
            status: 0,
            actual_length: 150,
            start_frame: 77,
            number_of_packets: PacketCount::Count(2),
            error_count: 1,
        },
        in_data: vec![0xab; 150],
        iso_packets: vec![iso(0, 192, 150, 0), iso(192, 192, 0, -18)],
    };
    let mut out = Vec::new();
    ret.encode(&shape, &mut out).unwrap();
    assert_eq!(out.len(), HEADER_LEN + 150 + 2 * ISO_PACKET_LEN);
    let lookup = |s: u32| (s == 9).then_some(shape);
    let msgs = decode_all(HostSide::new(lookup), Limits::DEFAULT, &out, 11).unwrap();
    assert_eq!(msgs, vec![Message::RetSubmit(ret)]);
}

fn header_with(word: usize, value: u32) -> Vec<u8> {
    let mut bytes = hex(GET_DESCRIPTOR);
    bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_be_bytes());
    bytes
}

fn first_error<F: Framing>(framing: F, limits: Limits, bytes: &[u8]) -> DecodeError {
    decode_all(framing, limits, bytes, bytes.len()).unwrap_err()
}

#[test]
fn header_fields_the_kernel_never_sends_are_refused() {
    let err = |bytes: Vec<u8>| first_error(device(), Limits::DEFAULT, &bytes);
    assert_eq!(
        err(header_with(0, 5)),
        DecodeError::Header(HeaderError::UnknownCommand(5))
    );
    assert_eq!(
        err(header_with(0, 0)),
        DecodeError::Header(HeaderError::UnknownCommand(0))
    );
    assert_eq!(
        err(header_with(3, 2)),
        DecodeError::Header(HeaderError::Direction(2))
    );
    assert_eq!(
        err(header_with(4, 16)),
        DecodeError::Header(HeaderError::Endpoint(16))
    );
    assert_eq!(
        err(header_with(6, u32::from_be_bytes((-1i32).to_be_bytes()))),
        DecodeError::Header(HeaderError::NegativeLength {
            field: "transfer_buffer_length",
            value: -1
        })
    );
    assert_eq!(
        err(header_with(6, DEFAULT_MAX_TRANSFER_LEN + 1)),
        DecodeError::Header(HeaderError::TooLong {
            field: "transfer_buffer_length",
            length: DEFAULT_MAX_TRANSFER_LEN + 1,
            max: DEFAULT_MAX_TRANSFER_LEN
        })
    );
    assert_eq!(
        err(header_with(8, u32::from_be_bytes((-2i32).to_be_bytes()))),
        DecodeError::Header(HeaderError::NegativePacketCount(-2))
    );
    assert_eq!(
        err(header_with(8, USBIP_MAX_ISO_PACKETS + 1)),
        DecodeError::Header(HeaderError::TooManyPackets {
            count: USBIP_MAX_ISO_PACKETS + 1,
            max: USBIP_MAX_ISO_PACKETS
        })
    );
    // The command is judged first: an unknown one is reported as such
    // whatever the other fields hold.
    let mut unknown = header_with(0, 7);
    unknown[12..16].copy_from_slice(&9u32.to_be_bytes());
    assert_eq!(
        err(unknown),
        DecodeError::Header(HeaderError::UnknownCommand(7))
    );
    // The spec's non-iso marker is accepted and means "no descriptors".
    let msgs = decode_all(
        device(),
        Limits::DEFAULT,
        &header_with(8, NON_ISO_PACKETS),
        48,
    )
    .unwrap();
    let [Message::CmdSubmit(m)] = &msgs[..] else {
        panic!()
    };
    assert_eq!(m.header.number_of_packets, PacketCount::NotIso);
}

#[test]
fn replies_sent_to_the_device_side_and_commands_to_the_host_side_are_refused() {
    assert_eq!(
        first_error(device(), Limits::DEFAULT, &header_with(0, 3)),
        DecodeError::UnexpectedCommand(Command::RetSubmit)
    );
    assert_eq!(
        first_error(device(), Limits::DEFAULT, &header_with(0, 4)),
        DecodeError::UnexpectedCommand(Command::RetUnlink)
    );
    let none = |_| None;
    assert_eq!(
        first_error(HostSide::new(none), Limits::DEFAULT, &hex(GET_DESCRIPTOR)),
        DecodeError::UnexpectedCommand(Command::CmdSubmit)
    );
    let reply = Header::RetSubmit(RetSubmitHeader {
        basic: Basic::reply(42),
        status: 0,
        actual_length: 0,
        start_frame: 0,
        number_of_packets: PacketCount::Count(0),
        error_count: 0,
    })
    .encode()
    .unwrap();
    assert_eq!(
        first_error(HostSide::new(none), Limits::DEFAULT, &reply),
        DecodeError::UnknownSeqnum(42)
    );
}

#[test]
fn packets_on_a_non_iso_endpoint_are_refused_when_the_endpoints_are_known() {
    let mut req = iso_in_request();
    req.header.basic.ep = 2;
    let mut bytes = Vec::new();
    req.encode(&mut bytes).unwrap();
    let side = DeviceSide {
        iso_endpoints: Some(IsoEndpoints::default().with(Direction::In, 3)),
    };
    assert_eq!(
        first_error(side, Limits::DEFAULT, &bytes),
        DecodeError::NonIsoWithPackets {
            ep: 2,
            direction: Direction::In,
            count: 2
        }
    );
    // Unknown endpoints: vhci's count is trusted.
    assert!(decode_all(device(), Limits::DEFAULT, &bytes, 64).is_ok());
}

#[test]
fn iso_descriptors_outside_the_buffer_are_refused() {
    let mut req = iso_in_request();
    req.iso_packets[1] = iso(300, 100, 0, 0);
    assert_eq!(
        req.encode(&mut Vec::new()),
        Err(EncodeError::Iso(IsoError::OutOfBuffer {
            index: 1,
            offset: 300,
            length: 100,
            buffer_len: 384
        }))
    );
    // The same bytes from a peer.
    let mut bytes = Vec::new();
    iso_in_request().encode(&mut bytes).unwrap();
    let at = HEADER_LEN + ISO_PACKET_LEN;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        first_error(device(), Limits::DEFAULT, &bytes),
        DecodeError::Invalid(EncodeError::Iso(IsoError::OutOfBuffer { index: 1, .. }))
    ));
}

#[test]
fn encoders_refuse_replies_vhci_would_reject() {
    let req = iso_in_request();
    let shape = req.header.shape();
    let good = RetSubmit {
        header: RetSubmitHeader {
            basic: Basic::reply(9),
            status: 0,
            actual_length: 10,
            start_frame: 0,
            number_of_packets: PacketCount::Count(2),
            error_count: 0,
        },
        in_data: vec![1; 10],
        iso_packets: vec![iso(0, 192, 10, 0), iso(192, 192, 0, 0)],
    };
    assert_eq!(good.check(&shape), Ok(()));

    let mut bad = good.clone();
    bad.header.actual_length = 385;
    bad.in_data = vec![0; 385];
    assert_eq!(
        bad.check(&shape),
        Err(EncodeError::ActualBeyondBuffer {
            actual_length: 385,
            buffer_len: 384
        })
    );

    let mut bad = good.clone();
    bad.in_data.push(0);
    assert_eq!(
        bad.check(&shape),
        Err(EncodeError::DataLength { got: 11, want: 10 })
    );

    let mut bad = good.clone();
    bad.iso_packets[1].actual_length = 5;
    assert_eq!(
        bad.check(&shape),
        Err(EncodeError::Iso(IsoError::SumMismatch {
            sum: 15,
            actual_length: 10
        }))
    );

    let mut bad = good.clone();
    bad.iso_packets[0].actual_length = 193;
    assert!(matches!(
        bad.check(&shape),
        Err(EncodeError::Iso(IsoError::ActualBeyondLength {
            index: 0,
            ..
        }))
    ));

    let mut bad = good.clone();
    bad.iso_packets.pop();
    assert!(matches!(
        bad.check(&shape),
        Err(EncodeError::PacketCount { .. })
    ));

    // OUT replies carry no data.
    let out_shape = SubmitShape {
        direction: Direction::Out,
        transfer_buffer_length: 64,
        number_of_packets: PacketCount::Count(0),
    };
    let mut out = RetSubmit {
        header: RetSubmitHeader {
            number_of_packets: PacketCount::Count(0),
            actual_length: 64,
            ..good.header
        },
        in_data: vec![],
        iso_packets: vec![],
    };
    assert_eq!(out.check(&out_shape), Ok(()));
    out.in_data = vec![0; 64];
    assert_eq!(
        out.check(&out_shape),
        Err(EncodeError::DataLength { got: 64, want: 0 })
    );
    assert_eq!(
        Message::RetSubmit(good).encode(None, &mut Vec::new()),
        Err(EncodeError::NoRequest)
    );
}

#[test]
fn headers_that_do_not_fit_the_wire_are_not_encoded() {
    let mut h = iso_in_request().header;
    h.basic.ep = 16;
    assert_eq!(
        Header::CmdSubmit(h).encode(),
        Err(HeaderError::Endpoint(16))
    );
    let mut h = iso_in_request().header;
    h.transfer_buffer_length = 0x8000_0000;
    assert!(matches!(
        Header::CmdSubmit(h).encode(),
        Err(HeaderError::NegativeLength { .. })
    ));
    let mut h = iso_in_request().header;
    h.number_of_packets = PacketCount::Count(NON_ISO_PACKETS);
    assert!(Header::CmdSubmit(h).encode().is_err());
}

#[test]
fn a_failed_stream_stays_failed_and_holds_nothing() {
    let mut dec = StreamDecoder::new(device(), Limits::DEFAULT);
    assert!(dec.feed(&header_with(0, 9)).is_err());
    assert_eq!(dec.buffered(), 0);
    assert_eq!(dec.feed(&hex(GET_DESCRIPTOR)), Err(DecodeError::AfterError));
}

#[test]
fn an_announced_body_is_not_allocated_before_it_arrives() {
    // OUT, 1 MiB announced, 10 bytes sent: only 10 bytes are held.
    let mut dec = StreamDecoder::new(device(), Limits::DEFAULT);
    let mut bytes = header_with(3, 0);
    bytes[24..28].copy_from_slice(&DEFAULT_MAX_TRANSFER_LEN.to_be_bytes());
    bytes.extend([0u8; 10]);
    let (used, msg) = dec.feed(&bytes).unwrap();
    assert_eq!((used, msg), (58, None));
    assert_eq!(dec.buffered(), 58);
}

#[test]
fn limits_bound_the_message() {
    assert_eq!(
        Limits::DEFAULT.max_message_len(),
        48 + (1 << 20) + 1024 * 16
    );
    let huge = Limits {
        max_transfer_len: u32::MAX,
        max_iso_packets: u32::MAX,
    };
    assert!(huge.max_message_len() < usize::MAX);
}
