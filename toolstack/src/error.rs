//! The toolstack's errors. Every message is one line that says what happened and
//! names the fix, because the CLI prints it as is and a user reading it mid-crisis
//! must know the next command to type.

use crate::store::StoreError;
use crate::sysfs::SysfsError;

/// Failure of a toolstack command.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The device is already in a port of some controller.
    #[error(
        "device {busid} is already assigned to domain {domid} controller {ctrl} port {port}: \
         detach it first with `pvusb dev-detach {domid} {ctrl} {port}`"
    )]
    AlreadyAssigned {
        /// Device.
        busid: String,
        /// Domain it is assigned to.
        domid: u16,
        /// Controller.
        ctrl: u32,
        /// Port.
        port: u32,
    },
    /// Another command held the command lock for the whole wait.
    #[error("another pvusb command is changing devices (lock {}) and did not finish within {secs}s: wait for it (see `ps -C pvusb`), then retry", path.display())]
    Busy {
        /// The lock file.
        path: std::path::PathBuf,
        /// Seconds waited.
        secs: u64,
    },
    /// Another command changed the same device between two steps of this one.
    #[error(
        "device {busid} was changed by a concurrent pvusb command: see `pvusb list` and retry"
    )]
    Concurrent {
        /// Device.
        busid: String,
    },
    /// `dom` matched more than one domain name.
    #[error("domain name {0:?} is used by several domains: give the domid instead")]
    AmbiguousDomain(String),
    /// A new controller's index is taken by existing (possibly stale) nodes.
    #[error("controller index {ctrl} of domain {domid} is already used by xenstore nodes: see `pvusb list {domid}` and remove stale ones (`pvusb ctrl-detach {domid} {ctrl} --force`, or xenstore-rm /local/domain/{domid}/device/vusb/{ctrl})")]
    ControllerIndexInUse {
        /// Guest.
        domid: u16,
        /// The index that is taken.
        ctrl: u32,
    },
    /// A config file could not be parsed.
    #[error("{file}:{line}: {reason}: fix the line (xl.cfg syntax, e.g. usbdev = ['hostbus=1, hostaddr=6'])")]
    Config {
        /// File name.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        reason: crate::config::ConfigProblem,
    },
    /// The chosen controller belongs to another backend domain.
    #[error("controller {ctrl} of domain {domid} is served by backend domain {backend}, not by domain {ours}: pick another controller or run with --backend-domid {backend}")]
    ForeignBackend {
        /// Guest.
        domid: u16,
        /// Controller.
        ctrl: u32,
        /// Its backend domain (as the guest's frontend node claims).
        backend: String,
        /// This toolstack's backend domain.
        ours: u16,
    },
    /// A user argument is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The command lock file could not be opened or locked.
    #[error("cannot take the command lock {} (run as root, or check that /run is writable)", path.display())]
    Lock {
        /// The lock file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Hubs cannot be assigned.
    #[error("device {0} is a hub (class 9) and hubs cannot be assigned: assign the devices behind it instead")]
    IsHub(String),
    /// The controller has no free port.
    #[error("controller {ctrl} of domain {domid} has no free port: give another controller, or create one with `pvusb ctrl-attach {domid}`")]
    NoFreePort {
        /// Guest.
        domid: u16,
        /// Controller.
        ctrl: u32,
    },
    /// No such controller.
    #[error("domain {domid} has no controller {ctrl}: see `pvusb list {domid}` or create one with `pvusb ctrl-attach {domid}`")]
    NoSuchController {
        /// Guest.
        domid: u16,
        /// Controller.
        ctrl: u32,
    },
    /// The device rules refuse this device for this guest.
    #[error("device {busid} is {what} for domain {domid} by {why}: change the rules file (--rules, PVUSB_RULES) or assign another device")]
    PolicyRefused {
        /// Device.
        busid: String,
        /// Guest.
        domid: u16,
        /// "blocked" or "rejected".
        what: &'static str,
        /// `FILE:LINE \`rule\``, or why no rule decided.
        why: String,
    },
    /// The device rules file cannot be used (its message names the fix).
    #[error(transparent)]
    Rules(#[from] pvusb_policy::LoadError),
    /// No such USB device on this host.
    #[error(
        "no USB device {0} on this host: see `pvusb assignable-list` (or lsusb) for valid names"
    )]
    NoSuchDevice(String),
    /// No such domain.
    #[error("no domain {0:?}: give a running domain's id or name (see `xl list`)")]
    NoSuchDomain(String),
    /// No such port on the controller.
    #[error("controller {ctrl} of domain {domid} has ports 1..={num_ports}, not {port}: pick a port in range")]
    NoSuchPort {
        /// Guest.
        domid: u16,
        /// Controller.
        ctrl: u32,
        /// Requested port.
        port: u32,
        /// Ports of the controller.
        num_ports: u32,
    },
    /// Nothing is assigned where the user said.
    #[error("domain {domid} controller {ctrl} port {port} is empty: see `pvusb list {domid}`")]
    PortEmpty {
        /// Guest.
        domid: u16,
        /// Controller.
        ctrl: u32,
        /// Port.
        port: u32,
    },
    /// The requested port holds another device.
    #[error("domain {domid} controller {ctrl} port {port} is taken by {busid}: omit port= to use the first free one")]
    PortBusy {
        /// Guest.
        domid: u16,
        /// Controller.
        ctrl: u32,
        /// Port.
        port: u32,
        /// Device already there (or being attached there).
        busid: String,
    },
    /// An earlier command on this device did not finish.
    #[error("an earlier {op} of device {busid} (domain {domid}) did not finish: run `pvusb recover {busid}` first")]
    Pending {
        /// Device.
        busid: String,
        /// `attach` or `detach`.
        op: &'static str,
        /// Domain of that operation.
        domid: u16,
    },
    /// Some interfaces could not be given back to their drivers.
    #[error("device {busid} left the guest but {failed} could not be rebound: {hint}, then run `pvusb recover {busid}`")]
    Rebind {
        /// Device.
        busid: String,
        /// `intf (driver: reason)` list.
        failed: String,
        /// What to do before recovering.
        hint: String,
    },
    /// A xenstore access failed.
    #[error(
        "cannot use xenstore; check that xenstored runs (XENSTORED_PATH) and that this runs in the backend domain"
    )]
    Store(#[from] StoreError),
    /// A sysfs access failed.
    #[error("cannot use sysfs; check --sysfs-root and that this runs as root in the domain owning the USB devices")]
    Sysfs(#[from] SysfsError),
    /// Waiting for a xenbus state change timed out.
    #[error("{what} not reached within {secs}s (saw {saw}): {hint}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// Seconds waited.
        secs: u64,
        /// The states seen last.
        saw: String,
        /// How to finish.
        hint: String,
    },
}
