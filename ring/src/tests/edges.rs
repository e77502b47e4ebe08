//! Well-behaved peers at the edges: empty, full, wrap-around at 2^32, notification
//! suppression, batching, and the conn-ring pattern.

use std::sync::Arc;

use crate::mock::MockFrontend;
use crate::{BackRing, FrontRing, HeapMem, RingError};

/// A usbif-sized request (148 bytes) and response (16 bytes): a 16-slot ring.
type Req = [u32; 37];
type Rsp = [u32; 4];
/// A conn-ring-sized pair (2 and 4 bytes): a 512-slot ring.
type ConnReq = [u16; 1];
type ConnRsp = [u16; 2];

type Front = FrontRing<Req, Rsp, Arc<HeapMem>>;
type Back = BackRing<Req, Rsp, Arc<HeapMem>>;

fn pair_at(start: u32) -> (Front, Back) {
    let page = Arc::new(HeapMem::page());
    let front = FrontRing::attach(Arc::clone(&page), start).unwrap();
    front.init_shared().unwrap();
    let back = BackRing::attach(page, start).unwrap();
    (front, back)
}

fn req(seq: u32) -> Req {
    let mut r = [0u32; 37];
    for (i, w) in (0u32..).zip(r.iter_mut()) {
        *w = seq.wrapping_mul(31).wrapping_add(i);
    }
    r
}

#[test]
fn sizes_follow_the_entry_types() {
    let (front, back) = pair_at(0);
    assert_eq!((front.size(), back.size()), (16, 16));
    let conn = FrontRing::<ConnReq, ConnRsp, _>::new(HeapMem::page()).unwrap();
    assert_eq!(conn.size(), 512);
}

#[test]
fn init_shared_at_a_start_index_sets_producers_and_events() {
    let (front, _) = pair_at(u32::MAX);
    let s = front.sring();
    assert_eq!(s.req_prod().unwrap(), u32::MAX);
    assert_eq!(s.rsp_prod().unwrap(), u32::MAX);
    assert_eq!(s.req_event().unwrap(), 0);
    assert_eq!(s.rsp_event().unwrap(), 0);
}

#[test]
fn empty_ring_has_nothing_and_final_checks_arm_the_events() {
    let (mut front, mut back) = pair_at(0);
    assert_eq!(back.take_request().unwrap(), None);
    assert_eq!(front.take_response().unwrap(), None);
    assert!(!back.final_check_for_requests().unwrap());
    assert!(!front.final_check_for_responses().unwrap());
    assert_eq!(back.sring().req_event().unwrap(), 1);
    assert_eq!(front.sring().rsp_event().unwrap(), 1);
    assert_eq!(front.free_requests(), 16);
    assert!(!front.is_full());
}

#[test]
fn full_ring_refuses_one_more_request_until_a_response_is_taken() {
    let (mut front, mut back) = pair_at(0);
    for seq in 0..16 {
        assert_eq!(front.free_requests(), 16 - seq);
        front.push_request(&req(seq)).unwrap();
    }
    assert!(front.is_full());
    assert_eq!(
        front.push_request(&req(99)).unwrap_err(),
        RingError::Full { size: 16 }
    );
    front.push_requests_and_check_notify().unwrap();

    let mut taken = Vec::new();
    assert_eq!(back.take_requests_into(&mut taken, usize::MAX).unwrap(), 16);
    assert_eq!(taken, (0..16).map(req).collect::<Vec<_>>());
    assert_eq!(back.pending_responses(), 16);
    // Still full from the front's point of view: responses not taken yet.
    assert!(front.is_full());
    back.push_response(&[0, 1, 2, 3]).unwrap();
    back.push_responses_and_check_notify().unwrap();
    assert_eq!(front.take_response().unwrap(), Some([0, 1, 2, 3]));
    assert_eq!(front.free_requests(), 1);
    front.push_request(&req(16)).unwrap();
    assert!(front.is_full());
}

#[test]
fn a_response_needs_a_consumed_request() {
    let (mut front, mut back) = pair_at(7);
    assert_eq!(
        back.push_response(&[0; 4]).unwrap_err(),
        RingError::NoRequestToAnswer { rsp_prod_pvt: 7 }
    );
    front.push_request(&req(1)).unwrap();
    front.push_requests_and_check_notify().unwrap();
    back.take_request().unwrap().unwrap();
    back.push_responses(&[[1; 4]]).unwrap();
    assert!(back.push_responses(&[[2; 4]]).is_err());
    assert_eq!(back.rsp_prod_pvt(), 8);
}

#[test]
fn wrap_around_at_2_pow_32_keeps_order_and_contents() {
    let start = u32::MAX - 20;
    let (mut front, mut back) = pair_at(start);
    let mut next_seq = 0u32;
    let mut expect_seq = 0u32;
    let mut back_seq = 0u32;
    for round in 0..10u32 {
        let batch = 1 + round % 16;
        for _ in 0..batch {
            front.push_request(&req(next_seq)).unwrap();
            next_seq += 1;
        }
        front.push_requests_and_check_notify().unwrap();
        while let Some(r) = back.take_request().unwrap() {
            assert_eq!(r, req(back_seq));
            back_seq += 1;
            back.push_response(&[r[0], r[36], 0, 0]).unwrap();
        }
        back.push_responses_and_check_notify().unwrap();
        while let Some(rsp) = front.take_response().unwrap() {
            assert_eq!(rsp, [req(expect_seq)[0], req(expect_seq)[36], 0, 0]);
            expect_seq += 1;
        }
    }
    assert_eq!(expect_seq, next_seq);
    assert_eq!(front.req_prod_pvt(), start.wrapping_add(next_seq));
    assert!(front.req_prod_pvt() < start, "indexes wrapped past 2^32");
    assert_eq!(back.req_cons(), front.req_prod_pvt());
    assert_eq!(front.rsp_cons(), back.rsp_prod_pvt());
}

#[test]
fn notifications_are_suppressed_until_the_peer_asks_again() {
    for start in [0, u32::MAX - 1, u32::MAX] {
        let (mut front, mut back) = pair_at(start);
        // req_event = start + 1 after init: the first request notifies.
        front.push_request(&req(0)).unwrap();
        assert!(front.push_requests_and_check_notify().unwrap());
        // The back has not re-armed (still busy): no more events.
        front.push_request(&req(1)).unwrap();
        assert!(!front.push_requests_and_check_notify().unwrap());
        // Publishing nothing never notifies.
        assert!(!front.push_requests_and_check_notify().unwrap());
        // Back drains, final check arms req_event = req_cons + 1: next push notifies.
        while back.take_request().unwrap().is_some() {}
        assert!(!back.final_check_for_requests().unwrap());
        front.push_request(&req(2)).unwrap();
        assert!(front.push_requests_and_check_notify().unwrap());
        // A final check that finds work does not re-arm.
        assert!(back.final_check_for_requests().unwrap());
        front.push_request(&req(3)).unwrap();
        assert!(!front.push_requests_and_check_notify().unwrap());

        // Responses, symmetric: rsp_event = start + 1 after init.
        for _ in 0..4 {
            back.take_request().unwrap();
        }
        back.push_response(&[0; 4]).unwrap();
        assert!(back.push_responses_and_check_notify().unwrap());
        back.push_response(&[1; 4]).unwrap();
        assert!(!back.push_responses_and_check_notify().unwrap());
        while front.take_response().unwrap().is_some() {}
        assert!(!front.final_check_for_responses().unwrap());
        back.push_responses(&[[2; 4], [3; 4]]).unwrap();
        assert!(back.push_responses_and_check_notify().unwrap());
    }
}

#[test]
fn an_event_index_further_ahead_batches_notifications() {
    let (mut front, back) = pair_at(0);
    // A back that wants one event per 4 requests (custom final check).
    back.sring().set_req_event(4).unwrap();
    for i in 0..3 {
        front.push_request(&req(i)).unwrap();
        assert!(!front.push_requests_and_check_notify().unwrap());
    }
    front.push_request(&req(3)).unwrap();
    assert!(front.push_requests_and_check_notify().unwrap());
}

#[test]
fn a_batch_is_published_once() {
    let (mut front, mut back) = pair_at(100);
    for i in 0..10 {
        front.push_request(&req(i)).unwrap();
    }
    // Not visible before publishing.
    assert!(!back.has_unconsumed_requests().unwrap());
    assert!(front.push_requests_and_check_notify().unwrap());
    assert_eq!(back.unconsumed_requests().unwrap(), 10);
    let mut out = Vec::with_capacity(16);
    assert_eq!(back.take_requests_into(&mut out, 4).unwrap(), 4);
    assert_eq!(back.take_requests_into(&mut out, 100).unwrap(), 6);
    assert_eq!(back.take_requests_into(&mut out, 100).unwrap(), 0);
    assert_eq!(out.len(), 10);
    let rsps: Vec<Rsp> = out.iter().map(|r| [r[0], 0, 0, 0]).collect();
    back.push_responses(&rsps).unwrap();
    assert!(!front.has_unconsumed_responses().unwrap());
    assert!(back.push_responses_and_check_notify().unwrap());
    let mut got = Vec::new();
    assert_eq!(front.take_responses_into(&mut got, 3).unwrap(), 3);
    assert_eq!(front.take_responses_into(&mut got, 100).unwrap(), 7);
    assert_eq!(got, rsps);
}

#[test]
fn conn_ring_backend_answers_parked_requests_by_id() {
    // The frontend posts one request per slot up front; the back takes them and
    // answers one per hot-plug event, much later, with the request's id.
    let mut mock = MockFrontend::<ConnReq, ConnRsp>::new();
    let mut back = mock.back_ring(0).unwrap();
    let reqs: Vec<ConnReq> = (0..512u16).map(|id| [id]).collect();
    mock.submit_all(&reqs).unwrap();

    let mut parked = Vec::new();
    assert_eq!(
        back.take_requests_into(&mut parked, usize::MAX).unwrap(),
        512
    );
    assert_eq!(back.take_request().unwrap(), None);
    assert_eq!(back.pending_responses(), 512);
    for (port, [id]) in (0u16..).zip(parked.iter().take(3)) {
        back.push_response(&[*id, port + 1]).unwrap();
        // Only the first answer notifies: the mock never re-arms rsp_event.
        assert_eq!(back.push_responses_and_check_notify().unwrap(), port == 0);
    }
    assert_eq!(mock.responses().unwrap(), vec![[0, 1], [1, 2], [2, 3]]);
    assert_eq!(back.pending_responses(), 509);
    // The frontend re-posts the answered ids; the ring has room for exactly those.
    mock.submit_all(&[[0], [1], [2]]).unwrap();
    assert_eq!(back.unconsumed_requests().unwrap(), 3);
}
