//! Unit tests of the endpoint queue: order, coalesced transfers blocking
//! the queue, requeueing, unlink and abort.

use std::sync::Arc;
use std::time::Instant;

use pvusb_protocol::{Status, UrbResponse};

use super::Endpoint;
use crate::engine::resources::Resources;
use crate::engine::test_support::{info, segment, Guest, Held};
use crate::engine::urb::Urb;
use crate::guest::SegList;
use crate::ids::{RingId, TransferId};
use crate::stats::{Stats, UrbType};
use crate::usb::{Completion, TransferKind, TransferOutcome};

const PORT: u8 = 1;
const BULK_IN: u8 = 0x81;

/// A bulk IN URB `id` of `len` bytes (≤ a page) in page 100 + `id`.
fn bulk_in(id: u16, len: usize) -> Urb {
    Urb {
        ring_id: RingId::new(id),
        port: PORT,
        short_not_ok: false,
        unlinked: false,
        offset: 0,
        is_in: true,
        data: SegList::prefix(&[segment(100 + u32::from(id), len)], len),
        max_len: len,
        iso: None,
        submitted_at: Instant::now(),
        urb_type: UrbType::Bulk,
        patch_ep0: false,
    }
}

struct Rig {
    ep: Endpoint,
    dev: Held,
    guest: Guest,
    res: Resources,
    out: Vec<UrbResponse>,
}

impl Rig {
    /// An endpoint of a device that gains from coalescing or not.
    fn new(coalescing: bool) -> Self {
        Self {
            ep: Endpoint::new(PORT, BULK_IN),
            dev: Held::new(info(coalescing, false)),
            guest: Guest::default(),
            res: Resources::new(1, 4, Arc::new(Stats::default())),
            out: Vec::new(),
        }
    }

    fn queue(&mut self, id: u16, len: usize) {
        self.ep.enqueue(bulk_in(id, len));
    }

    fn dispatch(&mut self) {
        self.ep.dispatch(
            Some(&mut self.dev),
            &self.guest,
            &mut self.res,
            &mut self.out,
        );
    }

    /// Completes `tid` with `actual` bytes of IN data.
    fn complete(&mut self, tid: TransferId, outcome: TransferOutcome, actual: usize) {
        let c = Completion::done(outcome, vec![0xab; actual], actual);
        self.ep
            .complete(tid, c, &self.guest, &mut self.res, &mut self.out);
    }

    /// The responses so far as (id, status, length).
    fn answers(&mut self) -> Vec<(u16, i32, i32)> {
        self.out
            .drain(..)
            .map(|r| (r.id, r.status, r.actual_length))
            .collect()
    }
}

const OK: i32 = Status::Ok.as_i32();

#[test]
fn order_is_kept_one_by_one_without_coalescing() {
    let mut rig = Rig::new(false);
    for id in [7, 3, 5] {
        rig.queue(id, 4096);
    }
    rig.dispatch();
    let sizes: Vec<usize> = rig
        .dev
        .submits
        .iter()
        .map(|(_, t)| t.buffer.len())
        .collect();
    assert_eq!(sizes, vec![4096; 3], "one transfer per URB");
    for _ in 0..3 {
        let (tid, t) = rig.dev.take();
        assert_eq!((t.endpoint, &t.kind), (BULK_IN, &TransferKind::Bulk));
        rig.complete(tid, TransferOutcome::Completed, 4096);
    }
    assert_eq!(
        rig.answers(),
        vec![(7, OK, 4096), (3, OK, 4096), (5, OK, 4096)]
    );
    assert!(rig.ep.is_idle());
}

#[test]
fn a_coalesced_transfer_blocks_the_endpoint_until_it_completes() {
    let mut rig = Rig::new(true);
    rig.queue(1, 4096);
    rig.queue(2, 4096);
    rig.dispatch();
    assert_eq!(rig.dev.submits.len(), 1);
    let (tid, t) = rig.dev.take();
    assert_eq!(t.buffer.len(), 8192, "both URBs in one transfer");
    assert!(!t.short_not_ok);
    // A third URB, even one that would go alone, waits behind it.
    rig.queue(3, 13);
    rig.dispatch();
    assert!(rig.dev.submits.is_empty());
    assert!(rig.ep.holds(RingId::new(3)));
    rig.complete(tid, TransferOutcome::Completed, 8192);
    assert_eq!(rig.answers(), vec![(1, OK, 4096), (2, OK, 4096)]);
    rig.dispatch();
    let (tid, t) = rig.dev.take();
    assert_eq!(t.buffer.len(), 13);
    rig.complete(tid, TransferOutcome::Completed, 13);
    assert_eq!(rig.answers(), vec![(3, OK, 13)]);
    let s = rig.res.stats.snapshot();
    assert_eq!((s.submitted, s.transfers), (3, 2));
}

#[test]
fn a_short_coalesced_completion_requeues_the_rest_in_order() {
    let mut rig = Rig::new(true);
    for id in 1..=3 {
        rig.queue(id, 4096);
    }
    rig.dispatch();
    let (first, t) = rig.dev.take();
    assert_eq!(t.buffer.len(), 3 * 4096);
    rig.queue(4, 4096);
    // The device ends the transfer with a short packet inside URB 2.
    rig.complete(first, TransferOutcome::Completed, 5000);
    assert_eq!(rig.answers(), vec![(1, OK, 4096), (2, OK, 904)]);
    // URB 3 got nothing: it goes again, ahead of URB 4 queued later.
    rig.dispatch();
    let (second, t) = rig.dev.take();
    assert_ne!(first, second);
    assert_eq!(t.buffer.len(), 2 * 4096);
    rig.complete(second, TransferOutcome::Completed, 2 * 4096);
    assert_eq!(rig.answers(), vec![(3, OK, 4096), (4, OK, 4096)]);
    assert!(rig.ep.is_idle());
}

#[test]
fn unlinking_a_waiting_urb_answers_it_at_once() {
    let mut rig = Rig::new(true);
    rig.queue(1, 4096);
    rig.queue(2, 4096);
    assert!(rig.ep.unlink(
        RingId::new(2),
        Some(&mut rig.dev),
        &mut rig.res,
        &mut rig.out
    ));
    let cancelled = TransferOutcome::Cancelled.status().as_i32();
    assert_eq!(rig.answers(), vec![(2, cancelled, 0)]);
    assert!(!rig.ep.holds(RingId::new(2)));
    assert!(
        rig.dev.cancels.is_empty(),
        "nothing to cancel on the device"
    );
    rig.dispatch();
    let (tid, t) = rig.dev.take();
    assert_eq!(t.buffer.len(), 4096, "only URB 1 is left");
    // An unknown id is not ours.
    assert!(!rig.ep.unlink(
        RingId::new(9),
        Some(&mut rig.dev),
        &mut rig.res,
        &mut rig.out
    ));
    // URB 1 is on the device: cancelled there, answered with its completion.
    assert!(rig.ep.unlink(
        RingId::new(1),
        Some(&mut rig.dev),
        &mut rig.res,
        &mut rig.out
    ));
    assert_eq!(rig.dev.cancels, vec![tid]);
    assert!(rig.answers().is_empty());
    rig.complete(tid, TransferOutcome::Cancelled, 0);
    assert_eq!(rig.answers(), vec![(1, cancelled, 0)]);
    assert_eq!(rig.res.stats.snapshot().unlinks_hit, 2);
}

#[test]
fn abort_answers_every_urb_waiting_or_on_the_device() {
    let mut rig = Rig::new(true);
    rig.queue(1, 4096);
    rig.queue(2, 4096);
    rig.dispatch();
    rig.queue(3, 4096);
    let (tid, _) = rig.dev.take();
    assert!(rig.ep.owns(tid));
    assert_eq!(rig.ep.urbs(), 3);
    let Rig {
        ep, res, mut out, ..
    } = rig;
    let mut res = res;
    ep.abort(Status::NoDev, &mut res, &mut out);
    let nodev = Status::NoDev.as_i32();
    let got: Vec<_> = out.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(got, vec![(1, nodev), (2, nodev), (3, nodev)]);
    assert_eq!(res.stats.snapshot().aborted, 3);
}

#[test]
fn without_a_device_waiting_urbs_are_answered_nodev() {
    let mut rig = Rig::new(true);
    rig.queue(1, 4096);
    rig.queue(2, 4096);
    rig.ep
        .dispatch(None, &rig.guest, &mut rig.res, &mut rig.out);
    let nodev = Status::NoDev.as_i32();
    assert_eq!(rig.answers(), vec![(1, nodev, 0), (2, nodev, 0)]);
    assert!(rig.ep.is_idle());
    assert_eq!(rig.res.stats.snapshot().no_device, 2);
}
