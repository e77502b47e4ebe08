//! Load generators on the frontend library: keep N URBs in flight for a while,
//! or time single round trips.
//!
//! Why resubmit from the completion callback: the callback runs on the
//! frontend's worker thread, so a completed URB's slot is refilled without a
//! hop to another thread, and its buffer is reused (no allocation per URB in
//! the harness itself).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pvusb_frontend::{Completion, Frontend, Urb};
use pvusb_support::lock_unpoisoned;

/// Builds the next URB of a stream, reusing the previous URB's buffer.
pub type MakeUrb = Arc<dyn Fn(Vec<u8>) -> Urb + Send + Sync>;

/// What a run achieved.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// URBs completed successfully.
    pub urbs: u64,
    /// Bytes moved (actual lengths).
    pub bytes: u64,
    /// Wall time from the first submit until the last completion.
    pub elapsed: Duration,
}

struct Pump {
    front: Arc<Frontend>,
    make: MakeUrb,
    stop: AtomicBool,
    urbs: AtomicU64,
    bytes: AtomicU64,
    failure: Mutex<Option<String>>,
    in_flight: Mutex<usize>,
    drained: Condvar,
}

fn submit(pump: &Arc<Pump>, urb: Urb) {
    let p = Arc::clone(pump);
    pump.front.submit(urb, move |c| completed(&p, c));
}

fn completed(pump: &Arc<Pump>, c: Completion) {
    if c.status.is_ok() {
        pump.urbs.fetch_add(1, Ordering::Relaxed);
        pump.bytes
            .fetch_add(c.actual_length as u64, Ordering::Relaxed);
    } else {
        let mut f = lock_unpoisoned(&pump.failure);
        f.get_or_insert_with(|| format!("a URB failed with {}", c.status));
        pump.stop.store(true, Ordering::Relaxed);
    }
    if pump.stop.load(Ordering::Relaxed) {
        let mut n = lock_unpoisoned(&pump.in_flight);
        *n = n.saturating_sub(1);
        if *n == 0 {
            pump.drained.notify_all();
        }
        return;
    }
    let next = (pump.make)(c.buffer);
    submit(pump, next);
}

/// Keep `in_flight` URBs made by `make` outstanding for `budget`, then let
/// them drain.
pub fn stream(
    front: &Arc<Frontend>,
    make: &MakeUrb,
    in_flight: usize,
    budget: Duration,
) -> Result<Outcome, String> {
    let pump = Arc::new(Pump {
        front: Arc::clone(front),
        make: Arc::clone(make),
        stop: AtomicBool::new(false),
        urbs: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        failure: Mutex::new(None),
        in_flight: Mutex::new(in_flight),
        drained: Condvar::new(),
    });
    let start = Instant::now();
    for _ in 0..in_flight {
        submit(&pump, make(Vec::new()));
    }
    std::thread::sleep(budget);
    pump.stop.store(true, Ordering::Relaxed);
    let deadline = Duration::from_secs(10);
    let n = lock_unpoisoned(&pump.in_flight);
    let (n, timeout) = pump
        .drained
        .wait_timeout_while(n, deadline, |n| *n > 0)
        .unwrap_or_else(|e| e.into_inner());
    let elapsed = start.elapsed();
    if timeout.timed_out() {
        return Err(format!("{} URBs did not complete within {deadline:?}", *n));
    }
    drop(n);
    if let Some(f) = lock_unpoisoned(&pump.failure).take() {
        return Err(f);
    }
    Ok(Outcome {
        urbs: pump.urbs.load(Ordering::Relaxed),
        bytes: pump.bytes.load(Ordering::Relaxed),
        elapsed,
    })
}

/// Round-trip times in microseconds of single URBs (one in flight) for `budget`.
pub fn latencies(front: &Frontend, make: &MakeUrb, budget: Duration) -> Result<Vec<f64>, String> {
    let mut out = Vec::new();
    let (tx, rx) = crossbeam_channel::bounded::<Completion>(1);
    let mut buffer = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || out.len() < 10 {
        let t = Instant::now();
        let tx = tx.clone();
        front.submit(make(std::mem::take(&mut buffer)), move |c| {
            let _ = tx.send(c);
        });
        let c = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "a URB did not complete within 10 s".to_string())?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
        if !c.status.is_ok() {
            return Err(format!("a URB failed with {}", c.status));
        }
        buffer = c.buffer;
    }
    Ok(out)
}
