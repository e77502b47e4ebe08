//! Injected crash points: the test matrix kills a command at every micro-state.
//!
//! WHY abort and not an error: the point is to leave exactly what a `kill -9` or a
//! power cut would leave — no destructor, no rollback, no "finally" — so recovery is
//! tested against the real thing. Production never sets the variable; reading one
//! environment variable per step costs nothing next to a xenstore round trip.

/// Environment variable naming the step at which the process aborts.
pub const CRASH_ENV: &str = "PVUSB_CRASH_AT";

/// Abort the process if `PVUSB_CRASH_AT` names `step`.
pub fn point(step: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|v| v == step) {
        tracing::warn!(step, "injected crash point reached, aborting");
        std::process::abort();
    }
}
