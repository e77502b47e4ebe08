//! The front (request-producing, response-consuming) half of a ring: the guest driver
//! side, e.g. xen-hcd or `pvusb-frontend`.

use std::marker::PhantomData;
use std::sync::atomic::{fence, Ordering};

use crate::error::RingError;
use crate::shared::SharedMem;
use crate::sring::{entry_size, notify_needed, Sring};

/// The front half of a `Req`/`Rsp` ring (ring.h `FRONT_RING_*`).
///
/// Private state is ring.h's `req_prod_pvt` and `rsp_cons`, plus the value of
/// `req_prod` we last published: only we write `req_prod`, so using our own copy as
/// the "old" index of the notify check keeps a backend that scribbles on `req_prod`
/// from influencing anything.
///
/// Invariant kept by every method: `req_prod_pvt - rsp_cons <= size()` (wrapping), so
/// the front never has more than `size()` requests outstanding and never reads a
/// slot it has not yet handed to the back.
#[derive(Debug)]
pub struct FrontRing<Req, Rsp, M> {
    sring: Sring<M>,
    req_prod_pvt: u32,
    rsp_cons: u32,
    req_prod_published: u32,
    _entries: PhantomData<fn(Req) -> Rsp>,
}

impl<Req: bytemuck::Pod, Rsp: bytemuck::Pod, M: SharedMem> FrontRing<Req, Rsp, M> {
    /// A front ring over `mem` with all indexes at 0 (`FRONT_RING_INIT`). Call
    /// [`Self::init_shared`] before advertising the page to the back.
    pub fn new(mem: M) -> Result<Self, RingError> {
        Self::attach(mem, 0)
    }

    /// A front ring whose indexes start at `start` (`FRONT_RING_ATTACH`), e.g. to
    /// re-attach to a live page, or in tests to start just below the 2^32 wrap.
    pub fn attach(mem: M, start: u32) -> Result<Self, RingError> {
        Ok(Self {
            sring: Sring::new(mem, entry_size::<Req, Rsp>())?,
            req_prod_pvt: start,
            rsp_cons: start,
            req_prod_published: start,
            _entries: PhantomData,
        })
    }

    /// `SHARED_RING_INIT`: `req_prod = rsp_prod = start`, `req_event = rsp_event =
    /// start + 1`, padding zeroed. With [`Self::new`] (start 0) this is exactly what
    /// ring.h writes; only the front initialises the page.
    pub fn init_shared(&self) -> Result<(), RingError> {
        self.sring.init()?;
        if self.req_prod_pvt != 0 {
            let start = self.req_prod_published;
            self.sring.set_req_prod(start)?;
            self.sring.set_rsp_prod(start)?;
            self.sring.set_req_event(start.wrapping_add(1))?;
            self.sring.set_rsp_event(start.wrapping_add(1))?;
        }
        Ok(())
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.sring.size()
    }

    /// Raw access to the shared page.
    pub fn sring(&self) -> &Sring<M> {
        &self.sring
    }

    /// The private request producer (next slot to fill).
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// The request producer as last published to the back (requests the back can
    /// have seen; the pushed ones after it are still private).
    pub fn req_prod_published(&self) -> u32 {
        self.req_prod_published
    }

    /// The response consumer (next response to take).
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// Requests pushed (published or not) whose responses were not taken yet.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// `RING_FREE_REQUESTS`: how many more requests fit.
    pub fn free_requests(&self) -> u32 {
        self.size().saturating_sub(self.outstanding())
    }

    /// `RING_FULL`.
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Copy `req` into the next free slot. Not visible to the back until
    /// [`Self::push_requests_and_check_notify`].
    pub fn push_request(&mut self, req: &Req) -> Result<(), RingError> {
        if self.is_full() {
            return Err(RingError::Full { size: self.size() });
        }
        self.sring.write_slot(self.req_prod_pvt, req)?;
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publish every pushed request and say
    /// whether the back asked to be notified (its `req_event` lies in the published
    /// range).
    pub fn push_requests_and_check_notify(&mut self) -> Result<bool, RingError> {
        let old = self.req_prod_published;
        let new = self.req_prod_pvt;
        // xen_wmb(): the back must see the slot contents before the new req_prod.
        // The fence orders our slot copies before the index store (itself a release).
        fence(Ordering::Release);
        self.sring.set_req_prod(new)?;
        self.req_prod_published = new;
        // xen_mb(): req_prod must be visible before we read req_event. Without it the
        // load could be satisfied before the store (store->load reordering, even on
        // x86) while the back sets req_event and re-checks req_prod in its final
        // check: each would miss the other's write and both would sleep.
        fence(Ordering::SeqCst);
        let event = self.sring.req_event()?;
        Ok(notify_needed(old, new, event))
    }

    /// How many responses the back published that we have not taken, after checking
    /// that so many can exist: at most the number of requests published and not yet
    /// answered, which is at most `size()` (`RING_RESPONSE_PROD_OVERFLOW`, tightened).
    pub fn unconsumed_responses(&self) -> Result<u32, RingError> {
        // Acquire load: pairs with the back's release of rsp_prod so that the response
        // slots it wrote before publishing are visible to our copies (the rmb() that
        // ring.h users put after reading rsp_prod).
        let rsp_prod = self.sring.rsp_prod()?;
        let available = rsp_prod.wrapping_sub(self.rsp_cons);
        // Bound by the requests *published* so far, not by `outstanding()`: a slot
        // pushed but not yet published holds our own request, which the back has never
        // seen, so a response claimed for it can only be forged.
        if available > self.req_prod_published.wrapping_sub(self.rsp_cons) {
            return Err(RingError::ResponseOverflow {
                rsp_prod,
                rsp_cons: self.rsp_cons,
                req_prod: self.req_prod_published,
                size: self.size(),
            });
        }
        Ok(available)
    }

    /// `RING_HAS_UNCONSUMED_RESPONSES`, with the overflow check.
    pub fn has_unconsumed_responses(&self) -> Result<bool, RingError> {
        Ok(self.unconsumed_responses()? > 0)
    }

    /// Copy the next response out of the ring (once), if the back published one.
    pub fn take_response(&mut self) -> Result<Option<Rsp>, RingError> {
        if self.unconsumed_responses()? == 0 {
            return Ok(None);
        }
        let rsp = self.sring.read_slot(self.rsp_cons)?;
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Append up to `max` published responses to `out`, reading `rsp_prod` once.
    /// Returns how many were taken; bounded by `size()` whatever the back wrote.
    pub fn take_responses_into(
        &mut self,
        out: &mut Vec<Rsp>,
        max: usize,
    ) -> Result<usize, RingError> {
        let available = self.unconsumed_responses()? as usize;
        let n = available.min(max);
        out.reserve(n);
        for _ in 0..n {
            out.push(self.sring.read_slot(self.rsp_cons)?);
            self.rsp_cons = self.rsp_cons.wrapping_add(1);
        }
        Ok(n)
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: call before sleeping. If nothing is pending,
    /// ask for an event on the very next response (`rsp_event = rsp_cons + 1`) and
    /// re-check, so a response published meanwhile is not slept through.
    /// `Ok(true)` means there is work: do not sleep.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.has_unconsumed_responses()? {
            return Ok(true);
        }
        self.sring.set_rsp_event(self.rsp_cons.wrapping_add(1))?;
        // xen_mb(): rsp_event must be visible before we re-read rsp_prod; pairs with
        // the fence in the back's push_responses_and_check_notify (see there).
        fence(Ordering::SeqCst);
        self.has_unconsumed_responses()
    }
}
