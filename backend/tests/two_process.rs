//! The backend daemon and the test driver in two processes over the
//! simulated transport: the test re-executes its own binary with
//! `PVUSB_TEST_ROLE=backend` for the daemon side.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvusb_protocol::xenstore::backend_dir;
use pvusb_testkit::bot::{read10, write10};
use pvusb_testkit::rng::Rng;
use pvusb_testkit::{wait_for, Controller, Driver, World, LIVENESS};

const ROLE: &str = "PVUSB_TEST_ROLE";
const DIR: &str = "PVUSB_TEST_DIR";
const STOP_KEY: &str = "/test/stop-backend";
const READY_KEY: &str = "/test/backend-ready";

/// The child: a daemon with an emulated 8 MiB disk, until the parent writes
/// the stop key. Not a test of its own (ignored unless re-executed).
#[test]
#[ignore = "child process of two_processes_over_the_sim"]
fn backend_child() {
    if std::env::var(ROLE).as_deref() != Ok("backend") {
        return;
    }
    let dir = std::path::PathBuf::from(std::env::var(DIR).expect("dir"));
    let w = World::attach(&dir);
    let busid = w.plug_disk(16384);
    let d = w.daemon();
    w.write(READY_KEY, &busid.to_string());
    let end = Instant::now() + Duration::from_secs(120);
    while w.read(STOP_KEY).is_none() {
        assert!(Instant::now() < end, "parent never asked to stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    d.shutdown();
}

#[test]
fn two_processes_over_the_sim() {
    let w = World::new();
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "backend_child", "--ignored", "--nocapture"])
        .env(ROLE, "backend")
        .env(DIR, w.dir())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the backend process");
    let mut busid = None;
    wait_for("the backend process", || {
        busid = w.read(READY_KEY);
        busid.is_some()
    });
    w.controller(&Controller::new(50, 0, 2, 2));
    w.set_port(50, 0, 2, busid.as_deref().expect("busid"));
    let mut drv = Driver::connect(&w, 50, 0);
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (2, 3));
    drv.enumerate(2, 9);
    // 4 MiB written and read back through BOT across the process boundary.
    let chunk = 64 * 1024;
    let mut rng = Rng(7);
    let mut data = vec![0u8; 4 << 20];
    rng.fill(&mut data);
    let mut tag = 1;
    for (i, c) in data.chunks(chunk).enumerate() {
        tag += 1;
        write10(&mut drv, 9, 2, tag, (i * 128) as u32, c, &[]);
    }
    for (i, c) in data.chunks(chunk).enumerate() {
        tag += 1;
        let got = read10(&mut drv, 9, 2, tag, (i * 128) as u32, chunk, &[]);
        assert!(got == c, "chunk {i} differs");
    }
    // Host hot-unplug seen across processes: the toolstack empties the port.
    w.set_port(50, 0, 2, "");
    let ev = drv.conn_event();
    assert_eq!((ev.portnum, ev.speed), (2, 0));
    w.write(STOP_KEY, "1");
    let end = Instant::now() + LIVENESS;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "backend process failed: {status}");
            break;
        }
        assert!(Instant::now() < end, "backend process did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        w.read(&format!("{}/state", backend_dir(0, 50, 0)))
            .as_deref(),
        Some("4"),
        "state kept for a restart"
    );
}
