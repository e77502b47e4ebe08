//! A front and a back in two threads over one page, sleeping only on simulated
//! event channels driven by the notify/final-check protocol: proves FIFO order, no
//! loss, no corruption and no lost wakeup. Deterministic end: both sides stop after
//! a fixed number of messages; a lost wakeup shows up as a bounded wait failing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{BackRing, FrontRing, HeapMem};

const TOTAL: u32 = 200_000;
/// Yields a sleeper tolerates without an event before declaring a lost wakeup. Far
/// above any real scheduling delay; it only turns a hang into a failure.
const MAX_IDLE_YIELDS: u64 = 50_000_000;

type Req = [u32; 37];
type Rsp = [u32; 4];

/// A simulated event channel: a counter the notifier bumps and the sleeper watches.
#[derive(Debug, Default)]
struct Event(AtomicU64);

impl Event {
    fn notify(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }
    fn pending(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
    /// Sleep (spin with yield) until an event newer than `seen` arrives.
    fn wait(&self, seen: u64, who: &str) {
        let mut idle = 0u64;
        while self.pending() == seen {
            idle += 1;
            assert!(idle < MAX_IDLE_YIELDS, "{who} lost a wakeup");
            std::thread::yield_now();
        }
    }
}

fn request(seq: u32) -> Req {
    let mut r = [0u32; 37];
    r[0] = seq;
    for (i, w) in (1u32..).zip(r.iter_mut().skip(1).take(35)) {
        *w = seq.rotate_left(i) ^ 0x9E37_79B9;
    }
    r[36] = checksum(&r[..36]);
    r
}

fn checksum(words: &[u32]) -> u32 {
    words
        .iter()
        .fold(0x811C_9DC5, |h, w| (h ^ w).wrapping_mul(0x0100_0193))
}

fn run_front(mut front: FrontRing<Req, Rsp, Arc<HeapMem>>, to_back: &Event, to_front: &Event) {
    let (mut sent, mut received) = (0u32, 0u32);
    let mut rsps = Vec::with_capacity(16);
    while received < TOTAL {
        while sent < TOTAL && !front.is_full() {
            front.push_request(&request(sent)).unwrap();
            sent += 1;
        }
        if front.push_requests_and_check_notify().unwrap() {
            to_back.notify();
        }
        rsps.clear();
        if front.take_responses_into(&mut rsps, usize::MAX).unwrap() > 0 {
            for rsp in &rsps {
                let expected = request(received);
                assert_eq!(
                    *rsp,
                    [received, expected[36], !received, 0],
                    "response order"
                );
                received += 1;
            }
            continue;
        }
        if sent < TOTAL && !front.is_full() {
            continue;
        }
        let seen = to_front.pending();
        if !front.final_check_for_responses().unwrap() {
            to_front.wait(seen, "front");
        }
    }
    assert_eq!(front.outstanding(), 0);
}

fn run_back(mut back: BackRing<Req, Rsp, Arc<HeapMem>>, to_back: &Event, to_front: &Event) {
    let mut handled = 0u32;
    let mut reqs = Vec::with_capacity(16);
    while handled < TOTAL {
        reqs.clear();
        // Alternate single takes and batches to exercise both paths.
        let n = if handled % 2 == 0 {
            back.take_requests_into(&mut reqs, 5).unwrap()
        } else {
            reqs.extend(back.take_request().unwrap());
            reqs.len()
        };
        if n > 0 {
            for req in &reqs {
                assert_eq!(req[0], handled, "request order");
                assert_eq!(req[36], checksum(&req[..36]), "request contents");
                back.push_response(&[req[0], req[36], !req[0], 0]).unwrap();
                handled += 1;
            }
            if back.push_responses_and_check_notify().unwrap() {
                to_front.notify();
            }
            continue;
        }
        let seen = to_back.pending();
        if !back.final_check_for_requests().unwrap() {
            to_back.wait(seen, "back");
        }
    }
    assert_eq!(back.pending_responses(), 0);
}

#[test]
fn two_threads_exchange_every_message_in_order_without_lost_wakeups() {
    let page = Arc::new(HeapMem::page());
    let start = u32::MAX - 100_000; // wraps past 2^32 half-way through
    let front = FrontRing::attach(Arc::clone(&page), start).unwrap();
    front.init_shared().unwrap();
    let back = BackRing::attach(Arc::clone(&page), start).unwrap();
    let (to_back, to_front) = (Event::default(), Event::default());
    std::thread::scope(|s| {
        s.spawn(|| run_back(back, &to_back, &to_front));
        s.spawn(|| run_front(front, &to_back, &to_front));
    });
    let end = start.wrapping_add(TOTAL);
    let sring = crate::Sring::new(Arc::clone(&page), 148).unwrap();
    assert_eq!(sring.req_prod().unwrap(), end);
    assert_eq!(sring.rsp_prod().unwrap(), end);
}
