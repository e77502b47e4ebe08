//! What the monitor and a worker process tell each other over their link
//! ([`super::link`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::port_stats::PortSnapshot;
use crate::stats::StatsSnapshot;
use crate::usb::emulated::EmulatedSpec;
use crate::usb::DeviceInfo;

/// Everything a worker needs to serve one controller; the first message.
///
/// Descriptors attached, in this order: the xenstore proxy socket; with
/// [`TransportSetup::Xen`], the gntdev device; then one backing file per
/// emulated spec that [`EmulatedSpec::needs_backing`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSetup {
    /// The guest.
    pub domid: u16,
    /// The controller's device id.
    pub devid: u32,
    /// The backend directory.
    pub be: String,
    /// The backend domain's own id.
    pub own_domid: u16,
    /// Upper bound of the ring-polling window, µs.
    pub poll_max_us: u64,
    /// Count per-port statistics.
    pub port_stats: bool,
    /// Smallest bulk URB run on mapped guest pages (0: never).
    pub map_min_bytes: usize,
    /// The device rules (file name for messages, text).
    pub rules: Option<(PathBuf, String)>,
    /// Grants and event channels.
    pub transport: TransportSetup,
    /// Emulated devices, in bus order.
    pub emulated: Vec<EmulatedSpec>,
    /// Whether real host devices are served (opened by the monitor).
    pub host_usb: bool,
    /// How the worker confines itself.
    pub confine: ConfineSetup,
    /// Whether [`ToWorker::Fault`] is obeyed (tests only).
    pub fault_hooks: bool,
    /// The monitor's pid: a worker whose parent is another process by the
    /// time it reads this (the monitor died before the worker asked to die
    /// with it) stops at once.
    pub monitor_pid: u32,
}

/// Which grant and event-channel implementation a worker uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum TransportSetup {
    /// gntdev from the setup's descriptors; each evtchn device is asked
    /// for ([`ToMonitor::OpenEvtchn`]).
    Xen,
    /// The simulated transport rooted at this directory.
    Sim {
        /// The rendezvous directory.
        dir: PathBuf,
    },
}

/// The confinement a worker applies to itself before it reads anything a
/// guest wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfineSetup {
    /// Become this user (`None`: the `pvusb` system user, else `nobody`).
    pub user: Option<String>,
    /// Keep the monitor's user (no switch).
    pub keep_user: bool,
    /// The seccomp allow-list.
    pub seccomp: bool,
    /// Landlock: no file-system access.
    pub landlock: bool,
    /// New mount, network and IPC namespaces.
    pub namespaces: bool,
}

impl ConfineSetup {
    /// Everything on, the default user.
    pub fn full() -> Self {
        Self {
            user: None,
            keep_user: false,
            seccomp: true,
            landlock: true,
            namespaces: true,
        }
    }
}

/// A control message for the controller ([`crate::mailbox::Control`] over
/// the link).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkControl {
    /// Something under the backend directory changed (relative path).
    BackendChanged(String),
    /// A host device arrived (busid).
    Arrived(String),
    /// A host device left (busid).
    Left(String),
    /// Daemon shutdown: answer everything, keep xenstore as it is.
    Shutdown,
    /// The controller or its guest is gone.
    Remove,
}

/// A fault a test asks a worker to commit, to prove that the monitor
/// contains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// Make a system call the seccomp allow-list forbids.
    Syscall,
    /// Abort the process.
    Abort,
    /// Spin forever on the controller's thread.
    Spin,
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "syscall" => Ok(Fault::Syscall),
            "abort" => Ok(Fault::Abort),
            "spin" => Ok(Fault::Spin),
            _ => Err(format!("unknown fault {s:?}; use syscall, abort or spin")),
        }
    }
}

/// Monitor → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToWorker {
    /// The first message (descriptors attached, see [`WorkerSetup`]).
    Setup(Box<WorkerSetup>),
    /// A control message.
    Control(LinkControl),
    /// The answer to [`ToMonitor::Open`]: the device node's descriptor is
    /// attached on success.
    Opened {
        /// The busid asked for.
        busid: String,
        /// What is known of the device, or why it was not opened.
        result: Result<DeviceInfo, String>,
    },
    /// The answer to [`ToMonitor::OpenEvtchn`]: the descriptor is attached
    /// on success.
    EvtchnOpened(Result<(), String>),
    /// Commit this fault (only with [`WorkerSetup::fault_hooks`]).
    Fault(Fault),
}

/// Worker → monitor. Hostile: the monitor checks each before acting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToMonitor {
    /// Confined and serving; how (one line).
    Ready(String),
    /// Open the host device at this busid for one of my ports.
    Open(String),
    /// Open an event-channel device for a new channel.
    OpenEvtchn,
    /// Counters and liveness, about once a second.
    Heartbeat(Box<Heartbeat>),
}

/// The worker's counters and whether its controller thread makes progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The controller-wide counters.
    pub totals: StatsSnapshot,
    /// Ports with any traffic: (port, counters).
    pub ports: Vec<(u8, PortSnapshot)>,
    /// Turns of the controller's loop so far.
    pub turns: u64,
    /// Whether the controller's thread is asleep waiting for work.
    pub asleep: bool,
}
