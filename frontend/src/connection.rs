//! One live connection to a backend: the two rings, the event channel and the
//! per-slot granted pages, plus the translation between a [`Urb`] and the
//! bytes in those pages.
//!
//! Why per-slot pages granted once: xen-hcd grants and ends access for every
//! URB; here each of the 16 request ids owns up to three sets of pages, granted
//! lazily on first use and reused for every later URB with that id — read-only
//! pages for OUT data, writable pages for IN data and iso descriptors — so the
//! steady state costs one memcpy per URB and no grant operation.

use std::sync::Arc;

use pvusb_protocol::consts::{MAX_SEGMENTS_PER_REQUEST, PAGE_SIZE, URB_RING_SIZE};
use pvusb_protocol::{
    ConnRequest, ConnResponse, Direction, IsoPacketDescriptor, Pipe, RequestSegment, TransferType,
    UrbRequest, UrbResponse,
};
use pvusb_ring::{FrontRing, SharedMem};
use pvusb_xen::{DomId, EventChannel, GrantedPages};

use crate::error::{FrontendError, UrbStatus};
use crate::transport::Transport;
use crate::urb::{Completion, IsoPacketResult, Urb, UrbKind};

/// The shared page of a ring, as the ring engine sees it.
pub(crate) type Page = Arc<dyn GrantedPages>;
pub(crate) type UrbRing = FrontRing<UrbRequest, UrbResponse, Page>;
pub(crate) type ConnRing = FrontRing<ConnRequest, ConnResponse, Page>;

/// Number of request ids (= urb ring slots).
pub(crate) const NR_IDS: usize = URB_RING_SIZE;

/// The pages one id owns, each set granted on first need.
#[derive(Default)]
struct SlotPages {
    out: Option<Page>,
    inp: Option<Page>,
    desc: Option<Page>,
}

/// The rings, the event channel and every page granted to the backend.
pub(crate) struct Connection {
    pub(crate) urb: UrbRing,
    pub(crate) conn: ConnRing,
    pub(crate) evtchn: Arc<dyn EventChannel>,
    ring_pages: [Page; 2],
    slot_pages: Vec<SlotPages>,
    transport: Arc<dyn Transport>,
    backend: DomId,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("backend", &self.backend)
            .field("evtchn", &self.evtchn.port())
            .field("urb_refs", &self.ring_pages[0].refs())
            .field("conn_refs", &self.ring_pages[1].refs())
            .finish()
    }
}

impl Connection {
    /// Grants both ring pages (writable), initialises them and allocates the
    /// unbound event channel: everything `xenhcd_setup_rings` does.
    pub(crate) fn new(
        transport: Arc<dyn Transport>,
        backend: DomId,
    ) -> Result<Self, FrontendError> {
        let urb_page = transport.alloc_pages(backend, 1, true)?;
        let conn_page = transport.alloc_pages(backend, 1, true)?;
        let urb = FrontRing::new(Arc::clone(&urb_page))?;
        urb.init_shared()?;
        let conn = FrontRing::new(Arc::clone(&conn_page))?;
        conn.init_shared()?;
        let evtchn = transport.alloc_event_channel(backend)?;
        Ok(Self {
            urb,
            conn,
            evtchn,
            ring_pages: [urb_page, conn_page],
            slot_pages: (0..NR_IDS).map(|_| SlotPages::default()).collect(),
            transport,
            backend,
        })
    }

    /// The grant references of the urb and conn ring pages.
    pub(crate) fn ring_refs(&self) -> (u32, u32) {
        let first = |p: &Page| p.refs().first().copied().unwrap_or(0);
        (first(&self.ring_pages[0]), first(&self.ring_pages[1]))
    }

    /// Fills every conn-ring slot with a dummy request (ids 0..512) and
    /// publishes them, as xen-hcd does at connect.
    pub(crate) fn post_all_conn_requests(&mut self) -> Result<bool, FrontendError> {
        let mut id: u16 = 0;
        while !self.conn.is_full() {
            self.conn.push_request(&ConnRequest { id })?;
            id = id.wrapping_add(1);
        }
        Ok(self.conn.push_requests_and_check_notify()?)
    }

    fn pages(&mut self, id: usize, which: Which) -> Result<Page, FrontendError> {
        let (backend, transport) = (self.backend, Arc::clone(&self.transport));
        let set = self.slot_pages.get_mut(id).ok_or_else(|| {
            FrontendError::InvalidRequest(format!("request id {id} out of range"))
        })?;
        let (cell, count, writable) = match which {
            Which::Out => (&mut set.out, MAX_SEGMENTS_PER_REQUEST, false),
            Which::In => (&mut set.inp, MAX_SEGMENTS_PER_REQUEST, true),
            Which::Desc => (&mut set.desc, 1, true),
        };
        if let Some(p) = cell {
            return Ok(Arc::clone(p));
        }
        let p = transport.alloc_pages(backend, count, writable)?;
        *cell = Some(Arc::clone(&p));
        Ok(p)
    }

    /// Copies the URB's OUT data (and iso descriptors) into the pages of `id`
    /// and builds the request. Nothing is pushed.
    pub(crate) fn build_request(
        &mut self,
        id: u16,
        urb: &Urb,
    ) -> Result<(UrbRequest, Pipe), FrontendError> {
        let slot = usize::from(id);
        let ttype = match urb.kind {
            UrbKind::Control(_) => TransferType::Control,
            UrbKind::Bulk => TransferType::Bulk,
            UrbKind::Interrupt { .. } => TransferType::Interrupt,
            UrbKind::Isochronous { .. } => TransferType::Isochronous,
        };
        let pipe = Pipe::new(ttype, urb.direction, urb.device, urb.endpoint, urb.port)
            .map_err(|e| FrontendError::InvalidRequest(e.to_string()))?;
        let mut data = [RequestSegment::default(); MAX_SEGMENTS_PER_REQUEST];
        let n = urb.data_pages();
        if n > 0 {
            let which = if urb.direction == Direction::In {
                Which::In
            } else {
                Which::Out
            };
            let pages = self.pages(slot, which)?;
            if urb.direction == Direction::Out {
                pages
                    .write(0, &urb.buffer)
                    .map_err(pvusb_ring::RingError::from)?;
            }
            segments(pages.refs(), urb.buffer.len(), &mut data)?;
        }
        let data = data.get(..n).unwrap_or(&[]);
        let wire = |e: pvusb_protocol::WireError| FrontendError::InvalidRequest(e.to_string());
        let req = match &urb.kind {
            UrbKind::Control(setup) => UrbRequest::control(id, pipe, *setup, data).map_err(wire)?,
            UrbKind::Bulk => UrbRequest::bulk(id, pipe, urb.short_not_ok, data).map_err(wire)?,
            UrbKind::Interrupt { interval } => {
                UrbRequest::interrupt(id, pipe, *interval, urb.short_not_ok, data).map_err(wire)?
            }
            UrbKind::Isochronous {
                interval,
                packet_lengths,
            } => {
                let desc_page = self.pages(slot, Which::Desc)?;
                let mut offset = 0u32;
                let mut records = Vec::with_capacity(packet_lengths.len());
                for &length in packet_lengths {
                    records.push(IsoPacketDescriptor::request(offset, length));
                    offset = offset.saturating_add(length);
                }
                desc_page
                    .write(0, bytemuck::cast_slice(&records))
                    .map_err(pvusb_ring::RingError::from)?;
                let desc_len = u16::try_from(records.len() * size_of::<IsoPacketDescriptor>())
                    .map_err(|_| FrontendError::InvalidRequest("too many iso packets".into()))?;
                let gref = desc_page.refs().first().copied().unwrap_or(0);
                let desc = [RequestSegment::new(gref, 0, desc_len)];
                let packets = u16::try_from(records.len()).unwrap_or(u16::MAX);
                UrbRequest::isochronous(id, pipe, *interval, 0, packets, data, &desc)
                    .map_err(wire)?
            }
        };
        Ok((req, pipe))
    }

    /// Reads the results of the URB that used `id` back: IN data into its
    /// buffer and, for isochronous URBs, the per-packet records. Every value
    /// the backend wrote is clamped or translated, never trusted.
    pub(crate) fn finish(
        &mut self,
        id: u16,
        urb: Urb,
        rsp: &UrbResponse,
        status: UrbStatus,
    ) -> Completion {
        let slot = usize::from(id);
        let requested = urb.buffer.len();
        let actual = usize::try_from(rsp.actual_length_clamped())
            .unwrap_or(0)
            .min(requested);
        let mut completion = Completion::local(status, urb.buffer);
        completion.actual_length = actual;
        completion.start_frame = rsp.start_frame;
        completion.error_count = u32::try_from(rsp.error_count).unwrap_or(0);
        let iso = matches!(urb.kind, UrbKind::Isochronous { .. });
        if urb.direction == Direction::In && requested > 0 {
            // Iso IN packets sit at their own offsets: copy the whole buffer.
            let len = if iso { requested } else { actual };
            let copied = match self.slot_pages.get(slot).and_then(|s| s.inp.as_ref()) {
                Some(p) => completion
                    .buffer
                    .get_mut(..len)
                    .map(|dst| p.read(0, dst).is_ok()),
                None => None,
            };
            if copied != Some(true) {
                completion.actual_length = 0;
            }
        }
        if let UrbKind::Isochronous { packet_lengths, .. } = &urb.kind {
            let mut records = vec![IsoPacketDescriptor::default(); packet_lengths.len()];
            let read = self
                .slot_pages
                .get(slot)
                .and_then(|s| s.desc.as_ref())
                .map(|p| p.read(0, bytemuck::cast_slice_mut(&mut records)).is_ok());
            completion.iso_packets = packet_lengths
                .iter()
                .zip(&records)
                .map(|(&len, rec)| IsoPacketResult {
                    actual_length: if read == Some(true) {
                        rec.actual_length.min(len)
                    } else {
                        0
                    },
                    status: if read == Some(true) {
                        UrbStatus::from_wire(rec.status)
                    } else {
                        UrbStatus::Shutdown
                    },
                })
                .collect();
        }
        completion
    }

    /// Ends access to every page granted to the backend, retrying until
    /// `deadline` while the backend still maps some (as Linux refuses to free
    /// a mapped grant). Returns how many pages were still mapped at the end.
    pub(crate) fn release_grants(&self, deadline: std::time::Instant) -> usize {
        let all: Vec<&Page> = self
            .ring_pages
            .iter()
            .chain(
                self.slot_pages
                    .iter()
                    .flat_map(|s| [&s.out, &s.inp, &s.desc].into_iter().flatten()),
            )
            .collect();
        let mut pending: Vec<&Page> = all;
        loop {
            pending.retain(|p| p.try_end_access().is_err());
            if pending.is_empty() || std::time::Instant::now() >= deadline {
                return pending.len();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

#[derive(Clone, Copy)]
enum Which {
    Out,
    In,
    Desc,
}

/// Splits `len` bytes starting at offset 0 of the contiguous pages `refs` into
/// page-sized segments.
fn segments(refs: &[u32], len: usize, out: &mut [RequestSegment]) -> Result<(), FrontendError> {
    let mut left = len;
    for (i, slot) in out.iter_mut().enumerate() {
        if left == 0 {
            break;
        }
        let gref = *refs.get(i).ok_or_else(|| {
            FrontendError::InvalidRequest(format!(
                "{len} bytes need more than {} pages",
                refs.len()
            ))
        })?;
        let n = left.min(PAGE_SIZE);
        // n ≤ PAGE_SIZE (4096): the conversion cannot fail.
        let length = u16::try_from(n)
            .map_err(|_| FrontendError::InvalidRequest(format!("a segment of {n} bytes")))?;
        *slot = RequestSegment::new(gref, 0, length);
        left -= n;
    }
    if left > 0 {
        return Err(FrontendError::InvalidRequest(format!(
            "{len} bytes need more than 16 segments"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_buffer_page_by_page() {
        let refs: Vec<u32> = (100..116).collect();
        let mut out = [RequestSegment::default(); 16];
        segments(&refs, 65535, &mut out).unwrap();
        assert_eq!(out[0], RequestSegment::new(100, 0, 4096));
        assert_eq!(out[15], RequestSegment::new(115, 0, 4095));
        let mut out = [RequestSegment::default(); 16];
        segments(&refs, 5000, &mut out).unwrap();
        assert_eq!(out[1], RequestSegment::new(101, 0, 904));
        assert_eq!(out[2], RequestSegment::default());
        assert!(segments(&refs[..1], 5000, &mut out).is_err());
    }
}
