//! A front ring against a hostile backend: responses it cannot have produced are
//! errors carrying the observed indexes.

use crate::mock::MockBackend;
use crate::RingError;

type Req = [u32; 37];
type Rsp = [u32; 4];

fn overflow(rsp_prod: u32, rsp_cons: u32, req_prod: u32) -> RingError {
    RingError::ResponseOverflow {
        rsp_prod,
        rsp_cons,
        req_prod,
        size: 16,
    }
}

#[test]
fn rsp_prod_far_ahead_is_an_error_every_time() {
    for start in [0, u32::MAX - 2] {
        let mock = MockBackend::<Req, Rsp>::new_at(start);
        let mut front = mock.front_ring(start).unwrap();
        for hostile in [17, 99, u32::MAX / 2, u32::MAX] {
            let rsp_prod = start.wrapping_add(hostile);
            mock.set_rsp_prod(rsp_prod).unwrap();
            let err = overflow(rsp_prod, start, start);
            assert_eq!(front.take_response().unwrap_err(), err);
            assert_eq!(front.final_check_for_responses().unwrap_err(), err);
            let mut out = Vec::new();
            assert_eq!(front.take_responses_into(&mut out, 8).unwrap_err(), err);
            assert_eq!(front.rsp_cons(), start);
        }
    }
}

#[test]
fn more_responses_than_outstanding_requests_is_an_error() {
    let mut mock = MockBackend::<Req, Rsp>::new();
    let mut front = mock.front_ring(0).unwrap();
    front.push_request(&[1; 37]).unwrap();
    front.push_request(&[2; 37]).unwrap();
    front.push_requests_and_check_notify().unwrap();
    assert_eq!(mock.requests().unwrap(), vec![[1; 37], [2; 37]]);
    mock.respond_all(&[[1; 4], [2; 4], [3; 4]]).unwrap();
    // Within ring.h's `rsp_prod - rsp_cons <= N`, but only 2 requests were sent.
    assert_eq!(front.take_response().unwrap_err(), overflow(3, 0, 2));
    mock.set_rsp_prod(2).unwrap();
    assert_eq!(front.take_response().unwrap(), Some([1; 4]));
    assert_eq!(front.take_response().unwrap(), Some([2; 4]));
    assert_eq!(front.take_response().unwrap(), None);
}

#[test]
fn a_response_for_an_unpublished_request_is_an_error() {
    // The slot of a pushed-but-unpublished request holds our own request; a backend
    // that claims a response for it (it cannot have seen the request) is forging it.
    let mock = MockBackend::<Req, Rsp>::new();
    let mut front = mock.front_ring(0).unwrap();
    front.push_request(&[1; 37]).unwrap();
    mock.set_rsp_prod(1).unwrap();
    assert_eq!(front.take_response().unwrap_err(), overflow(1, 0, 0));
    assert_eq!(front.rsp_cons(), 0);
    // Once published, a genuine response is accepted.
    mock.set_rsp_prod(0).unwrap();
    front.push_requests_and_check_notify().unwrap();
    mock.set_rsp_prod(1).unwrap();
    assert!(front.take_response().unwrap().is_some());
}

#[test]
fn rsp_prod_moving_backwards_is_an_error() {
    let mut mock = MockBackend::<Req, Rsp>::new();
    let mut front = mock.front_ring(0).unwrap();
    front.push_request(&[1; 37]).unwrap();
    front.push_requests_and_check_notify().unwrap();
    mock.take_request().unwrap().unwrap();
    mock.respond(&[9; 4]).unwrap();
    assert_eq!(front.take_response().unwrap(), Some([9; 4]));
    mock.set_rsp_prod(0).unwrap();
    assert_eq!(front.take_response().unwrap_err(), overflow(0, 1, 1));
}

#[test]
fn a_backend_scribbling_on_req_prod_cannot_fake_or_hide_notifications() {
    let mock = MockBackend::<Req, Rsp>::new();
    let mut front = mock.front_ring(0).unwrap();
    // req_event = 1 (init): our first publish must notify whatever req_prod says.
    mock.set_req_prod(1).unwrap();
    front.push_request(&[0; 37]).unwrap();
    assert!(front.push_requests_and_check_notify().unwrap());
    assert_eq!(mock.req_prod().unwrap(), 1);
    mock.set_req_prod(500).unwrap();
    mock.set_req_event(u32::MAX).unwrap();
    assert!(!front.push_requests_and_check_notify().unwrap());
    assert_eq!(mock.req_prod().unwrap(), 1, "we publish our own index");
}
