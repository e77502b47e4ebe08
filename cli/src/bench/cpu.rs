//! CPU time of a process (getrusage RUSAGE_SELF: every thread of it).

use nix::sys::resource::{getrusage, UsageWho};

/// User plus system CPU seconds this process has used so far.
pub fn self_seconds() -> f64 {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            secs(u.user_time()) + secs(u.system_time())
        }
        Err(_) => f64::NAN,
    }
}
