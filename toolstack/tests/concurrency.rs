//! Commands run at once: two toolstacks (own xenstore connections, as two
//! `pvusb` processes would have) race on the same guest, controller, port or
//! device, many rounds each. Whatever the interleaving, each command either
//! succeeds or fails with its one-line error, and the end state passes the
//! same consistency check as the crash matrix.

use std::sync::Barrier;

use pvusb_testkit::host::{self, GUEST, OTHER};
use pvusb_testkit::peer::Peer;
use pvusb_testkit::{Ts, World};
use pvusb_toolstack::{DeviceSpec, ToolError};

const ROUNDS: usize = 30;

fn dev(b: &str) -> DeviceSpec {
    DeviceSpec::BusId(b.to_owned())
}

/// Runs `a` and `b` on two toolstacks, released together.
fn race<A, B, RA, RB>(h: &World, a: A, b: B) -> (RA, RB)
where
    A: FnOnce(&Ts) -> RA + Send,
    B: FnOnce(&Ts) -> RB + Send,
    RA: Send,
    RB: Send,
{
    let (ta, tb) = (h.toolstack(), h.toolstack());
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let ja = s.spawn(|| {
            barrier.wait();
            a(&ta)
        });
        let jb = s.spawn(|| {
            barrier.wait();
            b(&tb)
        });
        (ja.join().unwrap(), jb.join().unwrap())
    })
}

/// Runs `round` ROUNDS times, each on a fresh harness with a peer playing
/// the daemon and guests, after `prepare`; then checks the crash matrix's
/// invariant.
fn each_round(prepare: impl Fn(&World), round: impl Fn(usize, &World)) {
    for n in 0..ROUNDS {
        let h = host::new();
        let _peer = Peer::start(&h);
        prepare(&h);
        round(n, &h);
        host::assert_consistent(&h);
    }
}

fn with_controller(h: &World) {
    h.toolstack().ctrl_attach(GUEST, 2, 8).unwrap();
}

fn with_1_2_attached(h: &World) {
    h.toolstack()
        .dev_attach(GUEST, &dev("1-2"), None, None)
        .unwrap();
}

#[test]
fn attach_attach_different_devices_take_different_ports() {
    each_round(with_controller, |round, h| {
        let (a, b) = race(
            h,
            |t| t.dev_attach(GUEST, &dev("1-2"), None, None),
            |t| t.dev_attach(GUEST, &dev("1-3"), None, None),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(
            (a.ctrl, a.port),
            (b.ctrl, b.port),
            "round {round}: both got the same port"
        );
        assert_eq!(
            h.toolstack().assignments().unwrap().len(),
            2,
            "round {round}"
        );
    });
}

#[test]
fn attach_attach_same_port_exactly_one_wins() {
    each_round(with_controller, |round, h| {
        let (a, b) = race(
            h,
            |t| t.dev_attach(GUEST, &dev("1-2"), Some(0), Some(1)),
            |t| t.dev_attach(GUEST, &dev("1-3"), Some(0), Some(1)),
        );
        let wins = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {a:?} / {b:?}");
        for e in [&a, &b].into_iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(e, ToolError::PortBusy { .. } | ToolError::Concurrent { .. }),
                "round {round}: {e}"
            );
        }
    });
}

#[test]
fn attach_attach_same_device_to_two_guests_one_wins() {
    let two_controllers = |h: &World| {
        with_controller(h);
        h.toolstack().ctrl_attach(OTHER, 2, 8).unwrap();
    };
    each_round(two_controllers, |round, h| {
        let (a, b) = race(
            h,
            |t| t.dev_attach(GUEST, &dev("1-2"), None, None),
            |t| t.dev_attach(OTHER, &dev("1-2"), None, None),
        );
        let wins = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {a:?} / {b:?}");
        assert_eq!(
            h.toolstack().assignments().unwrap().len(),
            1,
            "round {round}"
        );
    });
}

#[test]
fn attach_during_detach() {
    each_round(with_1_2_attached, |round, h| {
        let (a, b) = race(
            h,
            |t| t.dev_detach(GUEST, 0, 1),
            |t| t.dev_attach(GUEST, &dev("1-3"), None, None),
        );
        a.unwrap();
        b.unwrap();
        let held = h.toolstack().assignments().unwrap();
        assert_eq!(held.len(), 1, "round {round}: {held:?}");
        assert_eq!(held[0].0, "1-3", "round {round}");
    });
}

#[test]
fn detach_detach_one_gives_back() {
    each_round(with_1_2_attached, |round, h| {
        let (a, b) = race(
            h,
            |t| t.dev_detach(GUEST, 0, 1),
            |t| t.dev_detach(GUEST, 0, 1),
        );
        assert!(a.is_ok() || b.is_ok(), "round {round}: {a:?} / {b:?}");
        for e in [&a, &b].into_iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(e, ToolError::PortEmpty { .. }),
                "round {round}: {e}"
            );
        }
        assert!(
            h.toolstack().assignments().unwrap().is_empty(),
            "round {round}"
        );
    });
}

#[test]
fn ctrl_detach_during_dev_attach() {
    each_round(with_controller, |round, h| {
        let (a, b) = race(
            h,
            |t| t.ctrl_detach(GUEST, 0, false),
            |t| t.dev_attach(GUEST, &dev("1-2"), None, None),
        );
        a.unwrap();
        // The attach either ran first (and the controller's removal gave the
        // device back) or after it (and made a controller of its own).
        if let Err(e) = &b {
            panic!("round {round}: attach failed: {e}");
        }
    });
}

#[test]
fn recover_during_attach() {
    each_round(with_controller, |round, h| {
        let (a, b) = race(
            h,
            |t| t.dev_attach(GUEST, &dev("1-2"), None, None),
            |t| {
                for _ in 0..5 {
                    for (busid, r) in t.recover_all()? {
                        r.map_err(|e| ToolError::InvalidArgument(format!("{busid}: {e}")))?;
                    }
                }
                Ok::<_, ToolError>(())
            },
        );
        b.unwrap();
        // A recover that catches the attach half-way rolls it back; the
        // attach then fails (naming the concurrent command) or, when it ran
        // first, the device stays assigned.
        match &a {
            Ok(r) => assert_eq!((r.ctrl, r.port), (0, 1), "round {round}"),
            Err(e) => assert!(
                matches!(e, ToolError::Concurrent { .. } | ToolError::Pending { .. }),
                "round {round}: {e}"
            ),
        }
    });
}
