//! THE seccomp allow-list of a confined worker, in one place: every syscall the
//! worker may make, each with why it needs it.
//!
//! What the worker runs after confinement: std threads (spawn, join, `Mutex`,
//! `Condvar`), tracing to stderr, a poll loop over eventfds, timerfds and
//! sockets, UNIX sockets with descriptors passed over them (`SCM_RIGHTS`),
//! `mmap` of gntdev (or, simulated, memfd) descriptors, and libusb on usbfs
//! descriptors it was given. Anything else kills the whole process
//! (`SECCOMP_RET_KILL_PROCESS`, seen as `SIGSYS` by its parent), except a few
//! calls that libraries make lazily and cope with failing: those get an errno
//! ([`Rule::Errno`]) instead of a kill.
//!
//! `ioctl` is allowed whatever its request (see the crate documentation): the
//! gntdev, evtchn and usbfs request numbers, and the sizes encoded in usbfs's,
//! vary with the driver, and a list here would break the worker first.
//!
//! Arguments are checked only where they are plain numbers: a pointer's target
//! (such as `clone3`'s flags, or a path) is out of seccomp's reach.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule,
};

/// When a listed syscall is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Whatever its arguments.
    Any,
    /// When argument `arg` (its low 32 bits) is one of `values`.
    ArgIn {
        /// Which argument, from 0.
        arg: u8,
        /// The values allowed.
        values: &'static [u64],
    },
    /// When argument `arg` has every bit of `bits` set.
    ArgHasBits {
        /// Which argument, from 0.
        arg: u8,
        /// The bits that must be set.
        bits: u64,
    },
    /// When argument `arg` is this process's id (as the filter was built).
    ArgIsOwnPid {
        /// Which argument, from 0.
        arg: u8,
    },
    /// Never run: the call fails with this errno instead of killing the process.
    Errno(i32),
}

/// One syscall of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its number on this architecture.
    pub nr: i64,
    /// When it is allowed.
    pub rule: Rule,
    /// Why the worker needs it.
    pub why: &'static str,
    sys_name: &'static str,
}

impl Entry {
    /// Its name (`read`, `clone`, ...).
    pub fn name(&self) -> &'static str {
        self.sys_name.trim_start_matches("SYS_")
    }
}

/// Why the filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    /// seccompiler refused a rule or the filter.
    #[error("seccompiler cannot compile the allow-list")]
    Compile(#[source] seccompiler::BackendError),
    /// The program is longer than the kernel takes.
    #[error("the seccomp program has {len} instructions, more than the kernel's {BPF_MAXINSNS}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// No allow-list was written for this architecture.
    #[error("no seccomp allow-list for {0}")]
    UnsupportedArch(&'static str),
}

macro_rules! entry {
    ($sys:ident, $rule:expr, $why:literal) => {
        Entry {
            nr: libc::$sys,
            rule: $rule,
            why: $why,
            sys_name: stringify!($sys),
        }
    };
}

use Rule::{Any, ArgHasBits, ArgIn, ArgIsOwnPid, Errno};

#[rustfmt::skip]
const ENTRIES: &[Entry] = &[
    // Memory.
    entry!(SYS_mmap, Any, "thread stacks, malloc arenas, gntdev and memfd mappings"),
    entry!(SYS_munmap, Any, "unmapping all of those"),
    entry!(SYS_mprotect, Any, "guard pages of new thread stacks"),
    entry!(SYS_madvise, Any, "malloc and glibc's thread-stack cache give memory back"),
    entry!(SYS_mremap, Any, "realloc of large blocks"),
    entry!(SYS_brk, Any, "malloc's main heap"),
    // Descriptors the worker holds.
    entry!(SYS_read, Any, "sockets, eventfds, timerfds, usbfs descriptors"),
    entry!(SYS_write, Any, "the same, and tracing's lines to stderr"),
    entry!(SYS_readv, Any, "vectored reads (std's read_vectored)"),
    entry!(SYS_writev, Any, "vectored writes (std's write_vectored, stderr)"),
    entry!(SYS_pread64, Any, "positioned reads"),
    entry!(SYS_pwrite64, Any, "positioned writes"),
    entry!(SYS_lseek, Any, "libusb reads a wrapped usbfs descriptor's descriptors from 0"),
    entry!(SYS_close, Any, "closing descriptors"),
    entry!(SYS_fcntl, Any, "O_NONBLOCK, FD_CLOEXEC, F_DUPFD_CLOEXEC (try_clone), memfd seals"),
    entry!(SYS_dup, Any, "duplicating a descriptor"),
    entry!(SYS_dup3, Any, "duplicating a descriptor onto a number"),
    entry!(SYS_ioctl, Any, "gntdev, evtchn and usbfs are driven by ioctls (not filtered: see above)"),
    entry!(SYS_fstat, Any, "a descriptor's metadata"),
    entry!(SYS_newfstatat, Any, "glibc's fstat (AT_EMPTY_PATH); the sim checks received memfds' size"),
    entry!(SYS_statx, Any, "std's File::metadata (AT_EMPTY_PATH)"),
    // Waiting.
    #[cfg(target_arch = "x86_64")]
    entry!(SYS_poll, Any, "the worker's poll loop, libusb's event handling"),
    entry!(SYS_ppoll, Any, "the same where poll is ppoll (aarch64, nix's ppoll)"),
    entry!(SYS_epoll_create1, Any, "an epoll set"),
    entry!(SYS_epoll_ctl, Any, "changing an epoll set"),
    #[cfg(target_arch = "x86_64")]
    entry!(SYS_epoll_wait, Any, "waiting on an epoll set"),
    entry!(SYS_epoll_pwait, Any, "waiting on an epoll set (aarch64's only form)"),
    entry!(SYS_eventfd2, Any, "wake-ups: the mailbox, libusb's events, the sim's event channels"),
    entry!(SYS_timerfd_create, Any, "libusb's transfer timeouts"),
    entry!(SYS_timerfd_settime, Any, "arming them"),
    entry!(SYS_timerfd_gettime, Any, "reading them"),
    entry!(SYS_futex, Any, "std's Mutex, Condvar, park and join"),
    entry!(SYS_sched_yield, Any, "spin loops yielding"),
    entry!(SYS_nanosleep, Any, "std::thread::sleep"),
    entry!(SYS_clock_nanosleep, Any, "std::thread::sleep (glibc's form)"),
    entry!(SYS_clock_gettime, Any, "Instant and SystemTime where the vDSO does not answer"),
    entry!(SYS_restart_syscall, Any, "the kernel resumes a sleep interrupted by a stop signal"),
    // Process and thread bookkeeping.
    entry!(SYS_getrandom, Any, "HashMap's random keys"),
    entry!(SYS_getpid, Any, "logging, libusb"),
    entry!(SYS_gettid, Any, "logging, libusb"),
    entry!(SYS_getuid, Any, "glibc and libusb asking who they are"),
    entry!(SYS_geteuid, Any, "glibc and libusb asking who they are"),
    entry!(SYS_sched_getaffinity, Any, "std's available_parallelism"),
    entry!(SYS_clone, ArgHasBits { arg: 0, bits: libc::CLONE_THREAD as u64 },
        "new threads only (CLONE_THREAD); not a process"),
    entry!(SYS_clone3, Errno(libc::ENOSYS),
        "its flags are in memory seccomp cannot read; ENOSYS makes glibc fall back to clone"),
    entry!(SYS_set_robust_list, Any, "glibc registers each new thread's robust futexes"),
    entry!(SYS_rseq, Any, "glibc registers each new thread's restartable sequences"),
    entry!(SYS_prctl, ArgIn { arg: 0, values: &[libc::PR_SET_NAME as u64] },
        "naming a thread (std::thread::Builder::name)"),
    entry!(SYS_sigaltstack, Any, "std's stack-overflow handler on each new thread"),
    entry!(SYS_rt_sigaction, Any, "signal handlers (std, libusb)"),
    entry!(SYS_rt_sigprocmask, Any, "glibc blocks signals around thread creation"),
    entry!(SYS_rt_sigreturn, Any, "returning from a signal handler"),
    entry!(SYS_tgkill, ArgIsOwnPid { arg: 0 },
        "abort() raising SIGABRT on itself; no other process"),
    entry!(SYS_exit, Any, "a thread ending"),
    entry!(SYS_exit_group, Any, "the process ending"),
    // Sockets.
    entry!(SYS_socket, ArgIn { arg: 0, values: &[libc::AF_UNIX as u64] },
        "UNIX sockets only (the sim's rendezvous)"),
    entry!(SYS_socketpair, ArgIn { arg: 0, values: &[libc::AF_UNIX as u64] },
        "UNIX socket pairs only"),
    entry!(SYS_connect, Any, "the simulated transport's rendezvous"),
    entry!(SYS_sendmsg, Any, "messages with descriptors (SCM_RIGHTS)"),
    entry!(SYS_recvmsg, Any, "messages with descriptors (SCM_RIGHTS)"),
    entry!(SYS_sendto, Any, "std's send on a socket"),
    entry!(SYS_recvfrom, Any, "std's recv on a socket"),
    entry!(SYS_shutdown, Any, "closing one direction of a socket"),
    entry!(SYS_getsockopt, Any, "SO_ERROR, SO_PEERCRED"),
    entry!(SYS_setsockopt, Any, "socket timeouts and buffer sizes"),
    // Paths: no file is opened after confinement, but std and glibc probe some
    // lazily (/proc/self/maps, /sys/devices/system/cpu/online, /etc/localtime,
    // cgroup files), and libusb reads /proc/self/fd/N of a wrapped descriptor
    // (falling back to an ioctl). They get EACCES, as landlock would answer.
    #[cfg(target_arch = "x86_64")]
    entry!(SYS_open, Errno(libc::EACCES), "no path is opened after confinement"),
    entry!(SYS_openat, Errno(libc::EACCES), "no path is opened after confinement"),
    entry!(SYS_openat2, Errno(libc::EACCES), "no path is opened after confinement"),
    #[cfg(target_arch = "x86_64")]
    entry!(SYS_readlink, Errno(libc::EACCES), "libusb's /proc/self/fd lookup; it falls back"),
    entry!(SYS_readlinkat, Errno(libc::EACCES), "libusb's /proc/self/fd lookup; it falls back"),
    entry!(SYS_getcwd, Errno(libc::EACCES), "a panic's backtrace shortens paths with it; or not"),
];

/// The kernel's limit on a classic BPF program's length.
const BPF_MAXINSNS: usize = 4096;
/// `BPF_RET | BPF_K` and `BPF_JMP | BPF_JA` (linux/bpf_common.h).
const BPF_RET_K: u16 = 0x06;
const BPF_JMP_JA: u16 = 0x05;
/// What an errno part returns for a syscall it has no verdict on, patched into
/// a jump to the next part by [`join`] (a trace action no filter here uses).
const UNDECIDED: SeccompAction = SeccompAction::Trace(0x5ec0);

/// The list for this architecture.
pub fn entries() -> &'static [Entry] {
    ENTRIES
}

/// How many syscalls are allowed (with or without a condition).
pub fn allowed_count() -> usize {
    ENTRIES
        .iter()
        .filter(|e| !matches!(e.rule, Errno(_)))
        .count()
}

/// The filter: KILL_PROCESS for any syscall not listed, errno for the
/// [`Rule::Errno`] entries, allow for the rest when their condition holds.
///
/// seccompiler gives one filter a single match action, so the program is one
/// filter per errno value followed by the allow-list, each errno part jumping
/// to the next part where it has no verdict (the kernel would let the
/// strictest of several installed filters win, so separate filters could not
/// turn a kill into an errno).
pub fn filter() -> Result<BpfProgram, AllowlistError> {
    let arch = target_arch()?;
    let compile = |rules, mismatch, matched| -> Result<BpfProgram, AllowlistError> {
        SeccompFilter::new(rules, mismatch, matched, arch)
            .and_then(BpfProgram::try_from)
            .map_err(AllowlistError::Compile)
    };
    let mut by_errno: BTreeMap<i32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    let mut allowed = BTreeMap::new();
    for e in ENTRIES {
        match e.rule {
            Errno(errno) => {
                by_errno.entry(errno).or_default().insert(e.nr, Vec::new());
            }
            rule => {
                allowed.insert(e.nr, conditions(rule).map_err(AllowlistError::Compile)?);
            }
        }
    }
    let mut parts = Vec::new();
    for (errno, rules) in by_errno {
        let errno = SeccompAction::Errno(errno.unsigned_abs());
        parts.push(compile(rules, UNDECIDED, errno)?);
    }
    parts.push(compile(
        allowed,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
    )?);
    join(parts)
}

/// The seccompiler rules of an allow entry: none for [`Rule::Any`] (the number
/// alone matches), else one rule per accepted value.
fn conditions(rule: Rule) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let one = |arg, op, value| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
            .and_then(|c| SeccompRule::new(vec![c]))
    };
    match rule {
        Any | Errno(_) => Ok(Vec::new()),
        ArgIn { arg, values } => values
            .iter()
            .map(|&v| one(arg, SeccompCmpOp::Eq, v))
            .collect(),
        ArgHasBits { arg, bits } => Ok(vec![one(arg, SeccompCmpOp::MaskedEq(bits), bits)?]),
        ArgIsOwnPid { arg } => Ok(vec![one(
            arg,
            SeccompCmpOp::Eq,
            u64::from(std::process::id()),
        )?]),
    }
}

/// Concatenates the parts, turning each part's [`UNDECIDED`] returns into
/// jumps to the start of the next part (forward jumps, as BPF requires; each
/// part reloads what it inspects, so nothing carries over).
fn join(parts: Vec<BpfProgram>) -> Result<BpfProgram, AllowlistError> {
    let len: usize = parts.iter().map(Vec::len).sum();
    if len > BPF_MAXINSNS {
        return Err(AllowlistError::TooLong { len });
    }
    let undecided = u32::from(UNDECIDED);
    let mut program = Vec::with_capacity(len);
    for part in parts {
        let part_len = part.len();
        for (i, ins) in part.into_iter().enumerate() {
            if ins.code == BPF_RET_K && ins.k == undecided {
                // Fits: the whole program is at most BPF_MAXINSNS long.
                let skip = u32::try_from(part_len - i - 1).unwrap_or(u32::MAX);
                program.push(sock_filter {
                    code: BPF_JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: skip,
                });
            } else {
                program.push(ins);
            }
        }
    }
    Ok(program)
}

fn target_arch() -> Result<seccompiler::TargetArch, AllowlistError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(seccompiler::TargetArch::x86_64),
        "aarch64" => Ok(seccompiler::TargetArch::aarch64),
        other => Err(AllowlistError::UnsupportedArch(other)),
    }
}

#[cfg(test)]
mod tests;
