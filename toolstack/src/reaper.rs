//! The daemon hook that gives a destroyed guest's devices back to the host.
//!
//! The backend daemon runs [`Toolstack::run_reaper`] in a thread (or calls
//! [`Toolstack::reap_dead_domains`] from its own `@releaseDomain` watch). Reaping
//! is idempotent and crash-only like every other command: a daemon killed midway
//! reaps the rest at its next start (the watch fires once at registration).

use std::time::{Duration, Instant};

use pvusb_support::Chain;

use crate::error::ToolError;
use crate::store::{Store, StoreWatch};
use crate::sysfs::Sysfs;
use crate::Toolstack;

/// The special path xenstored fires when a domain is released.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

impl<S: Store, F: Sysfs> Toolstack<S, F> {
    /// Watch `@releaseDomain` and reap dead domains on every event until
    /// `keep_running` returns false (checked at least every `poll`). Per-domain
    /// failures are logged and retried on the next event; a xenstore failure ends
    /// the loop with its error.
    pub fn run_reaper(
        &self,
        poll: Duration,
        keep_running: impl Fn() -> bool,
    ) -> Result<(), ToolError> {
        let watch = self.store.watch(RELEASE_DOMAIN)?;
        while keep_running() {
            if !watch.wait_until(Instant::now() + poll) {
                continue;
            }
            for (domid, res) in self.reap_dead_domains()? {
                match res {
                    Ok(devices) => tracing::info!(domid, ?devices, "dead domain reaped"),
                    Err(e) => {
                        tracing::warn!(domid, error = %Chain(&e), "reaping a dead domain failed")
                    }
                }
            }
        }
        Ok(())
    }
}
