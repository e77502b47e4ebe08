//! Step 6: landlock denies the whole file system.
//!
//! The ruleset handles every file-system access right of the newest ABI this
//! crate's landlock knows, lowered to the kernel's ABI (best effort), and adds
//! no rule: whatever it handles is denied everywhere. Rights are checked when a
//! file is opened, so descriptors opened before, or received from the monitor,
//! keep theirs (the usbfs ioctls among them).
//!
//! One right is left unhandled: `ResolveUnix` (ABI 9, connecting to a pathname
//! UNIX socket). The simulated transport connects to its rendezvous after
//! confinement; file permissions on the rendezvous decide instead (a residual
//! risk named in the crate documentation).

use landlock::{
    Access, AccessFs, CompatLevel, Compatible, LandlockStatus, RestrictionStatus, Ruleset,
    RulesetAttr, RulesetStatus, Scope, ABI,
};

use crate::{ConfineError, Outcome};

/// The newest ABI known to the landlock crate: best effort lowers it to the
/// kernel's, and a newer crate adds its rights here when this line changes.
const NEWEST: ABI = ABI::V10;

pub(crate) fn deny_all(wanted: bool) -> Result<Outcome, ConfineError> {
    if !wanted {
        return Ok(Outcome::Skipped("not requested".into()));
    }
    let failed = |e: landlock::RulesetError| ConfineError::Landlock(e.to_string());
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(NEWEST) & !AccessFs::ResolveUnix)
        .map_err(failed)?
        // Abstract UNIX sockets (no file, so no file permission guards them)
        // and signals to processes outside the worker: it needs neither.
        .scope(Scope::from_all(NEWEST))
        .map_err(failed)?
        .create()
        .map_err(failed)?
        .restrict_self()
        .map_err(failed)?;
    Ok(outcome(&status))
}

fn outcome(status: &RestrictionStatus) -> Outcome {
    match (&status.ruleset, status.landlock) {
        (RulesetStatus::NotEnforced, LandlockStatus::NotEnabled) => {
            Outcome::Skipped("the kernel has it but it is not enabled (lsm= boot option)".into())
        }
        (RulesetStatus::NotEnforced, _) => Outcome::Skipped("kernel lacks it".into()),
        (
            _,
            LandlockStatus::Available {
                effective_abi,
                kernel_abi,
            },
        ) => {
            let abi = effective_abi as i32;
            let newer = kernel_abi.map_or(String::new(), |k| format!(" of the kernel's {k}"));
            let scoped = if effective_abi >= ABI::V6 {
                ", abstract sockets and signals scoped"
            } else {
                ""
            };
            Outcome::Applied(format!("ABI {abi}{newer} (fs denied{scoped})"))
        }
        (_, LandlockStatus::NotEnabled | LandlockStatus::NotImplemented) => {
            Outcome::Applied("(fs denied)".into())
        }
    }
}
