//! The worker's inbox: device completions and control messages, plus one
//! eventfd that wakes the worker's poll.
//!
//! WHY this shape: completions arrive from device threads (libusb's event
//! thread, emulated timers) and must never contend with the worker for long.
//! Producers push into a small mutex-protected Vec; the worker swaps the whole
//! Vec out once per wake-up. The eventfd is written only when no wake-up is
//! already pending, so a burst of completions costs one syscall.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use nix::sys::eventfd::{EfdFlags, EventFd};

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
}

/// Completions and control messages for one worker.
#[derive(Debug)]
pub struct Mailbox {
    completions: Mutex<Vec<(TransferId, Completion)>>,
    control: Mutex<Vec<Control>>,
    wake: EventFd,
    pending: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
            wake,
            pending: AtomicBool::new(false),
        })
    }

    fn wake(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            let _ = self.wake.write(1);
        }
    }

    /// Queues a control message and wakes the worker.
    pub fn send(&self, msg: Control) {
        lock(&self.control).push(msg);
        self.wake();
    }

    /// Worker side: consume the wake-up; call before draining, so anything
    /// queued afterwards wakes the worker again.
    pub fn clear_wake(&self) {
        self.pending.store(false, Ordering::SeqCst);
        let _ = self.wake.read();
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
        std::mem::swap(&mut *lock(&self.completions), out);
    }

    /// Worker side: whether completions are waiting.
    pub fn has_completions(&self) -> bool {
        !lock(&self.completions).is_empty()
    }

    /// Worker side: takes the queued control messages.
    pub fn take_control(&self) -> Vec<Control> {
        std::mem::take(&mut *lock(&self.control))
    }

    /// The fd that polls readable when the worker should wake.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

impl CompletionSink for Mailbox {
    fn complete(&self, id: TransferId, completion: Completion) {
        lock(&self.completions).push((id, completion));
        self.wake();
    }
}
