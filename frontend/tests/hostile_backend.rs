//! A hostile backend (the ring mock over the real granted pages) must never
//! crash or hang the frontend: each misbehaviour yields the documented result.

use pvusb_frontend::{Frontend, PortEvent, Urb, UrbStatus};
use pvusb_protocol::{Speed, UrbResponse};
use pvusb_support::Chain;
use pvusb_testkit::scripted::Scripted;
use pvusb_testkit::LIVENESS;

/// Submits one bulk IN and returns the receiver of its completion.
fn submit(front: &Frontend) -> crossbeam_channel::Receiver<pvusb_frontend::Completion> {
    let (tx, rx) = crossbeam_channel::unbounded();
    front.submit(Urb::bulk_in(1, 1, 1, 100), move |c| tx.send(c).unwrap());
    rx
}

/// The status of the completion `rx` receives next.
fn status_of(rx: &crossbeam_channel::Receiver<pvusb_frontend::Completion>) -> UrbStatus {
    rx.recv_timeout(LIVENESS).unwrap().status
}

fn assert_dead(front: &Frontend, needle: &str) {
    let reason = Chain(&front.dead_reason().expect("the controller is dead")).to_string();
    assert!(
        reason.contains(needle),
        "{reason:?} should mention {needle:?}"
    );
    // Later URBs fail at once with shutdown.
    let rx = submit(front);
    assert_eq!(status_of(&rx), UrbStatus::Shutdown);
}

fn wait_dead(front: &Frontend) {
    for _ in 0..1000 {
        if front.dead_reason().is_some() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the controller never died");
}

#[test]
fn response_with_id_out_of_range_kills_the_controller() {
    let (_env, front, mut peer) = Scripted::connected();
    let rx = submit(&front);
    peer.requests(1);
    peer.respond(UrbResponse::new(16, pvusb_protocol::Status::Ok, 0));
    assert_eq!(status_of(&rx), UrbStatus::Shutdown);
    assert_dead(&front, "not below 16");
}

#[test]
fn response_for_an_idle_id_kills_the_controller() {
    let (_env, front, mut peer) = Scripted::connected();
    let rx = submit(&front);
    let req = peer.requests(1)[0];
    peer.respond(UrbResponse::new(
        req.id.wrapping_add(1) % 16,
        pvusb_protocol::Status::Ok,
        0,
    ));
    assert_eq!(status_of(&rx), UrbStatus::Shutdown);
    assert_dead(&front, "not in flight");
}

#[test]
fn duplicate_response_kills_the_controller_after_one_completion() {
    let (_env, front, mut peer) = Scripted::connected();
    let rx_a = submit(&front);
    let rx_b = submit(&front);
    let reqs = peer.requests(2);
    // Two responses fit the window of two outstanding requests, but both
    // answer the first one.
    peer.respond(UrbResponse::new(reqs[0].id, pvusb_protocol::Status::Ok, 0));
    peer.respond(UrbResponse::new(reqs[0].id, pvusb_protocol::Status::Ok, 0));
    assert_eq!(status_of(&rx_a), UrbStatus::Ok);
    assert_eq!(status_of(&rx_b), UrbStatus::Shutdown);
    wait_dead(&front);
    assert_dead(&front, "not in flight");
    assert!(rx_a.try_recv().is_err(), "completed exactly once");
}

#[test]
fn oversized_and_negative_actual_length_are_clamped() {
    let (_env, front, mut peer) = Scripted::connected();
    let rx = submit(&front);
    let req = peer.requests(1)[0];
    peer.write_data(&req, &[7; 100]);
    peer.respond(UrbResponse {
        actual_length: 1 << 30,
        ..UrbResponse::new(req.id, pvusb_protocol::Status::Ok, 0)
    });
    let c = rx.recv_timeout(LIVENESS).unwrap();
    assert_eq!((c.status, c.actual_length), (UrbStatus::Ok, 100));
    assert_eq!(c.data(), &[7; 100][..]);
    let rx = submit(&front);
    let req = peer.requests(1)[0];
    peer.respond(UrbResponse {
        actual_length: -5,
        ..UrbResponse::new(req.id, pvusb_protocol::Status::Ok, 0)
    });
    assert_eq!(rx.recv_timeout(LIVENESS).unwrap().actual_length, 0);
    assert_eq!(front.dead_reason(), None);
    assert_eq!(front.stats().clamped_lengths, 2);
}

#[test]
fn undefined_status_is_shutdown_but_not_fatal() {
    let (_env, front, mut peer) = Scripted::connected();
    let rx = submit(&front);
    let req = peer.requests(1)[0];
    peer.respond(UrbResponse {
        status: 12345,
        ..UrbResponse::new(req.id, pvusb_protocol::Status::Ok, 0)
    });
    assert_eq!(status_of(&rx), UrbStatus::Shutdown);
    assert_eq!(front.dead_reason(), None);
    assert_eq!(front.stats().bad_statuses, 1);
}

#[test]
fn rsp_prod_far_ahead_is_an_overflow() {
    let (_env, front, mut peer) = Scripted::connected();
    let rx = submit(&front);
    peer.requests(1);
    peer.urb.set_rsp_prod(1000).unwrap();

    pvusb_xen::EventChannel::notify(&peer.evtchn).unwrap();
    assert_eq!(status_of(&rx), UrbStatus::Shutdown);
    assert_dead(&front, "urb ring");
}

#[test]
fn conn_event_for_port_zero_kills_the_controller() {
    let (_env, front, mut peer) = Scripted::connected();
    let events = front.subscribe();
    peer.conn_event(0, 2);
    let ev = events.recv_timeout(LIVENESS).unwrap();
    assert!(
        matches!(ev, PortEvent::ControllerDead { ref reason } if Chain(reason).to_string().contains("port 0")),
        "{ev:?}"
    );
    assert_dead(&front, "conn ring");
}

#[test]
fn conn_event_with_speed_four_kills_the_controller() {
    let (_env, front, mut peer) = Scripted::connected();
    peer.conn_event(1, 4);
    wait_dead(&front);
    assert_dead(&front, "speed 4");
    assert!(front.ports().iter().all(|p| !p.connected()));
}

#[test]
fn valid_conn_events_are_tracked_and_reposted() {
    let (_env, front, mut peer) = Scripted::connected();
    // More events than the ring holds: only works if every slot is re-posted.
    for i in 0..600u32 {
        peer.conn_event(2, if i % 2 == 0 { 3 } else { 0 });
        if i % 100 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Never let the mock run out of posted requests.
        while peer
            .conn
            .req_prod()
            .unwrap()
            .wrapping_sub(peer.conn.req_cons())
            < 8
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    front.wait_for_disconnect(2, LIVENESS).unwrap();
    peer.conn_event(2, 3);
    assert_eq!(front.wait_for_device(2, LIVENESS).unwrap(), Speed::High);
    assert_eq!(front.dead_reason(), None);
}

#[test]
fn event_storm_without_work_is_harmless() {
    let (_env, front, mut peer) = Scripted::connected();
    for _ in 0..10_000 {
        pvusb_xen::EventChannel::notify(&peer.evtchn).unwrap();
    }
    let rx = submit(&front);
    let req = peer.requests(1)[0];
    peer.respond(UrbResponse::new(req.id, pvusb_protocol::Status::Stall, 0));
    assert_eq!(status_of(&rx), UrbStatus::Stall);
    assert_eq!(front.dead_reason(), None);
}

/// A response whose notification was lost (a restarted backend answered
/// while its event channel was bound again) is still taken: the worker
/// looks at the ring at least every second. Before, it slept until the next
/// event, which never came, and the URB never completed (scenario 11's
/// restart under the vhci bridge).
#[test]
fn a_response_without_a_notification_still_completes() {
    let (_env, front, mut peer) = Scripted::connected();
    let rx = submit(&front);
    let req = peer.requests(1)[0];
    // Long enough that the worker's short polling after the submit is over.
    std::thread::sleep(std::time::Duration::from_millis(200));
    peer.respond_silently(UrbResponse::new(req.id, pvusb_protocol::Status::Ok, 0));
    let c = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the answer is taken without an event");
    assert_eq!(c.status, UrbStatus::Ok);
}
