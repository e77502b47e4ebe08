//! Confined worker processes: one per controller, supervised by the daemon.
//!
//! WHY: a userspace usbback exists so that a hostile guest cannot take dom0.
//! With every controller a thread of one root process linking libusb's C
//! code, one memory-safety bug reachable from a guest would be dom0 root,
//! and one stuck thread could stall every guest. So (as crosvm runs each
//! device in its own jailed process) the daemon becomes a **monitor** that
//! keeps everything privileged — xenstore, hotplug, the toolstack's records,
//! opening device nodes and the Xen devices — and runs each controller in a
//! **worker process** (the same binary, `pvusb backend-worker`):
//!
//! * The monitor ([`supervisor`]) starts the worker with nothing but a link
//!   socket on its standard input (std closes every other descriptor on
//!   exec) and sends it a [`WorkerSetup`] with exactly the descriptors it
//!   needs: a xenstore proxy socket that lets it touch only its own
//!   controller's nodes (`pvusb_xenstore::proxy`), a gntdev of its own (its
//!   mappings end with it), the backing of emulated disks. Device nodes and
//!   event-channel devices are opened by the monitor when the worker asks,
//!   after checks of its own ([`broker`]).
//! * The worker ([`worker_process`]) confines itself before it reads
//!   anything a guest wrote (`pvusb_confine`: another user, no
//!   capabilities, no_new_privs, Landlock, namespaces, seccomp), then runs
//!   the same controller code as a thread would ([`crate::worker`]).
//! * The monitor notices a worker's death at once (its link closes), logs
//!   why, and starts a new one, which maps the rings again at their current
//!   indexes (the daemon-restart path): the guest continues. Repeated
//!   crashes are backed off and finally close the controller
//!   ([`restart`]). A worker whose loop stops turning is killed. A worker
//!   dies with its monitor ([`worker_process::run`] says why), and its
//!   standard error is relayed into the daemon's log ([`log_relay`]).
//!
//! Residual risk, honestly: a worker's gntdev descriptor can map any grant
//! any guest offers to this domain (gntdev has no per-guest restriction),
//! and its ioctls are not filtered by argument; the xenstore proxy lets it
//! write its own controller's nodes and the `opened` marks of device
//! records.

pub mod broker;
pub mod error;
pub mod link;
pub mod log_relay;
pub mod messages;
pub mod restart;
pub mod supervisor;
pub mod worker_process;

pub use error::BrokerError;
pub use messages::{ConfineSetup, Fault, TransportSetup, WorkerSetup};
pub use supervisor::ProcessModel;

use std::sync::Arc;

/// How the daemon runs its controllers.
#[derive(Debug, Clone, Default)]
pub enum Isolation {
    /// Each controller a thread of the daemon (tests, and the measure of
    /// what the processes cost).
    #[default]
    Thread,
    /// Each controller a confined worker process.
    Process(Arc<ProcessModel>),
}

/// Commits a fault a test asked for ([`Fault`]); only ever called in a
/// worker process started with fault hooks.
pub fn commit(fault: Fault) {
    tracing::warn!(?fault, "committing a fault on request (test hook)");
    match fault {
        // An internet socket: the allow-list only has UNIX sockets, so the
        // filter kills the worker with SIGSYS. Unconfined, it is harmless.
        Fault::Syscall => {
            let _ = std::net::UdpSocket::bind("127.0.0.1:0");
            tracing::error!("the forbidden system call was allowed: no seccomp filter");
        }
        Fault::Abort => std::process::abort(),
        Fault::Spin => loop {
            std::hint::spin_loop();
        },
    }
}
