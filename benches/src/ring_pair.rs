//! A front and a back ring over one page, driven in one thread exactly as the
//! two sides drive them (publish, consume, final check before "sleeping"), while
//! counting how often each side would have to send an event.
//!
//! Why count: notification suppression is the whole point of batching. The
//! count is what the criterion numbers are explained by, and a regression in
//! the ring's event-index logic shows up as a changed count.

use std::sync::Arc;

use pvusb_protocol::{Status, UrbRequest, UrbResponse};
use pvusb_ring::{BackRing, FrontRing, HeapMem, RingError};

/// Events the two sides would have sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NotifyCounts {
    /// Front → back (new requests).
    pub to_back: u64,
    /// Back → front (new responses).
    pub to_front: u64,
}

impl NotifyCounts {
    /// Both directions.
    pub fn total(&self) -> u64 {
        self.to_back + self.to_front
    }
}

/// How requests are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Push the whole batch, publish once; the back answers the batch and
    /// publishes once (what a frontend with 16 in flight and a draining backend do).
    Batched,
    /// Publish after every request, and the peer consumes it at once and goes
    /// back to sleep (one URB in flight: the synchronous ping-pong).
    PerRequest,
}

/// The ring pair.
#[derive(Debug)]
pub struct RingPair {
    front: FrontRing<UrbRequest, UrbResponse, Arc<HeapMem>>,
    back: BackRing<UrbRequest, UrbResponse, Arc<HeapMem>>,
    scratch: Vec<UrbRequest>,
    /// Events that would have been sent so far.
    pub notifies: NotifyCounts,
}

impl RingPair {
    /// A freshly initialised urb ring (16 slots).
    pub fn new() -> Result<Self, RingError> {
        let page = Arc::new(HeapMem::page());
        let front = FrontRing::new(Arc::clone(&page))?;
        front.init_shared()?;
        let back = BackRing::new(page)?;
        Ok(Self {
            front,
            back,
            scratch: Vec::with_capacity(16),
            notifies: NotifyCounts::default(),
        })
    }

    /// Ring slots (16 for the urb ring).
    pub fn size(&self) -> u32 {
        self.front.size()
    }

    /// Send every request of `reqs` (at most the ring size) through the ring,
    /// answer each with OK, and take the responses. Returns the number of
    /// responses taken.
    pub fn round(&mut self, reqs: &[UrbRequest], publish: Publish) -> Result<usize, RingError> {
        match publish {
            Publish::Batched => self.batched(reqs),
            Publish::PerRequest => {
                let mut n = 0;
                for r in reqs {
                    n += self.batched(std::slice::from_ref(r))?;
                }
                Ok(n)
            }
        }
    }

    fn batched(&mut self, reqs: &[UrbRequest]) -> Result<usize, RingError> {
        for r in reqs {
            self.front.push_request(r)?;
        }
        if self.front.push_requests_and_check_notify()? {
            self.notifies.to_back += 1;
        }
        // Back: drain, answer, publish once, then the final check before sleeping.
        self.scratch.clear();
        self.back
            .take_requests_into(&mut self.scratch, reqs.len())?;
        for r in &self.scratch {
            self.back
                .push_response(&UrbResponse::new(r.id, Status::Ok, 0))?;
        }
        if self.back.push_responses_and_check_notify()? {
            self.notifies.to_front += 1;
        }
        self.back.final_check_for_requests()?;
        // Front: drain, final check before sleeping.
        let mut taken = 0;
        while self.front.take_response()?.is_some() {
            taken += 1;
        }
        self.front.final_check_for_responses()?;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::bulk;
    use pvusb_protocol::Direction;

    fn batch() -> Vec<UrbRequest> {
        (0..16).map(|i| bulk(i, Direction::In, 64)).collect()
    }

    #[test]
    fn batching_sends_one_event_per_direction_per_batch() {
        let mut pair = RingPair::new().unwrap();
        for _ in 0..10 {
            assert_eq!(pair.round(&batch(), Publish::Batched).unwrap(), 16);
        }
        assert_eq!(
            pair.notifies,
            NotifyCounts {
                to_back: 10,
                to_front: 10
            }
        );
    }

    #[test]
    fn per_request_publishing_sends_an_event_per_request_each_way() {
        let mut pair = RingPair::new().unwrap();
        assert_eq!(pair.round(&batch(), Publish::PerRequest).unwrap(), 16);
        assert_eq!(
            pair.notifies,
            NotifyCounts {
                to_back: 16,
                to_front: 16
            }
        );
    }
}
