//! The steps of [`confine`](crate::confine) other than the user switch
//! ([`user`](crate::user)) and landlock ([`fs`](crate::fs)); the order they run
//! in, and why, is in the crate documentation.

use caps::{CapSet, Capability};
use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};

use crate::{allowlist, ConfineError, Outcome};

const NOT_REQUESTED: &str = "not requested";

/// How many threads the process has (entries of `/proc/self/task`).
pub(crate) fn thread_count() -> Result<usize, ConfineError> {
    let mut threads = 0;
    for entry in std::fs::read_dir("/proc/self/task").map_err(ConfineError::CountThreads)? {
        entry.map_err(ConfineError::CountThreads)?;
        threads += 1;
    }
    Ok(threads)
}

/// Step 1: new mount, network and IPC namespaces.
pub(crate) fn namespaces(wanted: bool) -> Result<Outcome, ConfineError> {
    if !wanted {
        return Ok(Outcome::Skipped(NOT_REQUESTED.into()));
    }
    let flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWIPC;
    match unshare(flags) {
        Ok(()) => Ok(Outcome::Applied("mnt,net,ipc".into())),
        Err(Errno::EPERM) => Ok(Outcome::Skipped(
            "not permitted (needs CAP_SYS_ADMIN)".into(),
        )),
        Err(Errno::EINVAL) => Ok(Outcome::Skipped(
            "the kernel lacks one of mnt, net, ipc (EINVAL)".into(),
        )),
        Err(e) => Err(ConfineError::Namespaces(e)),
    }
}

/// Step 2: an empty capability bounding set.
pub(crate) fn bounding_set() -> Result<Outcome, ConfineError> {
    if !caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        return Ok(Outcome::Skipped("no CAP_SETPCAP (not root)".into()));
    }
    caps::clear(None, CapSet::Bounding).map_err(ConfineError::BoundingSet)?;
    Ok(Outcome::Applied("cleared".into()))
}

/// Step 4: no capability left in any set. Ambient first (it must stay within
/// permitted and inheritable), effective before permitted (likewise).
pub(crate) fn capabilities() -> Result<Outcome, ConfineError> {
    let clear = |set, name| {
        caps::clear(None, set).map_err(|source| ConfineError::Capabilities { set: name, source })
    };
    // Kernels before 4.3 have no ambient set, so nothing to clear there.
    if caps::runtime::ambient_set_supported().is_ok() {
        clear(CapSet::Ambient, "ambient")?;
    }
    clear(CapSet::Effective, "effective")?;
    clear(CapSet::Inheritable, "inheritable")?;
    clear(CapSet::Permitted, "permitted")?;
    Ok(Outcome::Applied("dropped".into()))
}

/// Step 5: `PR_SET_NO_NEW_PRIVS`, always.
/// The parent-death signal a process asked for (`PR_SET_PDEATHSIG`), and
/// its parent then.
///
/// WHY: changing the effective user or group clears the signal, so a
/// worker that asked to die with its monitor would outlive it after the
/// user switch.
pub(crate) struct ParentDeathSignal {
    signal: Option<nix::sys::signal::Signal>,
    parent: u32,
}

impl ParentDeathSignal {
    /// The current setting.
    pub(crate) fn read() -> Result<Self, ConfineError> {
        Ok(Self {
            signal: nix::sys::prctl::get_pdeathsig().map_err(ConfineError::ParentDeathSignal)?,
            parent: std::os::unix::process::parent_id(),
        })
    }

    /// Sets the signal again, and fails if the parent died meanwhile (the
    /// signal it would have sent was lost with the setting).
    pub(crate) fn restore(&self) -> Result<(), ConfineError> {
        let Some(signal) = self.signal else {
            return Ok(());
        };
        nix::sys::prctl::set_pdeathsig(signal).map_err(ConfineError::ParentDeathSignal)?;
        if std::os::unix::process::parent_id() != self.parent {
            return Err(ConfineError::ParentDied {
                parent: self.parent,
            });
        }
        Ok(())
    }
}

pub(crate) fn no_new_privs() -> Result<Outcome, ConfineError> {
    nix::sys::prctl::set_no_new_privs().map_err(ConfineError::NoNewPrivs)?;
    Ok(Outcome::Applied(String::new()))
}

/// Step 7: the allow-list, on every thread (TSYNC; there is one, but a filter
/// that would miss a thread should fail rather than leave it unfiltered).
pub(crate) fn seccomp(wanted: bool) -> Result<Outcome, ConfineError> {
    if !wanted {
        return Ok(Outcome::Skipped(NOT_REQUESTED.into()));
    }
    let program = allowlist::filter().map_err(ConfineError::Filter)?;
    let allowed = allowlist::allowed_count();
    tracing::debug!(
        instructions = program.len(),
        "confinement: installing the seccomp filter ({allowed} syscalls)"
    );
    seccompiler::apply_filter_all_threads(&program).map_err(|e| match e {
        seccompiler::Error::Prctl(io) | seccompiler::Error::Seccomp(io) => {
            ConfineError::Seccomp(io)
        }
        seccompiler::Error::ThreadSync(tid) => ConfineError::SeccompThread { tid },
        other => ConfineError::SeccompOther(other.to_string()),
    })?;
    Ok(Outcome::Applied(format!("({allowed} syscalls)")))
}
