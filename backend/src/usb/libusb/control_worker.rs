//! The intercepted standard requests (spec 10): SET_CONFIGURATION,
//! SET_INTERFACE and CLEAR_FEATURE(ENDPOINT_HALT) are done through libusb's
//! synchronous calls so the host's view (claimed interfaces, toggles) stays
//! right. They block (a device may take up to usbfs's 5 s timeout), so they
//! run on a per-device helper thread, never on the controller's thread:
//! one slow device must not stall its controller's other devices.
//!
//! The helper exists only while there is work: it is started by the first
//! request after a quiet spell and ends after [`IDLE`] without one, so a
//! running daemon's threads are its controllers' (and this helper only
//! while a guest (re)configures a device).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use pvusb_support::{lock_unpoisoned, Chain};
use rusb::{Context, DeviceHandle};

use super::claims::Claims;
use crate::usb::proto::{BusId, TransferOutcome};
use crate::usb::traits::CompletionSink;
use crate::usb::types::{Completion, TransferId, TransferKind};
use crate::usb::TransferBuffer;

struct Job {
    id: TransferId,
    seq: u64,
    kind: TransferKind,
    buffer: TransferBuffer,
}

/// Queued jobs by id, with the sequence number of the live one: a cancelled
/// job is removed here and skipped by the worker, even if its id is reused.
/// (Intercepted requests have no data stage, so a cancelled one completes
/// with an empty buffer; the job's own buffer stays in the channel.)
#[derive(Default)]
struct Queue {
    queued: HashMap<TransferId, u64>,
    next_seq: u64,
    /// A helper thread is running and will take what is sent on `jobs`.
    /// Cleared by the helper itself, under this lock, when it ends.
    running: bool,
}

/// How long the helper waits for another request before it ends.
const IDLE: Duration = Duration::from_secs(2);

pub(super) struct ControlWorker {
    /// The running helper's channel.
    jobs: Option<Sender<Job>>,
    queue: Arc<Mutex<Queue>>,
    sink: Arc<dyn CompletionSink>,
    ctx: Arc<WorkerContext>,
    thread: Option<JoinHandle<()>>,
    stopped: bool,
}

/// What runs a job needs.
pub(super) struct WorkerContext {
    pub(super) handle: Arc<DeviceHandle<Context>>,
    pub(super) claims: Arc<Mutex<Claims>>,
    pub(super) busid: BusId,
    pub(super) num_configurations: u8,
}

impl ControlWorker {
    /// A worker with no helper running yet.
    pub(super) fn new(ctx: WorkerContext, sink: Arc<dyn CompletionSink>) -> Self {
        Self {
            jobs: None,
            queue: Arc::new(Mutex::new(Queue::default())),
            sink,
            ctx: Arc::new(ctx),
            thread: None,
            stopped: false,
        }
    }

    /// Starts a helper (the previous one has ended or is ending: it cleared
    /// `running` under the queue lock, which the caller holds).
    fn start_helper(&mut self) -> std::io::Result<()> {
        if let Some(old) = self.thread.take() {
            if old.join().is_err() {
                tracing::error!("control helper thread panicked");
            }
        }
        let (tx, rx) = mpsc::channel();
        let (ctx, q, s) = (self.ctx.clone(), self.queue.clone(), self.sink.clone());
        let thread = std::thread::Builder::new()
            .name(format!("pvusb-ctl-{}", self.ctx.busid))
            .spawn(move || run(&ctx, &rx, &q, &*s))?;
        self.jobs = Some(tx);
        self.thread = Some(thread);
        Ok(())
    }

    /// Queues an intercepted request. The buffer comes back in the completion.
    pub(super) fn submit(&mut self, id: TransferId, kind: TransferKind, buffer: TransferBuffer) {
        let seq = {
            let queue = Arc::clone(&self.queue);
            let mut q = lock_unpoisoned(&queue);
            if q.queued.contains_key(&id) || self.stopped {
                drop(q);
                let outcome = if self.stopped {
                    TransferOutcome::NoDevice
                } else {
                    TransferOutcome::Error
                };
                return self.sink.complete(id, Completion::failed(outcome, buffer));
            }
            if !q.running {
                if let Err(e) = self.start_helper() {
                    drop(q);
                    tracing::error!(busid = %self.ctx.busid, "cannot start the control helper thread: {e}", e = Chain(&e));
                    return self
                        .sink
                        .complete(id, Completion::failed(TransferOutcome::Error, buffer));
                }
                q.running = true;
            }
            q.next_seq += 1;
            let seq = q.next_seq;
            q.queued.insert(id, seq);
            seq
        };
        let sent = self.jobs.as_ref().map(|tx| {
            tx.send(Job {
                id,
                seq,
                kind,
                buffer,
            })
        });
        if !matches!(sent, Some(Ok(()))) {
            {
                // The helper is gone (it panicked): the next request starts one.
                let mut q = lock_unpoisoned(&self.queue);
                q.queued.remove(&id);
                q.running = false;
            }
            let buffer = match sent {
                Some(Err(mpsc::SendError(job))) => job.buffer,
                _ => TransferBuffer::default(),
            };
            self.sink
                .complete(id, Completion::failed(TransferOutcome::NoDevice, buffer));
        }
    }

    /// Cancels a queued request; returns whether it was queued here.
    pub(super) fn cancel(&self, id: TransferId) -> bool {
        let removed = lock_unpoisoned(&self.queue).queued.remove(&id);
        match removed {
            Some(_) => {
                self.sink.complete(
                    id,
                    Completion::failed(TransferOutcome::Cancelled, Vec::new()),
                );
                true
            }
            None => false,
        }
    }

    /// Cancels everything queued and waits for the request in progress;
    /// later requests complete `NoDevice`.
    pub(super) fn stop(&mut self) {
        let ids: Vec<TransferId> = {
            let q = lock_unpoisoned(&self.queue);
            self.stopped = true;
            q.queued.keys().copied().collect()
        };
        for id in ids {
            self.cancel(id);
        }
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("control helper thread panicked");
            }
        }
    }
}

impl Drop for ControlWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The helper: runs requests until none came for [`IDLE`] with none queued
/// (or the worker stopped and dropped the channel).
fn run(ctx: &WorkerContext, jobs: &Receiver<Job>, queue: &Mutex<Queue>, sink: &dyn CompletionSink) {
    loop {
        let job = match jobs.recv_timeout(IDLE) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let mut q = lock_unpoisoned(queue);
                if q.queued.is_empty() {
                    // Under the lock: a submit after this starts a new helper.
                    q.running = false;
                    return;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                lock_unpoisoned(queue).running = false;
                return;
            }
        };
        let live = {
            let mut q = lock_unpoisoned(queue);
            match q.queued.get(&job.id) {
                Some(seq) if *seq == job.seq => q.queued.remove(&job.id).is_some(),
                _ => false,
            }
        };
        if !live {
            // Cancelled (and completed) while queued.
            continue;
        }
        let outcome = execute(ctx, &job.kind);
        sink.complete(job.id, Completion::failed(outcome, job.buffer));
    }
}

fn outcome_of(result: rusb::Result<()>) -> TransferOutcome {
    match result {
        Ok(()) => TransferOutcome::Completed,
        Err(rusb::Error::NoDevice) => TransferOutcome::NoDevice,
        Err(rusb::Error::Pipe) | Err(rusb::Error::NotFound) | Err(rusb::Error::InvalidParam) => {
            TransferOutcome::Stall
        }
        Err(rusb::Error::Timeout) => TransferOutcome::Timeout,
        Err(_) => TransferOutcome::Error,
    }
}

fn execute(ctx: &WorkerContext, kind: &TransferKind) -> TransferOutcome {
    let handle = ctx.handle.as_ref();
    match *kind {
        TransferKind::SetConfiguration(value) => set_configuration(ctx, value),
        TransferKind::SetInterface {
            interface,
            alt_setting,
        } => outcome_of(handle.set_alternate_setting(interface, alt_setting)),
        TransferKind::ClearHalt { endpoint } => outcome_of(handle.clear_halt(endpoint)),
        _ => TransferOutcome::Error,
    }
}

/// Release interfaces, set the configuration (skipped when the device has a
/// single configuration and it is already active, as QEMU does: re-setting
/// it would reset every endpoint under the guest), claim the new interfaces.
///
/// On a worker's descriptor (privileges dropped, see `handoff`) a host
/// driver that the kernel binds to a new interface cannot be detached: the
/// request then completes with an error and the warning names the interface.
fn set_configuration(ctx: &WorkerContext, value: u8) -> TransferOutcome {
    let handle = ctx.handle.as_ref();
    let active = handle.active_configuration().ok();
    if ctx.num_configurations <= 1 && active == Some(value) && value != 0 {
        return TransferOutcome::Completed;
    }
    let mut claims = lock_unpoisoned(&ctx.claims);
    claims.release_all(handle);
    let result = if value == 0 {
        handle.unconfigure()
    } else {
        handle.set_active_configuration(value)
    };
    let outcome = outcome_of(result);
    if let Err(e) = claims.claim_active(handle, ctx.busid, Duration::ZERO) {
        tracing::warn!(busid = %ctx.busid, error = %Chain(&e), "claiming interfaces after SET_CONFIGURATION failed");
        if outcome == TransferOutcome::Completed {
            return TransferOutcome::Error;
        }
    }
    outcome
}
