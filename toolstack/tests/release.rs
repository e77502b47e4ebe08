//! The release handshake: `dev-detach` waits for the backend daemon to close
//! the device (it removes the `opened` mark it keeps in the device's record)
//! before it empties the port and gives the device back to the host drivers.

mod common;

use std::time::{Duration, Instant};

use common::{Harness, GUEST};
use pvusb_toolstack::record::OPENED;
use pvusb_toolstack::{DeviceSpec, Release};
use pvusb_xenstore::Tx;

const MARK: &str = "/pvusb/usbback/1-2/opened";

fn attached() -> (Harness, common::Peer) {
    let h = Harness::new();
    let peer = h.peer();
    h.ts.dev_attach(GUEST, &DeviceSpec::BusId("1-2".into()), None, None)
        .unwrap();
    assert!(MARK.ends_with(OPENED));
    (h, peer)
}

fn mark(h: &Harness, pid: u32) {
    h.ts.store.write(Tx::NONE, MARK, &pid.to_string()).unwrap();
}

#[test]
fn detach_waits_for_the_daemon_to_close_the_device() {
    let (h, _peer) = attached();
    mark(&h, std::process::id());
    let port = "/local/domain/0/backend/vusb/3/0/port/1";
    let released = std::thread::scope(|s| {
        let detach = s.spawn(|| h.ts.dev_detach(GUEST, 0, 1));
        std::thread::sleep(Duration::from_millis(300));
        // Still the backend's: in its port, no host driver.
        assert_eq!(h.read(port).as_deref(), Some("1-2"));
        assert_eq!(h.drivers("1-2"), vec![None, None]);
        assert_eq!(
            h.read("/pvusb/usbback/1-2/state").as_deref(),
            Some("detach-releasing")
        );
        // The daemon closes the device and acknowledges.
        h.client().rm(Tx::NONE, MARK).unwrap();
        detach.join().unwrap().unwrap()
    });
    assert_eq!(released.release, Some(Release::Confirmed));
    assert_eq!(h.read(port).as_deref(), Some(""));
    h.assert_consistent();
}

#[test]
fn no_daemon_holding_it_means_no_wait() {
    let (h, _peer) = attached();
    let d = h.ts.dev_detach(GUEST, 0, 1).unwrap();
    assert_eq!(d.release, Some(Release::NotOpen));
    h.assert_consistent();
}

#[test]
fn a_dead_daemon_is_not_waited_for() {
    let (h, _peer) = attached();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    mark(&h, pid);
    let started = Instant::now();
    let d = h.ts.dev_detach(GUEST, 0, 1).unwrap();
    assert_eq!(d.release, Some(Release::DaemonGone(pid)));
    assert!(
        started.elapsed() < h.ts.timeout,
        "did not wait for the timeout"
    );
    assert!(d
        .release
        .unwrap()
        .warning("1-2")
        .unwrap()
        .contains("not running"));
    h.assert_consistent();
}

#[test]
fn a_daemon_that_never_acknowledges_is_waited_for_a_bounded_time() {
    let (mut h, _peer) = attached();
    h.ts.timeout = Duration::from_millis(300);
    mark(&h, std::process::id());
    let d = h.ts.dev_detach(GUEST, 0, 1).unwrap();
    assert_eq!(d.release, Some(Release::TimedOut));
    h.assert_consistent();
}
