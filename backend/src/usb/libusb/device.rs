//! A host device opened through libusb, driven through [`UsbDevice`].

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pvusb_support::{lock_unpoisoned, Chain};
use rusb::{Context, DeviceHandle, UsbContext};

use super::claims::Claims;
use super::control_worker::{ControlWorker, WorkerContext};
use super::ffi::{RawHandle, TransferEngine};
use super::status::usb_error;
use crate::usb::error::UsbError;
use crate::usb::proto::TransferOutcome;
use crate::usb::traits::{CompletionSink, UsbDevice};
use crate::usb::types::{Completion, DeviceInfo, Transfer, TransferId, TransferKind};

/// Longest `shutdown` waits for cancelled transfers to come back. libusb
/// cancels through the kernel, which answers within milliseconds unless the
/// host controller is wedged.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// An opened, claimed libusb device, wrapped into a controller's context.
pub struct LibusbDevice {
    info: DeviceInfo,
    /// The only owners of the handle are this device and its control worker
    /// (joined in `shutdown`), so it is closed on the controller's thread,
    /// never inside a libusb callback (see `ffi`). Declared before `node`:
    /// the handle closes first.
    handle: Arc<DeviceHandle<Context>>,
    /// The usbfs node the handle was wrapped from; libusb does not close it.
    node: Option<OwnedFd>,
    claims: Arc<Mutex<Claims>>,
    engine: Arc<TransferEngine>,
    worker: ControlWorker,
    sink: Arc<dyn CompletionSink>,
    /// The controller's context, for the event handling of `shutdown`.
    events: Context,
    closed: bool,
}

impl std::fmt::Debug for LibusbDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibusbDevice")
            .field("busid", &self.info.busid)
            .finish_non_exhaustive()
    }
}

impl LibusbDevice {
    /// Claims every interface of the active configuration of `handle` and
    /// starts the control worker.
    pub(super) fn new(
        info: DeviceInfo,
        handle: DeviceHandle<Context>,
        node: OwnedFd,
        sink: Arc<dyn CompletionSink>,
        events: Context,
    ) -> Result<Self, UsbError> {
        let handle = Arc::new(handle);
        let mut claims = Claims::default();
        claims.claim_active(&handle, info.busid, super::claims::OPEN_SETTLE)?;
        let claims = Arc::new(Mutex::new(claims));
        let engine = Arc::new(TransferEngine::new(RawHandle::of(&handle), sink.clone()));
        let ctx = WorkerContext {
            handle: handle.clone(),
            claims: claims.clone(),
            busid: info.busid,
            num_configurations: info.num_configurations,
        };
        let worker = ControlWorker::new(ctx, sink.clone());
        Ok(Self {
            info,
            handle,
            node: Some(node),
            claims,
            engine,
            worker,
            sink,
            events,
            closed: false,
        })
    }
}

impl LibusbDevice {
    /// Handles the context's events (completions run here, on the
    /// controller's thread, the only one that handles them) until every
    /// transfer was delivered, at most `limit`. Returns how many are left.
    fn wait_idle(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let left = self.engine.outstanding();
            let time = deadline.saturating_duration_since(Instant::now());
            if left == 0 || time.is_zero() {
                return left;
            }
            let slice = time.min(Duration::from_millis(50));
            if let Err(e) = self.events.handle_events(Some(slice)) {
                if e != rusb::Error::Interrupted {
                    tracing::warn!(busid = %self.info.busid, error = %Chain(&e), "libusb event handling failed while closing");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

impl UsbDevice for LibusbDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn submit(&mut self, id: TransferId, transfer: Transfer) {
        if self.closed {
            return self.sink.complete(
                id,
                Completion::failed(TransferOutcome::NoDevice, transfer.buffer),
            );
        }
        match transfer.kind {
            TransferKind::SetConfiguration(_)
            | TransferKind::SetInterface { .. }
            | TransferKind::ClearHalt { .. } => {
                self.worker.submit(id, transfer.kind, transfer.buffer)
            }
            _ => self.engine.submit(id, transfer),
        }
    }

    fn cancel(&mut self, id: TransferId) {
        if !self.engine.cancel(id) {
            self.worker.cancel(id);
        }
    }

    fn reset(&mut self) -> Result<(), UsbError> {
        if self.closed {
            return Err(UsbError::Closed(self.info.busid));
        }
        let busid = self.info.busid;
        self.handle.reset().map_err(|e| {
            // libusb says "not found" both when the device re-enumerated and
            // when it could not re-claim an interface afterwards.
            let taken = (e == rusb::Error::NotFound)
                .then(|| lock_unpoisoned(&self.claims).taken_by_driver(&self.handle))
                .flatten();
            match taken {
                Some(interface) => UsbError::DriverBound { busid, interface },
                None => usb_error(busid, "reset", e),
            }
        })
    }

    fn shutdown(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.worker.stop();
        self.engine.cancel_all();
        let left = self.wait_idle(SHUTDOWN_WAIT);
        if left > 0 {
            // Their memory stays owned by the callbacks, and the handle must
            // stay open for them (see `ffi`): it is leaked, with its claims
            // and its node, rather than closed under a transfer libusb may
            // still complete.
            tracing::error!(busid = %self.info.busid, left, "transfers did not come back after cancel; the device stays open until the daemon exits");
            std::mem::forget(Arc::clone(&self.handle));
            std::mem::forget(self.node.take());
            return;
        }
        lock_unpoisoned(&self.claims).give_back(&self.handle);
    }
}

impl Drop for LibusbDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}
