//! CPU time and context switches of a process: this one (getrusage
//! RUSAGE_SELF: every thread of it), or another (`/proc/PID/stat` and each
//! thread's `/proc/PID/task/TID/status`).
//!
//! WHY context switches next to CPU: they tell a side that does more work
//! per URB from one that sleeps and wakes more often per URB (smaller
//! batches), which is what changes when many controllers share few CPUs.

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

/// What a process used so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// User plus system CPU seconds.
    pub seconds: f64,
    /// Voluntary and involuntary context switches of all its threads.
    pub switches: u64,
}

impl std::ops::Sub for Usage {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            seconds: self.seconds - earlier.seconds,
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

/// Context switches of every thread of this process so far.
pub fn self_switches() -> u64 {
    getrusage(UsageWho::RUSAGE_SELF).map_or(0, |u| {
        u64::try_from(u.voluntary_context_switches()).unwrap_or(0)
            + u64::try_from(u.involuntary_context_switches()).unwrap_or(0)
    })
}

/// Context switches of every thread of process `pid` so far (0 for a
/// process or thread that is gone).
pub fn process_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.ends_with(char::is_numeric) && l.contains("ctxt_switches:"))
                .filter_map(|l| l.rsplit_once(char::is_whitespace)?.1.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// User plus system CPU seconds of process `pid` so far (`/proc/PID/stat`
/// fields 14 and 15, in clock ticks).
pub fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)?;
    Some((utime + stime) as f64 / ticks as f64)
}

/// Asks the bench's backend process for its CPU seconds and context
/// switches so far (its `cpu` command: the daemon and its worker
/// processes).
pub fn ask_backend(
    input: &mut impl std::io::Write,
    output: &mut impl std::io::BufRead,
) -> Result<Usage, String> {
    let chain = |e: std::io::Error| pvusb_support::Chain(&e).to_string();
    writeln!(input, "cpu")
        .and_then(|()| input.flush())
        .map_err(chain)?;
    let mut line = String::new();
    output.read_line(&mut line).map_err(chain)?;
    line.trim()
        .strip_prefix("cpu ")
        .and_then(|v| v.split_once(' '))
        .and_then(|(seconds, switches)| {
            Some(Usage {
                seconds: seconds.parse().ok()?,
                switches: switches.parse().ok()?,
            })
        })
        .ok_or_else(|| format!("the backend process answered {line:?} to a CPU query"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backends_answer_carries_seconds_and_switches() {
        let mut sent = Vec::new();
        let usage = ask_backend(&mut sent, &mut "cpu 1.5 42\n".as_bytes()).unwrap();
        assert_eq!(sent, b"cpu\n");
        assert_eq!(
            usage,
            Usage {
                seconds: 1.5,
                switches: 42
            }
        );
        assert!(ask_backend(&mut Vec::new(), &mut "cpu 1.5\n".as_bytes()).is_err());
    }

    #[test]
    fn a_process_that_slept_has_switched() {
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(process_switches(std::process::id()) > 0);
        assert_eq!(process_switches(u32::MAX), 0);
    }
}
