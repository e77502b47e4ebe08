//! The pure USB/IP ⇄ usbif mapping of one URB: a `CMD_SUBMIT` becomes a
//! [`Urb`] (or a refusal with the errno vhci gets back), a [`Completion`]
//! becomes the `RET_SUBMIT` bytes. No sockets, no threads: everything here is
//! unit-tested byte for byte.
//!
//! WHY the reply is always re-checked: the completion carries what the
//! backend reported (hostile), and vhci drops the whole device on a reply it
//! cannot parse. [`ret_submit_wire`] therefore runs the codec's checks and,
//! if they fail, answers the URB with `-EPROTO` and no data instead.

use nix::errno::Errno;
use pvusb_protocol::usb::request::{RECIP_DEVICE, SET_ADDRESS, TYPE_MASK, TYPE_STANDARD};
use pvusb_protocol::usb::EndpointType;
use pvusb_protocol::usbip::{
    Basic, CmdSubmit, Header, RetSubmit, RetSubmitHeader, RetSubmitWire, RetUnlinkHeader,
    SubmitShape, HEADER_LEN,
};
use pvusb_protocol::{Direction, IsoPacketDescriptor, SetupPacket};

use super::endpoints::EndpointTypes;
use crate::error::UrbStatus;
use crate::urb::{Completion, Urb, UrbKind, MAX_ISO_PACKETS, MAX_URB_DATA};

/// `URB_SHORT_NOT_OK` in `transfer_flags` (`include/linux/usb.h`).
pub const URB_SHORT_NOT_OK: u32 = 0x0001;

/// The negative errno a URB of this outcome completes with in Linux, as vhci
/// hands `RET_SUBMIT.status` to the driver unchanged.
pub fn errno_of(status: UrbStatus) -> i32 {
    let errno = match status {
        UrbStatus::Ok => return 0,
        UrbStatus::NoDev => Errno::ENODEV,
        UrbStatus::Inval | UrbStatus::Refused => Errno::EINVAL,
        UrbStatus::Stall => Errno::EPIPE,
        UrbStatus::IoError => Errno::EPROTO,
        UrbStatus::Babble => Errno::EOVERFLOW,
        UrbStatus::Shutdown => Errno::ESHUTDOWN,
        UrbStatus::Cancelled => Errno::ECONNRESET,
        // The URB status of "device did not answer in time"
        // (`Documentation/driver-api/usb/error-codes.rst`).
        UrbStatus::TimedOut => Errno::ETIME,
    };
    -(errno as i32)
}

/// A negative errno.
fn neg(errno: Errno) -> i32 {
    -(errno as i32)
}

/// The device a bridge serves: where its URBs go on the frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTarget {
    /// Root-hub port of the frontend.
    pub port: u8,
    /// The usbif address the frontend gave the device. vhci sends address 0
    /// during its own enumeration and the guest's address afterwards; both
    /// mean this device, so the bridge always uses this one.
    pub address: u8,
    /// Transfer types of the device's endpoints.
    pub endpoints: EndpointTypes,
}

/// A `CMD_SUBMIT` the bridge answers itself with this status, never sending
/// anything to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// 0 (answered locally as done) or a negative errno.
    pub status: i32,
    /// Why, for the debug log.
    pub reason: &'static str,
}

impl Refusal {
    fn new(errno: Errno, reason: &'static str) -> Self {
        Self {
            status: neg(errno),
            reason,
        }
    }
}

/// What a reply must agree with: the request's shape and its iso
/// descriptors (echoed in the reply with their offsets and lengths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `seqnum` of the `CMD_SUBMIT`.
    pub seqnum: u32,
    /// Direction, buffer length, packet count.
    pub shape: SubmitShape,
    /// The request's iso descriptors (empty for non-iso).
    pub iso: Vec<IsoPacketDescriptor>,
}

impl Request {
    /// The reply-side facts of `cmd`.
    pub fn of(cmd: &CmdSubmit) -> Self {
        Self {
            seqnum: cmd.header.basic.seqnum,
            shape: cmd.header.shape(),
            iso: cmd.iso_packets.clone(),
        }
    }
}

/// The usbif URB for `cmd` on `target`, or why the bridge answers it itself.
pub fn urb_for(cmd: CmdSubmit, target: &DeviceTarget) -> Result<Urb, Refusal> {
    let h = &cmd.header;
    let (direction, ep) = (h.basic.direction, h.basic.ep);
    if h.transfer_buffer_length as usize > MAX_URB_DATA {
        // usbif's buffer_length is 16 bits; truncating would hand the driver
        // a short transfer with a success status.
        return Err(Refusal::new(
            Errno::EMSGSIZE,
            "transfer above usbif's URB limit",
        ));
    }
    let kind = match target.endpoints.get(direction, ep) {
        None => {
            return Err(Refusal::new(
                Errno::EINVAL,
                "endpoint not in the configuration",
            ))
        }
        Some(EndpointType::Control) => return control_urb(cmd, target),
        Some(EndpointType::Bulk) => UrbKind::Bulk,
        Some(EndpointType::Interrupt) => UrbKind::Interrupt {
            interval: clamp_interval(h.interval),
        },
        Some(EndpointType::Isochronous) => return iso_urb(cmd, target),
    };
    if h.number_of_packets.descriptors() != 0 {
        return Err(Refusal::new(
            Errno::EINVAL,
            "iso packets on a non-iso endpoint",
        ));
    }
    let buffer = match direction {
        Direction::In => vec![0; h.transfer_buffer_length as usize],
        Direction::Out => cmd.out_data,
    };
    Ok(Urb {
        port: target.port,
        device: target.address,
        endpoint: ep,
        direction,
        kind,
        buffer,
        short_not_ok: h.transfer_flags & URB_SHORT_NOT_OK != 0,
    })
}

/// `urb->interval` into usbif's 16 bits; vhci sends what the driver asked,
/// and a negative or huge value means "as slow as possible", not an error.
pub fn clamp_interval(interval: i32) -> u16 {
    u16::try_from(interval.max(1)).unwrap_or(u16::MAX)
}

fn control_urb(cmd: CmdSubmit, target: &DeviceTarget) -> Result<Urb, Refusal> {
    let h = &cmd.header;
    let setup = SetupPacket::from_bytes(h.setup);
    if usize::from(setup.w_length) != h.transfer_buffer_length as usize {
        // usbcore refuses this itself (-EBADR), so only a broken peer sends it.
        return Err(Refusal::new(
            Errno::EINVAL,
            "wLength differs from the buffer",
        ));
    }
    let setup_dir = if setup.is_in() {
        Direction::In
    } else {
        Direction::Out
    };
    if setup.w_length != 0 && setup_dir != h.basic.direction {
        // The reply's layout follows the header's direction, the data stage
        // the setup's: they must agree for the reply to be well formed.
        return Err(Refusal::new(
            Errno::EINVAL,
            "setup and header directions differ",
        ));
    }
    if setup.bm_request_type & TYPE_MASK == TYPE_STANDARD
        && setup.bm_request_type & 0x1f == RECIP_DEVICE
        && setup.b_request == SET_ADDRESS
    {
        // vhci completes SET_ADDRESS itself; should one arrive, the device
        // keeps the usbif address the frontend gave it, or the frontend's
        // address book and the device would disagree.
        return Err(Refusal {
            status: 0,
            reason: "SET_ADDRESS is the frontend's",
        });
    }
    let data = match h.basic.direction {
        Direction::Out => cmd.out_data,
        Direction::In => Vec::new(),
    };
    let mut urb = Urb::control(target.port, target.address, setup, data);
    urb.short_not_ok = h.transfer_flags & URB_SHORT_NOT_OK != 0;
    Ok(urb)
}

fn iso_urb(cmd: CmdSubmit, target: &DeviceTarget) -> Result<Urb, Refusal> {
    let h = &cmd.header;
    let count = h.number_of_packets.descriptors() as usize;
    if count == 0 {
        return Err(Refusal::new(Errno::EINVAL, "iso transfer without packets"));
    }
    if count > MAX_ISO_PACKETS {
        // -EFBIG: "too many iso frames requested" (error-codes.rst).
        return Err(Refusal::new(
            Errno::EFBIG,
            "more iso packets than usbif carries",
        ));
    }
    let packet_lengths: Vec<u32> = cmd.iso_packets.iter().map(|p| p.length).collect();
    // usbif lays packets back to back; USB/IP keeps the driver's offsets.
    // OUT data is gathered here, IN data scattered back in the reply. The
    // decoder checked every packet lies inside the buffer.
    let buffer = match h.basic.direction {
        Direction::In => Vec::new(),
        Direction::Out => {
            let mut gathered = Vec::with_capacity(cmd.out_data.len());
            for p in &cmd.iso_packets {
                let (start, len) = (p.offset as usize, p.length as usize);
                match cmd.out_data.get(start..start.saturating_add(len)) {
                    Some(bytes) => gathered.extend_from_slice(bytes),
                    None => return Err(Refusal::new(Errno::EINVAL, "iso packet outside the data")),
                }
            }
            gathered
        }
    };
    let total: u64 = packet_lengths.iter().map(|&l| u64::from(l)).sum();
    if total > MAX_URB_DATA as u64 {
        return Err(Refusal::new(
            Errno::EMSGSIZE,
            "iso packets above usbif's URB limit",
        ));
    }
    Ok(Urb::isochronous(
        target.port,
        target.address,
        h.basic.ep,
        h.basic.direction,
        clamp_interval(h.interval),
        packet_lengths,
        buffer,
    ))
}

/// The `RET_SUBMIT` of a completed URB: status as an errno, IN data, and
/// for iso the request's descriptors with each packet's result.
pub fn reply_for(request: &Request, completion: Completion) -> RetSubmit {
    let status = errno_of(completion.status);
    if request.iso.is_empty() {
        // Clamped to the request's buffer: vhci refuses (and drops the
        // device on) an actual_length beyond it.
        let actual = completion
            .actual_length
            .min(completion.buffer.len())
            .min(request.shape.transfer_buffer_length as usize);
        // The completion's buffer itself, not a copy of it.
        let in_data = match request.shape.direction {
            Direction::In => {
                let mut data = completion.buffer;
                data.truncate(actual);
                data
            }
            Direction::Out => Vec::new(),
        };
        let actual_length = u32::try_from(actual).unwrap_or(0);
        return RetSubmit {
            header: ret_header(request, status, actual_length, 0, 0),
            in_data,
            iso_packets: Vec::new(),
        };
    }
    iso_reply(request, &completion, status)
}

fn iso_reply(request: &Request, completion: &Completion, status: i32) -> RetSubmit {
    let mut packets = request.iso.clone();
    let mut in_data = Vec::new();
    let mut usbif_offset = 0usize;
    let (mut actual_total, mut errors) = (0u32, 0i32);
    for (i, p) in packets.iter_mut().enumerate() {
        let result = completion.iso_packets.get(i);
        let actual = result.map_or(0, |r| r.actual_length.min(p.length));
        p.actual_length = actual;
        p.status = result.map_or(neg(Errno::EXDEV), |r| errno_of(r.status));
        if p.status != 0 {
            errors = errors.saturating_add(1);
        }
        if request.shape.direction == Direction::In {
            let got = completion
                .buffer
                .get(usbif_offset..usbif_offset.saturating_add(actual as usize));
            match got {
                Some(bytes) => in_data.extend_from_slice(bytes),
                None => p.actual_length = 0,
            }
        }
        actual_total = actual_total.saturating_add(p.actual_length);
        usbif_offset = usbif_offset.saturating_add(p.length as usize);
    }
    let start_frame = i32::from(completion.start_frame);
    RetSubmit {
        header: ret_header(request, status, actual_total, start_frame, errors),
        in_data,
        iso_packets: packets,
    }
}

fn ret_header(
    request: &Request,
    status: i32,
    actual_length: u32,
    start_frame: i32,
    error_count: i32,
) -> RetSubmitHeader {
    RetSubmitHeader {
        // vhci never reads the reply's devid, direction or ep: zeros, as the
        // kernel's stub sends them.
        basic: Basic::reply(request.seqnum),
        status,
        actual_length,
        start_frame,
        number_of_packets: request.shape.number_of_packets,
        error_count,
    }
}

/// A `RET_SUBMIT` with `status` and nothing transferred (iso: every packet
/// echoed with 0 bytes and the same status).
pub fn error_reply(request: &Request, status: i32) -> RetSubmit {
    let mut packets = request.iso.clone();
    for p in &mut packets {
        p.actual_length = 0;
        p.status = status;
    }
    let errors = if status == 0 {
        0
    } else {
        i32::try_from(packets.len()).unwrap_or(i32::MAX)
    };
    RetSubmit {
        header: ret_header(request, status, 0, 0, errors),
        in_data: Vec::new(),
        iso_packets: packets,
    }
}

/// The wire form of `reply`. A reply the codec refuses (which only a
/// hostile completion can produce) becomes an `-EPROTO` reply with no data,
/// so vhci always gets a message it accepts.
pub fn ret_submit_wire<'a>(request: &Request, reply: &'a RetSubmit) -> RetSubmitWire<'a> {
    if let Ok(wire) = reply.wire(&request.shape) {
        return wire;
    }
    tracing::debug!(
        seqnum = request.seqnum,
        "reply refused by the codec, answering -EPROTO"
    );
    let fallback = error_reply(request, neg(Errno::EPROTO));
    // An error reply only echoes the request, whose descriptors the decoder
    // already checked, and carries no data: it always encodes.
    let (header, descriptors) = match fallback.wire(&request.shape) {
        Ok(w) => (w.header, w.descriptors),
        Err(_) => ([0; HEADER_LEN], Vec::new()),
    };
    RetSubmitWire {
        header,
        data: &[],
        descriptors,
    }
}

/// [`ret_submit_wire`] as one buffer.
pub fn encode_ret_submit(request: &Request, reply: &RetSubmit) -> Vec<u8> {
    let wire = ret_submit_wire(request, reply);
    let mut out = Vec::with_capacity(wire.len());
    for part in wire.parts() {
        out.extend_from_slice(part);
    }
    out
}

/// The wire bytes of a `RET_UNLINK` answering unlink `seqnum`.
pub fn encode_ret_unlink(seqnum: u32, status: i32) -> Vec<u8> {
    let header = Header::RetUnlink(RetUnlinkHeader {
        basic: Basic::reply(seqnum),
        status,
    });
    // A RET_UNLINK has no field that can be out of range.
    header.encode().map(|b| b.to_vec()).unwrap_or_default()
}
