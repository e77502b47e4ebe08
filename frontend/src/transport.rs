//! What the frontend needs from Xen: pages granted to the backend and an
//! unbound event channel, behind one object-safe trait.
//!
//! Why object-safe and not generic: the controller keeps pages of several
//! kinds (rings, per-slot data pages, descriptor pages) and replaces them all on
//! a reconnect; trait objects keep the controller and every helper free of type
//! parameters, at the price of one virtual call per copy, which is nothing next
//! to the copy itself.

use std::sync::Arc;

use pvusb_xen::linux::{LinuxEventChannels, LinuxGrantAllocator};
use pvusb_xen::{
    DomId, EventChannel, EventChannels, EvtchnError, GrantAllocator, GrantError, GrantedPages,
};

/// Grants and event channels as the frontend uses them.
pub trait Transport: Send + Sync + 'static {
    /// `count` zeroed pages granted to `peer`, contiguous in our address space.
    fn alloc_pages(
        &self,
        peer: DomId,
        count: usize,
        writable: bool,
    ) -> Result<Arc<dyn GrantedPages>, GrantError>;

    /// An unbound event-channel port that `peer` may bind.
    fn alloc_event_channel(&self, peer: DomId) -> Result<Arc<dyn EventChannel>, EvtchnError>;
}

impl<T> Transport for T
where
    T: GrantAllocator + EventChannels + 'static,
{
    fn alloc_pages(
        &self,
        peer: DomId,
        count: usize,
        writable: bool,
    ) -> Result<Arc<dyn GrantedPages>, GrantError> {
        Ok(Arc::new(GrantAllocator::alloc(
            self, peer, count, writable,
        )?))
    }

    fn alloc_event_channel(&self, peer: DomId) -> Result<Arc<dyn EventChannel>, EvtchnError> {
        Ok(Arc::new(self.alloc_unbound(peer)?))
    }
}

/// Real Xen: `/dev/xen/gntalloc` and `/dev/xen/evtchn` of this (guest) domain.
#[derive(Debug)]
pub struct LinuxXen {
    grants: LinuxGrantAllocator,
    evtchns: LinuxEventChannels,
}

impl LinuxXen {
    /// Opens both devices; fails with a message saying so when not on Xen.
    pub fn open() -> Result<Self, crate::FrontendError> {
        Ok(Self {
            grants: LinuxGrantAllocator::open()?,
            evtchns: LinuxEventChannels::open()?,
        })
    }
}

impl Transport for LinuxXen {
    fn alloc_pages(
        &self,
        peer: DomId,
        count: usize,
        writable: bool,
    ) -> Result<Arc<dyn GrantedPages>, GrantError> {
        Ok(Arc::new(self.grants.alloc(peer, count, writable)?))
    }

    fn alloc_event_channel(&self, peer: DomId) -> Result<Arc<dyn EventChannel>, EvtchnError> {
        Ok(Arc::new(self.evtchns.alloc_unbound(peer)?))
    }
}
