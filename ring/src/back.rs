//! The back (request-consuming, response-producing) half of a ring: the backend
//! side, e.g. usbback, QEMU's xen-usb or `pvusb-backend`. Everything it reads from
//! the page was written by a possibly hostile frontend.

use std::marker::PhantomData;
use std::sync::atomic::{fence, Ordering};

use crate::error::RingError;
use crate::shared::SharedMem;
use crate::sring::{entry_size, notify_needed, Sring};

/// The back half of a `Req`/`Rsp` ring (ring.h `BACK_RING_*`).
///
/// Private state is ring.h's `req_cons` and `rsp_prod_pvt`, plus the value of
/// `rsp_prod` we last published (only we write `rsp_prod`, so the frontend cannot
/// influence the notify check through it).
///
/// Invariant kept by every method: `req_cons - rsp_prod_pvt <= size()` (wrapping):
/// we never hold more consumed-but-unanswered requests than there are slots, and a
/// response is only written into a slot whose request was already copied out.
#[derive(Debug)]
pub struct BackRing<Req, Rsp, M> {
    sring: Sring<M>,
    req_cons: u32,
    rsp_prod_pvt: u32,
    rsp_prod_published: u32,
    _entries: PhantomData<fn(Req) -> Rsp>,
}

impl<Req: bytemuck::Pod, Rsp: bytemuck::Pod, M: SharedMem> BackRing<Req, Rsp, M> {
    /// A back ring over a page the front initialised, indexes at 0 (`BACK_RING_INIT`).
    pub fn new(mem: M) -> Result<Self, RingError> {
        Self::attach(mem, 0)
    }

    /// A back ring whose indexes start at `start` (`BACK_RING_ATTACH`).
    pub fn attach(mem: M, start: u32) -> Result<Self, RingError> {
        Ok(Self {
            sring: Sring::new(mem, entry_size::<Req, Rsp>())?,
            req_cons: start,
            rsp_prod_pvt: start,
            rsp_prod_published: start,
            _entries: PhantomData,
        })
    }

    /// Number of slots.
    pub fn size(&self) -> u32 {
        self.sring.size()
    }

    /// Raw access to the shared page.
    pub fn sring(&self) -> &Sring<M> {
        &self.sring
    }

    /// The request consumer (next request to take).
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// The private response producer (next slot a response goes into).
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// Requests taken whose responses were not pushed yet (e.g. conn-ring requests
    /// parked until the next hot-plug event).
    pub fn pending_responses(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// How many requests the front published that we have not taken, after checking
    /// that so many can exist. An error means the frontend is hostile or broken.
    pub fn unconsumed_requests(&self) -> Result<u32, RingError> {
        // Acquire load: pairs with the front's release of req_prod so the slots it
        // wrote before publishing are visible to our copies (ring.h users' rmb()).
        let req_prod = self.sring.req_prod()?;
        let size = self.size();
        let unconsumed = req_prod.wrapping_sub(self.req_cons);
        // RING_REQUEST_PROD_OVERFLOW, plus "req_prod moved behind req_cons", which
        // shows up as a huge unconsumed count.
        if req_prod.wrapping_sub(self.rsp_prod_pvt) > size || unconsumed > size {
            return Err(RingError::RequestOverflow {
                req_prod,
                req_cons: self.req_cons,
                rsp_prod_pvt: self.rsp_prod_pvt,
                size,
            });
        }
        // XEN_RING_NR_UNCONSUMED_REQUESTS: never more than the slots not holding
        // unanswered requests (implied by the checks above; kept as the bound).
        Ok(unconsumed.min(size.saturating_sub(self.pending_responses())))
    }

    /// `RING_HAS_UNCONSUMED_REQUESTS`, with the overflow check.
    pub fn has_unconsumed_requests(&self) -> Result<bool, RingError> {
        Ok(self.unconsumed_requests()? > 0)
    }

    /// Copy the next request out of the ring, once (`RING_COPY_REQUEST`); the slot is
    /// never read again. `Ok(None)` when the front published nothing new.
    pub fn take_request(&mut self) -> Result<Option<Req>, RingError> {
        if self.unconsumed_requests()? == 0 {
            return Ok(None);
        }
        let req = self.sring.read_slot(self.req_cons)?;
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Append up to `max` published requests to `out`, reading `req_prod` once.
    /// Returns how many were taken; bounded by `size()` whatever the front wrote.
    pub fn take_requests_into(
        &mut self,
        out: &mut Vec<Req>,
        max: usize,
    ) -> Result<usize, RingError> {
        let available = self.unconsumed_requests()? as usize;
        let n = available.min(max);
        out.reserve(n);
        for _ in 0..n {
            out.push(self.sring.read_slot(self.req_cons)?);
            self.req_cons = self.req_cons.wrapping_add(1);
        }
        Ok(n)
    }

    /// Copy `rsp` into the next response slot (which held an already-consumed
    /// request). Not visible to the front until
    /// [`Self::push_responses_and_check_notify`]; push several, then publish once.
    pub fn push_response(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        if self.pending_responses() == 0 {
            return Err(RingError::NoRequestToAnswer {
                rsp_prod_pvt: self.rsp_prod_pvt,
            });
        }
        self.sring.write_slot(self.rsp_prod_pvt, rsp)?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Push every response of `rsps` (see [`Self::push_response`]); stops at the first
    /// error, with the responses before it pushed.
    pub fn push_responses(&mut self, rsps: &[Rsp]) -> Result<(), RingError> {
        rsps.iter().try_for_each(|rsp| self.push_response(rsp))
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: publish every pushed response and say
    /// whether the front asked to be notified (its `rsp_event` lies in the published
    /// range).
    pub fn push_responses_and_check_notify(&mut self) -> Result<bool, RingError> {
        let old = self.rsp_prod_published;
        let new = self.rsp_prod_pvt;
        // xen_wmb(): the front must see the response slots before the new rsp_prod.
        fence(Ordering::Release);
        self.sring.set_rsp_prod(new)?;
        self.rsp_prod_published = new;
        // xen_mb(): rsp_prod must be visible before we read rsp_event, or we and the
        // front's final check could each miss the other's write and both sleep.
        fence(Ordering::SeqCst);
        let event = self.sring.rsp_event()?;
        Ok(notify_needed(old, new, event))
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: call before sleeping. If nothing is pending,
    /// ask for an event on the very next request (`req_event = req_cons + 1`) and
    /// re-check. `Ok(true)` means there is work: do not sleep.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.has_unconsumed_requests()? {
            return Ok(true);
        }
        self.sring.set_req_event(self.req_cons.wrapping_add(1))?;
        // xen_mb(): req_event must be visible before we re-read req_prod; pairs with
        // the fence in the front's push_requests_and_check_notify.
        fence(Ordering::SeqCst);
        self.has_unconsumed_requests()
    }
}
