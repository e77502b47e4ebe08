//! Peer mocks for testing one half of a ring against a scripted, possibly hostile,
//! other half (feature `test-utils`; always available to this crate's own tests).
//!
//! [`MockFrontend`] plays the guest driver for a [`BackRing`] under test: it writes
//! arbitrary requests into arbitrary slots and arbitrary values into every header
//! index. [`MockBackend`] plays the backend for a [`FrontRing`] under test. Both
//! dereference to [`Sring`], so every raw header accessor (`set_req_prod`,
//! `rsp_event`, `write_slot_bytes`, ...) is available on them directly. Neither does
//! any checking: misbehaving is their job. See `ring/TESTING.md`.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use crate::back::BackRing;
use crate::error::RingError;
use crate::front::FrontRing;
use crate::shared::{HeapMem, SharedMem};
use crate::sring::{entry_size, Sring};

fn page_sring<Req, Rsp>(start: u32) -> Sring<Arc<HeapMem>> {
    let sring = Sring::new(Arc::new(HeapMem::page()), entry_size::<Req, Rsp>())
        .expect("mock ring entries must fit a 4096-byte page");
    init_header(&sring, start).expect("a fresh page holds the header");
    sring
}

/// `SHARED_RING_INIT` generalised to a start index (both producers at `start`, both
/// events at `start + 1`).
fn init_header<M: SharedMem>(sring: &Sring<M>, start: u32) -> Result<(), RingError> {
    sring.init()?;
    sring.set_req_prod(start)?;
    sring.set_rsp_prod(start)?;
    sring.set_req_event(start.wrapping_add(1))?;
    sring.set_rsp_event(start.wrapping_add(1))
}

/// A scripted guest driver: the front side of a ring, without any protocol checks.
#[derive(Debug)]
pub struct MockFrontend<Req, Rsp, M = Arc<HeapMem>> {
    sring: Sring<M>,
    rsp_cons: u32,
    _entries: PhantomData<fn(Req) -> Rsp>,
}

impl<Req: bytemuck::Pod, Rsp: bytemuck::Pod> MockFrontend<Req, Rsp> {
    /// A fresh initialised 4096-byte page.
    ///
    /// # Panics
    /// If `Req`/`Rsp` entries do not fit a page (a bug in the test, not an input).
    pub fn new() -> Self {
        Self::new_at(0)
    }

    /// A fresh page initialised with every index at `start` (wrap-around tests).
    ///
    /// # Panics
    /// As [`Self::new`].
    pub fn new_at(start: u32) -> Self {
        Self {
            sring: page_sring::<Req, Rsp>(start),
            rsp_cons: start,
            _entries: PhantomData,
        }
    }

    /// A back ring under test over the same page, attached at `start` (use the start
    /// given to [`Self::new_at`], 0 for [`Self::new`]).
    pub fn back_ring(&self, start: u32) -> Result<BackRing<Req, Rsp, Arc<HeapMem>>, RingError> {
        BackRing::attach(Arc::clone(self.sring.mem()), start)
    }
}

impl<Req: bytemuck::Pod, Rsp: bytemuck::Pod> Default for MockFrontend<Req, Rsp> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Req: bytemuck::Pod, Rsp: bytemuck::Pod, M: SharedMem> MockFrontend<Req, Rsp, M> {
    /// A mock over existing memory; the page is left as it is.
    pub fn with_mem(mem: M) -> Result<Self, RingError> {
        Ok(Self {
            sring: Sring::new(mem, entry_size::<Req, Rsp>())?,
            rsp_cons: 0,
            _entries: PhantomData,
        })
    }

    /// Re-initialise the header with every index at `start`.
    pub fn init_at(&mut self, start: u32) -> Result<(), RingError> {
        self.rsp_cons = start;
        init_header(&self.sring, start)
    }

    /// Write `req` into the slot of index `idx` without publishing anything.
    pub fn write_request(&self, idx: u32, req: &Req) -> Result<(), RingError> {
        self.sring.write_slot(idx, req)
    }

    /// Read whatever the slot of index `idx` holds, as a response.
    pub fn read_response(&self, idx: u32) -> Result<Rsp, RingError> {
        self.sring.read_slot(idx)
    }

    /// Well-behaved submission: write `req` at the shared `req_prod` and publish
    /// `req_prod + 1`. Returns the index used. No full check.
    pub fn submit(&self, req: &Req) -> Result<u32, RingError> {
        self.submit_all(std::slice::from_ref(req))
    }

    /// Write `reqs` from the shared `req_prod` on and publish them at once. Returns
    /// the first index used.
    pub fn submit_all(&self, reqs: &[Req]) -> Result<u32, RingError> {
        let first = self.sring.req_prod()?;
        let mut idx = first;
        for req in reqs {
            self.write_request(idx, req)?;
            idx = idx.wrapping_add(1);
        }
        self.sring.set_req_prod(idx)?;
        Ok(first)
    }

    /// The mock's response consumer.
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// Move the mock's response consumer (it only affects what the mock reads).
    pub fn set_rsp_cons(&mut self, idx: u32) {
        self.rsp_cons = idx;
    }

    /// Take the next published response, trusting `rsp_prod` (no overflow check).
    pub fn take_response(&mut self) -> Result<Option<Rsp>, RingError> {
        if self.sring.rsp_prod()? == self.rsp_cons {
            return Ok(None);
        }
        let rsp = self.read_response(self.rsp_cons)?;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Take every published response, at most one ring's worth.
    pub fn responses(&mut self) -> Result<Vec<Rsp>, RingError> {
        let mut out = Vec::new();
        while out.len() < self.sring.size() as usize {
            match self.take_response()? {
                Some(rsp) => out.push(rsp),
                None => break,
            }
        }
        Ok(out)
    }
}

impl<Req, Rsp, M> Deref for MockFrontend<Req, Rsp, M> {
    type Target = Sring<M>;
    fn deref(&self) -> &Sring<M> {
        &self.sring
    }
}

/// A scripted backend: the back side of a ring, without any protocol checks.
#[derive(Debug)]
pub struct MockBackend<Req, Rsp, M = Arc<HeapMem>> {
    sring: Sring<M>,
    req_cons: u32,
    _entries: PhantomData<fn(Req) -> Rsp>,
}

impl<Req: bytemuck::Pod, Rsp: bytemuck::Pod> MockBackend<Req, Rsp> {
    /// A fresh initialised 4096-byte page.
    ///
    /// # Panics
    /// If `Req`/`Rsp` entries do not fit a page (a bug in the test, not an input).
    pub fn new() -> Self {
        Self::new_at(0)
    }

    /// A fresh page initialised with every index at `start` (wrap-around tests).
    ///
    /// # Panics
    /// As [`Self::new`].
    pub fn new_at(start: u32) -> Self {
        Self {
            sring: page_sring::<Req, Rsp>(start),
            req_cons: start,
            _entries: PhantomData,
        }
    }

    /// A front ring under test over the same page, attached at `start`. The page is
    /// already initialised; calling `init_shared` on it again is harmless.
    pub fn front_ring(&self, start: u32) -> Result<FrontRing<Req, Rsp, Arc<HeapMem>>, RingError> {
        FrontRing::attach(Arc::clone(self.sring.mem()), start)
    }
}

impl<Req: bytemuck::Pod, Rsp: bytemuck::Pod> Default for MockBackend<Req, Rsp> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Req: bytemuck::Pod, Rsp: bytemuck::Pod, M: SharedMem> MockBackend<Req, Rsp, M> {
    /// A mock over existing memory; the page is left as it is.
    pub fn with_mem(mem: M) -> Result<Self, RingError> {
        Ok(Self {
            sring: Sring::new(mem, entry_size::<Req, Rsp>())?,
            req_cons: 0,
            _entries: PhantomData,
        })
    }

    /// Write `rsp` into the slot of index `idx` without publishing anything.
    pub fn write_response(&self, idx: u32, rsp: &Rsp) -> Result<(), RingError> {
        self.sring.write_slot(idx, rsp)
    }

    /// Read whatever the slot of index `idx` holds, as a request.
    pub fn read_request(&self, idx: u32) -> Result<Req, RingError> {
        self.sring.read_slot(idx)
    }

    /// The mock's request consumer.
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// Move the mock's request consumer.
    pub fn set_req_cons(&mut self, idx: u32) {
        self.req_cons = idx;
    }

    /// Take the next published request, trusting `req_prod` (no overflow check).
    pub fn take_request(&mut self) -> Result<Option<Req>, RingError> {
        if self.sring.req_prod()? == self.req_cons {
            return Ok(None);
        }
        let req = self.read_request(self.req_cons)?;
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Take every published request, at most one ring's worth.
    pub fn requests(&mut self) -> Result<Vec<Req>, RingError> {
        let mut out = Vec::new();
        while out.len() < self.sring.size() as usize {
            match self.take_request()? {
                Some(req) => out.push(req),
                None => break,
            }
        }
        Ok(out)
    }

    /// Write `rsp` at the shared `rsp_prod` and publish `rsp_prod + 1`, whether or
    /// not a request is waiting. Returns the index used.
    pub fn respond(&self, rsp: &Rsp) -> Result<u32, RingError> {
        self.respond_all(std::slice::from_ref(rsp))
    }

    /// Write `rsps` from the shared `rsp_prod` on and publish them at once. Returns
    /// the first index used.
    pub fn respond_all(&self, rsps: &[Rsp]) -> Result<u32, RingError> {
        let first = self.sring.rsp_prod()?;
        let mut idx = first;
        for rsp in rsps {
            self.write_response(idx, rsp)?;
            idx = idx.wrapping_add(1);
        }
        self.sring.set_rsp_prod(idx)?;
        Ok(first)
    }
}

impl<Req, Rsp, M> Deref for MockBackend<Req, Rsp, M> {
    type Target = Sring<M>;
    fn deref(&self) -> &Sring<M> {
        &self.sring
    }
}
