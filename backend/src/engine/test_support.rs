//! Doubles for the engine's unit tests: guest memory in a map and a device
//! that records what it is asked and completes nothing by itself (as a real,
//! asynchronous one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use pvusb_protocol::{
    Direction, IsoPacketDescriptor, Pipe, RequestSegment, SetupPacket, TransferType, UrbRequest,
};
use pvusb_xen::{CopySeg, GrantError};

use crate::guest::GuestMemory;
use crate::ids::TransferId;
use crate::usb::{DeviceInfo, Speed, Transfer, UsbDevice, UsbError};

pub(crate) const PAGE: usize = 4096;

/// Request 1 of every rig: enumeration's SET_ADDRESS giving the device on
/// `port` the `address` its later requests use.
pub(crate) fn set_address(port: u8, address: u8) -> UrbRequest {
    let setup = SetupPacket::new(0x00, 5, u16::from(address), 0, 0);
    let pipe = Pipe::new(TransferType::Control, Direction::Out, 0, 0, port).expect("pipe");
    UrbRequest::control(1, pipe, setup, &[]).expect("request")
}

/// The descriptor records of iso packets at `(offset, length)`, as a guest
/// writes them into a request's descriptor segments.
pub(crate) fn iso_descriptors(packets: &[(u32, u32)]) -> Vec<u8> {
    packets
        .iter()
        .flat_map(|&(offset, length)| {
            bytemuck::bytes_of(&IsoPacketDescriptor::request(offset, length)).to_vec()
        })
        .collect()
}

/// `len` bytes that differ from one `seed` to another and do not repeat
/// within 256, so a misplaced byte shows.
pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..=u8::MAX)
        .cycle()
        .take(len)
        .map(|i| i.wrapping_mul(13) ^ seed)
        .collect()
}

/// Guest memory: one page per gref, zeroes until written; counts the grant
/// copies into it (each one a system call on the real transport).
#[derive(Default)]
pub(crate) struct Guest(Mutex<HashMap<u32, Vec<u8>>>, AtomicUsize);

impl Guest {
    pub(crate) fn page(&self, gref: u32) -> Vec<u8> {
        self.0
            .lock()
            .unwrap()
            .get(&gref)
            .cloned()
            .unwrap_or_else(|| vec![0; PAGE])
    }

    pub(crate) fn set(&self, gref: u32, data: Vec<u8>) {
        self.0.lock().unwrap().insert(gref, data);
    }

    /// Calls of `copy_to` so far.
    pub(crate) fn copies_to(&self) -> usize {
        self.1.load(Ordering::Relaxed)
    }
}

impl GuestMemory for Guest {
    fn copy_from(&self, segs: &[CopySeg], dst: &mut [u8]) -> Result<(), GrantError> {
        let mut at = 0;
        for s in segs {
            let page = self.page(s.gref);
            let (o, n) = (usize::from(s.offset), usize::from(s.len));
            dst[at..at + n].copy_from_slice(&page[o..o + n]);
            at += n;
        }
        Ok(())
    }

    fn copy_to(&self, segs: &[CopySeg], src: &[u8]) -> Result<(), GrantError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        let mut at = 0;
        for s in segs {
            let mut page = self.page(s.gref);
            let (o, n) = (usize::from(s.offset), usize::from(s.len));
            page[o..o + n].copy_from_slice(&src[at..at + n]);
            self.set(s.gref, page);
            at += n;
        }
        Ok(())
    }
}

/// The one segment of a buffer of `len` (≤ a page) bytes in page `gref`.
pub(crate) fn segment(gref: u32, len: usize) -> RequestSegment {
    RequestSegment {
        gref,
        offset: 0,
        length: u16::try_from(len).expect("at most a page"),
    }
}

/// What a test device says it is.
pub(crate) fn info(gains_from_coalescing: bool, max_speed_is_super: bool) -> DeviceInfo {
    DeviceInfo {
        busid: "1-1".parse().expect("busid"),
        bus: 1,
        address: 2,
        speed: Speed::High,
        vendor_id: 0x1234,
        product_id: 0x5678,
        device_class: 0,
        is_hub: false,
        manufacturer: None,
        product: None,
        serial: None,
        device_descriptor: Vec::new(),
        max_speed_is_super,
        num_configurations: 1,
        gains_from_coalescing,
        transfers_guest_pages: false,
    }
}

/// Records submits and cancels; completes nothing by itself.
pub(crate) struct Held {
    pub(crate) info: DeviceInfo,
    pub(crate) submits: Vec<(TransferId, Transfer)>,
    pub(crate) cancels: Vec<TransferId>,
    pub(crate) resets: usize,
}

impl Held {
    pub(crate) fn new(info: DeviceInfo) -> Self {
        Self {
            info,
            submits: Vec::new(),
            cancels: Vec::new(),
            resets: 0,
        }
    }

    /// The oldest submitted transfer not taken yet.
    pub(crate) fn take(&mut self) -> (TransferId, Transfer) {
        assert!(!self.submits.is_empty(), "nothing was submitted");
        self.submits.remove(0)
    }
}

impl UsbDevice for Held {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }
    fn submit(&mut self, id: TransferId, transfer: Transfer) {
        self.submits.push((id, transfer));
    }
    fn cancel(&mut self, id: TransferId) {
        self.cancels.push(id);
    }
    fn reset(&mut self) -> Result<(), UsbError> {
        self.resets += 1;
        Ok(())
    }
    fn shutdown(&mut self) {}
}
