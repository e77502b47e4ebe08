//! The machine's own limits, measured in the same run: memcpy bandwidth and the
//! synchronous event round trip between the two processes.

use std::hint::black_box;
use std::time::Duration;

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

/// Synchronous round trips per second over `ch`, whose other end (in the
/// backend process) answers every event with one event.
pub fn evtchn_round_trips(ch: &SimEventChannel, budget: Duration) -> Result<f64, String> {
    let (n, elapsed) = for_duration(budget, || {
        ch.notify().map_err(|e| e.to_string())?;
        match ch.wait(Some(Duration::from_secs(5))) {
            Ok(true) => Ok(()),
            Ok(false) => Err("the backend process did not echo an event within 5 s".to_string()),
            Err(EvtchnError::PeerGone) => Err("the backend process died".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })?;
    Ok(n as f64 / elapsed.as_secs_f64())
}
