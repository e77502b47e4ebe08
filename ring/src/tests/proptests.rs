//! Property tests: arbitrary (hostile) index values never panic and never break the
//! rings' invariants, and well-behaved peers follow an exact model of ordering and
//! notification.

use std::collections::VecDeque;

use proptest::prelude::*;

use crate::mock::{MockBackend, MockFrontend};
use crate::shared::SharedMem;
use crate::sring::Sring;
use crate::{notify_needed, RingError};

type Req = [u32; 37];
type Rsp = [u32; 4];

#[derive(Debug, Clone)]
enum HostileOp {
    Take,
    TakeBatch(usize),
    Respond,
    Publish,
    FinalCheck,
    SetProd(u32),
    NudgeProd(i8),
    SetEvent(u32),
    Garbage(u32, u8),
}

fn hostile_op() -> impl Strategy<Value = HostileOp> {
    prop_oneof![
        3 => Just(HostileOp::Take),
        1 => (0usize..40).prop_map(HostileOp::TakeBatch),
        2 => Just(HostileOp::Respond),
        2 => Just(HostileOp::Publish),
        1 => Just(HostileOp::FinalCheck),
        1 => any::<u32>().prop_map(HostileOp::SetProd),
        3 => any::<i8>().prop_map(HostileOp::NudgeProd),
        1 => any::<u32>().prop_map(HostileOp::SetEvent),
        1 => (any::<u32>(), any::<u8>()).prop_map(|(i, b)| HostileOp::Garbage(i, b)),
    ]
}

/// Overwrites the four header indexes, as a hostile peer may at any time.
fn set_header<M: SharedMem>(sring: &Sring<M>, header: [u32; 4]) {
    let [req_prod, req_event, rsp_prod, rsp_event] = header;
    sring.set_req_prod(req_prod).unwrap();
    sring.set_req_event(req_event).unwrap();
    sring.set_rsp_prod(rsp_prod).unwrap();
    sring.set_rsp_event(rsp_event).unwrap();
}

proptest! {
    #[test]
    fn notify_rule_is_event_in_published_range(old: u32, new: u32, event: u32) {
        let in_range = event.wrapping_sub(old).wrapping_sub(1) < new.wrapping_sub(old);
        prop_assert_eq!(notify_needed(old, new, event), in_range);
    }

    #[test]
    fn back_ring_survives_a_hostile_frontend(
        start: u32,
        header: [u32; 4],
        ops in proptest::collection::vec(hostile_op(), 0..80),
    ) {
        let mock = MockFrontend::<Req, Rsp>::new_at(start);
        let mut back = mock.back_ring(start).unwrap();
        set_header(&mock, header);
        let mut out = Vec::new();
        for op in ops {
            let shared_prod = mock.req_prod().unwrap();
            let (req_cons, rsp_prod_pvt) = (back.req_cons(), back.rsp_prod_pvt());
            let result = match op {
                HostileOp::Take => back.take_request().map(drop),
                HostileOp::TakeBatch(max) => back.take_requests_into(&mut out, max).map(|n| {
                    assert!(n <= max && n <= 16);
                }),
                HostileOp::Respond => back.push_response(&[1; 4]),
                HostileOp::Publish => back.push_responses_and_check_notify().map(drop),
                HostileOp::FinalCheck => back.final_check_for_requests().map(drop),
                HostileOp::SetProd(v) => mock.set_req_prod(v),
                HostileOp::NudgeProd(d) => {
                    mock.set_req_prod(shared_prod.wrapping_add_signed(i32::from(d)))
                }
                HostileOp::SetEvent(v) => mock.set_rsp_event(v),
                HostileOp::Garbage(i, b) => mock.write_slot_bytes(i, &[b; 148]),
            };
            match result {
                Ok(()) | Err(RingError::NoRequestToAnswer { .. }) => {}
                Err(RingError::RequestOverflow { req_prod, req_cons: c, rsp_prod_pvt: p, size }) => {
                    prop_assert_eq!(req_prod, shared_prod);
                    prop_assert_eq!((c, p, size), (req_cons, rsp_prod_pvt, 16));
                    prop_assert!(
                        req_prod.wrapping_sub(p) > 16 || req_prod.wrapping_sub(c) > 16
                    );
                    prop_assert_eq!(back.req_cons(), req_cons, "no progress on error");
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            prop_assert!(back.pending_responses() <= 16);
        }
    }

    #[test]
    fn front_ring_survives_a_hostile_backend(
        start: u32,
        header: [u32; 4],
        ops in proptest::collection::vec(hostile_op(), 0..80),
    ) {
        let mock = MockBackend::<Req, Rsp>::new_at(start);
        let mut front = mock.front_ring(start).unwrap();
        set_header(&mock, header);
        let mut out = Vec::new();
        for op in ops {
            let shared_prod = mock.rsp_prod().unwrap();
            let (rsp_cons, published) = (front.rsp_cons(), front.req_prod_published());
            let result = match op {
                HostileOp::Take => front.take_response().map(drop),
                HostileOp::TakeBatch(max) => front.take_responses_into(&mut out, max).map(drop),
                HostileOp::Respond => front.push_request(&[2; 37]),
                HostileOp::Publish => front.push_requests_and_check_notify().map(drop),
                HostileOp::FinalCheck => front.final_check_for_responses().map(drop),
                HostileOp::SetProd(v) => mock.set_rsp_prod(v),
                HostileOp::NudgeProd(d) => {
                    mock.set_rsp_prod(shared_prod.wrapping_add_signed(i32::from(d)))
                }
                HostileOp::SetEvent(v) => mock.set_req_event(v),
                HostileOp::Garbage(i, b) => mock.write_slot_bytes(i, &[b; 148]),
            };
            match result {
                Ok(()) | Err(RingError::Full { size: 16 }) => {}
                Err(RingError::ResponseOverflow { rsp_prod, rsp_cons: c, req_prod: p, size }) => {
                    prop_assert_eq!(rsp_prod, shared_prod);
                    prop_assert_eq!((c, p, size), (rsp_cons, published, 16));
                    prop_assert!(rsp_prod.wrapping_sub(c) > p.wrapping_sub(c));
                    prop_assert_eq!(front.rsp_cons(), rsp_cons, "no progress on error");
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            prop_assert!(front.outstanding() <= 16);
            prop_assert_eq!(front.free_requests(), 16 - front.outstanding());
        }
    }
}

#[derive(Debug, Clone)]
enum PeerOp {
    FrontPush(u32),
    FrontPublish,
    FrontTake(usize),
    FrontFinal,
    BackTake(usize),
    BackRespond(u32),
    BackPublish,
    BackFinal,
}

fn peer_op() -> impl Strategy<Value = PeerOp> {
    prop_oneof![
        (0u32..20).prop_map(PeerOp::FrontPush),
        Just(PeerOp::FrontPublish),
        (0usize..20).prop_map(PeerOp::FrontTake),
        Just(PeerOp::FrontFinal),
        (0usize..20).prop_map(PeerOp::BackTake),
        (0u32..20).prop_map(PeerOp::BackRespond),
        Just(PeerOp::BackPublish),
        Just(PeerOp::BackFinal),
    ]
}

/// Model of two well-behaved peers: FIFO queues for each stage, and "armed" flags
/// saying whether a consumer's final check found nothing (so the next publish in
/// its direction must notify, and nothing may notify again until it re-arms).
#[derive(Debug, Default)]
struct Model {
    next_seq: u32,
    staged_reqs: VecDeque<u32>,
    published_reqs: VecDeque<u32>,
    unanswered: VecDeque<u32>,
    staged_rsps: VecDeque<u32>,
    published_rsps: VecDeque<u32>,
}

proptest! {
    #[test]
    fn well_behaved_peers_follow_the_model(
        start: u32,
        ops in proptest::collection::vec(peer_op(), 0..120),
    ) {
        let mock = MockFrontend::<Req, Rsp>::new_at(start);
        let mut back = mock.back_ring(start).unwrap();
        let mut front = crate::FrontRing::<Req, Rsp, _>::attach(mock.mem().clone(), start).unwrap();
        front.init_shared().unwrap();
        let mut m = Model::default();
        // SHARED_RING_INIT arms both directions: the first message notifies.
        let (mut req_armed, mut rsp_armed) = (true, true);
        for op in ops {
            match op {
                PeerOp::FrontPush(n) => {
                    for _ in 0..n {
                        let outstanding = u32::try_from(m.staged_reqs.len() + m.published_reqs.len()
                            + m.unanswered.len() + m.staged_rsps.len() + m.published_rsps.len()).unwrap();
                        let result = front.push_request(&[m.next_seq; 37]);
                        if outstanding == 16 {
                            prop_assert_eq!(result, Err(RingError::Full { size: 16 }));
                        } else {
                            prop_assert_eq!(result, Ok(()));
                            m.staged_reqs.push_back(m.next_seq);
                            m.next_seq += 1;
                        }
                    }
                }
                PeerOp::FrontPublish => {
                    let new = !m.staged_reqs.is_empty();
                    let notify = front.push_requests_and_check_notify().unwrap();
                    prop_assert_eq!(notify, new && req_armed);
                    if notify {
                        req_armed = false;
                    }
                    m.published_reqs.extend(m.staged_reqs.drain(..));
                }
                PeerOp::BackTake(max) => {
                    let mut got = Vec::new();
                    back.take_requests_into(&mut got, max).unwrap();
                    let want: Vec<u32> =
                        (0..max.min(m.published_reqs.len())).filter_map(|_| m.published_reqs.pop_front()).collect();
                    prop_assert_eq!(got.iter().map(|r| r[0]).collect::<Vec<_>>(), want.clone());
                    m.unanswered.extend(want);
                }
                PeerOp::BackRespond(n) => {
                    for _ in 0..n {
                        let result = back.push_response(&[m.unanswered.front().copied().unwrap_or(0); 4]);
                        match m.unanswered.pop_front() {
                            Some(seq) => {
                                prop_assert_eq!(result, Ok(()));
                                m.staged_rsps.push_back(seq);
                            }
                            None => prop_assert!(result.is_err()),
                        }
                    }
                }
                PeerOp::BackPublish => {
                    let new = !m.staged_rsps.is_empty();
                    let notify = back.push_responses_and_check_notify().unwrap();
                    prop_assert_eq!(notify, new && rsp_armed);
                    if notify {
                        rsp_armed = false;
                    }
                    m.published_rsps.extend(m.staged_rsps.drain(..));
                }
                PeerOp::FrontTake(max) => {
                    let mut got = Vec::new();
                    front.take_responses_into(&mut got, max).unwrap();
                    let want: Vec<u32> =
                        (0..max.min(m.published_rsps.len())).filter_map(|_| m.published_rsps.pop_front()).collect();
                    prop_assert_eq!(got.iter().map(|r| r[0]).collect::<Vec<_>>(), want);
                }
                PeerOp::BackFinal => {
                    let work = back.final_check_for_requests().unwrap();
                    prop_assert_eq!(work, !m.published_reqs.is_empty());
                    req_armed |= !work;
                }
                PeerOp::FrontFinal => {
                    let work = front.final_check_for_responses().unwrap();
                    prop_assert_eq!(work, !m.published_rsps.is_empty());
                    rsp_armed |= !work;
                }
            }
        }
    }
}
