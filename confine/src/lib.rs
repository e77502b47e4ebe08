//! # pvusb-confine
//!
//! A freshly started worker process of the backend daemon confines itself with
//! [`confine`] before it reads anything a guest wrote. The daemon (the monitor)
//! starts one worker per guest USB controller; a worker holds only descriptors it
//! was given or opened before confinement — its socket to the monitor, a xenstore
//! proxy socket, `/dev/xen/gntdev` and `/dev/xen/evtchn` (or, simulated, memfds
//! received over a UNIX socket rendezvous), and the usbfs descriptors the monitor
//! passes it — and needs nothing else of the system: it never opens a file by
//! path, never executes a program and never uses the network. If a guest finds a
//! bug in the worker, confinement decides what that bug can reach: ideally the
//! worker's own descriptors and nothing more.
//!
//! # The steps, in their order
//! Each step is reported in a [`Report`], applied or skipped with a reason; a step
//! is skipped where the process lacks the privilege (not root) or the kernel lacks
//! the feature, and confinement goes on with the rest.
//!
//! 1. **Namespaces** (mount, network, IPC). Network: no interface but a
//!    loopback that is down, and none of the host's abstract UNIX sockets
//!    (which no file permission guards, and which the allowed `socket(AF_UNIX)`
//!    plus `connect` could otherwise reach). Pathname UNIX sockets are found
//!    through the file system, so the simulated transport's rendezvous still
//!    works. IPC: no System V IPC object or POSIX message queue of the host.
//!    Mount: a table of its own, which no mount made in it could leave (none
//!    can be made once the capabilities are gone); it stays a peer of the
//!    host's shared mounts, so the host's unmounts reach it and it pins no file
//!    system. Network and IPC matter most where seccomp is off; with it on they
//!    are a second wall. Needs `CAP_SYS_ADMIN`, so it comes first, while the
//!    process is privileged.
//! 2. **Bounding set** cleared: no later exec could ever regain a capability
//!    (none is planned; `no_new_privs` covers it too). Needs `CAP_SETPCAP`, so it
//!    comes before the user switch drops it.
//! 3. **User switch** to an unprivileged user ([`UserChoice`]): the kernel's
//!    discretionary checks (file modes, signals to other users' processes) then
//!    hold. Groups first (setting them needs `CAP_SETGID`), then the gid, then
//!    the uid, whose change drops the remaining capabilities.
//! 4. **Capabilities** cleared (effective, permitted, inheritable, ambient),
//!    also when the user switch was skipped: root without capabilities cannot
//!    bypass permission checks.
//! 5. **`no_new_privs`**: no set-user-id or file-capability gain; landlock and
//!    seccomp need it of an unprivileged process.
//! 6. **Landlock**: a ruleset handling every file-system access right the kernel
//!    knows and granting none, so opening, creating, removing or renaming any
//!    path fails with `EACCES`. Descriptors opened before (or by the monitor and
//!    received) keep the rights they were opened with. Where the kernel can
//!    (ABI 6), connecting to abstract UNIX sockets and signalling processes
//!    outside the worker are scoped away too.
//! 7. **Seccomp** last, because it forbids the syscalls the steps above make:
//!    the [`allowlist`] with a mismatch action that kills the whole process.
//!
//! [`confine`] must run while the process has one thread (it checks
//! `/proc/self/task` and refuses otherwise): the user ids, capabilities and the
//! landlock domain are per thread in the kernel, set on the calling thread and
//! inherited by threads created later; a thread started before would keep them.
//!
//! # In a worker
//! * Before [`confine`]: open and connect everything (gntdev, evtchn, the
//!   monitor's and the xenstore proxy's sockets), create the libusb context
//!   (with `LIBUSB_OPTION_NO_DEVICE_DISCOVERY`: initialising it reads sysfs),
//!   install the tracing subscriber, and start no thread.
//! * After it: usbfs descriptors received from the monitor are wrapped as
//!   usual. libusb first looks up `/proc/self/fd/N`, gets `EACCES` and falls back
//!   to `USBDEVFS_CONNECTINFO`, so a wrapped device reports bus number 0 (the
//!   monitor knows the real one). A panic's backtrace prints without symbols:
//!   the executable cannot be opened to read them.
//! * The monitor can check a worker from outside with [`status::of`] and
//!   [`status::open_fds`], and name the syscall that killed one with `SIGSYS`
//!   with [`violation::seccomp_syscall_of`].
//!
//! # What is left
//! * `ioctl` is allowed whatever its request: gntdev, evtchn and usbfs are
//!   driven by ioctls, and their request numbers (and usbfs's per-URB ones) make a
//!   list that would break with each new driver version. The drivers check their
//!   own arguments; a kernel bug reachable through them is reachable from here.
//! * A gntdev descriptor can map any grant that any guest offered to this
//!   domain, not only the worker's own guest's: Xen decides, not this crate.
//! * The simulated transport's rendezvous directory must be reachable (search and
//!   write permission on its socket) by the worker's user, and the worker can
//!   connect to any pathname UNIX socket that user may write to: landlock's
//!   right to deny that (`ResolveUnix`, ABI 9) is left unhandled, because the
//!   simulated transport connects to its rendezvous after confinement.
//! * All workers run as one user, so the user switch does not separate them
//!   from each other: what does is seccomp (no `kill`, no `ptrace`, `tgkill`
//!   only on itself), landlock (no `/proc/PID` to open) and its signal scope.
//! * `stat`-like calls on a path are answered (landlock does not cover them):
//!   metadata of the host's files can be learnt, not their contents.
//! * The filter reads `tgkill`'s target against this process's id as it was
//!   when the filter was built, so a process that forks must build its own.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod allowlist;
mod fs;
mod report;
pub mod status;
mod steps;
mod syscall_names;
mod user;
pub mod violation;

pub use report::{Outcome, Report, Step};
pub use user::{resolve_user, ResolvedUser};

/// What [`confine`] is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// Whom to become (applied only when running as root).
    pub user: UserChoice,
    /// Install the seccomp allow-list ([`allowlist::filter`]).
    pub seccomp: bool,
    /// Deny the whole file system with landlock.
    pub landlock: bool,
    /// Unshare the mount, network and IPC namespaces where permitted.
    pub namespaces: bool,
}

impl Default for Confinement {
    /// Everything: the default user and every step.
    fn default() -> Self {
        Confinement {
            user: UserChoice::Default,
            seccomp: true,
            landlock: true,
            namespaces: true,
        }
    }
}

/// The user a root worker becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChoice {
    /// Stay who we are (capabilities are cleared all the same).
    Keep,
    /// This user, which must exist.
    Named(String),
    /// The system user `pvusb` if it exists, else `nobody`: a dedicated user
    /// shares nothing with other daemons, `nobody` is the fallback every system has.
    Default,
}

/// Why [`confine`] or [`resolve_user`] failed. A failure leaves the process
/// partly confined (the steps before it applied), so a worker should exit.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The process has other threads, which would escape the per-thread steps.
    #[error("confinement needs a process with one thread, this one has {threads}")]
    NotSingleThreaded {
        /// How many threads `/proc/self/task` lists.
        threads: usize,
    },
    /// `/proc/self/task` could not be read.
    #[error("cannot count this process's threads in /proc/self/task")]
    CountThreads(#[source] std::io::Error),
    /// The named user is not in the user database.
    #[error(
        "user {name:?} does not exist: create it (`useradd --system pvusb` for the \
         default) or name an existing user"
    )]
    UnknownUser {
        /// The name asked for.
        name: String,
    },
    /// Neither `pvusb` nor `nobody` exists.
    #[error(
        "neither user \"pvusb\" nor \"nobody\" exists: create one (`useradd --system pvusb`) \
         or name an existing user"
    )]
    NoDefaultUser,
    /// The user database could not be read.
    #[error("cannot look up user {name:?}")]
    LookupUser {
        /// The name looked up.
        name: String,
        /// What the lookup reported.
        #[source]
        source: nix::Error,
    },
    /// `unshare` failed for a reason other than lacking privilege or support.
    #[error("cannot unshare the mount, network and IPC namespaces")]
    Namespaces(#[source] nix::Error),
    /// The capability bounding set could not be cleared.
    #[error("cannot clear the capability bounding set")]
    BoundingSet(#[source] caps::errors::CapsError),
    /// A step of the user switch failed.
    #[error("cannot {what} to become {user}")]
    SwitchUser {
        /// The call that failed (`setgroups`, `setresgid`, `setresuid`).
        what: &'static str,
        /// The user being switched to.
        user: String,
        /// The call's error.
        #[source]
        source: nix::Error,
    },
    /// The process still has other ids than the ones switched to.
    #[error("the user switch left ids {found} instead of {wanted}")]
    UserNotSwitched {
        /// The ids asked for.
        wanted: String,
        /// The ids the process has.
        found: String,
    },
    /// Clearing a capability set failed.
    #[error("cannot clear the {set} capabilities")]
    Capabilities {
        /// Which set.
        set: &'static str,
        /// The caps crate's error.
        #[source]
        source: caps::errors::CapsError,
    },
    /// The parent-death signal could not be read or set again.
    #[error("cannot keep the parent-death signal across the user switch")]
    ParentDeathSignal(#[source] nix::Error),
    /// The parent died while the user switch had cleared the parent-death
    /// signal, so the signal it asked for never came.
    #[error("the parent process {parent} died during the confinement")]
    ParentDied {
        /// The parent's pid before the switch.
        parent: u32,
    },
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("cannot set no_new_privs")]
    NoNewPrivs(#[source] nix::Error),
    /// Landlock refused the ruleset (its message carries the system error).
    #[error("cannot deny the file system with landlock: {0}")]
    Landlock(String),
    /// The allow-list could not be compiled.
    #[error("cannot build the seccomp filter")]
    Filter(#[source] allowlist::AllowlistError),
    /// The kernel refused the filter.
    #[error("cannot install the seccomp filter")]
    Seccomp(#[source] std::io::Error),
    /// Another thread could not take the filter (TSYNC).
    #[error("thread {tid} could not take the seccomp filter")]
    SeccompThread {
        /// The thread the kernel named.
        tid: i64,
    },
    /// Any other error of the seccomp library.
    #[error("cannot install the seccomp filter: {0}")]
    SeccompOther(String),
}

/// Confines the calling process, step by step (see the [crate] documentation
/// for the order and what each step buys), and says what was applied.
///
/// Must be called while the process has one thread (before any
/// `std::thread::spawn`, and outside a libtest harness, which runs tests on
/// threads of their own): see [`ConfineError::NotSingleThreaded`]. Log before
/// it what should be logged about it; tracing to stderr keeps working after.
pub fn confine(c: &Confinement) -> Result<Report, ConfineError> {
    let threads = steps::thread_count()?;
    if threads != 1 {
        return Err(ConfineError::NotSingleThreaded { threads });
    }
    // Resolved first, while /etc/passwd (or NSS) can still be read; its
    // descriptors are closed again before the steps.
    let user = resolve_user(&c.user)?;
    let mut report = Report::default();
    // Needs CAP_SYS_ADMIN: first, while we have it.
    report.push("namespaces", steps::namespaces(c.namespaces)?);
    // Needs CAP_SETPCAP, which the user switch takes away.
    report.push("bounding set", steps::bounding_set()?);
    // The switch clears a parent-death signal (prctl(2)); the caller's is
    // set again after it.
    let death_signal = steps::ParentDeathSignal::read()?;
    // Needs CAP_SETUID and CAP_SETGID; drops the rest of the capabilities.
    report.push("user", user::switch(user.as_ref())?);
    death_signal.restore()?;
    // Whatever the switch left (or all of them, where it was skipped).
    report.push("capabilities", steps::capabilities()?);
    // Landlock and seccomp need it of a process without CAP_SYS_ADMIN.
    report.push("no_new_privs", steps::no_new_privs()?);
    report.push("landlock", fs::deny_all(c.landlock)?);
    // Last: the filter forbids the syscalls of every step above.
    report.push("seccomp", steps::seccomp(c.seccomp)?);
    Ok(report)
}
