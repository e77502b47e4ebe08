//! Synchronous event round trips between two threads: the floor under any
//! one-URB-in-flight exchange, and the reference the batching target is set
//! against.
//!
//! Two flavours: raw eventfds (the kernel primitive) and the simulated event
//! channel of `pvusb-xen` (eventfd plus its epoll/poll wrapper), which is what
//! frontend and backend actually pay per event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};
use pvusb_xen::sim::{SimEventChannel, SimXen};
use pvusb_xen::{EventChannel, EventChannels, EvtchnError};

/// The value that tells the raw echo thread to stop (a ping is always 1, and
/// pings strictly alternate with pongs, so counters never add up to this).
const STOP: u64 = 1 << 40;

/// Raw eventfd ping-pong: this thread writes `ping`, the echo thread reads it and
/// writes `pong`.
#[derive(Debug)]
pub struct EventfdPingPong {
    ping: Arc<EventFd>,
    pong: Arc<EventFd>,
    echo: Option<JoinHandle<()>>,
}

impl EventfdPingPong {
    /// Start the echo thread.
    pub fn start() -> nix::Result<Self> {
        let ping = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
        let pong = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?);
        let (rx, tx) = (Arc::clone(&ping), Arc::clone(&pong));
        let echo = std::thread::spawn(move || loop {
            match rx.read() {
                Ok(v) if v >= STOP => break,
                Ok(_) => {
                    if tx.write(1).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        });
        Ok(Self {
            ping,
            pong,
            echo: Some(echo),
        })
    }

    /// One round trip.
    pub fn round_trip(&self) -> nix::Result<()> {
        self.ping.write(1)?;
        self.pong.read()?;
        Ok(())
    }
}

impl Drop for EventfdPingPong {
    fn drop(&mut self) {
        let _ = self.ping.write(STOP);
        if let Some(h) = self.echo.take() {
            let _ = h.join();
        }
    }
}

/// Ping-pong over a simulated interdomain event channel (two domains of one
/// simulation, one per thread).
#[derive(Debug)]
pub struct EvtchnPingPong {
    front: SimEventChannel,
    stop: Arc<AtomicBool>,
    echo: Option<JoinHandle<()>>,
    // Last: the rendezvous socket lives in it.
    _dir: tempfile::TempDir,
}

impl EvtchnPingPong {
    /// Allocate a port as domain 1, bind it as domain 0 in the echo thread.
    pub fn start() -> Result<Self, EvtchnError> {
        let dir = pvusb_testkit::dir::create("pvusb-bench")
            .map_err(|e| EvtchnError::Unavailable(format!("cannot create a directory: {e}")))?;
        let front_xen = SimXen::new(dir.path(), 1);
        let front = front_xen.alloc_unbound(0)?;
        let back = SimXen::new(dir.path(), 0).bind_interdomain(1, front.port())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_echo = Arc::clone(&stop);
        let echo = std::thread::spawn(move || {
            // Keep the allocating domain's server alive as long as the echo runs.
            let _front_xen = front_xen;
            while !stop_echo.load(Ordering::Relaxed) {
                match back.wait(Some(Duration::from_millis(50))) {
                    Ok(true) => {
                        if back.notify().is_err() {
                            break;
                        }
                    }
                    Ok(false) => {}
                    Err(_) => break,
                }
            }
        });
        Ok(Self {
            front,
            stop,
            echo: Some(echo),
            _dir: dir,
        })
    }

    /// One round trip.
    pub fn round_trip(&self) -> Result<(), EvtchnError> {
        self.front.notify()?;
        if self.front.wait(Some(Duration::from_secs(10)))? {
            Ok(())
        } else {
            Err(EvtchnError::Unavailable(
                "the echo thread did not answer".into(),
            ))
        }
    }
}

impl Drop for EvtchnPingPong {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.echo.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_eventfd_round_trips_complete() {
        let p = EventfdPingPong::start().unwrap();
        for _ in 0..100 {
            p.round_trip().unwrap();
        }
    }

    #[test]
    fn event_channel_round_trips_complete() {
        let p = EvtchnPingPong::start().unwrap();
        for _ in 0..100 {
            p.round_trip().unwrap();
        }
    }
}
