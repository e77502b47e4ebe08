//! One passing and one failing case per rule, plus property tests.

use bytemuck::Zeroable;
use proptest::prelude::*;

use super::*;
use crate::{IsoParams, Status};

const PORTS: u8 = 8;
const CTRL_IN: Pipe = Pipe::from_raw(0x8000_0583); // port 3, dev 5, ep 0
const BULK_OUT: Pipe = Pipe::from_raw(0xc001_0501); // port 1, dev 5, ep 2

fn pipe(t: TransferType, dir: Direction, ep: u8, port: u8) -> Pipe {
    Pipe::new(t, dir, 5, ep, port).unwrap()
}

fn seg(offset: u16, length: u16) -> RequestSegment {
    RequestSegment::new(0x100 + u32::from(offset), offset, length)
}

fn submit(r: &UrbRequest) -> Submit {
    match validate(r, PORTS) {
        Ok(ValidatedUrb::Submit(s)) => s,
        other => panic!("expected a submit, got {other:?}"),
    }
}

#[test]
fn control_in_passes_with_its_fields() {
    let setup = SetupPacket::new(0x80, 6, 0x0100, 0, 18);
    let r = UrbRequest::control(7, CTRL_IN, setup, &[seg(100, 64)]).unwrap();
    let s = submit(&r);
    assert_eq!((s.id(), s.port(), s.devnum(), s.endpoint()), (7, 3, 5, 0));
    assert_eq!(s.direction(), Direction::In);
    assert_eq!(s.setup(), Some(setup));
    assert_eq!(s.data_len(), 64);
    assert_eq!(s.transfer_len(), 18);
    assert_eq!(s.data_segments(), &[seg(100, 64)]);
    assert_eq!(validate(&r, PORTS).unwrap().id(), 7);
}

#[test]
fn port_range() {
    for port in [1, PORTS] {
        let r = UrbRequest::bulk(
            0,
            pipe(TransferType::Bulk, Direction::In, 1, port),
            false,
            &[],
        )
        .unwrap();
        assert_eq!(submit(&r).port(), port);
    }
    for port in [0, PORTS + 1, 31] {
        let r = UrbRequest::bulk(
            0,
            pipe(TransferType::Bulk, Direction::In, 1, port),
            false,
            &[],
        )
        .unwrap();
        let e = validate(&r, PORTS).unwrap_err();
        assert_eq!(
            e,
            ValidateError::PortOutOfRange {
                port,
                num_ports: PORTS
            }
        );
        assert_eq!(e.status(), Status::Inval);
    }
    // A controller with 0 ports accepts nothing.
    let r = UrbRequest::bulk(0, BULK_OUT, false, &[]).unwrap();
    assert!(validate(&r, 0).is_err());
}

#[test]
fn segment_count_limit() {
    let mut r = UrbRequest::bulk(0, BULK_OUT, false, &[seg(0, 4096); 16]).unwrap();
    assert_eq!(submit(&r).data_len(), 65536);
    assert_eq!(r.buffer_length, 0, "64 KiB arrives as buffer_length 0");
    r.nr_buffer_segs = 17;
    assert_eq!(
        validate(&r, PORTS),
        Err(ValidateError::TooManySegments { data: 17, desc: 0 })
    );
    r.nr_buffer_segs = u16::MAX;
    assert!(matches!(
        validate(&r, PORTS),
        Err(ValidateError::TooManySegments { .. })
    ));
}

#[test]
fn segments_must_stay_in_their_page() {
    let ok = UrbRequest::bulk(0, BULK_OUT, false, &[seg(4000, 96), seg(0, 4096)]).unwrap();
    assert_eq!(submit(&ok).data_len(), 4192);
    let bad = UrbRequest::bulk(0, BULK_OUT, false, &[seg(0, 10), seg(4000, 97)]).unwrap();
    assert_eq!(
        validate(&bad, PORTS),
        Err(ValidateError::SegmentOutOfPage {
            index: 1,
            offset: 4000,
            length: 97
        })
    );
    let bad = UrbRequest::bulk(0, BULK_OUT, false, &[seg(u16::MAX, u16::MAX)]).unwrap();
    assert!(matches!(
        validate(&bad, PORTS),
        Err(ValidateError::SegmentOutOfPage { index: 0, .. })
    ));
}

#[test]
fn zero_length_segments_are_accepted_and_dropped() {
    let r = UrbRequest::bulk(0, BULK_OUT, false, &[seg(0, 0), seg(8, 8), seg(4096, 0)]).unwrap();
    let s = submit(&r);
    assert_eq!(s.data_segments(), &[seg(8, 8)]);
    assert_eq!(s.data_len(), 8);
    // Offset is still checked on an empty segment.
    let bad = UrbRequest::bulk(0, BULK_OUT, false, &[seg(4097, 0)]).unwrap();
    assert!(validate(&bad, PORTS).is_err());
}

#[test]
fn buffer_length_is_ignored() {
    let mut r = UrbRequest::bulk(0, BULK_OUT, false, &[seg(0, 100)]).unwrap();
    r.buffer_length = 1;
    assert_eq!(submit(&r).data_len(), 100);
}

#[test]
fn stale_segments_past_the_used_ones_are_ignored() {
    let mut r = UrbRequest::bulk(0, BULK_OUT, false, &[seg(0, 100)]).unwrap();
    for s in r.seg.iter_mut().skip(1) {
        *s = RequestSegment::new(u32::MAX, u16::MAX, u16::MAX);
    }
    assert_eq!(submit(&r).data_len(), 100);
}

#[test]
fn bulk_ignores_stale_union() {
    let mut r = UrbRequest::bulk(0, BULK_OUT, true, &[seg(0, 512)]).unwrap();
    r.u = [0xff; 8];
    let s = submit(&r);
    assert_eq!(s.kind(), &SubmitKind::Bulk);
    assert!(s.short_not_ok());
    assert_eq!(s.endpoint_address(), 2);
    // Undefined flag bits and pipe bits are ignored.
    r.transfer_flags = 0xfffe;
    r.pipe |= crate::consts::PIPE_UNDEFINED_BITS;
    let s = submit(&r);
    assert!(!s.short_not_ok());
    assert_eq!(s.endpoint(), 2);
}

#[test]
fn interrupt_reads_only_the_interval() {
    let p = pipe(TransferType::Interrupt, Direction::In, 1, 2);
    let mut r = UrbRequest::interrupt(1, p, 8, false, &[seg(0, 8)]).unwrap();
    r.u[2..].copy_from_slice(&[0xaa; 6]); // stale pad
    assert_eq!(submit(&r).kind(), &SubmitKind::Interrupt { interval: 8 });
}

#[test]
fn endpoint_zero_iff_control() {
    let r =
        UrbRequest::control(0, CTRL_IN.with_unlink(false), SetupPacket::default(), &[]).unwrap();
    assert!(validate(&r, PORTS).is_ok());
    let on_ep1 = pipe(TransferType::Control, Direction::In, 1, 3);
    let r = UrbRequest::control(0, on_ep1, SetupPacket::default(), &[]).unwrap();
    assert_eq!(
        validate(&r, PORTS),
        Err(ValidateError::ControlOnNonZeroEndpoint { endpoint: 1 })
    );
    for t in [
        TransferType::Bulk,
        TransferType::Interrupt,
        TransferType::Isochronous,
    ] {
        let mut r = UrbRequest::bulk(0, pipe(t, Direction::In, 0, 1), false, &[]).unwrap();
        r.set_isoc(IsoParams {
            number_of_packets: 1,
            ..Default::default()
        });
        assert_eq!(
            validate(&r, PORTS),
            Err(ValidateError::NonControlOnEndpointZero { transfer_type: t })
        );
    }
}

#[test]
fn control_wlength_needs_enough_segments() {
    let setup = SetupPacket::new(0x80, 6, 0x0200, 0, 255);
    let r = UrbRequest::control(0, CTRL_IN, setup, &[seg(0, 200), seg(0, 55)]).unwrap();
    assert_eq!(submit(&r).transfer_len(), 255);
    let r = UrbRequest::control(0, CTRL_IN, setup, &[seg(0, 200), seg(0, 54)]).unwrap();
    assert_eq!(
        validate(&r, PORTS),
        Err(ValidateError::ControlDataTooShort {
            w_length: 255,
            data_len: 254
        })
    );
    let r = UrbRequest::control(0, CTRL_IN, setup, &[]).unwrap();
    assert!(validate(&r, PORTS).is_err());
}

#[test]
fn control_data_at_most_65535() {
    let setup = SetupPacket::new(0xc0, 1, 0, 0, u16::MAX);
    let mut segs = [seg(0, 4096); 16];
    segs[15] = seg(0, 4095);
    let r = UrbRequest::control(0, CTRL_IN, setup, &segs).unwrap();
    assert_eq!(submit(&r).data_len(), 65535);
    let r = UrbRequest::control(0, CTRL_IN, setup, &[seg(0, 4096); 16]).unwrap();
    assert_eq!(
        validate(&r, PORTS),
        Err(ValidateError::ControlBufferTooLarge { data_len: 65536 })
    );
}

#[test]
fn control_direction_mismatch_is_accepted() {
    // OUT pipe but IN setup packet: Linux only warns; the setup packet rules.
    let p = pipe(TransferType::Control, Direction::Out, 0, 3);
    let setup = SetupPacket::new(0x80, 0, 0, 0, 2);
    let r = UrbRequest::control(0, p, setup, &[seg(0, 2)]).unwrap();
    let s = submit(&r);
    assert_eq!(s.direction(), Direction::Out);
    assert!(s.setup().unwrap().is_in());
}

fn iso_pipe() -> Pipe {
    pipe(TransferType::Isochronous, Direction::In, 1, 4)
}

#[test]
fn iso_passes_with_descriptors() {
    let data = [seg(0, 4096), seg(0, 1000)];
    let desc = [seg(4080, 16), seg(0, 16)]; // descriptors straddle pages
    let r = UrbRequest::isochronous(3, iso_pipe(), 1, 99, 2, &data, &desc).unwrap();
    let s = submit(&r);
    assert_eq!(s.data_len(), 5096);
    match s.kind() {
        SubmitKind::Isochronous {
            interval,
            start_frame,
            number_of_packets,
            desc_segs,
        } => {
            assert_eq!((*interval, *start_frame, *number_of_packets), (1, 99, 2));
            assert_eq!(desc_segs.as_slice(), &desc);
            assert_eq!(desc_segs.total_bytes(), 32);
        }
        k => panic!("{k:?}"),
    }
}

#[test]
fn iso_needs_packets_and_room_for_descriptors() {
    let r = UrbRequest::isochronous(3, iso_pipe(), 1, 0, 0, &[], &[seg(0, 16)]).unwrap();
    assert_eq!(validate(&r, PORTS), Err(ValidateError::IsoNoPackets));
    let r =
        UrbRequest::isochronous(3, iso_pipe(), 1, 0, 3, &[], &[seg(0, 16), seg(0, 31)]).unwrap();
    assert_eq!(
        validate(&r, PORTS),
        Err(ValidateError::IsoDescriptorsTooShort {
            needed: 48,
            available: 47
        })
    );
    let r = UrbRequest::isochronous(3, iso_pipe(), 1, 0, 3, &[], &[seg(0, 48)]).unwrap();
    assert!(validate(&r, PORTS).is_ok());
}

#[test]
fn iso_segment_total_limit() {
    let r =
        UrbRequest::isochronous(3, iso_pipe(), 1, 0, 1, &[seg(0, 1); 15], &[seg(0, 16)]).unwrap();
    assert!(validate(&r, PORTS).is_ok());
    let mut r = r;
    r.set_isoc(IsoParams {
        interval: 1,
        start_frame: 0,
        number_of_packets: 1,
        nr_frame_desc_segs: 2,
    });
    assert_eq!(
        validate(&r, PORTS),
        Err(ValidateError::TooManySegments { data: 15, desc: 2 })
    );
}

#[test]
fn iso_descriptor_segments_are_page_checked() {
    let r =
        UrbRequest::isochronous(3, iso_pipe(), 1, 0, 1, &[seg(0, 8)], &[seg(4090, 16)]).unwrap();
    assert_eq!(
        validate(&r, PORTS),
        Err(ValidateError::SegmentOutOfPage {
            index: 1,
            offset: 4090,
            length: 16
        })
    );
}

#[test]
fn non_iso_ignores_stale_nr_frame_desc_segs() {
    let mut r = UrbRequest::bulk(0, BULK_OUT, false, &[seg(0, 1); 16]).unwrap();
    r.u = [0, 0, 0, 0, 0, 0, 16, 0]; // would be nr_frame_desc_segs = 16
    assert!(validate(&r, PORTS).is_ok());
}

#[test]
fn unlink_reads_only_its_fields() {
    let mut r = UrbRequest::unlink(9, BULK_OUT, 15);
    // Everything else stale, including an impossible nr_buffer_segs.
    r.nr_buffer_segs = 999;
    r.transfer_flags = 0xffff;
    r.seg = [RequestSegment::new(1, u16::MAX, u16::MAX); 16];
    r.u[2..].copy_from_slice(&[0xee; 6]);
    assert_eq!(
        validate(&r, PORTS),
        Ok(ValidatedUrb::Unlink {
            id: 9,
            port: 1,
            unlink_id: 15,
            pipe: BULK_OUT.with_unlink(true)
        })
    );
    assert_eq!(validate(&r, PORTS).unwrap().id(), 9);
    r.set_unlink_id(16);
    assert_eq!(
        validate(&r, PORTS),
        Err(ValidateError::UnlinkIdOutOfRange { unlink_id: 16 })
    );
    let r = UrbRequest::unlink(9, Pipe::from_raw(0xc001_0500), 1); // port 0
    assert!(matches!(
        validate(&r, PORTS),
        Err(ValidateError::PortOutOfRange { port: 0, .. })
    ));
}

#[test]
fn every_error_is_inval() {
    let all = [
        ValidateError::ControlBufferTooLarge { data_len: 0 },
        ValidateError::ControlDataTooShort {
            w_length: 0,
            data_len: 0,
        },
        ValidateError::ControlOnNonZeroEndpoint { endpoint: 0 },
        ValidateError::IsoDescriptorsTooShort {
            needed: 0,
            available: 0,
        },
        ValidateError::IsoNoPackets,
        ValidateError::NonControlOnEndpointZero {
            transfer_type: TransferType::Bulk,
        },
        ValidateError::PortOutOfRange {
            port: 0,
            num_ports: 0,
        },
        ValidateError::SegmentOutOfPage {
            index: 0,
            offset: 0,
            length: 0,
        },
        ValidateError::TooManySegments { data: 0, desc: 0 },
        ValidateError::UnlinkIdOutOfRange { unlink_id: 0 },
    ];
    for e in all {
        assert_eq!(e.status(), Status::Inval);
        assert!(!e.to_string().is_empty());
    }
}

/// Every invariant documented on [`Submit`] and [`ValidatedUrb`].
fn check_invariants(req: &UrbRequest, num_ports: u8, v: &ValidatedUrb) {
    match v {
        ValidatedUrb::Unlink {
            id,
            port,
            unlink_id,
            ..
        } => {
            assert_eq!(*id, req.id);
            assert!(*port >= 1 && *port <= num_ports);
            assert!(usize::from(*unlink_id) < URB_RING_SIZE);
            assert!(req.pipe().is_unlink());
        }
        ValidatedUrb::Submit(s) => {
            assert!(!req.pipe().is_unlink());
            assert!(s.port() >= 1 && s.port() <= num_ports);
            assert_eq!(
                s.endpoint() == 0,
                s.transfer_type() == TransferType::Control
            );
            let sum: u32 = s.data_segments().iter().map(|g| u32::from(g.length)).sum();
            assert_eq!(sum, s.data_len());
            assert!(s.data_len() <= crate::consts::MAX_TRANSFER_BYTES);
            assert!(usize::from(req.nr_buffer_segs) <= MAX_SEGMENTS_PER_REQUEST);
            for g in s.data_segments() {
                assert!(g.fits_in_page() && g.length > 0);
            }
            match s.kind() {
                SubmitKind::Control(setup) => {
                    assert!(s.data_len() <= 65535);
                    assert!(u32::from(setup.w_length) <= s.data_len());
                    assert!(s.transfer_len() <= s.data_len());
                }
                SubmitKind::Isochronous {
                    number_of_packets,
                    desc_segs,
                    ..
                } => {
                    assert!(*number_of_packets >= 1);
                    assert!(u32::from(*number_of_packets) * 16 <= desc_segs.total_bytes());
                    let total = usize::from(req.nr_buffer_segs)
                        + usize::from(req.isoc().nr_frame_desc_segs);
                    assert!(total <= MAX_SEGMENTS_PER_REQUEST);
                    for g in desc_segs.as_slice() {
                        assert!(g.fits_in_page() && g.length > 0);
                    }
                }
                SubmitKind::Bulk | SubmitKind::Interrupt { .. } => {
                    assert_eq!(s.transfer_len(), s.data_len());
                }
            }
        }
    }
}

/// Requests near the validity edge, so both outcomes are exercised.
fn near_valid_request() -> impl Strategy<Value = UrbRequest> {
    let seg = (any::<u32>(), 0u16..4200, 0u16..4200)
        .prop_map(|(g, o, l)| RequestSegment::new(g, o, l.min(4200 - o)));
    (
        any::<u16>(),
        0u16..19,
        any::<u32>(),
        0u8..34,
        any::<u16>(),
        prop_oneof![Just(0u16), 0u16..20, any::<u16>()],
        0u16..18,
        proptest::array::uniform16(seg),
    )
        .prop_map(|(id, nr, pipe_bits, port, w0, w_len, desc, seg)| {
            let mut r = UrbRequest {
                id,
                nr_buffer_segs: nr,
                seg,
                ..UrbRequest::zeroed()
            };
            r.pipe = (pipe_bits & !0x1f) | u32::from(port & 0x1f);
            r.u = [0; 8];
            r.u[0..2].copy_from_slice(&(w0 % 20).to_le_bytes());
            r.u[4..6].copy_from_slice(&w_len.to_le_bytes());
            r.u[6..8].copy_from_slice(&desc.to_le_bytes());
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 148),
        num_ports in any::<u8>(),
    ) {
        let req: UrbRequest = bytemuck::pod_read_unaligned(&bytes);
        if let Ok(v) = validate(&req, num_ports) {
            check_invariants(&req, num_ports, &v);
        }
    }

    #[test]
    fn accepted_requests_satisfy_invariants(req in near_valid_request(), num_ports in 0u8..=31) {
        if let Ok(v) = validate(&req, num_ports) {
            check_invariants(&req, num_ports, &v);
        }
    }
}

#[test]
fn near_valid_strategy_hits_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut ok, mut err) = (0, 0);
    for _ in 0..2000 {
        let req = near_valid_request()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        match validate(&req, 31) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    assert!(ok > 50 && err > 50, "ok {ok} err {err}");
}
