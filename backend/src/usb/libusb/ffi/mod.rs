//! libusb asynchronous transfers (`libusb_alloc_transfer` / `submit` /
//! `cancel`), which rusb's safe API does not offer. Beside them, the other
//! calls rusb lacks: a controller's own context ([`context`]) and the usbfs
//! ioctls the monitor issues before it hands a node to a worker ([`usbfs`]).
//!
//! Ownership rules, the basis of every SAFETY comment below:
//! * Each submitted transfer owns a boxed [`TransferState`] leaked into
//!   `user_data`; the buffer libusb reads or writes lives in that box and is
//!   not touched by Rust until the callback runs.
//! * The callback [`transfer_done`] is the only place that reclaims the box
//!   and frees the `libusb_transfer`, exactly once per transfer.
//! * The in-flight map holds the raw transfer pointer for cancellation. It is
//!   inserted under the map lock *before* libusb can call back (the lock is
//!   held across `libusb_submit_transfer`), removed under the same lock before
//!   the transfer is freed, and `libusb_cancel_transfer` is only called with
//!   the lock held and the pointer still in the map: a cancelled pointer is
//!   never freed.
//! * The engine does NOT own the device handle, only its raw pointer
//!   ([`RawHandle`]): the state (and so the engine) may be dropped last inside
//!   a callback, inside libusb's event handling, where closing the handle
//!   would deadlock (`libusb_close` takes `open_devs_lock`, which event
//!   handling holds while it runs callbacks). The handle's owner
//!   ([`super::device::LibusbDevice`]) keeps it open until every transfer on
//!   it was delivered, and leaks it when some never come back, so no callback
//!   can ever release a handle.
//! * A buffer of mapped guest pages (bulk, see `UrbEngine::set_map_min_bytes`)
//!   is owned by the same box, so the mapping outlives libusb's (and the
//!   kernel's) use of it: it is released only when the completion, built in
//!   the callback, is dropped by the engine. A transfer that never comes back
//!   leaks its box and so keeps its mapping (see the device handle below).
//! * Callbacks run on the thread that handles the context's events: the
//!   controller's own thread ([`context::IoContext`]), so a completion is
//!   queued without crossing threads.
#![allow(unsafe_code)]

mod context;
pub(super) mod usbfs;

pub(super) use context::IoContext;

use std::collections::HashMap;
use std::os::raw::{c_int, c_uint, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

use rusb::constants::{
    LIBUSB_TRANSFER_SHORT_NOT_OK, LIBUSB_TRANSFER_TYPE_BULK, LIBUSB_TRANSFER_TYPE_CONTROL,
    LIBUSB_TRANSFER_TYPE_INTERRUPT, LIBUSB_TRANSFER_TYPE_ISOCHRONOUS,
};
use rusb::ffi::{
    libusb_alloc_transfer, libusb_cancel_transfer, libusb_free_transfer,
    libusb_iso_packet_descriptor, libusb_submit_transfer, libusb_transfer,
};
use rusb::{Context, DeviceHandle};

use super::iso_layout;
use super::status::{submit_error_outcome, transfer_outcome};
use crate::usb::proto::TransferOutcome;
use crate::usb::traits::CompletionSink;
use crate::usb::types::{
    Completion, IsoPacket, IsoPacketResult, Transfer, TransferId, TransferKind,
};
use crate::usb::{TransferBuffer, SETUP_STAGE_LEN};

/// A transfer pointer owned by libusb while in flight.
struct TransferPtr(*mut libusb_transfer);

// SAFETY: the pointer is only dereferenced by libusb (which is thread-safe)
// and freed by the callback under the rules in the module doc.
unsafe impl Send for TransferPtr {}

#[derive(Default)]
struct Books {
    in_flight: HashMap<TransferId, TransferPtr>,
    /// Submitted and not yet delivered to the sink.
    outstanding: usize,
}

/// How the buffer was laid out for libusb.
enum Layout {
    /// The setup stage written into the buffer's headroom, the data behind
    /// it (the engine's buffers have the room: nothing moves).
    Control,
    /// The caller's data as is: owned bytes or mapped guest pages.
    Plain,
    /// Packets already back to back from offset 0 (what the engine
    /// submits): the caller's data as is.
    IsoPacked { packets: Vec<IsoPacket> },
    /// Packets at other offsets gathered into a contiguous staging buffer
    /// (libusb lays iso packets back to back; the interface allows
    /// arbitrary offsets).
    IsoStaged {
        packets: Vec<IsoPacket>,
        staging: Vec<u8>,
    },
}

/// Everything a transfer needs back in its callback. It owns the buffer,
/// and so a guest mapping, until libusb has returned the transfer.
struct TransferState {
    engine: Arc<TransferEngine>,
    id: TransferId,
    buffer: TransferBuffer,
    layout: Layout,
}

impl TransferState {
    /// The bytes libusb transfers from or to.
    fn libusb_buffer(&mut self) -> (*mut u8, usize) {
        match &mut self.layout {
            Layout::IsoStaged { staging, .. } => (staging.as_mut_ptr(), staging.len()),
            Layout::Control => {
                let framed = self.buffer.framed_mut();
                (framed.as_mut_ptr(), framed.len())
            }
            Layout::Plain | Layout::IsoPacked { .. } => match self.buffer.guest() {
                Some(guest) => (guest.as_mut_ptr(), guest.len()),
                None => (self.buffer.as_mut_ptr(), self.buffer.len()),
            },
        }
    }
}

/// A device handle's raw pointer, for filling transfers. Not an owner: see
/// the module doc for who keeps it valid.
pub(super) struct RawHandle(*mut rusb::ffi::libusb_device_handle);

impl RawHandle {
    /// The pointer of `handle`, which the caller keeps open while any
    /// transfer of the engine it is given to is outstanding.
    pub(super) fn of(handle: &DeviceHandle<Context>) -> Self {
        Self(handle.as_raw())
    }
}

// SAFETY: a libusb device handle may be used from any thread (libusb locks
// internally); the pointer is only passed to libusb.
unsafe impl Send for RawHandle {}
// SAFETY: as above; shared use only reads the pointer value.
unsafe impl Sync for RawHandle {}

/// Submits, cancels and completes asynchronous transfers on one device handle.
pub(super) struct TransferEngine {
    handle: RawHandle,
    sink: Arc<dyn CompletionSink>,
    books: Mutex<Books>,
}

impl TransferEngine {
    pub(super) fn new(handle: RawHandle, sink: Arc<dyn CompletionSink>) -> Self {
        Self {
            handle,
            sink,
            books: Mutex::new(Books::default()),
        }
    }

    fn books(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, id: TransferId, outcome: TransferOutcome, buffer: TransferBuffer) {
        self.sink.complete(id, Completion::failed(outcome, buffer));
    }

    /// Starts a control, bulk, interrupt or isochronous transfer. Failures
    /// complete immediately through the sink.
    pub(super) fn submit(self: &Arc<Self>, id: TransferId, transfer: Transfer) {
        let Transfer {
            endpoint,
            kind,
            mut buffer,
            short_not_ok,
        } = transfer;
        let (transfer_type, layout, iso_count) = match kind {
            TransferKind::Control { setup } => {
                buffer.reserve_head(SETUP_STAGE_LEN);
                if let Some(head) = buffer.framed_mut().get_mut(..SETUP_STAGE_LEN) {
                    head.copy_from_slice(&setup.to_bytes());
                }
                (LIBUSB_TRANSFER_TYPE_CONTROL, Layout::Control, 0)
            }
            TransferKind::Bulk => (LIBUSB_TRANSFER_TYPE_BULK, Layout::Plain, 0),
            TransferKind::Interrupt => (LIBUSB_TRANSFER_TYPE_INTERRUPT, Layout::Plain, 0),
            TransferKind::Isochronous { packets } => {
                let n = packets.len();
                let layout = if iso_layout::is_packed(&packets, buffer.data_len()) {
                    Layout::IsoPacked { packets }
                } else if buffer.guest().is_some() {
                    return self.fail(id, TransferOutcome::Error, buffer);
                } else {
                    match iso_layout::gather(&packets, &buffer, endpoint & 0x80 != 0) {
                        Some(staging) => Layout::IsoStaged { packets, staging },
                        None => return self.fail(id, TransferOutcome::Error, buffer),
                    }
                };
                (LIBUSB_TRANSFER_TYPE_ISOCHRONOUS, layout, n)
            }
            _ => return self.fail(id, TransferOutcome::Error, buffer),
        };
        let Ok(iso_packets) = c_int::try_from(iso_count) else {
            return self.fail(id, TransferOutcome::Error, buffer);
        };
        let mut state = Box::new(TransferState {
            engine: self.clone(),
            id,
            buffer,
            layout,
        });
        let (data_ptr, data_len) = state.libusb_buffer();
        let Ok(data_len) = c_int::try_from(data_len) else {
            return self.fail(id, TransferOutcome::Error, state.buffer);
        };
        let lengths: Vec<c_uint> = match &state.layout {
            Layout::IsoPacked { packets } | Layout::IsoStaged { packets, .. } => {
                packets.iter().map(|p| p.length).collect()
            }
            _ => Vec::new(),
        };

        let mut books = self.books();
        if books.in_flight.contains_key(&id) {
            drop(books);
            // A duplicate id would make two completions indistinguishable.
            return self.fail(id, TransferOutcome::Error, state.buffer);
        }
        // SAFETY: plain allocation; a null result is handled below.
        let xfer = unsafe { libusb_alloc_transfer(iso_packets) };
        if xfer.is_null() {
            drop(books);
            return self.fail(id, TransferOutcome::Error, state.buffer);
        }
        let user_data = Box::into_raw(state);
        // SAFETY: `xfer` is a fresh transfer with room for `iso_packets`
        // descriptors; we fill its public fields as libusb_fill_*_transfer
        // does. The buffer pointer points into the boxed state (its owned
        // bytes, its staging buffer or the guest mapping it owns), which
        // stays alive and untouched until the callback reclaims it.
        unsafe {
            fill_transfer(
                xfer,
                FillArgs {
                    handle: self.handle.0,
                    endpoint,
                    transfer_type,
                    short_not_ok,
                    buffer: data_ptr,
                    length: data_len,
                    user_data: user_data.cast(),
                    iso_lengths: &lengths,
                },
            );
        }
        // SAFETY: `xfer` is fully initialised; on success libusb owns it until
        // it calls `transfer_done`.
        let rc = unsafe { libusb_submit_transfer(xfer) };
        if rc != 0 {
            // SAFETY: libusb refused the transfer, so it never calls back: we
            // still own the transfer.
            unsafe { libusb_free_transfer(xfer) };
            // SAFETY: and the state box, leaked above and not reclaimed elsewhere.
            let state = unsafe { Box::from_raw(user_data) };
            drop(books);
            return self.fail(id, submit_error_outcome(rc), state.buffer);
        }
        books.in_flight.insert(id, TransferPtr(xfer));
        books.outstanding += 1;
    }

    /// Asks libusb to cancel `id`; it then completes `Cancelled` (unless it
    /// finished first). Returns whether `id` was in flight.
    pub(super) fn cancel(&self, id: TransferId) -> bool {
        let books = self.books();
        let Some(ptr) = books.in_flight.get(&id) else {
            return false;
        };
        // SAFETY: the pointer is in the map, so the callback has not freed it
        // (it removes the entry under this lock first). Cancelling an already
        // finished transfer only returns NOT_FOUND.
        let _ = unsafe { libusb_cancel_transfer(ptr.0) };
        true
    }

    /// Cancels everything in flight.
    pub(super) fn cancel_all(&self) {
        let books = self.books();
        for ptr in books.in_flight.values() {
            // SAFETY: as in `cancel`: entries are valid while in the map and the lock is held.
            let _ = unsafe { libusb_cancel_transfer(ptr.0) };
        }
    }

    /// Transfers submitted and not yet delivered to the sink.
    pub(super) fn outstanding(&self) -> usize {
        self.books().outstanding
    }

    fn delivered(&self) {
        let mut books = self.books();
        books.outstanding = books.outstanding.saturating_sub(1);
    }
}

struct FillArgs<'a> {
    handle: *mut rusb::ffi::libusb_device_handle,
    endpoint: u8,
    transfer_type: u8,
    short_not_ok: bool,
    buffer: *mut u8,
    length: c_int,
    user_data: *mut c_void,
    iso_lengths: &'a [c_uint],
}

/// # Safety
/// `xfer` must come from `libusb_alloc_transfer(a.iso_lengths.len())` and not
/// be submitted yet.
unsafe fn fill_transfer(xfer: *mut libusb_transfer, a: FillArgs<'_>) {
    // SAFETY: the caller guarantees `xfer` is a valid, unsubmitted transfer.
    let t = unsafe { &mut *xfer };
    t.dev_handle = a.handle;
    t.flags = if a.short_not_ok {
        LIBUSB_TRANSFER_SHORT_NOT_OK
    } else {
        0
    };
    t.endpoint = a.endpoint;
    t.transfer_type = a.transfer_type;
    // No timeout: guest drivers time out themselves, with an unlink (spec 7.7).
    t.timeout = 0;
    t.length = a.length;
    t.callback = transfer_done;
    t.user_data = a.user_data;
    t.buffer = a.buffer;
    t.num_iso_packets = c_int::try_from(a.iso_lengths.len()).unwrap_or(0);
    // SAFETY: libusb allocated room for exactly this many descriptors after the struct.
    let descs = unsafe { iso_descriptors(xfer) };
    for (d, len) in descs.iter_mut().zip(a.iso_lengths) {
        d.length = *len;
    }
}

/// # Safety
/// `xfer` must be valid with `num_iso_packets` allocated descriptors, and no
/// other reference to them may exist.
unsafe fn iso_descriptors<'a>(
    xfer: *mut libusb_transfer,
) -> &'a mut [libusb_iso_packet_descriptor] {
    // SAFETY: caller's guarantee that `xfer` is valid.
    let n = usize::try_from(unsafe { (*xfer).num_iso_packets }).unwrap_or(0);
    // SAFETY: same; only the field's address is taken.
    let first = unsafe { std::ptr::addr_of_mut!((*xfer).iso_packet_desc) }
        .cast::<libusb_iso_packet_descriptor>();
    // SAFETY: libusb allocated `n` descriptors right after the struct (a
    // flexible array member), and the caller guarantees exclusive access.
    unsafe { std::slice::from_raw_parts_mut(first, n) }
}

/// libusb's completion callback, run inside event handling on the
/// controller's thread.
extern "system" fn transfer_done(xfer: *mut libusb_transfer) {
    // SAFETY: libusb calls this once per submitted transfer, with that
    // transfer, which is ours again until we free it below.
    let t = unsafe { &*xfer };
    let (user_data, status, actual) = (t.user_data, t.status, t.actual_length);
    // SAFETY: user_data is the box leaked in `submit`, reclaimed only here, once.
    let state = unsafe { Box::from_raw(user_data.cast::<TransferState>()) };
    // SAFETY: the transfer is complete and nothing else references its descriptors.
    let iso: Vec<(u32, i32)> = unsafe { iso_descriptors(xfer) }
        .iter()
        .map(|d| (d.actual_length, d.status))
        .collect();
    let engine = state.engine.clone();
    {
        let mut books = engine.books();
        if books.in_flight.get(&state.id).is_some_and(|p| p.0 == xfer) {
            books.in_flight.remove(&state.id);
        }
    }
    // SAFETY: removed from the map above, so no cancel can reach it any more.
    unsafe { libusb_free_transfer(xfer) };
    let id = state.id;
    let completion = build_completion(*state, status, actual, &iso);
    // The sink is foreign code; a panic must not unwind into libusb.
    if catch_unwind(AssertUnwindSafe(|| engine.sink.complete(id, completion))).is_err() {
        tracing::error!(%id, "completion sink panicked");
    }
    engine.delivered();
}

fn build_completion(
    state: TransferState,
    status: c_int,
    actual: c_int,
    iso: &[(u32, i32)],
) -> Completion {
    let TransferState {
        mut buffer, layout, ..
    } = state;
    let outcome = transfer_outcome(status);
    let actual = usize::try_from(actual).unwrap_or(0);
    match layout {
        Layout::Control | Layout::Plain => {
            let actual = actual.min(buffer.data_len());
            Completion::done(outcome, buffer, actual)
        }
        Layout::IsoPacked { packets } => {
            let (results, total) = iso_layout::results(&packets, iso);
            iso_completion(outcome, buffer, results, total)
        }
        Layout::IsoStaged { packets, staging } => {
            let (results, total) = iso_layout::scatter(&packets, &staging, iso, &mut buffer[..]);
            iso_completion(outcome, buffer, results, total)
        }
    }
}

fn iso_completion(
    outcome: TransferOutcome,
    buffer: TransferBuffer,
    results: Vec<IsoPacketResult>,
    total: usize,
) -> Completion {
    let error_count = results
        .iter()
        .filter(|r| r.outcome != TransferOutcome::Completed)
        .count();
    Completion {
        outcome,
        buffer,
        actual_length: total,
        iso: results,
        start_frame: 0,
        error_count: u32::try_from(error_count).unwrap_or(u32::MAX),
    }
}
