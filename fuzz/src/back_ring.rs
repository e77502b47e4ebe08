//! Target `back_ring`: a usbif-sized `BackRing` (148-byte requests, 16-byte
//! responses, 16 slots) against a frontend that controls the whole shared page.
//!
//! Input layout (zero-padded past the end, see [`crate::input`]):
//! `start: u32` (attach index), `req_prod, req_event, rsp_prod, rsp_event: u32`,
//! `k: u8` then `k % 17` slots of 148 bytes written from `start` on, then up to
//! [`MAX_STEPS`] operations, one opcode byte each plus their arguments
//! (see [`Op`]): ring calls of the backend interleaved with hostile writes of the
//! frontend. Oracles: no panic, overflow errors carry the observed indexes and make
//! no progress, the backend never holds more unanswered requests than slots.

use std::collections::VecDeque;

use pvusb_ring::mock::MockFrontend;
use pvusb_ring::RingError;

use crate::input::Input;

/// A request-sized entry.
pub type Req = [u8; 148];
/// A response-sized entry.
pub type Rsp = [u8; 16];
/// Upper bound on operations per input, so every run is short.
pub const MAX_STEPS: usize = 512;

opcodes! {
    /// Operations, by opcode (`byte % 12`).
    pub enum Op {
        /// `take_request`.
        Take,
        /// `take_requests_into` with `max: u8`.
        TakeBatch,
        /// `push_response` answering the oldest taken request (or none: an error).
        Respond,
        /// `push_responses_and_check_notify`.
        Publish,
        /// `final_check_for_requests`.
        FinalCheck,
        /// `has_unconsumed_requests`.
        Peek,
        /// Frontend sets `req_prod` to a `u32`.
        SetReqProd,
        /// Frontend moves `req_prod` by an `i8`.
        NudgeReqProd,
        /// Frontend sets `rsp_event` to a `u32`.
        SetRspEvent,
        /// Frontend fills slot `idx: u32` with byte `b: u8`.
        WriteSlot,
        /// Frontend submits one request filled with `b: u8` (well-behaved traffic).
        Submit,
        /// Frontend scribbles on `rsp_prod` (a `u32`), which only the back may write.
        SetRspProd,
    }
}

/// Run one input. Panics only when an oracle fails.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let start = input.u32();
    let mock = MockFrontend::<Req, Rsp>::new_at(start);
    let mut back = mock.back_ring(start).expect("a 148-byte ring fits a page");
    let size = back.size();
    mock.set_req_prod(input.u32())
        .expect("header is in the page");
    mock.set_req_event(input.u32())
        .expect("header is in the page");
    mock.set_rsp_prod(input.u32())
        .expect("header is in the page");
    mock.set_rsp_event(input.u32())
        .expect("header is in the page");
    for i in 0..u32::from(input.u8() % 17) {
        let mut slot = [0u8; 148];
        input.fill(&mut slot);
        mock.write_request(start.wrapping_add(i), &slot)
            .expect("slot is in the page");
    }

    let mut unanswered: VecDeque<Req> = VecDeque::with_capacity(size as usize);
    let mut batch = Vec::with_capacity(size as usize);
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let before = (back.req_cons(), back.rsp_prod_pvt());
        let shared_prod = mock.req_prod().expect("header is in the page");
        let result = match Op::decode(input.u8()) {
            Op::Take => back.take_request().map(|req| unanswered.extend(req)),
            Op::TakeBatch => {
                let max = usize::from(input.u8());
                batch.clear();
                back.take_requests_into(&mut batch, max).map(|n| {
                    assert!(n <= max && n <= size as usize && n == batch.len());
                    unanswered.extend(batch.iter().copied());
                })
            }
            Op::Respond => {
                let mut rsp = [0u8; 16];
                if let Some(req) = unanswered.front() {
                    rsp[..8].copy_from_slice(&req[..8]); // echo the id field
                }
                back.push_response(&rsp).map(|()| {
                    unanswered.pop_front();
                })
            }
            Op::Publish => back.push_responses_and_check_notify().map(drop),
            Op::FinalCheck => back.final_check_for_requests().map(drop),
            Op::Peek => back.has_unconsumed_requests().map(drop),
            Op::SetReqProd => mock.set_req_prod(input.u32()),
            Op::NudgeReqProd => {
                let delta = i32::from(input.u8() as i8);
                mock.set_req_prod(shared_prod.wrapping_add_signed(delta))
            }
            Op::SetRspEvent => mock.set_rsp_event(input.u32()),
            Op::WriteSlot => {
                let idx = input.u32();
                mock.write_request(idx, &[input.u8(); 148])
            }
            Op::Submit => mock.submit(&[input.u8(); 148]).map(drop),
            Op::SetRspProd => mock.set_rsp_prod(input.u32()),
        };
        match result {
            Ok(()) => {}
            Err(RingError::RequestOverflow {
                req_prod,
                req_cons,
                rsp_prod_pvt,
                size: s,
            }) => {
                assert_eq!(
                    req_prod, shared_prod,
                    "the error reports what the peer wrote"
                );
                assert_eq!((req_cons, rsp_prod_pvt, s), (before.0, before.1, size));
                assert!(
                    req_prod.wrapping_sub(rsp_prod_pvt) > s || req_prod.wrapping_sub(req_cons) > s
                );
                assert_eq!(
                    (back.req_cons(), back.rsp_prod_pvt()),
                    before,
                    "no progress"
                );
            }
            Err(RingError::NoRequestToAnswer { .. }) => assert!(unanswered.is_empty()),
            Err(e) => panic!("unexpected ring error: {e}"),
        }
        assert!(back.pending_responses() <= size);
        assert_eq!(back.pending_responses() as usize, unanswered.len());
    }
}

/// Seed inputs: an idle ring, well-behaved traffic across the 2^32 wrap, and the
/// classic hostile producer indexes.
pub fn seeds() -> Vec<Vec<u8>> {
    fn header(start: u32, req_prod: u32, slots: u8) -> Vec<u8> {
        let mut v = Vec::new();
        for word in [
            start,
            req_prod,
            start.wrapping_add(1),
            start,
            start.wrapping_add(1),
        ] {
            v.extend_from_slice(&word.to_le_bytes());
        }
        v.push(slots);
        for i in 0..slots {
            v.extend_from_slice(&[i; 148]);
        }
        v
    }
    let traffic = |start: u32| {
        let mut v = header(start, start.wrapping_add(4), 4);
        v.extend_from_slice(&[Op::Take as u8, Op::TakeBatch as u8, 8, Op::Respond as u8]);
        v.extend_from_slice(&[Op::Respond as u8, Op::Publish as u8, Op::Submit as u8, 7]);
        v.extend_from_slice(&[Op::FinalCheck as u8, Op::Take as u8, Op::Respond as u8]);
        v.extend_from_slice(&[Op::Respond as u8, Op::Respond as u8, Op::Publish as u8]);
        v.extend_from_slice(&[Op::FinalCheck as u8]);
        v
    };
    let mut far_ahead = header(7, 7 + 17, 0);
    far_ahead.extend_from_slice(&[
        Op::Take as u8,
        Op::FinalCheck as u8,
        Op::TakeBatch as u8,
        255,
    ]);
    let mut overwrite = header(0, 16, 16);
    overwrite.extend_from_slice(&[Op::TakeBatch as u8, 16, Op::NudgeReqProd as u8, 1]);
    overwrite.extend_from_slice(&[Op::Take as u8, Op::Respond as u8, Op::Take as u8]);
    let mut backwards = header(u32::MAX, 2, 3);
    backwards.extend_from_slice(&[Op::TakeBatch as u8, 3, Op::NudgeReqProd as u8, 0xFE]);
    backwards.extend_from_slice(&[Op::Peek as u8, Op::Take as u8]);
    vec![
        Vec::new(),
        traffic(0),
        traffic(u32::MAX - 2),
        far_ahead,
        overwrite,
        backwards,
    ]
}

#[cfg(test)]
mod tests {
    crate::clean_run_tests!();

    #[test]
    fn short_and_noisy_inputs_run_clean() {
        for len in 0..64usize {
            let noise: Vec<u8> = (0..len * 13).map(|i| (i * 131 + len) as u8).collect();
            super::run(&noise);
        }
    }
}
