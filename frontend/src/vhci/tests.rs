//! The pure translation: status → errno, `CMD_SUBMIT` → [`Urb`], completion
//! → `RET_SUBMIT` bytes, and the clamps that keep replies well formed.

use pvusb_protocol::usb::{ConfigBuilder, EndpointDescriptor, EndpointType, InterfaceSpec};
use pvusb_protocol::usbip::Limits;
use pvusb_protocol::usbip::{
    Basic, CmdSubmit, CmdSubmitHeader, HostSide, Message, PacketCount, StreamDecoder,
};
use pvusb_protocol::{Direction, IsoPacketDescriptor, SetupPacket};

use super::translate::*;
use super::EndpointTypes;
use crate::error::UrbStatus;
use crate::urb::{Completion, IsoPacketResult, UrbKind, MAX_URB_DATA};

/// A device with bulk 0x01/0x81, interrupt 0x82 and (alternate 1) iso
/// 0x03/0x83.
fn target() -> DeviceTarget {
    let config = ConfigBuilder::new(1)
        .interface(InterfaceSpec::default())
        .endpoint(EndpointDescriptor::new(0x01, EndpointType::Bulk, 512, 0))
        .endpoint(EndpointDescriptor::new(0x81, EndpointType::Bulk, 512, 0))
        .endpoint(EndpointDescriptor::new(0x82, EndpointType::Interrupt, 8, 4))
        .interface(InterfaceSpec {
            number: 1,
            ..InterfaceSpec::default()
        })
        .interface(InterfaceSpec {
            number: 1,
            alternate_setting: 1,
            ..InterfaceSpec::default()
        })
        .endpoint(EndpointDescriptor::new(
            0x83,
            EndpointType::Isochronous,
            192,
            1,
        ))
        .endpoint(EndpointDescriptor::new(
            0x03,
            EndpointType::Isochronous,
            192,
            1,
        ))
        .descriptor()
        .unwrap();
    DeviceTarget {
        port: 3,
        address: 7,
        endpoints: EndpointTypes::from_config(&config),
    }
}

/// `len` bytes counting up from 0, wrapping at 256.
fn ramp(len: usize) -> Vec<u8> {
    (0..=u8::MAX).cycle().take(len).collect()
}

/// A `usize` test length as the u32 the headers carry.
fn wire_len(len: usize) -> u32 {
    u32::try_from(len).unwrap()
}

fn cmd(direction: Direction, ep: u8, len: u32, setup: [u8; 8]) -> CmdSubmit {
    CmdSubmit {
        header: CmdSubmitHeader {
            basic: Basic {
                seqnum: 42,
                devid: 0x0001_0002,
                direction,
                ep,
            },
            transfer_flags: 0,
            transfer_buffer_length: len,
            start_frame: 0,
            number_of_packets: PacketCount::Count(0),
            interval: 0,
            setup,
        },
        out_data: match direction {
            Direction::Out => ramp(usize::try_from(len).unwrap()),
            Direction::In => Vec::new(),
        },
        iso_packets: Vec::new(),
    }
}

fn iso_cmd(direction: Direction, packets: &[(u32, u32)], buffer_len: u32) -> CmdSubmit {
    let mut c = cmd(direction, 3, buffer_len, [0; 8]);
    c.header.number_of_packets = PacketCount::Count(wire_len(packets.len()));
    c.iso_packets = packets
        .iter()
        .map(|&(offset, length)| IsoPacketDescriptor::request(offset, length))
        .collect();
    c
}

fn completion(status: UrbStatus, buffer: Vec<u8>, actual_length: usize) -> Completion {
    Completion::of_transfer(status, actual_length, buffer)
}

/// Decodes `bytes` as vhci would, against `request`.
fn as_vhci_reads(request: &Request, bytes: &[u8]) -> Message {
    let shape = request.shape;
    let mut dec = StreamDecoder::new(HostSide::new(move |_| Some(shape)), Limits::DEFAULT);
    let (used, msg) = dec.feed(bytes).unwrap();
    assert_eq!(used, bytes.len());
    msg.unwrap()
}

#[test]
fn every_status_has_the_errno_linux_drivers_expect() {
    let table = [
        (UrbStatus::Ok, 0),
        (UrbStatus::NoDev, -19),
        (UrbStatus::Inval, -22),
        (UrbStatus::Refused, -22),
        (UrbStatus::Stall, -32),
        (UrbStatus::IoError, -71),
        (UrbStatus::Babble, -75),
        (UrbStatus::Shutdown, -108),
        (UrbStatus::Cancelled, -104),
        (UrbStatus::TimedOut, -62),
    ];
    for (status, errno) in table {
        assert_eq!(errno_of(status), errno, "{status:?}");
    }
}

#[test]
fn endpoint_types_come_from_every_alternate_setting() {
    let t = target().endpoints;
    assert_eq!(t.get(Direction::In, 0), Some(EndpointType::Control));
    assert_eq!(t.get(Direction::Out, 1), Some(EndpointType::Bulk));
    assert_eq!(t.get(Direction::In, 2), Some(EndpointType::Interrupt));
    assert_eq!(t.get(Direction::In, 3), Some(EndpointType::Isochronous));
    assert_eq!(t.get(Direction::Out, 4), None);
    assert!(t.iso_endpoints().contains(Direction::In, 3));
    assert!(!t.iso_endpoints().contains(Direction::In, 1));
}

#[test]
fn control_at_address_zero_goes_to_the_usbif_address() {
    let setup = SetupPacket::get_descriptor(1, 0, 0, 18).to_bytes();
    let urb = urb_for(cmd(Direction::In, 0, 18, setup), &target()).unwrap();
    assert_eq!((urb.port, urb.device, urb.endpoint), (3, 7, 0));
    assert_eq!(urb.kind, UrbKind::Control(SetupPacket::from_bytes(setup)));
    assert_eq!(urb.buffer.len(), 18);
    assert_eq!(urb.direction, Direction::In);
}

#[test]
fn control_requests_usbcore_would_refuse_are_refused() {
    let t = target();
    let mismatch = SetupPacket::get_descriptor(1, 0, 0, 18).to_bytes();
    let r = urb_for(cmd(Direction::In, 0, 64, mismatch), &t).unwrap_err();
    assert_eq!(r.status, -22);
    let r = urb_for(cmd(Direction::Out, 0, 18, mismatch), &t).unwrap_err();
    assert_eq!(r.status, -22, "setup IN, header OUT");
    let set_address = SetupPacket::set_address(9).to_bytes();
    let r = urb_for(cmd(Direction::Out, 0, 0, set_address), &t).unwrap_err();
    assert_eq!(r.status, 0, "answered locally, not forwarded");
}

#[test]
fn bulk_and_interrupt_take_their_type_from_the_descriptor() {
    let t = target();
    let out = urb_for(cmd(Direction::Out, 1, 100, [0; 8]), &t).unwrap();
    assert_eq!(out.kind, UrbKind::Bulk);
    assert_eq!(out.buffer, ramp(100));
    let mut c = cmd(Direction::In, 2, 8, [0; 8]);
    c.header.interval = 1 << 20;
    c.header.transfer_flags = URB_SHORT_NOT_OK;
    let int = urb_for(c, &t).unwrap();
    assert_eq!(int.kind, UrbKind::Interrupt { interval: u16::MAX });
    assert!(int.short_not_ok);
    assert_eq!(int.buffer.len(), 8);
    assert_eq!(clamp_interval(-5), 1);
    assert_eq!(clamp_interval(8), 8);
    let r = urb_for(cmd(Direction::In, 5, 8, [0; 8]), &t).unwrap_err();
    assert_eq!(r.status, -22, "endpoint not in the configuration");
}

#[test]
fn requests_above_the_urb_limit_are_refused_not_truncated() {
    let t = target();
    let len = wire_len(MAX_URB_DATA) + 1;
    let r = urb_for(cmd(Direction::In, 1, len, [0; 8]), &t).unwrap_err();
    assert_eq!(r.status, -90, "-EMSGSIZE");
    let ok = urb_for(cmd(Direction::In, 1, wire_len(MAX_URB_DATA), [0; 8]), &t).unwrap();
    assert_eq!(ok.buffer.len(), MAX_URB_DATA);
    let many: Vec<(u32, u32)> = (0..300).map(|i| (i, 1)).collect();
    let r = urb_for(iso_cmd(Direction::In, &many, 300), &t).unwrap_err();
    assert_eq!(r.status, -27, "-EFBIG");
}

#[test]
fn iso_out_gathers_packets_from_their_offsets() {
    // Packets of 3 and 2 bytes at offsets 0 and 8 of a 16-byte buffer.
    let c = iso_cmd(Direction::Out, &[(0, 3), (8, 2)], 16);
    let urb = urb_for(c, &target()).unwrap();
    assert_eq!(urb.buffer, vec![0, 1, 2, 8, 9]);
    assert!(matches!(
        urb.kind,
        UrbKind::Isochronous { ref packet_lengths, .. } if packet_lengths == &[3, 2]
    ));
}

#[test]
fn in_reply_is_clamped_to_the_request_buffer() {
    let c = cmd(Direction::In, 1, 4, [0; 8]);
    let request = Request::of(&c);
    // A hostile completion claiming more than was asked.
    let done = completion(UrbStatus::Ok, vec![9, 8, 7, 6, 5, 4], 6);
    let bytes = encode_ret_submit(&request, &reply_for(&request, done.clone()));
    let Message::RetSubmit(r) = as_vhci_reads(&request, &bytes) else {
        panic!("not a RET_SUBMIT")
    };
    assert_eq!(r.header.actual_length, 4);
    assert_eq!(r.in_data, vec![9, 8, 7, 6]);
    assert_eq!(r.header.basic, Basic::reply(42));
}

#[test]
fn out_reply_carries_status_and_no_data() {
    let c = cmd(Direction::Out, 1, 10, [0; 8]);
    let request = Request::of(&c);
    let bytes = encode_ret_submit(
        &request,
        &reply_for(&request, completion(UrbStatus::Stall, vec![0; 10], 3)),
    );
    let Message::RetSubmit(r) = as_vhci_reads(&request, &bytes) else {
        panic!("not a RET_SUBMIT")
    };
    assert_eq!((r.header.status, r.header.actual_length), (-32, 3));
    assert!(r.in_data.is_empty());
}

#[test]
fn iso_in_reply_packs_data_and_echoes_offsets() {
    let c = iso_cmd(Direction::In, &[(0, 4), (8, 4)], 16);
    let request = Request::of(&c);
    let mut done = completion(UrbStatus::Ok, vec![1, 2, 3, 4, 5, 6, 7, 8], 8);
    done.iso_packets = vec![
        IsoPacketResult {
            actual_length: 2,
            status: UrbStatus::Ok,
        },
        IsoPacketResult {
            // Hostile: more than the packet's length.
            actual_length: 99,
            status: UrbStatus::IoError,
        },
    ];
    let bytes = encode_ret_submit(&request, &reply_for(&request, done.clone()));
    let Message::RetSubmit(r) = as_vhci_reads(&request, &bytes) else {
        panic!("not a RET_SUBMIT")
    };
    assert_eq!(r.in_data, vec![1, 2, 5, 6, 7, 8]);
    assert_eq!(r.header.actual_length, 6);
    assert_eq!(r.header.error_count, 1);
    assert_eq!(r.header.number_of_packets, PacketCount::Count(2));
    let got: Vec<_> = r
        .iso_packets
        .iter()
        .map(|p| (p.offset, p.length, p.actual_length, p.status))
        .collect();
    assert_eq!(got, vec![(0, 4, 2, 0), (8, 4, 4, -71)]);
}

#[test]
fn error_replies_always_encode_even_for_iso() {
    let c = iso_cmd(Direction::In, &[(0, 4), (4, 4)], 8);
    let request = Request::of(&c);
    let bytes = encode_ret_submit(&request, &error_reply(&request, -19));
    let Message::RetSubmit(r) = as_vhci_reads(&request, &bytes) else {
        panic!("not a RET_SUBMIT")
    };
    assert_eq!((r.header.status, r.header.actual_length), (-19, 0));
    assert_eq!(r.iso_packets.len(), 2);
}

#[test]
fn an_unencodable_reply_becomes_eproto() {
    let c = cmd(Direction::In, 1, 4, [0; 8]);
    let request = Request::of(&c);
    let mut bad = reply_for(&request, completion(UrbStatus::Ok, vec![1; 4], 4));
    bad.in_data.push(0);
    let Message::RetSubmit(r) = as_vhci_reads(&request, &encode_ret_submit(&request, &bad)) else {
        panic!("not a RET_SUBMIT")
    };
    assert_eq!((r.header.status, r.header.actual_length), (-71, 0));
}

#[test]
fn ret_unlink_is_a_bare_header() {
    let bytes = encode_ret_unlink(5, -104);
    assert_eq!(bytes.len(), 48);
    assert_eq!(&bytes[..8], &[0, 0, 0, 4, 0, 0, 0, 5]);
    assert_eq!(&bytes[20..24], &(-104i32).to_be_bytes());
}

fn piece_done(urb: &crate::Urb, status: UrbStatus, actual: usize, fill: u8) -> Completion {
    let mut buffer = urb.buffer.clone();
    if urb.direction == Direction::In {
        buffer[..actual].fill(fill);
    }
    Completion::of_transfer(status, actual, buffer)
}

fn split_of(direction: Direction, ep: u8, len: u32) -> (super::split::Split, Vec<crate::Urb>) {
    match super::split::plan(cmd(direction, ep, len, [0; 8]), &target()) {
        Ok(super::split::Plan::Split(s, pieces)) => (s, pieces),
        other => panic!("expected a split, got {other:?}"),
    }
}

#[test]
fn large_bulk_requests_are_split_others_refused() {
    use super::split::{plan, Plan};
    use crate::urb::BULK_CHUNK;
    let t = target();
    let (_, pieces) = split_of(Direction::In, 1, 200_000);
    let lens: Vec<usize> = pieces.iter().map(|p| p.buffer.len()).collect();
    assert_eq!(
        lens,
        [BULK_CHUNK, BULK_CHUNK, BULK_CHUNK, 200_000 - 3 * BULK_CHUNK]
    );
    for p in &pieces {
        assert_eq!(
            (p.port, p.device, p.endpoint, &p.kind, p.direction),
            (3, 7, 1, &UrbKind::Bulk, Direction::In)
        );
    }
    let (_, pieces) = split_of(Direction::Out, 1, 100_000);
    let all: Vec<u8> = pieces.iter().flat_map(|p| p.buffer.clone()).collect();
    assert_eq!(all, ramp(100_000), "the pieces are the data, in order");
    // At the limit: one URB, as before.
    let single = plan(cmd(Direction::In, 1, wire_len(MAX_URB_DATA), [0; 8]), &t);
    assert!(matches!(single, Ok(Plan::Single(u)) if u.buffer.len() == MAX_URB_DATA));
    // Interrupt above the limit: still refused.
    let r = plan(cmd(Direction::In, 2, 100_000, [0; 8]), &t).unwrap_err();
    assert_eq!(r.status, -90, "-EMSGSIZE");
}

#[test]
fn split_in_ends_when_its_pieces_in_order_are_known() {
    use crate::urb::BULK_CHUNK;
    let (mut s, p) = split_of(Direction::In, 1, 200_000);
    // Out of order: the third piece first says nothing yet.
    assert!(s
        .on_piece(2, piece_done(&p[2], UrbStatus::Ok, BULK_CHUNK, 3))
        .is_none());
    assert!(s
        .on_piece(0, piece_done(&p[0], UrbStatus::Ok, BULK_CHUNK, 1))
        .is_none());
    assert_eq!(s.progress(), (BULK_CHUNK, 200_000));
    // The second piece is short: the request ends there with what came,
    // status OK, whatever the pieces behind it did.
    let c = s
        .on_piece(1, piece_done(&p[1], UrbStatus::Ok, 100, 2))
        .expect("a short piece ends it");
    assert_eq!(
        (c.status, c.actual_length, c.buffer.len()),
        (UrbStatus::Ok, BULK_CHUNK + 100, BULK_CHUNK + 100)
    );
    assert_eq!((c.buffer[BULK_CHUNK - 1], c.buffer[BULK_CHUNK]), (1, 2));
    // All of it, each piece once: a repeated or unknown piece is ignored.
    let (mut s, p) = split_of(Direction::In, 1, 100_000);
    assert!(s
        .on_piece(0, piece_done(&p[0], UrbStatus::Ok, BULK_CHUNK, 3))
        .is_none());
    assert!(s
        .on_piece(0, piece_done(&p[0], UrbStatus::Stall, 0, 0))
        .is_none());
    assert!(s
        .on_piece(7, piece_done(&p[0], UrbStatus::Stall, 0, 0))
        .is_none());
    let c = s
        .on_piece(1, piece_done(&p[1], UrbStatus::Ok, 100_000 - BULK_CHUNK, 4))
        .expect("the last piece ends it");
    assert_eq!(
        (c.status, c.actual_length, c.buffer.len()),
        (UrbStatus::Ok, 100_000, 100_000)
    );
    let r = reply_for(
        &Request::of(&cmd(Direction::In, 1, 100_000, [0; 8])),
        c.clone(),
    );
    assert_eq!((r.header.status, r.in_data.len()), (0, 100_000));
    // A backend claiming more than a piece's length is clamped to it.
    let (mut s, p) = split_of(Direction::In, 1, 100_000);
    let mut lying = piece_done(&p[0], UrbStatus::Ok, BULK_CHUNK, 5);
    lying.actual_length = usize::MAX;
    assert!(s.on_piece(0, lying).is_none());
    assert_eq!(s.progress(), (BULK_CHUNK, 100_000));
}

#[test]
fn split_out_stops_at_the_first_error_with_the_bytes_so_far() {
    use crate::urb::BULK_CHUNK;
    let (mut s, p) = split_of(Direction::Out, 1, 150_000);
    assert_eq!(p.len(), 3);
    assert!(s
        .on_piece(0, piece_done(&p[0], UrbStatus::Ok, BULK_CHUNK, 0))
        .is_none());
    let c = s
        .on_piece(1, piece_done(&p[1], UrbStatus::Stall, 0, 0))
        .expect("a stall ends it");
    assert_eq!((c.status, c.actual_length), (UrbStatus::Stall, BULK_CHUNK));
    let r = reply_for(
        &Request::of(&cmd(Direction::Out, 1, 150_000, [0; 8])),
        c.clone(),
    );
    assert_eq!(
        (r.header.status, r.header.actual_length),
        (-32, wire_len(BULK_CHUNK))
    );
    // Ended by an unlink: that status and the bytes of the leading pieces.
    let (mut s, p) = split_of(Direction::Out, 1, 150_000);
    let _ = s.on_piece(0, piece_done(&p[0], UrbStatus::Ok, BULK_CHUNK, 0));
    let c = s.finish(UrbStatus::Cancelled);
    assert_eq!(
        (c.status, c.actual_length),
        (UrbStatus::Cancelled, BULK_CHUNK)
    );
}
