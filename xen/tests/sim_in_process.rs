//! The simulated transport with both domains in one process (threads): grants,
//! copies, refusals, deferred release, event channels and peer death.

use std::os::fd::AsFd;
use std::time::Duration;

mod after_death;

use after_death::copies_after_death;
use pvusb_testkit::wait::within;
use pvusb_xen::sim::{SimXen, NR_REFS};
use pvusb_xen::{
    CopySeg, EventChannel, EventChannels, EvtchnError, GrantAllocator, GrantError, GrantMapper,
    GrantedPages, SharedMem, PAGE_SIZE,
};

const LONG: Option<Duration> = Some(Duration::from_secs(10));

fn pair() -> (tempfile::TempDir, SimXen, SimXen) {
    let dir = pvusb_testkit::dir::create("pvs").unwrap();
    let front = SimXen::new(dir.path(), 1);
    let back = SimXen::new(dir.path(), 0);
    (dir, front, back)
}

fn seg(gref: u32, offset: u16, len: u16) -> CopySeg {
    CopySeg { gref, offset, len }
}

#[test]
fn mapped_grants_are_shared_both_ways() {
    let (_d, front, back) = pair();
    let pages = front.alloc(0, 3, true).unwrap();
    assert_eq!(pages.size(), 3 * PAGE_SIZE);
    let refs = pages.refs().to_vec();
    assert_eq!(refs.len(), 3);
    // Freshly granted pages are zeroed.
    let mut z = vec![1u8; 3 * PAGE_SIZE];
    pages.read(0, &mut z).unwrap();
    assert!(z.iter().all(|&b| b == 0));

    // Map in a different order: the mapping follows the order of the refs given.
    let m = back.map(1, &[refs[2], refs[0]], true).unwrap();
    assert_eq!(m.size(), 2 * PAGE_SIZE);
    pages.write(2 * PAGE_SIZE + 10, b"front").unwrap();
    let mut b = [0u8; 5];
    m.read(10, &mut b).unwrap();
    assert_eq!(&b, b"front");
    // A write straddling the two mapped pages lands in refs[2] end and refs[0] start.
    m.write(PAGE_SIZE - 2, b"back").unwrap();
    pages.read(3 * PAGE_SIZE - 2, &mut b[..2]).unwrap();
    assert_eq!(&b[..2], b"ba");
    pages.read(0, &mut b[..2]).unwrap();
    assert_eq!(&b[..2], b"ck");
    m.store_u32(64, 0xdead_beef).unwrap();
    assert_eq!(pages.load_u32(2 * PAGE_SIZE + 64).unwrap(), 0xdead_beef);
    assert!(m.read(2 * PAGE_SIZE - 1, &mut b[..2]).is_err());
}

#[test]
fn copies_move_data_per_segment() {
    let (_d, front, back) = pair();
    let pages = front.alloc(0, 2, true).unwrap();
    let r = pages.refs().to_vec();
    let pattern: Vec<u8> = (0..2 * PAGE_SIZE).map(|i| (i * 7 % 251) as u8).collect();
    pages.write(0, &pattern).unwrap();

    let segs = [
        seg(r[1], 100, 300),
        seg(r[0], 4000, 96),
        seg(r[1], 0, 0),
        seg(r[0], 0, 4),
    ];
    let mut out = vec![0u8; 400];
    back.copy_from_guest(1, &segs, &mut out).unwrap();
    let mut want = pattern[PAGE_SIZE + 100..PAGE_SIZE + 400].to_vec();
    want.extend_from_slice(&pattern[4000..4096]);
    want.extend_from_slice(&pattern[0..4]);
    assert_eq!(out, want);

    let src: Vec<u8> = (0..=255u8).cycle().take(PAGE_SIZE + 10).collect();
    back.copy_to_guest(1, &[seg(r[0], 0, 4096), seg(r[1], 20, 10)], &src)
        .unwrap();
    let mut got = vec![0u8; PAGE_SIZE];
    pages.read(0, &mut got).unwrap();
    assert_eq!(got[..], src[..PAGE_SIZE]);
    let mut tail = [0u8; 10];
    pages.read(PAGE_SIZE + 20, &mut tail).unwrap();
    assert_eq!(tail[..], src[PAGE_SIZE..]);
}

#[test]
fn hostile_grant_accesses_get_precise_errors() {
    let (d, front, back) = pair();
    let rw = front.alloc(0, 1, true).unwrap();
    let ro = front.alloc(0, 1, false).unwrap();
    let other = front.alloc(7, 1, true).unwrap();
    let (rw, ro, other) = (rw.refs()[0], ro.refs()[0], other.refs()[0]);
    let mut buf = [0u8; 8];

    // Granted to domain 7, not to us.
    assert!(
        matches!(back.map(1, &[other], false), Err(GrantError::NotGranted { gref, domid: 0 }) if gref == other)
    );
    assert!(matches!(
        back.copy_from_guest(1, &[seg(other, 0, 8)], &mut buf),
        Err(GrantError::NotGranted { .. })
    ));
    // ... but domain 7 itself may.
    let dom7 = SimXen::new(d.path(), 7);
    dom7.copy_from_guest(1, &[seg(other, 0, 8)], &mut buf)
        .unwrap();

    // Read-only grant: reading is fine, writing is refused, mapping too.
    back.copy_from_guest(1, &[seg(ro, 0, 8)], &mut buf).unwrap();
    assert!(
        matches!(back.copy_to_guest(1, &[seg(ro, 0, 8)], &buf), Err(GrantError::ReadOnly { gref }) if gref == ro)
    );
    assert!(
        matches!(back.map(1, &[rw, ro], true), Err(GrantError::ReadOnly { gref }) if gref == ro)
    );
    let m = back.map(1, &[ro], false).unwrap();
    assert!(
        m.write(0, &[1]).is_err(),
        "a read-only mapping refuses writes instead of faulting"
    );

    // Out of range, reserved, and never allocated references.
    for bad in [0, 3, NR_REFS, u32::MAX, rw + 100] {
        assert!(
            matches!(back.map(1, &[bad], false), Err(GrantError::BadRef { gref }) if gref == bad),
            "{bad}"
        );
        assert!(matches!(
            back.copy_from_guest(1, &[seg(bad, 0, 8)], &mut buf),
            Err(GrantError::BadRef { .. })
        ));
    }
    // Segments crossing the page end or not matching the buffer.
    assert!(matches!(
        back.copy_from_guest(1, &[seg(rw, 4090, 8)], &mut buf),
        Err(GrantError::BadSegment(_))
    ));
    assert!(matches!(
        back.copy_to_guest(1, &[seg(rw, 0, 9)], &buf),
        Err(GrantError::BadSegment(_))
    ));
    assert!(matches!(
        back.map(1, &[], false),
        Err(GrantError::BadSegment(_))
    ));
    // One bad segment among good ones: nothing is written.
    let before = {
        let mut b = [0u8; 8];
        back.copy_from_guest(1, &[seg(rw, 0, 8)], &mut b).unwrap();
        b
    };
    let r = back.copy_to_guest(1, &[seg(rw, 0, 4), seg(ro, 0, 4)], &[9; 8]);
    assert!(matches!(r, Err(GrantError::ReadOnly { .. })));
    let mut after = [0u8; 8];
    back.copy_from_guest(1, &[seg(rw, 0, 8)], &mut after)
        .unwrap();
    assert_eq!(before, after);

    // A domain nobody serves.
    assert!(matches!(
        back.copy_from_guest(9, &[seg(rw, 0, 8)], &mut buf),
        Err(GrantError::Unavailable(_))
    ));
}

#[test]
fn ending_access_waits_for_the_peer_to_unmap() {
    let (_d, front, back) = pair();
    let pages = front.alloc(0, 2, true).unwrap();
    let refs = pages.refs().to_vec();
    let m = back.map(1, &refs[1..], false).unwrap();
    assert!(
        matches!(pages.try_end_access(), Err(GrantError::StillMapped { gref }) if gref == refs[1])
    );
    drop(m);
    pages.try_end_access().unwrap();
    // Ended: the backend can neither map nor copy, the frontend still uses its view.
    let mut b = [0u8; 4];
    assert!(matches!(
        back.map(1, &refs[..1], false),
        Err(GrantError::BadRef { .. })
    ));
    assert!(matches!(
        back.copy_from_guest(1, &[seg(refs[0], 0, 4)], &mut b),
        Err(GrantError::BadRef { .. })
    ));
    pages.write(0, b"mine").unwrap();
}

#[test]
fn dropping_mapped_pages_defers_their_reuse() {
    let (_d, front, back) = pair();
    let pages = front.alloc(0, 1, true).unwrap();
    let gref = pages.refs()[0];
    pages.write(0, b"keep").unwrap();
    let m = back.map(1, &[gref], true).unwrap();
    drop(pages);
    // The peer's mapping stays valid, and the page is not handed out again.
    let again = front.alloc(0, 1, true).unwrap();
    assert_ne!(again.refs()[0], gref);
    let mut b = [0u8; 4];
    m.read(0, &mut b).unwrap();
    assert_eq!(&b, b"keep");
    // New accesses to the ended grant are refused.
    assert!(matches!(
        back.copy_from_guest(1, &[seg(gref, 0, 4)], &mut b),
        Err(GrantError::BadRef { .. })
    ));
    drop(m);
}

#[test]
fn event_channels_deliver_both_ways() {
    let (_d, front, back) = pair();
    let f = front.alloc_unbound(0).unwrap();
    assert_ne!(f.port(), 0);
    let b = back.bind_interdomain(1, f.port()).unwrap();
    assert!(!f.wait(Some(Duration::from_millis(1))).unwrap());
    assert!(!b.ack().unwrap());
    b.notify().unwrap();
    b.notify().unwrap();
    // Events coalesce like a pending bit.
    assert!(f.wait(LONG).unwrap());
    assert!(!f.ack().unwrap());
    f.notify().unwrap();
    assert!(b.ack().unwrap());
    // The pollable fd becomes readable on an event.
    f.notify().unwrap();
    let mut fds = [nix::poll::PollFd::new(
        b.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    assert_eq!(nix::poll::poll(&mut fds, 10_000u16).unwrap(), 1);
    assert!(b.ack().unwrap());
}

#[test]
fn a_thousand_event_round_trips_between_threads() {
    let (_d, front, back) = pair();
    let f = front.alloc_unbound(0).unwrap();
    let b = back.bind_interdomain(1, f.port()).unwrap();
    let echo = std::thread::spawn(move || {
        for _ in 0..1000 {
            assert!(b.wait(LONG).unwrap());
            b.notify().unwrap();
        }
    });
    for _ in 0..1000 {
        f.notify().unwrap();
        assert!(f.wait(LONG).unwrap());
    }
    echo.join().unwrap();
}

#[test]
fn ports_bind_once_and_only_for_their_domain() {
    let (d, front, back) = pair();
    let f = front.alloc_unbound(0).unwrap();
    let intruder = SimXen::new(d.path(), 5);
    assert!(matches!(
        intruder.bind_interdomain(1, f.port()),
        Err(EvtchnError::BadPort { domid: 1, .. })
    ));
    assert!(matches!(
        back.bind_interdomain(1, f.port() + 100),
        Err(EvtchnError::BadPort { .. })
    ));
    let _b = back.bind_interdomain(1, f.port()).unwrap();
    assert!(matches!(
        back.bind_interdomain(1, f.port()),
        Err(EvtchnError::BadPort { .. })
    ));
    assert!(matches!(
        back.bind_interdomain(3, 1),
        Err(EvtchnError::Unavailable(_))
    ));
    drop(f);
}

#[test]
fn a_closed_peer_is_reported_not_waited_for() {
    let (_d, front, back) = pair();
    let f = front.alloc_unbound(0).unwrap();
    let b = back.bind_interdomain(1, f.port()).unwrap();
    f.notify().unwrap();
    drop(f);
    // The last event is still delivered, then the death is reported.
    assert!(b.wait(LONG).unwrap());
    assert!(matches!(b.wait(None), Err(EvtchnError::PeerGone)));
    assert!(matches!(b.ack(), Err(EvtchnError::PeerGone)));
    // And the other way round.
    let f = front.alloc_unbound(0).unwrap();
    let b = back.bind_interdomain(1, f.port()).unwrap();
    drop(b);
    assert!(matches!(f.wait(None), Err(EvtchnError::PeerGone)));
    let mut fds = [nix::poll::PollFd::new(
        f.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    assert_eq!(
        nix::poll::poll(&mut fds, 10_000u16).unwrap(),
        1,
        "the pollable fd reports the death"
    );
}

/// The documented behaviour (module docs of `sim`, "Copies and a granter's
/// death"): the event channel and the next map report the death; a copy in
/// between makes no syscall, so it neither hangs nor panics and works on the
/// pages as the granter left them; after the map noticed, copies fail.
#[test]
fn a_granter_that_goes_away_gives_errors() {
    let (_d, front, back) = pair();
    let pages = front.alloc(0, 1, true).unwrap();
    pages.write(0, b"left").unwrap();
    let gref = pages.refs()[0];
    let f = front.alloc_unbound(0).unwrap();
    let ch = back.bind_interdomain(1, f.port()).unwrap();
    let m = back.map(1, &[gref], true).unwrap();
    let mut b = [0u8; 4];
    back.copy_from_guest(1, &[seg(gref, 0, 4)], &mut b).unwrap();
    drop(f);
    drop(front); // the domain's handle is gone: its server stops
    assert!(matches!(ch.wait(LONG), Err(EvtchnError::PeerGone)));
    let (copied, written) = copies_after_death(&back, gref);
    assert_eq!(copied.unwrap(), *b"left");
    written.unwrap();
    let mut seen = [0u8; 4];
    pages.read(0, &mut seen).unwrap();
    assert_eq!(&seen, b"late", "the copy went to the granter's own pages");
    let back2 = back.clone();
    let (mapped, copied_after) = within(move || {
        let mapped = back2.map(1, &[gref], false).map(drop);
        let mut b = [0u8; 4];
        let copied_after = back2.copy_from_guest(1, &[seg(gref, 0, 4)], &mut b);
        (mapped, copied_after)
    });
    assert!(matches!(mapped, Err(GrantError::Unavailable(_))));
    assert!(matches!(copied_after, Err(GrantError::Unavailable(_))));
    // The old mapping stays memory-safe to use and to drop.
    m.write(0, b"safe").unwrap();
    drop(m);
    drop(pages);
}

#[test]
fn a_domain_id_is_served_by_one_owner() {
    let (d, front, _back) = pair();
    front.serve().unwrap();
    let twin = SimXen::new(d.path(), 1);
    assert!(twin.serve().is_err());
    assert!(matches!(
        twin.alloc(0, 1, true),
        Err(GrantError::Unavailable(_))
    ));
}

#[test]
fn allocations_are_bounded() {
    let (_d, front, _back) = pair();
    assert!(matches!(
        front.alloc(0, NR_REFS as usize, true),
        Err(GrantError::Exhausted)
    ));
    assert!(front.alloc(0, 0, true).is_err());
}
