//! URB semantics against a scripted backend: data round trips through the
//! granted pages, local queueing beyond 16, unlink (spec 7.6), bulk splitting,
//! close releasing every grant, and reconnect after the backend went away.

use std::time::Duration;

use pvusb_frontend::{ControllerConfig, PortEvent, Urb, UrbStatus};
use pvusb_protocol::xenstore::frontend_dir;
use pvusb_protocol::{Status, UrbResponse, XenbusState};
use pvusb_testkit::scripted::{Scripted, DEVID, FRONT};
use pvusb_testkit::LIVENESS;
use pvusb_xenstore::Tx;

/// Submits a 64-byte bulk IN on port 1; its completion arrives on the
/// returned channel.
fn bulk_in(
    front: &pvusb_frontend::Frontend,
) -> crossbeam_channel::Receiver<pvusb_frontend::Completion> {
    let (tx, rx) = crossbeam_channel::unbounded();
    front.submit(Urb::bulk_in(1, 3, 1, 64), move |c| tx.send(c).unwrap());
    rx
}

/// The status of the completion `rx` receives next.
fn status_of(rx: &crossbeam_channel::Receiver<pvusb_frontend::Completion>) -> UrbStatus {
    rx.recv_timeout(LIVENESS).unwrap().status
}

#[test]
fn out_and_in_data_travel_through_the_slot_pages() {
    let (_env, front, mut peer) = Scripted::connected();
    let (tx, rx) = crossbeam_channel::unbounded();
    let data: Vec<u8> = (0..65535u32).map(|i| (i % 251) as u8).collect();
    front.submit(Urb::bulk_out(1, 3, 2, data.clone()), {
        let tx = tx.clone();
        move |c| tx.send(c).unwrap()
    });
    let req = peer.requests(1)[0];
    assert_eq!(req.nr_buffer_segs, 16);
    assert_eq!(peer.read_data(&req), data);
    peer.respond(UrbResponse::new(req.id, Status::Ok, 65535));
    assert_eq!(rx.recv_timeout(LIVENESS).unwrap().actual_length, 65535);
    front.submit(Urb::bulk_in(1, 3, 1, 5000), move |c| tx.send(c).unwrap());
    let req = peer.requests(1)[0];
    peer.write_data(&req, &[9; 4500]);
    peer.respond(UrbResponse::new(req.id, Status::Ok, 4500));
    let c = rx.recv_timeout(LIVENESS).unwrap();
    assert_eq!(c.data(), &[9; 4500][..]);
}

#[test]
fn more_than_sixteen_urbs_queue_locally_and_unlink_follows_spec_7_6() {
    let (_env, front, mut peer) = Scripted::connected();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut handles = Vec::new();
    for _ in 0..20 {
        let tx = tx.clone();
        handles.push(front.submit(Urb::bulk_in(1, 3, 1, 64), move |c| tx.send(c).unwrap()));
    }
    let reqs = peer.requests(16);
    assert_eq!(reqs.len(), 16, "never more than 16 on the ring");
    assert_eq!(front.outstanding(), 20);
    // A queued URB completes locally with the requested status.
    assert!(handles[19].unlink(UrbStatus::Cancelled));
    assert_eq!(
        rx.recv_timeout(LIVENESS).unwrap().status,
        UrbStatus::Cancelled
    );
    // An in-flight URB: the unlink request waits for a free id...
    assert!(handles[0].unlink(UrbStatus::Cancelled));
    assert!(rx.try_recv().is_err());
    // ...which the response to request 1 frees; the unlink goes first, before queued submits.
    peer.respond(UrbResponse::new(reqs[1].id, Status::Ok, 0));
    assert_eq!(rx.recv_timeout(LIVENESS).unwrap().status, UrbStatus::Ok);
    let next = peer.requests(1)[0];
    assert!(next.pipe().is_unlink());
    assert_eq!(next.unlink_id(), reqs[0].id);
    // The target completes with the caller's status when ITS response arrives.
    peer.respond(UrbResponse::new(reqs[0].id, Status::IoError, 0));
    assert_eq!(
        rx.recv_timeout(LIVENESS).unwrap().status,
        UrbStatus::Cancelled
    );
    peer.respond(UrbResponse::new(next.id, Status::Ok, 0));
    // Drain the rest: everything completes exactly once.
    let mut seen = 3;
    let mut ids: Vec<u16> = reqs[2..].iter().map(|r| r.id).collect();
    ids.extend(peer.requests(2).iter().map(|r| r.id));
    for id in ids {
        peer.respond(UrbResponse::new(id, Status::Ok, 64));
    }
    // The last queued URB got an id freed by those responses.
    let last = peer.requests(1)[0];
    peer.respond(UrbResponse::new(last.id, Status::Ok, 64));
    while seen < 20 {
        rx.recv_timeout(LIVENESS).unwrap();
        seen += 1;
    }
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    assert_eq!(front.outstanding(), 0);
    let s = front.stats();
    assert_eq!((s.submitted, s.completed), (20, 20));
}

#[test]
fn blocking_timeout_unlinks_and_waits_for_the_response() {
    let (_env, front, mut peer) = Scripted::connected();
    let worker = std::thread::spawn(move || {
        let reqs = peer.requests(2);
        assert!(reqs[1].pipe().is_unlink());
        peer.respond(UrbResponse::new(reqs[0].id, Status::IoError, 0));
        peer.respond(UrbResponse::new(reqs[1].id, Status::Ok, 0));
        peer
    });
    let r = front.interrupt_in(1, 2, 1, 8, 10, Duration::from_millis(50));
    assert!(
        matches!(
            r,
            Err(pvusb_frontend::FrontendError::Transfer(UrbStatus::TimedOut))
        ),
        "{r:?}"
    );
    worker.join().unwrap();
}

#[test]
fn backend_closing_fails_urbs_and_a_new_backend_gets_fresh_rings() {
    let env = Scripted::new();
    let front = env.connect();
    let events = front.subscribe();
    let mut peer = env.backend();
    let old_ref = env.frontend_key("urb-ring-ref");
    let rx = bulk_in(&front);
    peer.requests(1);
    env.set_backend_state(5); // Closing
    assert_eq!(status_of(&rx), UrbStatus::Shutdown);
    drop(peer);
    env.set_backend_state(6); // Closed
    env.set_backend_state(2); // a new backend: InitWait
    front.wait_connected(LIVENESS).unwrap();
    assert_eq!(env.frontend_key("state").as_deref(), Some("4"));
    assert_ne!(env.frontend_key("urb-ring-ref"), old_ref);
    let seen: Vec<PortEvent> = events.try_iter().collect();
    assert!(
        seen.contains(&PortEvent::ControllerDisconnected),
        "{seen:?}"
    );
    let mut peer = env.backend();
    let rx = bulk_in(&front);
    let req = peer.requests(1)[0];
    peer.respond(UrbResponse::new(req.id, Status::Ok, 0));
    assert_eq!(status_of(&rx), UrbStatus::Ok);
}

/// Regression: the worker took the old backend's event channel closing for
/// the death of the backend it served by then, and tore down the new
/// connection the supervisor had just made (its URBs failed with shutdown,
/// its grants were revoked under the new backend). Here the old backend's
/// channel closes while the new handshake runs, cycle after cycle.
#[test]
fn the_old_backends_channel_closing_leaves_the_new_connection_alone() {
    let (env, front, mut peer) = Scripted::connected();
    for cycle in 0..150 {
        env.set_backend_state(5); // Closing
        assert_eq!(status_of(&bulk_in(&front)), UrbStatus::Shutdown);
        // The old backend's channel closes before, during or after the
        // new handshake.
        let mut old = Some(peer);
        for (step, state) in [6, 2].into_iter().enumerate() {
            if cycle % 3 == step {
                old = None;
            }
            env.set_backend_state(state); // Closed, then a new backend's InitWait
        }
        drop(old);
        front.wait_connected(LIVENESS).unwrap();
        peer = env.backend();
        let rx = bulk_in(&front);
        let req = peer.requests(1)[0];
        peer.respond(UrbResponse::new(req.id, Status::Ok, 0));
        assert_eq!(status_of(&rx), UrbStatus::Ok, "cycle {cycle}");
    }
}

/// Regression: a blocking transfer inside a completion callback ran on the
/// worker, the only thread that processes responses, so it could only time
/// out (and stalled every other URB meanwhile). It is refused at once now.
#[test]
fn blocking_transfer_inside_a_callback_is_refused() {
    let env = Scripted::new();
    let front = std::sync::Arc::new(env.connect());
    let mut peer = env.backend();
    let (tx, rx) = crossbeam_channel::unbounded();
    let inner = std::sync::Arc::clone(&front);
    front.submit(Urb::bulk_in(1, 3, 1, 8), move |_| {
        let r = inner.transfer(Urb::bulk_in(1, 3, 1, 8), Duration::from_millis(200));
        tx.send(r).unwrap();
    });
    let req = peer.requests(1)[0];
    peer.respond(UrbResponse::new(req.id, Status::Ok, 0));
    let r = rx.recv_timeout(LIVENESS).unwrap();
    assert!(
        matches!(r, Err(pvusb_frontend::FrontendError::InvalidRequest(_))),
        "{r:?}"
    );
    // The controller still works afterwards.
    assert!(front.is_usable());
}

/// Regression: dropping the last handle inside a completion callback closed
/// the controller on the worker thread, which then tried to join itself
/// (a panic, so the frontend never reached Closed).
#[test]
fn last_handle_dropped_inside_a_callback_still_closes() {
    let env = Scripted::new();
    let front = std::sync::Arc::new(env.connect());
    let mut peer = env.backend();
    let inner = std::sync::Arc::clone(&front);
    front.submit(Urb::bulk_in(1, 3, 1, 8), move |_| drop(inner));
    drop(front);
    let req = peer.requests(1)[0];
    peer.respond(UrbResponse::new(req.id, Status::Ok, 0));
    let mut state = None;
    for _ in 0..1000 {
        state = env.frontend_key("state");
        if state.as_deref() == Some("6") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(state.as_deref(), Some("6"));
}

/// The toolstack removes a detached controller's directories once the
/// backend is Closed; a state change the frontend writes after that must
/// not bring a stray `state` node back (xenstore creates missing parents).
#[test]
fn a_removed_controller_directory_is_not_recreated_by_a_state_change() {
    let env = Scripted::new();
    let front = env.connect();
    let cfg = ControllerConfig::read(env.world.xs(), FRONT, DEVID).unwrap();
    assert!(cfg
        .set_state_if_present(env.world.xs(), XenbusState::Closed)
        .unwrap());
    let fe = frontend_dir(FRONT, DEVID);
    env.world.xs().rm(Tx::NONE, &fe).unwrap();
    assert!(!cfg
        .set_state_if_present(env.world.xs(), XenbusState::Initialising)
        .unwrap());
    assert_eq!(
        env.world.xs().read(Tx::NONE, &fe).unwrap(),
        None,
        "directory back"
    );
    drop(front);
}

/// The engine's report (what `pvusb front serve` logs on SIGUSR1) names
/// each request on the ring, the queue, and the indexes both sides
/// published: enough to tell an unanswered request from an unpublished one.
#[test]
fn the_report_shows_what_is_in_flight_and_the_ring_indexes() {
    use pvusb_frontend::report::InFlightReport;
    let env = Scripted::new();
    let front = env.connect();
    let mut peer = env.backend();
    for _ in 0..18 {
        front.submit(Urb::bulk_in(1, 3, 1, 64), |_| {});
    }
    let reqs = peer.requests(16);
    let report = front.report();
    assert!(report.attached && report.dead.is_none());
    assert_eq!((report.in_flight.total, report.queued), (16, 2));
    let first = report.in_flight.shown.first().expect("an entry");
    let InFlightReport::Submit {
        pipe, unlinking, ..
    } = first
    else {
        panic!("a submit: {first:?}");
    };
    assert_eq!((pipe.port(), pipe.device(), pipe.endpoint()), (1, 3, 1));
    assert!(!unlinking);
    let urb = report.urb_ring.expect("urb ring indexes");
    assert_eq!(urb.req_prod, Some(urb.req_prod_pvt), "all published");
    assert_eq!(urb.rsp_prod, Some(urb.rsp_cons), "nothing answered yet");
    assert_eq!(urb.req_prod_pvt.wrapping_sub(urb.rsp_cons), 16);

    peer.respond(UrbResponse::new(reqs[0].id, Status::Ok, 0));
    wait_until(|| front.report().urb_ring.map(|r| r.rsp_cons) == Some(urb.rsp_cons + 1));
    let text = front.report().to_string();
    assert!(
        text.starts_with("connected; 16 in flight, 1 queued"),
        "{text}"
    );
    assert!(text.contains("Bulk In port 1 dev 3 ep 1"), "{text}");
}

/// The worker defers the publish of URBs its completion callbacks submit
/// until the last callback ran; a URB another thread submits meanwhile (the
/// vhci bridge's reader) is published at once, not held until the worker
/// is scheduled again.
#[test]
fn another_threads_urb_is_published_while_the_worker_runs_callbacks() {
    let (_env, front, mut peer) = Scripted::connected();
    let (in_callback, worker_inside) = crossbeam_channel::bounded(1);
    let (release, released) = crossbeam_channel::bounded::<()>(1);
    front.submit(Urb::bulk_in(1, 3, 1, 64), move |_| {
        in_callback.send(()).unwrap();
        // Longer than `requests` waits: without the publish, it fails first.
        let _ = released.recv_timeout(2 * LIVENESS);
    });
    let first = peer.requests(1)[0];
    peer.respond(UrbResponse::new(first.id, Status::Ok, 64));
    worker_inside.recv_timeout(LIVENESS).unwrap();
    let second = bulk_in(&front);
    let seen = peer.requests(1);
    release.send(()).unwrap();
    assert_eq!(seen.len(), 1);
    peer.respond(UrbResponse::new(seen[0].id, Status::Ok, 64));
    assert_eq!(status_of(&second), UrbStatus::Ok);
}

fn wait_until(mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + LIVENESS;
    while !f() {
        assert!(std::time::Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(5));
    }
}
