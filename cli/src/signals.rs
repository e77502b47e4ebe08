//! SIGTERM and SIGINT for the foreground daemons (`pvusb backend`,
//! `pvusb xenstored`), collected synchronously with `sigwait`.
//!
//! Why blocking instead of a handler: blocked before any thread starts, the
//! signals stay pending in every thread the daemon spawns and only the one
//! thread that waits for them receives them. That needs no signal handler, so
//! no unsafe code and no async-signal-safety rules.

use nix::sys::signal::{SigSet, Signal};
use pvusb_support::Chain;

/// SIGTERM and SIGINT, blocked in the calling thread (and in every thread it
/// starts afterwards) until [`StopSignals::wait`] collects one.
pub struct StopSignals(SigSet);

impl StopSignals {
    /// Blocks SIGTERM and SIGINT in the calling thread. Call it before starting
    /// any thread, so that every thread inherits the mask.
    pub fn block() -> Result<Self, String> {
        Self::block_with(&[])
    }

    /// Like [`StopSignals::block`], and collects `extra` signals too (which
    /// [`StopSignals::wait`] returns like the stop signals; the caller decides
    /// what they mean).
    pub fn block_with(extra: &[Signal]) -> Result<Self, String> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        for &s in extra {
            set.add(s);
        }
        set.thread_block()
            .map_err(|e| format!("cannot block SIGTERM/SIGINT: {e}", e = Chain(&e)))?;
        Ok(Self(set))
    }

    /// Waits until one of the blocked signals arrives and says which.
    pub fn wait(&self) -> Result<Signal, String> {
        self.0
            .wait()
            .map_err(|e| format!("waiting for SIGTERM/SIGINT failed: {e}", e = Chain(&e)))
    }
}
