//! The release handshake: `dev-detach` waits for the backend daemon to close
//! the device (it removes the `opened` mark it keeps in the device's record)
//! before it empties the port and gives the device back to the host drivers.

use std::time::{Duration, Instant};

use pvusb_testkit::host::{self, GUEST};
use pvusb_testkit::peer::Peer;
use pvusb_testkit::World;
use pvusb_toolstack::record::OPENED;
use pvusb_toolstack::{DeviceSpec, Release};
use pvusb_xenstore::Tx;

const MARK: &str = "/pvusb/usbback/1-2/opened";

fn attached() -> (World, Peer) {
    let h = host::new();
    let ts = h.toolstack();
    let peer = Peer::start(&h);
    ts.dev_attach(GUEST, &DeviceSpec::BusId("1-2".into()), None, None)
        .unwrap();
    assert!(MARK.ends_with(OPENED));
    (h, peer)
}

fn mark(h: &World, pid: u32) {
    h.xs().write(Tx::NONE, MARK, &pid.to_string()).unwrap();
}

#[test]
fn detach_waits_for_the_daemon_to_close_the_device() {
    let (h, _peer) = attached();
    let ts = h.toolstack();
    mark(&h, std::process::id());
    let port = "/local/domain/0/backend/vusb/3/0/port/1";
    let released = std::thread::scope(|s| {
        let detach = s.spawn(|| ts.dev_detach(GUEST, 0, 1));
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
    host::assert_consistent(&h);
}

#[test]
fn no_daemon_holding_it_means_no_wait() {
    let (h, _peer) = attached();
    let d = h.toolstack().dev_detach(GUEST, 0, 1).unwrap();
    assert_eq!(d.release, Some(Release::NotOpen));
    host::assert_consistent(&h);
}

#[test]
fn a_dead_daemon_is_not_waited_for() {
    let (h, _peer) = attached();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    mark(&h, pid);
    let ts = h.toolstack();
    let started = Instant::now();
    let d = ts.dev_detach(GUEST, 0, 1).unwrap();
    assert_eq!(d.release, Some(Release::DaemonGone(pid)));
    assert!(
        started.elapsed() < ts.timeout,
        "did not wait for the timeout"
    );
    assert!(d
        .release
        .unwrap()
        .warning("1-2")
        .unwrap()
        .contains("not running"));
    host::assert_consistent(&h);
}

#[test]
fn a_daemon_that_never_acknowledges_is_waited_for_a_bounded_time() {
    let (h, _peer) = attached();
    let mut ts = h.toolstack();
    ts.timeout = Duration::from_millis(300);
    mark(&h, std::process::id());
    let d = ts.dev_detach(GUEST, 0, 1).unwrap();
    assert_eq!(d.release, Some(Release::TimedOut));
    host::assert_consistent(&h);
}
