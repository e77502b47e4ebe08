//! The machine's own limits, measured in the same run: memcpy bandwidth, the
//! hand-off of buffers between two CPUs, and the synchronous event round trip
//! between the two processes.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvusb_support::{lock_unpoisoned, Chain};
use pvusb_xen::sim::SimEventChannel;
use pvusb_xen::{EventChannel, EvtchnError};

use super::stats::for_duration;

/// Single-thread memcpy bandwidth for buffers of `len` bytes, in MB/s (10^6).
pub fn memcpy_mb_s(len: usize, budget: Duration) -> f64 {
    let src: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let mut dst = vec![0u8; len];
    let Ok((n, elapsed)) = for_duration::<()>(budget, || {
        black_box(&mut dst).copy_from_slice(black_box(&src));
        Ok(())
    }) else {
        return 0.0;
    };
    (n as f64 * len as f64) / elapsed.as_secs_f64() / 1e6
}

/// Buffers in the hand-off ring: as many as URBs in flight.
const HANDOFF_SLOTS: u64 = 16;

/// MB/s of `len`-byte buffers handed from one thread to another through a
/// ring of [`HANDOFF_SLOTS`]: the producer writes each buffer whole (a device
/// filling it), the consumer copies it out (the user reading it), each
/// spinning on the other's counter — no rings, events or grants.
///
/// WHY: a bulk IN URB's bytes are written on the backend's CPU and read on
/// the frontend's. With the two sides on different CPUs, the cache lines move
/// between cores, and that costs far more than a hot single-thread memcpy;
/// this is the ceiling of any two-process design that writes the data once
/// and reads it once, so the bench reports against it too.
pub fn handoff_mb_s(len: usize, budget: Duration) -> f64 {
    let slots: Arc<Vec<Mutex<Vec<u8>>>> = Arc::new(
        (0..HANDOFF_SLOTS)
            .map(|_| Mutex::new(vec![0u8; len]))
            .collect(),
    );
    let produced = Arc::new(AtomicU64::new(0));
    let consumed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (slots, produced, consumed, stop) = (
            Arc::clone(&slots),
            Arc::clone(&produced),
            Arc::clone(&consumed),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            let src: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if i - consumed.load(Ordering::Acquire) >= HANDOFF_SLOTS {
                    std::hint::spin_loop();
                    continue;
                }
                if let Some(slot) = slots.get((i % HANDOFF_SLOTS) as usize) {
                    lock_unpoisoned(slot).copy_from_slice(&src);
                }
                i += 1;
                produced.store(i, Ordering::Release);
            }
        })
    };
    let mut dst = vec![0u8; len];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..HANDOFF_SLOTS {
            while produced.load(Ordering::Acquire) <= n {
                std::hint::spin_loop();
            }
            if let Some(slot) = slots.get((n % HANDOFF_SLOTS) as usize) {
                black_box(&mut dst).copy_from_slice(&lock_unpoisoned(slot));
            }
            n += 1;
            consumed.store(n, Ordering::Release);
        }
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    (n as f64 * len as f64) / elapsed.as_secs_f64() / 1e6
}

/// Synchronous round trips per second over `ch`, whose other end (in the
/// backend process) answers every event with one event.
pub fn evtchn_round_trips(ch: &SimEventChannel, budget: Duration) -> Result<f64, String> {
    let (n, elapsed) = for_duration(budget, || {
        ch.notify().map_err(|e| Chain(&e).to_string())?;
        match ch.wait(Some(Duration::from_secs(5))) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the backend process did not echo an event within 5 s".to_string()),
            Err(EvtchnError::PeerGone) => Err("the backend process died".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })?;
    Ok(n as f64 / elapsed.as_secs_f64())
}
