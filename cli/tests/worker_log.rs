//! A worker's log lines reach the daemon's log through the monitor
//! (`pvusb_backend::isolation::log_relay`). Its own test binary: it installs
//! the process's log subscriber before the test kit does.

use std::path::Path;
use std::sync::Arc;

use pvusb_backend::isolation::Fault;
use pvusb_testkit::machine::{self, DOM};
use pvusb_testkit::wait_for;

/// The daemon's log, captured: every test of this binary logs into it.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log")).into_owned()
    }
}

/// What a worker logs reaches the daemon's log through the monitor, with
/// the controller and the worker's pid attached by the monitor.
#[test]
fn a_workers_log_lines_are_relayed_by_the_monitor() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the first subscriber of this test binary");
    let m = machine::new();
    let d = machine::process_daemon(&m, Path::new(env!("CARGO_BIN_EXE_pvusb")));
    let ts = m.toolstack();
    let (_, front) = m.ctrl_attach(&ts, DOM);
    let mut pid = 0;
    wait_for("a worker process", || {
        pid = d.worker_pid(DOM, 0).unwrap_or(0);
        pid != 0
    });
    assert!(d.inject_fault(DOM, 0, Fault::Abort));
    wait_for("the fault's log line", || {
        log.text().lines().any(|l| {
            l.contains("pvusb_worker")
                && l.contains("committing a fault")
                && l.contains(&format!("pid={pid}"))
                && l.contains(&format!("vusb {DOM}/0"))
        })
    });
    drop(front);
    d.shutdown();
}
