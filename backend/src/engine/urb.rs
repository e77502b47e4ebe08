//! One guest URB as the engine holds it, from its request to its response.

use std::time::Instant;

use pvusb_protocol::IsoPacketDescriptor;

use crate::guest::SegList;
use crate::ids::RingId;
use crate::stats::UrbType;

/// The isochronous part of a URB: where its packet descriptors live in
/// guest memory (the results are written back there) and what they said.
#[derive(Debug)]
pub(crate) struct IsoState {
    pub(crate) desc: SegList,
    pub(crate) descriptors: Vec<IsoPacketDescriptor>,
}

/// One guest URB between its request and its response.
///
/// WHY one struct: it lives in exactly one place, its endpoint's waiting
/// queue or the list of URBs its endpoint has on the device (with the
/// transfer carrying it), so moving it between the two is all a requeue or
/// a dispatch does, and nothing about it can be left behind elsewhere.
#[derive(Debug)]
pub(crate) struct Urb {
    pub(crate) ring_id: RingId,
    /// Root-hub port (for the per-port statistics).
    pub(crate) port: u8,
    pub(crate) short_not_ok: bool,
    /// The guest unlinked it while its device transfer was in flight.
    pub(crate) unlinked: bool,
    /// Offset of its data in a coalesced transfer's buffer.
    pub(crate) offset: usize,
    pub(crate) is_in: bool,
    /// Its data in guest memory.
    pub(crate) data: SegList,
    /// Bytes the response may report at most.
    pub(crate) max_len: usize,
    pub(crate) iso: Option<IsoState>,
    /// When the device got it (for `Stats::device_us`).
    pub(crate) submitted_at: Instant,
    /// Its transfer type, for the per-port statistics.
    pub(crate) urb_type: UrbType,
    /// A GET_DESCRIPTOR(DEVICE) to a SuperSpeed device: its answer gets the
    /// ep0 quirk (see [`crate::addr::patch_ep0_max_packet`]).
    pub(crate) patch_ep0: bool,
}
