//! A controller's own libusb context: created without device discovery,
//! devices wrapped into it from file descriptors, and its file descriptors
//! handed to the controller's `poll`.
//!
//! WHY a context per controller: libusb runs a transfer's callback on the
//! thread that handles the context's events. One shared context means one
//! event thread for every guest: each completion then has to cross to the
//! controller's thread (a hand-off on every URB's path, and a second runnable
//! thread competing for a small dom0's CPU), and releasing a device means
//! pausing a thread every guest depends on, where a stall or a self-deadlock
//! stops them all. A context that only its controller's thread ever polls
//! needs no locking dance: callbacks run on that thread, between two
//! services of its ring.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::raw::{c_int, c_short, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rusb::constants::LIBUSB_OPTION_NO_DEVICE_DISCOVERY;
use rusb::ffi::{
    libusb_context, libusb_free_pollfds, libusb_get_pollfds, libusb_pollfd,
    libusb_pollfds_handle_timeouts, libusb_set_pollfd_notifiers,
};
use rusb::{Context, DeviceHandle, UsbContext};

use crate::usb::IoFd;

/// `struct libusb_init_option` (libusb 1.0.27): an option and its argument.
#[repr(C)]
struct InitOption {
    option: c_int,
    /// The union `{ int ival; libusb_log_cb log_cbval; }`: pointer-sized.
    value: usize,
}

extern "C" {
    // libusb 1.0.27 (the vendored copy libusb1-sys builds); libusb1-sys 0.7
    // does not declare it.
    fn libusb_init_context(
        ctx: *mut *mut libusb_context,
        options: *const InitOption,
        num_options: c_int,
    ) -> c_int;
}

/// One file descriptor libusb wants polled, with its `poll` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PollFd {
    fd: RawFd,
    events: i16,
}

/// A libusb context private to one controller.
pub(in crate::usb::libusb) struct IoContext {
    context: Context,
    /// Set by libusb's pollfd notifiers (called on the thread that opens or
    /// closes a device); `fds` is re-read when it is.
    changed: Arc<AtomicBool>,
    fds: RefCell<Vec<PollFd>>,
}

impl std::fmt::Debug for IoContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoContext")
            .field("fds", &self.fds)
            .finish_non_exhaustive()
    }
}

extern "system" fn pollfd_added(_fd: c_int, _events: c_short, user_data: *mut c_void) {
    // SAFETY: `user_data` is the `AtomicBool` of an `IoContext`'s `changed`,
    // kept alive by that context, which removes the notifiers before it
    // releases it (see `Drop`).
    let changed = unsafe { &*user_data.cast::<AtomicBool>() };
    changed.store(true, Ordering::Release);
}

extern "system" fn pollfd_removed(_fd: c_int, user_data: *mut c_void) {
    // SAFETY: as in `pollfd_added`.
    let changed = unsafe { &*user_data.cast::<AtomicBool>() };
    changed.store(true, Ordering::Release);
}

impl IoContext {
    /// A context that scans no devices (and so runs no hotplug machinery):
    /// devices only enter it through [`IoContext::wrap`].
    pub(in crate::usb::libusb) fn new() -> Result<Self, rusb::Error> {
        let option = InitOption {
            option: c_int::try_from(LIBUSB_OPTION_NO_DEVICE_DISCOVERY).unwrap_or(2),
            value: 0,
        };
        let mut raw: *mut libusb_context = std::ptr::null_mut();
        // SAFETY: `raw` is a valid out pointer; one option, valid for the call.
        let rc = unsafe { libusb_init_context(&mut raw, &option, 1) };
        if rc != 0 || raw.is_null() {
            return Err(super::super::status::rusb_error(rc));
        }
        // SAFETY: `raw` was just created by libusb_init_context and is owned
        // by nothing else; rusb's `Context` calls libusb_exit when its last
        // clone (including those inside device handles) is dropped.
        let context = unsafe { Context::from_raw(raw) };
        // SAFETY: a plain query on a valid context.
        if unsafe { libusb_pollfds_handle_timeouts(context.as_raw()) } == 0 {
            // Only libusb builds without timerfd (Linux < 2.6.27) need a
            // timeout from the poller; transfers here have none anyway.
            tracing::warn!(
                "libusb needs explicit timeout handling here; transfer timeouts may be late"
            );
        }
        let changed = Arc::new(AtomicBool::new(true));
        // SAFETY: valid context; `user_data` points to the `AtomicBool` that
        // `changed` keeps alive until `Drop` has removed the notifiers.
        unsafe {
            libusb_set_pollfd_notifiers(
                context.as_raw(),
                Some(pollfd_added),
                Some(pollfd_removed),
                Arc::as_ptr(&changed).cast_mut().cast(),
            );
        }
        Ok(Self {
            context,
            changed,
            fds: RefCell::new(Vec::new()),
        })
    }

    /// The context, for handles and event handling.
    pub(in crate::usb::libusb) fn context(&self) -> &Context {
        &self.context
    }

    /// Opens the device behind `fd` (a `/dev/bus/usb/BBB/DDD` node) in this
    /// context. libusb does not take the descriptor: the caller keeps it open
    /// while the handle lives and closes it afterwards.
    pub(in crate::usb::libusb) fn wrap(
        &self,
        fd: RawFd,
    ) -> Result<DeviceHandle<Context>, rusb::Error> {
        // SAFETY: `fd` is an open usbfs node; the caller keeps it open for the
        // handle's lifetime (see `LibusbDevice`, which owns both).
        unsafe { self.context.open_device_with_fd(fd) }
    }

    /// Appends the descriptors to poll; the list is re-read from libusb only
    /// after it added or removed one.
    pub(in crate::usb::libusb) fn poll_fds<'a>(&'a self, out: &mut Vec<IoFd<'a>>) {
        let mut fds = self.fds.borrow_mut();
        if self.changed.swap(false, Ordering::AcqRel) {
            fds.clear();
            // SAFETY: valid context; the list is read and freed right here.
            let list = unsafe { libusb_get_pollfds(self.context.as_raw()) };
            if !list.is_null() {
                let mut i = 0;
                loop {
                    // SAFETY: a NULL-terminated array of pointers to
                    // `libusb_pollfd`, valid until `libusb_free_pollfds`;
                    // `i` never passes its terminating NULL.
                    let slot = unsafe { list.add(i) };
                    // SAFETY: `slot` points into that array (see above).
                    let entry: *mut libusb_pollfd = unsafe { *slot };
                    if entry.is_null() {
                        break;
                    }
                    // SAFETY: non-null entries point to valid structs.
                    let p = unsafe { &*entry };
                    fds.push(PollFd {
                        fd: p.fd,
                        events: p.events,
                    });
                    i += 1;
                }
                // SAFETY: returned by libusb_get_pollfds, freed once.
                unsafe { libusb_free_pollfds(list) };
            }
        }
        out.extend(fds.iter().map(|p| IoFd {
            // SAFETY: libusb keeps each listed descriptor open until it
            // removes it, which only closing a device or the context does;
            // both happen on the controller's thread, which does not close
            // anything while it holds these borrows (they end with its
            // `poll`). A removal also sets `changed`, so a stale entry is
            // never handed out again.
            fd: unsafe { BorrowedFd::borrow_raw(p.fd) },
            events: p.events,
        }));
    }
}

impl Drop for IoContext {
    fn drop(&mut self) {
        // SAFETY: valid context; after this libusb calls no notifier, so the
        // `AtomicBool` may go (device handles may keep the context itself
        // alive a little longer).
        unsafe {
            libusb_set_pollfd_notifiers(self.context.as_raw(), None, None, std::ptr::null_mut())
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `/dev/bus/usb` (this project's CI) creating a controller's
    /// context is an error value, never a panic; where USB exists, the fresh
    /// context already has descriptors to poll (its internal event source),
    /// and a second call without a change returns the same list.
    #[test]
    fn a_controller_context_is_an_error_or_has_descriptors() {
        match IoContext::new() {
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(ctx) => {
                let mut first = Vec::new();
                ctx.poll_fds(&mut first);
                assert!(!first.is_empty(), "libusb lists its event source");
                let mut again = Vec::new();
                ctx.poll_fds(&mut again);
                let raw = |v: &[IoFd<'_>]| {
                    v.iter()
                        .map(|f| (std::os::fd::AsRawFd::as_raw_fd(&f.fd), f.events))
                        .collect::<Vec<_>>()
                };
                assert_eq!(raw(&first), raw(&again));
            }
        }
    }
}
