//! The worker's inbox: device completions and control messages, plus one
//! eventfd that wakes the worker's poll.
//!
//! WHY this shape: completions arrive from other threads (the libusb control
//! helper, emulated timers) and must never contend with the worker for long.
//! Producers push into a small mutex-protected Vec; the worker swaps the whole
//! Vec out once per wake-up. The eventfd is written only when no wake-up is
//! already pending, so a burst of completions costs one syscall.
//!
//! Completions made on the worker's own thread (libusb's callbacks, which
//! run inside the worker's event handling; a device that completes inside
//! `submit`, like the emulated loopback; a cancel answered at once) are
//! queued without any wake-up: the worker drains the queue itself before it
//! sleeps (`Controller::service` loops while completions are queued, and the
//! worker calls it after everything else it does), so an eventfd write and
//! read per completion would buy nothing, and the pending flag would break
//! the worker out of its polling loop for no reason. The worker names its
//! thread once with [`Mailbox::set_worker`].

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;

use nix::sys::eventfd::{EfdFlags, EventFd};
use pvusb_support::lock_unpoisoned;

use crate::error::BackendError;
use crate::usb::{Completion, CompletionSink, HotplugEvent, TransferId};

/// A control message for a controller's worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Something under the backend directory changed (path relative to it,
    /// empty for the directory itself).
    BackendChanged(String),
    /// The frontend's state (or directory) changed.
    FrontendChanged,
    /// A host device arrived or left.
    Hotplug(HotplugEvent),
    /// Daemon shutdown: answer everything, release everything, keep xenstore
    /// as it is so a restarted daemon picks the controller up again.
    Shutdown,
    /// The controller or its guest is gone: release everything, write nothing.
    Remove,
    /// A test asks a worker process to commit a fault
    /// ([`crate::isolation::Fault`]); only a worker started with fault hooks
    /// is ever sent one.
    Fault(crate::isolation::Fault),
}

/// Completions and control messages for one worker.
#[derive(Debug)]
pub struct Mailbox {
    completions: Mutex<Vec<(TransferId, Completion)>>,
    control: Mutex<Vec<Control>>,
    /// [`Control::FrontendChanged`] as a flag: the frontend directory is the
    /// guest's to write, and a guest writing it in a loop must not grow the
    /// queue; one reconcile reads the state as it is now anyway.
    frontend_changed: AtomicBool,
    wake: EventFd,
    pending: AtomicBool,
    /// The worker's thread: its own completions need no wake-up.
    worker: OnceLock<ThreadId>,
}

impl Mailbox {
    /// An empty mailbox.
    pub fn new() -> Result<Self, BackendError> {
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| BackendError::Os {
                op: "eventfd",
                source: e.into(),
            })?;
        Ok(Self {
            completions: Mutex::new(Vec::with_capacity(32)),
            control: Mutex::new(Vec::new()),
            frontend_changed: AtomicBool::new(false),
            wake,
            pending: AtomicBool::new(false),
            worker: OnceLock::new(),
        })
    }

    fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            let _ = self.wake.write(1);
        }
    }

    /// Worker side, once: names the worker's thread. Completions made on it
    /// are then queued without waking it; the caller promises what the
    /// worker loop does: it drains the completion queue (services the
    /// controller) after anything that may complete a transfer and before it
    /// sleeps. Later calls change nothing (one mailbox, one worker).
    pub fn set_worker(&self, thread: ThreadId) {
        let _ = self.worker.set(thread);
    }

    /// Whether the calling thread is this mailbox's worker.
    fn on_worker_thread(&self) -> bool {
        self.worker
            .get()
            .is_some_and(|&t| t == std::thread::current().id())
    }

    /// Queues a control message and wakes the worker.
    pub fn send(&self, msg: Control) {
        if msg == Control::FrontendChanged {
            self.frontend_changed.store(true, Ordering::SeqCst);
        } else {
            lock_unpoisoned(&self.control).push(msg);
        }
        self.wake();
    }

    /// Worker side: consume the wake-up; call before draining, so anything
    /// queued afterwards wakes the worker again.
    ///
    /// Read first, then clear the flag: the other order lost wake-ups. A
    /// producer's write landing between the two was consumed by the read
    /// while the flag stayed set, so every later `wake` saw it set, wrote
    /// nothing, and the worker slept in `poll` with messages queued (a
    /// shutdown message among them would never be seen).
    pub fn clear_wake(&self) {
        let _ = self.wake.read();
        self.pending.store(false, Ordering::SeqCst);
    }

    /// Worker side: whether a wake-up is pending (a control message or a
    /// completion arrived since [`Self::clear_wake`]); one load, for the
    /// worker's spin loop.
    pub fn wake_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Worker side: swaps the queued completions into `out` (which should be
    /// empty; its capacity is recycled).
    pub fn take_completions(&self, out: &mut Vec<(TransferId, Completion)>) {
        std::mem::swap(&mut *lock_unpoisoned(&self.completions), out);
    }

    /// Worker side: whether completions are waiting.
    pub fn has_completions(&self) -> bool {
        !lock_unpoisoned(&self.completions).is_empty()
    }

    /// Worker side: takes the queued control messages.
    pub fn take_control(&self) -> Vec<Control> {
        let mut taken = std::mem::take(&mut *lock_unpoisoned(&self.control));
        if self.frontend_changed.swap(false, Ordering::SeqCst) {
            taken.push(Control::FrontendChanged);
        }
        taken
    }

    /// The fd that polls readable when the worker should wake.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

impl CompletionSink for Mailbox {
    /// Queues a completion; wakes the worker unless this is the worker's own
    /// thread (which drains the queue before it sleeps).
    fn complete(&self, id: TransferId, completion: Completion) {
        tracing::trace!(tid = %id, "device completion queued");
        lock_unpoisoned(&self.completions).push((id, completion));
        if !self.on_worker_thread() {
            self.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::TransferOutcome;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn done() -> Completion {
        Completion::failed(TransferOutcome::Cancelled, Vec::new())
    }

    fn readable(m: &Mailbox) -> bool {
        let mut fds = [PollFd::new(m.fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }

    /// Completes transfer `id` from a thread other than the worker, as a
    /// device's event thread does.
    fn complete_from_another_thread(m: &std::sync::Arc<Mailbox>, id: u64) {
        let m2 = std::sync::Arc::clone(m);
        std::thread::spawn(move || m2.complete(TransferId::for_tests(id), done()))
            .join()
            .unwrap();
    }

    #[test]
    fn a_completion_from_another_thread_wakes_the_worker() {
        let m = std::sync::Arc::new(Mailbox::new().unwrap());
        m.set_worker(std::thread::current().id());
        complete_from_another_thread(&m, 7);
        assert!(m.wake_pending());
        assert!(readable(&m));
        m.clear_wake();
        let mut out = Vec::new();
        m.take_completions(&mut out);
        assert_eq!(out.len(), 1);
        assert!(!readable(&m));
    }

    #[test]
    fn a_completion_on_the_worker_thread_is_queued_without_a_wake_up() {
        let m = std::sync::Arc::new(Mailbox::new().unwrap());
        m.set_worker(std::thread::current().id());
        m.complete(TransferId::for_tests(1), done());
        assert!(!m.wake_pending());
        assert!(!readable(&m));
        assert!(m.has_completions(), "queued for the worker's own drain");
        // Control messages always wake, whoever sends them.
        m.send(Control::FrontendChanged);
        assert!(m.wake_pending());
        m.clear_wake();
        // Any other thread is an ordinary producer.
        complete_from_another_thread(&m, 2);
        assert!(m.wake_pending());
        assert!(readable(&m));
    }

    #[test]
    fn frontend_changes_coalesce_into_one_message() {
        let m = Mailbox::new().unwrap();
        for _ in 0..10_000 {
            m.send(Control::FrontendChanged);
        }
        m.send(Control::Remove);
        assert_eq!(
            m.take_control(),
            vec![Control::Remove, Control::FrontendChanged]
        );
        assert!(m.take_control().is_empty());
    }

    #[test]
    fn only_the_served_mailbox_skips_the_wake_up() {
        let served = Mailbox::new().unwrap();
        let other = Mailbox::new().unwrap();
        served.set_worker(std::thread::current().id());
        other.complete(TransferId::for_tests(3), done());
        assert!(other.wake_pending());
        assert!(readable(&other));
    }
}
