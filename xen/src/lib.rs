//! Grant tables and event channels, behind traits with two implementations:
//! real Linux (`/dev/xen/gntdev`, `/dev/xen/gntalloc`, `/dev/xen/evtchn`, module
//! `linux`) and a simulated transport that works across processes without Xen
//! (memfd grant table + eventfds + a UNIX-socket rendezvous, module `sim`).
//!
//! Why traits: the backend and frontend are generic over these, so the very same
//! code runs on real Xen, in the demo, in tests and in benches.
//!
//! `unsafe` is confined to three small modules, each with
//! `#![allow(unsafe_code)]`: `linux::abi` (the ioctls), `mmap` (shared mappings
//! and their volatile accessors) and `fdpass` (adopting descriptors received over
//! `SCM_RIGHTS`). Every block carries a `// SAFETY:` comment.
//!
//! Which implementation to use: [`linux`] on Xen (dom0, driver domain or guest),
//! [`sim`] everywhere else; both implement the same traits.
#![deny(unsafe_code)]
#![warn(missing_docs)]

use std::os::fd::AsFd;
use std::time::Duration;

pub use pvusb_ring::{MemError, SharedMem};

/// Forwards [`SharedMem`] to the `region` field (an `MmapRegion`): every
/// mapping type of both implementations is such a wrapper.
macro_rules! shared_mem_via_region {
    ($t:ty) => {
        impl $crate::SharedMem for $t {
            fn size(&self) -> usize {
                $crate::SharedMem::size(&self.region)
            }
            fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), $crate::MemError> {
                $crate::SharedMem::read(&self.region, offset, buf)
            }
            fn write(&self, offset: usize, buf: &[u8]) -> Result<(), $crate::MemError> {
                $crate::SharedMem::write(&self.region, offset, buf)
            }
            fn load_u32(&self, offset: usize) -> Result<u32, $crate::MemError> {
                $crate::SharedMem::load_u32(&self.region, offset)
            }
            fn store_u32(&self, offset: usize, value: u32) -> Result<(), $crate::MemError> {
                $crate::SharedMem::store_u32(&self.region, offset, value)
            }
        }
    };
}

pub mod fdpass;
pub mod linux;
mod mapped;
mod mmap;
mod poll;
pub mod sim;

pub use mapped::{MappedPages, MappedSegments, SegmentLayout, MAX_MAPPED_PAGES};
pub(crate) use poll::poll_readable;

/// A Xen domain id.
pub type DomId = u16;
/// A grant reference (`grant_ref_t`).
pub type GrantRef = u32;
/// An event-channel port number.
pub type EvtchnPort = u32;
/// Size of a grant page. usbif assumes 4 KiB pages everywhere.
pub const PAGE_SIZE: usize = 4096;

/// Errors from grant-table operations.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The grant reference is unknown or out of the table's range.
    #[error("grant reference {gref} is not valid")]
    BadRef {
        /// The offending reference.
        gref: GrantRef,
    },
    /// The grant exists but was not given to this domain.
    #[error("grant reference {gref} is not granted to domain {domid}")]
    NotGranted {
        /// The offending reference.
        gref: GrantRef,
        /// The domain that asked.
        domid: DomId,
    },
    /// Write access was needed but the grant is read-only.
    #[error("grant reference {gref} is read-only")]
    ReadOnly {
        /// The offending reference.
        gref: GrantRef,
    },
    /// A copy segment crosses the end of its page, or lengths do not add up.
    #[error("grant copy segment is invalid: {0}")]
    BadSegment(&'static str),
    /// A page cannot be freed because the peer still maps it.
    #[error("grant reference {gref} is still mapped by the peer")]
    StillMapped {
        /// The offending reference.
        gref: GrantRef,
    },
    /// Segments that do not form one run of bytes once their pages are
    /// mapped side by side (see [`SegmentLayout::of`]): copy them instead.
    #[error("segments cannot be mapped contiguously: {0}")]
    NotContiguous(&'static str),
    /// No more grants can be allocated.
    #[error("out of grant references")]
    Exhausted,
    /// The transport is gone (peer process died, device closed).
    #[error("grant transport unavailable: {0}")]
    Unavailable(String),
    /// An OS call failed.
    #[error("{op} failed")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Errors from event-channel operations.
#[derive(Debug, thiserror::Error)]
pub enum EvtchnError {
    /// No such port, or the port is bound to another domain.
    #[error("event channel port {port} of domain {domid} cannot be bound")]
    BadPort {
        /// The remote domain.
        domid: DomId,
        /// The remote port.
        port: EvtchnPort,
    },
    /// The peer closed its end.
    #[error("event channel peer is gone")]
    PeerGone,
    /// The transport is unavailable.
    #[error("event channel transport unavailable: {0}")]
    Unavailable(String),
    /// An OS call failed.
    #[error("{op} failed")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// One segment of a grant copy: `len` bytes at `offset` inside the page `gref`.
/// `offset + len` must not exceed [`PAGE_SIZE`] (the hypercall rejects page crossing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySeg {
    /// Grant reference of the foreign page.
    pub gref: GrantRef,
    /// Byte offset inside that page.
    pub offset: u16,
    /// Number of bytes.
    pub len: u16,
}

impl CopySeg {
    /// The `len` bytes at `offset` of page `gref`.
    pub const fn new(gref: GrantRef, offset: u16, len: u16) -> Self {
        Self { gref, offset, len }
    }
}

/// Backend side: access to pages a foreign domain granted to us.
pub trait GrantMapper: Send + Sync {
    /// A contiguous mapping of several grant pages; unmaps itself on drop.
    type Mapping: MappedPages;

    /// Map `refs` of domain `domid` into one contiguous region of
    /// `refs.len() * PAGE_SIZE` bytes (writable or read-only).
    fn map(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<Self::Mapping, GrantError>;

    /// Map the pages of `segs` (domain `domid`) side by side and give the
    /// run of bytes they describe, if they are page-contiguous (else
    /// [`GrantError::NotContiguous`], before any hypercall). One map and one
    /// unmap per call instead of a grant copy: see `docs/perf` for when that
    /// pays.
    fn map_segments(
        &self,
        domid: DomId,
        segs: &[CopySeg],
        writable: bool,
    ) -> Result<MappedSegments, GrantError> {
        let layout = SegmentLayout::of(segs)?;
        let (refs, n) = SegmentLayout::refs(segs);
        let pages = self.map(domid, refs.get(..n).unwrap_or_default(), writable)?;
        MappedSegments::new(Box::new(pages), layout, writable)
            .ok_or(GrantError::NotContiguous("the data does not fit its pages"))
    }

    /// Copy from the foreign segments, in order, into `dst`
    /// (`dst.len()` must equal the sum of the segment lengths).
    fn copy_from_guest(
        &self,
        domid: DomId,
        segs: &[CopySeg],
        dst: &mut [u8],
    ) -> Result<(), GrantError>;

    /// Copy `src` into the foreign segments, in order (the grants must be writable;
    /// `src.len()` must equal the sum of the segment lengths).
    fn copy_to_guest(&self, domid: DomId, segs: &[CopySeg], src: &[u8]) -> Result<(), GrantError>;
}

/// Frontend side: pages we grant to a peer.
pub trait GrantAllocator: Send + Sync {
    /// A set of granted pages, contiguous in our address space.
    type Pages: GrantedPages + 'static;

    /// Allocate `count` zeroed pages and grant them to `peer`, writable or read-only.
    fn alloc(&self, peer: DomId, count: usize, writable: bool) -> Result<Self::Pages, GrantError>;
}

/// Pages granted to a peer: their refs and our own access to their contents.
/// Dropping them ends the grants (deferred while the peer still maps them).
pub trait GrantedPages: SharedMem + Send + Sync {
    /// The grant reference of each page, in order.
    fn refs(&self) -> &[GrantRef];

    /// End the grants now. Fails with [`GrantError::StillMapped`] while the peer
    /// maps any of them, as Linux's `gnttab_try_end_foreign_access` does.
    fn try_end_access(&self) -> Result<(), GrantError>;
}

/// One end of an interdomain event channel.
pub trait EventChannel: AsFd + Send + Sync {
    /// Our local port (for the frontend, the number to publish in xenstore).
    fn port(&self) -> EvtchnPort;
    /// Send an event to the peer.
    fn notify(&self) -> Result<(), EvtchnError>;
    /// Wait until an event is pending or `timeout` passes (`None` = forever).
    /// Returns whether an event was pending; consumes it and unmasks the port.
    fn wait(&self, timeout: Option<Duration>) -> Result<bool, EvtchnError>;
    /// Consume a pending event without blocking (after the fd polled readable).
    fn ack(&self) -> Result<bool, EvtchnError>;
}

/// Creates event channels.
pub trait EventChannels: Send + Sync {
    /// The channel type.
    type Channel: EventChannel + 'static;
    /// Frontend: allocate an unbound port that domain `peer` may bind.
    fn alloc_unbound(&self, peer: DomId) -> Result<Self::Channel, EvtchnError>;
    /// Backend: bind to port `remote_port` of domain `peer`.
    fn bind_interdomain(
        &self,
        peer: DomId,
        remote_port: EvtchnPort,
    ) -> Result<Self::Channel, EvtchnError>;
}

/// Check copy segments against a local buffer of `local_len` bytes before any
/// copy starts: each segment stays inside its page, and the lengths add up to
/// exactly `local_len`. Both implementations call it, so a hostile segment list
/// gets the same answer on real Xen and in the simulation.
pub fn check_copy_segments(segs: &[CopySeg], local_len: usize) -> Result<(), GrantError> {
    let mut total = 0usize;
    for s in segs {
        if usize::from(s.offset) + usize::from(s.len) > PAGE_SIZE {
            return Err(GrantError::BadSegment(
                "a segment crosses the end of its page",
            ));
        }
        total += usize::from(s.len);
        if total > local_len {
            return Err(GrantError::BadSegment(
                "segments are longer than the local buffer",
            ));
        }
    }
    if total != local_len {
        return Err(GrantError::BadSegment(
            "segments are shorter than the local buffer",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_segments_are_checked_against_page_and_buffer() {
        let s = |offset, len| CopySeg {
            gref: 8,
            offset,
            len,
        };
        assert!(check_copy_segments(&[s(0, 4096)], 4096).is_ok());
        assert!(check_copy_segments(&[s(4095, 1), s(0, 3)], 4).is_ok());
        assert!(check_copy_segments(&[], 0).is_ok());
        assert!(matches!(
            check_copy_segments(&[s(4095, 2)], 2),
            Err(GrantError::BadSegment(_))
        ));
        assert!(matches!(
            check_copy_segments(&[s(u16::MAX, u16::MAX)], 0),
            Err(GrantError::BadSegment(_))
        ));
        assert!(matches!(
            check_copy_segments(&[s(0, 10)], 9),
            Err(GrantError::BadSegment(_))
        ));
        assert!(matches!(
            check_copy_segments(&[s(0, 10)], 11),
            Err(GrantError::BadSegment(_))
        ));
    }
}
