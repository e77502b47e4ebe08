//! Property tests: whatever the encoders accept decodes to itself in any
//! chunking, and arbitrary bytes neither panic the decoder nor make it hold
//! more than its bound.

use proptest::prelude::*;

use super::tests::{decode_all, device, iso};
use super::*;

/// Small limits keep the property tests fast and reach the bounds.
const SMALL: Limits = Limits {
    max_transfer_len: 512,
    max_iso_packets: 8,
};

fn arb_basic() -> impl Strategy<Value = Basic> {
    (any::<u32>(), any::<u32>(), any::<bool>(), 0u8..16).prop_map(|(seqnum, devid, is_in, ep)| {
        Basic {
            seqnum,
            devid,
            direction: if is_in { Direction::In } else { Direction::Out },
            ep,
        }
    })
}

fn arb_count() -> impl Strategy<Value = PacketCount> {
    prop_oneof![
        Just(PacketCount::NotIso),
        (0..=SMALL.max_iso_packets).prop_map(PacketCount::Count)
    ]
}

fn arb_cmd_submit() -> impl Strategy<Value = CmdSubmit> {
    (
        arb_basic(),
        any::<u32>(),
        0..=SMALL.max_transfer_len,
        any::<i32>(),
        arb_count(),
        any::<i32>(),
        any::<[u8; 8]>(),
    )
        .prop_flat_map(|(basic, flags, len, start_frame, count, interval, setup)| {
            let header = CmdSubmitHeader {
                basic,
                transfer_flags: flags,
                transfer_buffer_length: len,
                start_frame,
                number_of_packets: count,
                interval,
                setup,
            };
            let packet = (0..=len)
                .prop_flat_map(move |off| (Just(off), 0..=len - off, any::<u32>(), any::<i32>()))
                .prop_map(|(o, l, a, s)| iso(o, l, a, s));
            (
                Just(header),
                proptest::collection::vec(any::<u8>(), header.data_len() as usize),
                proptest::collection::vec(packet, count.descriptors() as usize),
            )
        })
        .prop_map(|(header, out_data, iso_packets)| CmdSubmit {
            header,
            out_data,
            iso_packets,
        })
}

/// A request's shape and a reply that fits it: iso packets laid end to end.
fn arb_reply() -> impl Strategy<Value = (SubmitShape, RetSubmit)> {
    (
        any::<bool>(),
        0..=SMALL.max_transfer_len,
        arb_count(),
        any::<u32>(),
        any::<i32>(),
        any::<i32>(),
    )
        .prop_flat_map(|(is_in, len, count, seqnum, status, start_frame)| {
            let direction = if is_in { Direction::In } else { Direction::Out };
            let shape = SubmitShape {
                direction,
                transfer_buffer_length: len,
                number_of_packets: count,
            };
            let n = count.descriptors();
            let per = len.checked_div(n).unwrap_or(0);
            let actuals = proptest::collection::vec((0..=per, any::<i32>()), n as usize);
            (
                Just(shape),
                Just((seqnum, status, start_frame)),
                actuals,
                0..=len,
            )
        })
        .prop_flat_map(
            |(shape, (seqnum, status, start_frame), actuals, plain_actual)| {
                let n = shape.number_of_packets.descriptors();
                let per = shape.transfer_buffer_length.checked_div(n).unwrap_or(0);
                let packets: Vec<_> = actuals
                    .iter()
                    .enumerate()
                    .map(|(i, &(a, s))| iso(u32::try_from(i).unwrap() * per, per, a, s))
                    .collect();
                let actual_length = if n == 0 {
                    plain_actual
                } else {
                    packets.iter().map(|p| p.actual_length).sum()
                };
                let header = RetSubmitHeader {
                    basic: Basic::reply(seqnum),
                    status,
                    actual_length,
                    start_frame,
                    number_of_packets: shape.number_of_packets,
                    error_count: 0,
                };
                let data_len = header.data_len(&shape) as usize;
                (
                    Just(shape),
                    Just(header),
                    Just(packets),
                    proptest::collection::vec(any::<u8>(), data_len),
                )
            },
        )
        .prop_map(|(shape, header, iso_packets, in_data)| {
            (
                shape,
                RetSubmit {
                    header,
                    in_data,
                    iso_packets,
                },
            )
        })
}

proptest! {
    #[test]
    fn cmd_submit_round_trips(msgs in proptest::collection::vec(arb_cmd_submit(), 1..4), chunk in 1usize..200) {
        let mut bytes = Vec::new();
        for m in &msgs {
            m.encode(&mut bytes).unwrap();
        }
        let got = decode_all(device(), SMALL, &bytes, chunk).unwrap();
        let want: Vec<_> = msgs.into_iter().map(Message::CmdSubmit).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn ret_submit_round_trips((shape, ret) in arb_reply(), chunk in 1usize..200) {
        let mut bytes = Vec::new();
        ret.encode(&shape, &mut bytes).unwrap();
        let seq = ret.header.basic.seqnum;
        let lookup = move |s: u32| (s == seq).then_some(shape);
        let got = decode_all(HostSide::new(lookup), SMALL, &bytes, chunk).unwrap();
        prop_assert_eq!(got, vec![Message::RetSubmit(ret)]);
    }

    #[test]
    fn unlinks_round_trip(basic in arb_basic(), target in any::<u32>(), status in any::<i32>()) {
        let cmd = CmdUnlinkHeader { basic, unlink_seqnum: target };
        let bytes = Header::CmdUnlink(cmd).encode().unwrap();
        prop_assert_eq!(Header::decode(&bytes, &SMALL), Ok(Header::CmdUnlink(cmd)));
        let ret = RetUnlinkHeader { basic, status };
        let bytes = Header::RetUnlink(ret).encode().unwrap();
        prop_assert_eq!(Header::decode(&bytes, &SMALL), Ok(Header::RetUnlink(ret)));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        chunk in 1usize..100,
        iso_mask in proptest::option::of(any::<u32>()),
    ) {
        let side = DeviceSide { iso_endpoints: iso_mask.map(IsoEndpoints) };
        let mut dec = StreamDecoder::new(side, SMALL);
        'feed: for piece in bytes.chunks(chunk) {
            let mut rest = piece;
            while !rest.is_empty() {
                match dec.feed(rest) {
                    Ok((used, msg)) => {
                        prop_assert!(used > 0 && used <= rest.len());
                        prop_assert!(dec.buffered() <= SMALL.max_message_len());
                        rest = &rest[used..];
                        if let Some(msg) = msg {
                            let mut again = Vec::new();
                            msg.encode(None, &mut again).unwrap();
                            prop_assert!(again.len() <= SMALL.max_message_len());
                        }
                    }
                    Err(_) => break 'feed,
                }
            }
        }
    }

    #[test]
    fn any_header_bytes_decode_or_fail_cleanly(bytes in any::<[u8; 48]>()) {
        if let Ok(h) = Header::decode(&bytes, &SMALL) {
            let again = h.encode().unwrap();
            prop_assert_eq!(Header::decode(&again, &SMALL), Ok(h));
        }
    }
}
