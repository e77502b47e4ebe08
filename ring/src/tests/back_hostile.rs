//! A back ring against a hostile frontend: impossible `req_prod` values are errors
//! carrying the observed indexes, never a loop, a panic or a read of a slot that
//! holds an unanswered request.

use std::sync::Arc;

use crate::mock::MockFrontend;
use crate::{BackRing, HeapMem, RingError};

type Req = [u32; 37];
type Rsp = [u32; 4];

fn overflow(req_prod: u32, req_cons: u32, rsp_prod_pvt: u32) -> RingError {
    RingError::RequestOverflow {
        req_prod,
        req_cons,
        rsp_prod_pvt,
        size: 16,
    }
}

/// A back ring that took `n` well-formed requests and answered none.
fn holding_unanswered(n: usize) -> (MockFrontend<Req, Rsp>, BackRing<Req, Rsp, Arc<HeapMem>>) {
    let mock = MockFrontend::<Req, Rsp>::new();
    let mut back = mock.back_ring(0).unwrap();
    mock.submit_all(&vec![[1; 37]; n]).unwrap();
    for _ in 0..n {
        back.take_request().unwrap().unwrap();
    }
    (mock, back)
}

#[test]
fn req_prod_more_than_a_ring_ahead_is_an_error_every_time() {
    for start in [0, 5, u32::MAX - 3] {
        let mock = MockFrontend::<Req, Rsp>::new_at(start);
        let mut back = mock.back_ring(start).unwrap();
        for hostile in [17, 1000, u32::MAX / 2, u32::MAX] {
            let req_prod = start.wrapping_add(hostile);
            mock.set_req_prod(req_prod).unwrap();
            let err = overflow(req_prod, start, start);
            assert_eq!(back.take_request().unwrap_err(), err);
            assert_eq!(back.take_request().unwrap_err(), err);
            assert_eq!(back.unconsumed_requests().unwrap_err(), err);
            assert_eq!(back.final_check_for_requests().unwrap_err(), err);
            let mut out = Vec::new();
            assert_eq!(
                back.take_requests_into(&mut out, usize::MAX).unwrap_err(),
                err
            );
            assert!(out.is_empty());
            assert_eq!(back.req_cons(), start, "nothing consumed");
        }
    }
}

#[test]
fn exactly_a_ring_ahead_is_fine_and_bounded() {
    let mock = MockFrontend::<Req, Rsp>::new_at(u32::MAX - 7);
    let mut back = mock.back_ring(u32::MAX - 7).unwrap();
    for i in 0..16u32 {
        mock.write_request((u32::MAX - 7).wrapping_add(i), &[i; 37])
            .unwrap();
    }
    mock.set_req_prod((u32::MAX - 7).wrapping_add(16)).unwrap();
    let mut out = Vec::new();
    assert_eq!(back.take_requests_into(&mut out, usize::MAX).unwrap(), 16);
    assert_eq!(out, (0..16u32).map(|i| [i; 37]).collect::<Vec<_>>());
    assert_eq!(back.take_request().unwrap(), None);
}

#[test]
fn request_prod_overflow_catches_a_front_overwriting_unanswered_slots() {
    // The back holds 16 unanswered requests; one more request can only have been
    // written over a slot the back has not answered yet (RING_REQUEST_PROD_OVERFLOW),
    // although req_prod - req_cons is only 1.
    let (mock, mut back) = holding_unanswered(16);
    mock.set_req_prod(17).unwrap();
    assert_eq!(back.take_request().unwrap_err(), overflow(17, 16, 0));
    // After one response the front may reuse that slot for the 17th request.
    back.push_response(&[0; 4]).unwrap();
    back.push_responses_and_check_notify().unwrap();
    mock.write_request(16, &[2; 37]).unwrap();
    assert_eq!(back.take_request().unwrap(), Some([2; 37]));
}

#[test]
fn req_prod_moving_backwards_is_an_error() {
    let (mock, mut back) = holding_unanswered(3);
    mock.set_req_prod(1).unwrap();
    assert_eq!(back.take_request().unwrap_err(), overflow(1, 3, 0));
    assert_eq!(
        back.has_unconsumed_requests().unwrap_err(),
        overflow(1, 3, 0)
    );
}

#[test]
fn garbage_slots_come_out_as_opaque_copies() {
    // The ring does not interpret entries; validation is the protocol's job.
    let mock = MockFrontend::<[u8; 148], [u8; 16]>::new();
    let mut back = mock.back_ring(0).unwrap();
    mock.write_slot_bytes(0, &[0xFF; 148]).unwrap();
    mock.set_req_prod(1).unwrap();
    assert_eq!(back.take_request().unwrap(), Some([0xFF; 148]));
    assert!(mock.write_slot_bytes(0, &[0; 149]).is_err());
}

#[test]
fn a_copied_request_is_not_affected_by_later_writes_to_its_slot() {
    let mock = MockFrontend::<Req, Rsp>::new();
    let mut back = mock.back_ring(0).unwrap();
    mock.submit(&[5; 37]).unwrap();
    let taken = back.take_request().unwrap().unwrap();
    mock.write_request(0, &[6; 37]).unwrap();
    assert_eq!(taken, [5; 37]);
    assert_eq!(
        back.take_request().unwrap(),
        None,
        "the slot is never read again"
    );
}

#[test]
fn hostile_event_indexes_only_change_whether_we_notify() {
    let mock = MockFrontend::<Req, Rsp>::new();
    let mut back = mock.back_ring(0).unwrap();
    mock.submit_all(&[[0; 37]; 4]).unwrap();
    for event in [0, 1, 2, 4, 5, u32::MAX, u32::MAX / 2] {
        back.take_request().unwrap().unwrap();
        mock.set_rsp_event(event).unwrap();
        let old = back.rsp_prod_pvt();
        back.push_response(&[0; 4]).unwrap();
        let notify = back.push_responses_and_check_notify().unwrap();
        assert_eq!(notify, event == old + 1, "event {event}");
        if back.pending_responses() == 0 && back.req_cons() == 4 {
            break;
        }
    }
    // The front scribbling on rsp_prod does not confuse our own "old" index.
    mock.set_rsp_prod(12345).unwrap();
    mock.set_rsp_event(0).unwrap();
    assert!(!back.push_responses_and_check_notify().unwrap());
}
