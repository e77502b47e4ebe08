//! Which syscall killed a worker: after a worker died of `SIGSYS`, the kernel's
//! audit record of the seccomp kill names the syscall, and saying it in the
//! monitor's log turns "the worker died" into "the allow-list lacks `statfs`"
//! (or "the worker was subverted and tried `socket`").
//!
//! The record is `audit: type=1326 ... pid=PID ... arch=... syscall=N ...`,
//! printed to the kernel log when no audit daemon takes it (an audit daemon
//! has it in its own log instead). The kernel writes the record's untrusted
//! strings (`comm`, `exe`) in hex when they hold spaces or quotes, so a worker
//! cannot forge fields by naming its threads.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;

use crate::syscall_names;

/// How many kernel log records one call reads at most (the log holds a few
/// thousand; this bounds the time a flooded log costs).
const MAX_RECORDS: usize = 65_536;

/// The syscall a seccomp filter killed a process for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Its number on the architecture of the process.
    pub syscall: i64,
    /// Its name (`socket`), or `syscall N` where unknown.
    pub name: String,
}

/// The syscall of the newest seccomp audit record of process `pid` in the
/// kernel log (`/dev/kmsg`), `None` if there is none or the log cannot be read
/// (it needs root or `CAP_SYSLOG` where `kernel.dmesg_restrict` is set).
///
/// Best effort and non-blocking: it reads the records present when called.
/// The kernel may print the record a moment after the process died, so a
/// caller that finds nothing right after `waitpid` can ask again shortly.
pub fn seccomp_syscall_of(pid: i32) -> Option<Violation> {
    let mut kmsg = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    // One read returns one record, truncated to the buffer (the kernel's own
    // limit is below 8 KiB).
    let mut buf = vec![0u8; 8192];
    let mut found = None;
    for _ in 0..MAX_RECORDS {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let record = String::from_utf8_lossy(&buf[..n]);
                if let Some(v) = parse_record(&record, pid) {
                    found = Some(v);
                }
            }
            // EPIPE: the record we were at was overwritten; go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // WouldBlock: the end of the log; anything else: give up.
            Err(_) => break,
        }
    }
    found
}

/// The violation in one kernel log record (a `/dev/kmsg` record
/// `prio,seq,time,flags;message` or a `dmesg` line) if it is a seccomp audit
/// record (`type=1326`) of process `pid`.
pub fn parse_record(record: &str, pid: i32) -> Option<Violation> {
    let message = record.split_once(';').map_or(record, |(_, m)| m);
    let message = message.lines().next()?;
    let mut fields = message.split_whitespace();
    fields.find(|f| *f == "type=1326")?;
    let (mut record_pid, mut arch, mut syscall) = (None, None, None);
    for field in fields {
        if let Some(v) = field.strip_prefix("pid=") {
            record_pid = v.parse::<i32>().ok();
        } else if let Some(v) = field.strip_prefix("arch=") {
            arch = Some(v);
        } else if let Some(v) = field.strip_prefix("syscall=") {
            syscall = v.parse::<i64>().ok();
        }
    }
    if record_pid? != pid {
        return None;
    }
    let syscall = syscall?;
    let arch = match arch {
        Some("c000003e") => "x86_64",
        Some("c00000b7") => "aarch64",
        _ => "",
    };
    let name = syscall_names::name(arch, syscall)
        .map_or_else(|| format!("syscall {syscall}"), str::to_owned);
    Some(Violation { syscall, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "audit: type=1326 audit(1733460000.123:45): auid=4294967295 uid=65534 \
        gid=65534 ses=4294967295 subj=unconfined pid=1234 comm=\"pvusb\" \
        exe=\"/usr/bin/pvusb\" sig=31 arch=c000003e syscall=41 compat=0 \
        ip=0x7f0123456789 code=0x80000000";

    #[test]
    fn a_dmesg_line_of_the_process() {
        let v = parse_record(X86, 1234).unwrap();
        assert_eq!(
            v,
            Violation {
                syscall: 41,
                name: "socket".into()
            }
        );
    }

    #[test]
    fn a_kmsg_record_on_aarch64() {
        let record = format!(
            "5,2711,86912345,-;{}\n SUBSYSTEM=audit\n",
            X86.replace("c000003e", "c00000b7")
                .replace("syscall=41", "syscall=117")
        );
        let v = parse_record(&record, 1234).unwrap();
        assert_eq!((v.syscall, v.name.as_str()), (117, "ptrace"));
    }

    #[test]
    fn other_processes_records_and_other_records_are_not_it() {
        assert_eq!(parse_record(X86, 123), None);
        assert_eq!(parse_record(X86, 12345), None);
        assert_eq!(
            parse_record(&X86.replace("type=1326", "type=1400"), 1234),
            None
        );
        assert_eq!(
            parse_record("6,1,2,-;usb 1-1: new high-speed USB device", 1234),
            None
        );
        assert_eq!(parse_record("", 1234), None);
        // A ppid= field does not stand for pid=.
        assert_eq!(parse_record(&X86.replace(" pid=", " ppid="), 1234), None);
    }

    #[test]
    fn an_unknown_number_or_architecture_is_named_by_number() {
        let v = parse_record(&X86.replace("syscall=41", "syscall=999"), 1234).unwrap();
        assert_eq!(v.name, "syscall 999");
        let v = parse_record(&X86.replace("arch=c000003e", "arch=40000003"), 1234).unwrap();
        assert_eq!(v.name, "syscall 41");
    }

    #[test]
    fn the_kernel_log_of_a_process_that_never_ran_has_nothing() {
        assert_eq!(seccomp_syscall_of(-7), None);
    }
}
