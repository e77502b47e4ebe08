//! The machinery shared by every emulated device: per-endpoint FIFO queues
//! (completion in order per endpoint), pending transfers and their retry,
//! cancellation, endpoint halts, standard requests, and the `UsbDevice` trait.
//!
//! Completions are delivered while the device lock is held: that is what keeps
//! them in order per endpoint, and the sink contract (never block, never call
//! back into the device) makes it safe.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use pvusb_support::lock_unpoisoned;

use super::descriptors::{DeviceSpec, EndpointType};
use super::device::{ControlRequest, DataKind, DataRequest, EmulatedDevice, Kicker, Reply};
use super::standard::{standard_request, StandardOutcome};
use crate::usb::error::UsbError;
use crate::usb::proto::TransferOutcome;
use crate::usb::traits::{CompletionSink, UsbDevice};
use crate::usb::types::{
    Completion, DeviceInfo, IsoPacketResult, Transfer, TransferId, TransferKind,
};

/// 16 OUT + 16 IN endpoint queues; control (both directions) uses index 0.
const QUEUES: usize = 32;

/// Called once when the device reports itself gone (the emulated bus removes it).
pub(super) type GoneHook = Box<dyn FnOnce() + Send>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Live,
    /// Vanished or unplugged: everything completes `NoDevice`.
    Gone,
    /// `shutdown` ran: everything completes `NoDevice`.
    Closed,
}

struct Queued {
    id: TransferId,
    transfer: Transfer,
    attempted: bool,
}

/// The device state behind the lock.
pub(super) struct Core {
    pub(super) device: Box<dyn EmulatedDevice>,
    pub(super) spec: DeviceSpec,
    sink: Arc<dyn CompletionSink>,
    queues: Vec<VecDeque<Queued>>,
    pub(super) halted: [bool; QUEUES],
    /// bConfigurationValue, 0 = unconfigured.
    pub(super) configuration: u8,
    /// (interface number, current alternate setting) of the active configuration.
    pub(super) alt_settings: Vec<(u8, u8)>,
    life: Life,
    /// The device vanished and the bus has not been told yet.
    gone_unreported: bool,
}

/// What the framework shares with [`Kicker`]s and the emulated bus.
pub(crate) struct Shared {
    core: Mutex<Core>,
    gone_hook: Mutex<Option<GoneHook>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The queue an endpoint's transfers go through.
pub(super) fn queue_index(endpoint: u8) -> usize {
    let number = usize::from(endpoint & 0x0f);
    if endpoint & 0x80 != 0 && number != 0 {
        number + 16
    } else {
        number
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        // A panic inside a device must not make every later call panic too.
        lock_unpoisoned(&self.core)
    }

    /// Retry the oldest transfer of every endpoint.
    pub(super) fn kick(&self) {
        let gone = {
            let mut core = self.lock();
            for q in 0..QUEUES {
                core.pump(q);
            }
            core.take_gone_event()
        };
        if gone {
            self.fire_gone_hook();
        }
    }

    /// The device was unplugged from the emulated bus: fail everything.
    pub(super) fn unplug(&self) {
        let mut core = self.lock();
        if core.life == Life::Live {
            core.life = Life::Gone;
        }
        core.drain(TransferOutcome::NoDevice);
        // The bus is removing the device already; its hook must not run.
        drop(core);
        lock_unpoisoned(&self.gone_hook).take();
    }

    /// Whether `shutdown` ran or the device went away.
    pub(super) fn is_closed(&self) -> bool {
        self.lock().life != Life::Live
    }

    fn fire_gone_hook(&self) {
        let hook = lock_unpoisoned(&self.gone_hook).take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

/// How one attempt ended; `None` from [`Core::attempt`] means pending.
struct Finished {
    outcome: TransferOutcome,
    actual_length: usize,
    iso: Vec<IsoPacketResult>,
}

impl Finished {
    fn new(outcome: TransferOutcome, actual_length: usize) -> Self {
        Self {
            outcome,
            actual_length,
            iso: Vec::new(),
        }
    }
}

impl Core {
    fn complete(&self, id: TransferId, transfer: Transfer, f: Finished) {
        let error_count = f
            .iso
            .iter()
            .filter(|r| r.outcome != TransferOutcome::Completed)
            .count();
        let completion = Completion {
            outcome: f.outcome,
            buffer: transfer.buffer,
            actual_length: f.actual_length,
            iso: f.iso,
            start_frame: 0,
            error_count: u32::try_from(error_count).unwrap_or(u32::MAX),
        };
        self.sink.complete(id, completion);
    }

    /// Completes everything queued with `outcome`.
    fn drain(&mut self, outcome: TransferOutcome) {
        for q in 0..QUEUES {
            while let Some(item) = self.queues.get_mut(q).and_then(VecDeque::pop_front) {
                if item.attempted {
                    self.device.cancelled(item.id);
                }
                self.complete(item.id, item.transfer, Finished::new(outcome, 0));
            }
        }
    }

    /// Returns whether the device just vanished (its hook must fire after unlocking).
    fn take_gone_event(&mut self) -> bool {
        std::mem::take(&mut self.gone_unreported)
    }

    fn submit(&mut self, id: TransferId, transfer: Transfer) {
        if self.life != Life::Live {
            return self.complete(id, transfer, Finished::new(TransferOutcome::NoDevice, 0));
        }
        if transfer.buffer.guest().is_some() {
            // Emulated devices work on bytes in Rust; they say they cannot
            // take guest pages (`DeviceInfo::transfers_guest_pages`).
            return self.complete(id, transfer, Finished::new(TransferOutcome::Error, 0));
        }
        let q = queue_index(if matches!(transfer.kind, TransferKind::Control { .. }) {
            0
        } else {
            transfer.endpoint
        });
        let Some(queue) = self.queues.get_mut(q) else {
            return self.complete(id, transfer, Finished::new(TransferOutcome::NoDevice, 0));
        };
        queue.push_back(Queued {
            id,
            transfer,
            attempted: false,
        });
        if queue.len() == 1 {
            self.pump(q);
        }
    }

    /// Attempts the oldest transfers of queue `q` until one is pending.
    fn pump(&mut self, q: usize) {
        loop {
            if self.life != Life::Live {
                return self.drain(TransferOutcome::NoDevice);
            }
            let Some(mut item) = self.queues.get_mut(q).and_then(VecDeque::pop_front) else {
                return;
            };
            let first = !item.attempted;
            match self.attempt(item.id, &mut item.transfer, first) {
                Some(finished) => self.complete(item.id, item.transfer, finished),
                None => {
                    item.attempted = true;
                    if let Some(queue) = self.queues.get_mut(q) {
                        queue.push_front(item);
                    }
                    return;
                }
            }
        }
    }

    fn cancel(&mut self, id: TransferId) {
        for q in 0..QUEUES {
            let Some(queue) = self.queues.get_mut(q) else {
                return;
            };
            let Some(pos) = queue.iter().position(|i| i.id == id) else {
                continue;
            };
            let Some(item) = queue.remove(pos) else {
                return;
            };
            if item.attempted {
                self.device.cancelled(id);
            }
            self.complete(
                id,
                item.transfer,
                Finished::new(TransferOutcome::Cancelled, 0),
            );
            if pos == 0 {
                self.pump(q);
            }
            return;
        }
    }

    /// One attempt at a transfer; `None` = pending.
    fn attempt(
        &mut self,
        id: TransferId,
        transfer: &mut Transfer,
        first: bool,
    ) -> Option<Finished> {
        let reply = match &transfer.kind {
            TransferKind::Control { setup } => {
                let setup = *setup;
                let len = transfer.buffer.len().min(usize::from(setup.w_length));
                let data = transfer.buffer.get_mut(..len).unwrap_or_default();
                match standard_request(self, setup, data) {
                    StandardOutcome::Handled(reply) => reply,
                    StandardOutcome::NotStandard => self.device.control(ControlRequest {
                        id,
                        first_attempt: first,
                        setup,
                        data,
                    }),
                }
            }
            TransferKind::SetConfiguration(value) => self.set_configuration(*value),
            TransferKind::SetInterface {
                interface,
                alt_setting,
            } => self.set_interface(*interface, *alt_setting),
            TransferKind::ClearHalt { endpoint } => self.clear_halt(*endpoint),
            TransferKind::Bulk | TransferKind::Interrupt | TransferKind::Isochronous { .. } => {
                return self.attempt_data(id, transfer, first);
            }
        };
        self.finish(reply, transfer, None, 0)
    }

    fn attempt_data(
        &mut self,
        id: TransferId,
        transfer: &mut Transfer,
        first: bool,
    ) -> Option<Finished> {
        let endpoint = transfer.endpoint;
        let q = queue_index(endpoint);
        let (kind, wanted) = match &transfer.kind {
            TransferKind::Bulk => (DataKind::Bulk, EndpointType::Bulk),
            TransferKind::Interrupt => (DataKind::Interrupt, EndpointType::Interrupt),
            TransferKind::Isochronous { packets } => {
                (DataKind::Isochronous(packets), EndpointType::Isochronous)
            }
            _ => return Some(Finished::new(TransferOutcome::Error, 0)),
        };
        if self.endpoint_type(endpoint) != Some(wanted) {
            // No such endpoint in the current configuration / alternate setting.
            return Some(Finished::new(TransferOutcome::Error, 0));
        }
        if self.halted.get(q).copied().unwrap_or(false) {
            return Some(Finished::new(TransferOutcome::Stall, 0));
        }
        if let DataKind::Isochronous(packets) = kind {
            let len = transfer.buffer.len() as u64;
            if packets
                .iter()
                .any(|p| u64::from(p.offset) + u64::from(p.length) > len)
            {
                return Some(Finished::new(TransferOutcome::Error, 0));
            }
        }
        let mut iso = Vec::new();
        let reply = self.device.data(DataRequest {
            id,
            first_attempt: first,
            endpoint,
            kind,
            buffer: &mut transfer.buffer,
            iso_results: &mut iso,
        });
        if reply == Reply::Stall {
            if let Some(h) = self.halted.get_mut(q) {
                *h = true;
            }
        }
        let packets = match &transfer.kind {
            TransferKind::Isochronous { packets } => packets.len(),
            _ => 0,
        };
        self.finish(reply, transfer, Some(iso), packets)
    }

    /// Turns a device reply into a completion (or pending).
    fn finish(
        &mut self,
        reply: Reply,
        transfer: &Transfer,
        iso: Option<Vec<IsoPacketResult>>,
        packets: usize,
    ) -> Option<Finished> {
        let mut f = match reply {
            Reply::Pending => return None,
            Reply::Done(n) => {
                let n = n.min(transfer.buffer.len());
                let short = transfer.is_in() && n < transfer.buffer.len();
                let outcome = if short && transfer.short_not_ok {
                    TransferOutcome::Error
                } else {
                    TransferOutcome::Completed
                };
                Finished::new(outcome, n)
            }
            Reply::Stall => Finished::new(TransferOutcome::Stall, 0),
            Reply::Fail(outcome) => Finished::new(outcome, 0),
            Reply::Gone => {
                if self.life == Life::Live {
                    self.gone_unreported = true;
                }
                self.life = Life::Gone;
                Finished::new(TransferOutcome::NoDevice, 0)
            }
        };
        if let Some(mut iso) = iso {
            if packets > 0 {
                // Packets the device did not report count as failed.
                iso.truncate(packets);
                while iso.len() < packets {
                    iso.push(IsoPacketResult {
                        actual_length: 0,
                        outcome: TransferOutcome::Error,
                    });
                }
                if f.outcome == TransferOutcome::Completed {
                    let total: u64 = iso.iter().map(|r| u64::from(r.actual_length)).sum();
                    f.actual_length = usize::try_from(total)
                        .unwrap_or(usize::MAX)
                        .min(transfer.buffer.len());
                }
                f.iso = iso;
            }
        }
        Some(f)
    }

    fn endpoint_type(&self, endpoint: u8) -> Option<EndpointType> {
        let config = self.spec.config(self.configuration)?;
        self.alt_settings.iter().find_map(|&(number, alt)| {
            config
                .interface(number, alt)?
                .endpoints
                .iter()
                .find(|e| e.address == endpoint)
                .map(|e| e.kind)
        })
    }

    pub(super) fn endpoint_exists(&self, endpoint: u8) -> bool {
        endpoint & 0x0f == 0 || self.endpoint_type(endpoint).is_some()
    }

    pub(super) fn set_configuration(&mut self, value: u8) -> Reply {
        let interfaces = match value {
            0 => Vec::new(),
            v => match self.spec.config(v) {
                Some(c) => c.interface_numbers(),
                None => return Reply::Stall,
            },
        };
        self.configuration = value;
        self.alt_settings = interfaces.into_iter().map(|n| (n, 0)).collect();
        self.halted = [false; QUEUES];
        self.device.configuration_changed(value);
        Reply::Done(0)
    }

    pub(super) fn set_interface(&mut self, interface: u8, alt: u8) -> Reply {
        let Some(config) = self.spec.config(self.configuration) else {
            return Reply::Stall;
        };
        let Some(spec) = config.interface(interface, alt) else {
            return Reply::Stall;
        };
        for e in &spec.endpoints {
            if let Some(h) = self.halted.get_mut(queue_index(e.address)) {
                *h = false;
            }
        }
        if let Some(entry) = self.alt_settings.iter_mut().find(|(n, _)| *n == interface) {
            entry.1 = alt;
        }
        self.device.interface_changed(interface, alt);
        Reply::Done(0)
    }

    pub(super) fn clear_halt(&mut self, endpoint: u8) -> Reply {
        if !self.endpoint_exists(endpoint) {
            return Reply::Stall;
        }
        if let Some(h) = self.halted.get_mut(queue_index(endpoint)) {
            *h = false;
        }
        self.device.halt_cleared(endpoint);
        Reply::Done(0)
    }

    pub(super) fn alt_setting(&self, interface: u8) -> Option<u8> {
        self.alt_settings
            .iter()
            .find(|(n, _)| *n == interface)
            .map(|(_, a)| *a)
    }
}

/// An emulated device opened through the [`UsbDevice`] trait.
pub struct EmulatedUsbDevice {
    info: DeviceInfo,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EmulatedUsbDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedUsbDevice")
            .field("busid", &self.info.busid)
            .finish_non_exhaustive()
    }
}

impl EmulatedUsbDevice {
    /// Wraps `device`; it starts configured with its first configuration, as
    /// the host kernel would have left it after enumeration.
    pub(super) fn new(
        info: DeviceInfo,
        mut device: Box<dyn EmulatedDevice>,
        sink: Arc<dyn CompletionSink>,
        gone_hook: Option<GoneHook>,
    ) -> Self {
        let spec = device.spec();
        let shared = Arc::new_cyclic(|weak| {
            device.attach(Kicker {
                shared: weak.clone(),
            });
            let mut queues = Vec::with_capacity(QUEUES);
            queues.resize_with(QUEUES, VecDeque::new);
            let core = Core {
                device,
                spec,
                sink,
                queues,
                halted: [false; QUEUES],
                configuration: 0,
                alt_settings: Vec::new(),
                life: Life::Live,
                gone_unreported: false,
            };
            Shared {
                core: Mutex::new(core),
                gone_hook: Mutex::new(gone_hook),
            }
        });
        {
            let mut core = shared.lock();
            if let Some(first) = core.spec.configs.first().map(|c| c.value) {
                core.set_configuration(first);
            }
        }
        Self { info, shared }
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn run(&self, f: impl FnOnce(&mut Core)) {
        let gone = {
            let mut core = self.shared.lock();
            f(&mut core);
            core.take_gone_event()
        };
        if gone {
            self.shared.fire_gone_hook();
        }
    }
}

impl UsbDevice for EmulatedUsbDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn submit(&mut self, id: TransferId, transfer: Transfer) {
        self.run(|core| core.submit(id, transfer));
    }

    fn cancel(&mut self, id: TransferId) {
        self.run(|core| core.cancel(id));
    }

    fn reset(&mut self) -> Result<(), UsbError> {
        let mut core = self.shared.lock();
        if core.life != Life::Live {
            return Err(UsbError::NoDevice(self.info.busid));
        }
        // Like a Linux usbfs reset: the configuration is restored, alternate
        // settings and halts are not.
        core.halted = [false; QUEUES];
        for entry in core.alt_settings.iter_mut() {
            entry.1 = 0;
        }
        core.device.reset();
        Ok(())
    }

    fn shutdown(&mut self) {
        let mut core = self.shared.lock();
        core.drain(TransferOutcome::Cancelled);
        if core.life == Life::Live {
            core.life = Life::Closed;
        }
        drop(core);
        lock_unpoisoned(&self.shared.gone_hook).take();
    }
}

impl Drop for EmulatedUsbDevice {
    fn drop(&mut self) {
        // Exactly one completion per id also when the engine forgets shutdown.
        self.shutdown();
    }
}
