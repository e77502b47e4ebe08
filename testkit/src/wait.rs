//! Waiting in tests, with one liveness bound.
//!
//! Why one bound: a wait that ends is never a timing assertion, only the
//! way a broken test fails instead of hanging. One generous bound for every
//! wait keeps slow CI from failing tests and keeps the number out of the
//! tests themselves.

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

/// How long any wait may take before the test fails.
pub const LIVENESS: Duration = Duration::from_secs(30);

/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(2);

/// Waits until `f` holds; panics naming `what` after [`LIVENESS`].
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + LIVENESS;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// The next watch event; panics after [`LIVENESS`].
pub fn next_event(rx: &Receiver<String>) -> String {
    rx.recv_timeout(LIVENESS).expect("a watch event")
}

/// Takes watch events until `want`; returns the ones seen before it.
pub fn events_until(rx: &Receiver<String>, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let ev = next_event(rx);
        if ev == want {
            return seen;
        }
        seen.push(ev);
    }
}

/// Runs `f` on a thread of its own and returns its result; panics if `f`
/// panics or has not returned within [`LIVENESS`], so a call that might
/// block forever fails the test instead of hanging it.
pub fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(LIVENESS) {
        Ok(v) => v,
        Err(e) => panic!("the call panicked or hung: {e}"),
    }
}
