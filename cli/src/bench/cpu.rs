//! CPU time of a process: this one (getrusage RUSAGE_SELF: every thread of
//! it), or another (`/proc/PID/stat`).

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

/// Asks the bench's backend process for its CPU seconds so far (its
/// `cpu` command: the daemon and its worker processes).
pub fn ask_backend(
    input: &mut impl std::io::Write,
    output: &mut impl std::io::BufRead,
) -> Result<f64, String> {
    let chain = |e: std::io::Error| pvusb_support::Chain(&e).to_string();
    writeln!(input, "cpu")
        .and_then(|()| input.flush())
        .map_err(chain)?;
    let mut line = String::new();
    output.read_line(&mut line).map_err(chain)?;
    line.trim()
        .strip_prefix("cpu ")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("the backend process answered {line:?} to a CPU query"))
}
