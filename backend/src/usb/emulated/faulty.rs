//! Misbehaving devices for error-path tests: one that stalls everything, a
//! slow wrapper (completes after a delay, from a timer thread), and a
//! vanishing wrapper (disappears at its N-th transfer).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::descriptors::{DeviceSpec, EndpointSpec, EndpointType};
use super::device::{ControlRequest, DataRequest, EmulatedDevice, Kicker, Reply};
use crate::usb::types::TransferId;

/// Product id of the always-stall device.
pub const STALL_PRODUCT_ID: u16 = 0x0005;

/// Enumerates normally (the framework answers standard requests), then
/// stalls every class/vendor request and every data transfer.
#[derive(Debug, Default)]
pub struct StallDevice;

impl EmulatedDevice for StallDevice {
    fn spec(&self) -> DeviceSpec {
        let endpoints = vec![
            EndpointSpec::high_speed_bulk(0x01),
            EndpointSpec::high_speed_bulk(0x81),
            EndpointSpec::new(0x82, EndpointType::Interrupt, 64, 4),
        ];
        DeviceSpec::vendor_specific(STALL_PRODUCT_ID, "pvusb stall", endpoints)
    }

    fn control(&mut self, _req: ControlRequest<'_>) -> Reply {
        Reply::Stall
    }

    fn data(&mut self, _req: DataRequest<'_>) -> Reply {
        Reply::Stall
    }
}

/// The state changes a wrapper passes on unchanged to the device it wraps
/// (`self.inner`): the wrappers alter only how transfers complete, so the
/// inner device must keep following configuration, alternate settings,
/// halts and resets.
macro_rules! pass_state_changes_to_inner {
    () => {
        fn configuration_changed(&mut self, value: u8) {
            self.inner.configuration_changed(value);
        }

        fn interface_changed(&mut self, interface: u8, alt_setting: u8) {
            self.inner.interface_changed(interface, alt_setting);
        }

        fn halt_cleared(&mut self, endpoint: u8) {
            self.inner.halt_cleared(endpoint);
        }

        fn reset(&mut self) {
            self.inner.reset();
        }
    };
}

/// Wakes the framework at deadlines, from one thread per slow device. The
/// thread ends when the device (the sender) is dropped.
fn timer_thread(kicker: Kicker, deadlines: Receiver<Instant>) {
    let mut pending: BTreeMap<Instant, usize> = BTreeMap::new();
    loop {
        let next = pending.keys().next().copied();
        let received = match next {
            None => deadlines.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(at) => deadlines.recv_timeout(at.saturating_duration_since(Instant::now())),
        };
        match received {
            Ok(at) => *pending.entry(at).or_insert(0) += 1,
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                pending.retain(|at, _| *at > now);
                kicker.kick();
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Delays every transfer the inner device sees (class/vendor control and
/// data) by a fixed time; completion comes from a timer thread.
pub struct SlowDevice<D> {
    inner: D,
    delay: Duration,
    deadlines: HashMap<TransferId, Instant>,
    timer: Option<Sender<Instant>>,
}

impl<D> std::fmt::Debug for SlowDevice<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowDevice")
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl<D: EmulatedDevice> SlowDevice<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, delay: Duration) -> Self {
        Self {
            inner,
            delay,
            deadlines: HashMap::new(),
            timer: None,
        }
    }

    /// `true` when transfer `id` has waited long enough.
    fn due(&mut self, id: TransferId, first: bool) -> bool {
        let now = Instant::now();
        if first {
            let at = now + self.delay;
            self.deadlines.insert(id, at);
            if let Some(timer) = &self.timer {
                // A dead timer thread only means no wake-up; the next kick retries.
                let _ = timer.send(at);
            }
            return self.delay.is_zero();
        }
        match self.deadlines.get(&id) {
            Some(at) if *at <= now => {
                self.deadlines.remove(&id);
                true
            }
            Some(_) => false,
            None => true,
        }
    }
}

impl<D: EmulatedDevice> EmulatedDevice for SlowDevice<D> {
    fn spec(&self) -> DeviceSpec {
        self.inner.spec()
    }

    fn attach(&mut self, kicker: Kicker) {
        let (tx, rx) = mpsc::channel();
        let timer_kicker = kicker.clone();
        let spawned = std::thread::Builder::new()
            .name("pvusb-slow-timer".to_owned())
            .spawn(move || timer_thread(timer_kicker, rx));
        if spawned.is_ok() {
            self.timer = Some(tx);
        } else {
            tracing::warn!(
                "could not start the slow device's timer thread; it completes without delay"
            );
            self.delay = Duration::ZERO;
        }
        self.inner.attach(kicker);
    }

    fn control(&mut self, req: ControlRequest<'_>) -> Reply {
        if self.due(req.id, req.first_attempt) {
            // The inner device sees every request once, as a first attempt.
            self.inner.control(ControlRequest {
                first_attempt: true,
                ..req
            })
        } else {
            Reply::Pending
        }
    }

    fn data(&mut self, req: DataRequest<'_>) -> Reply {
        if self.due(req.id, req.first_attempt) {
            self.inner.data(DataRequest {
                first_attempt: true,
                ..req
            })
        } else {
            Reply::Pending
        }
    }

    pass_state_changes_to_inner!();

    fn cancelled(&mut self, id: TransferId) {
        self.deadlines.remove(&id);
        self.inner.cancelled(id);
    }
}

/// Behaves like the inner device until its `n`-th class/vendor or data
/// transfer, which makes it vanish: that transfer and every one in flight
/// complete `NoDevice`, and the emulated bus reports the device gone.
#[derive(Debug)]
pub struct VanishingDevice<D> {
    inner: D,
    remaining: u64,
}

impl<D: EmulatedDevice> VanishingDevice<D> {
    /// Wraps `inner`; it vanishes at transfer number `n` (1 = the first).
    pub fn new(inner: D, n: u64) -> Self {
        Self {
            inner,
            remaining: n,
        }
    }

    fn count(&mut self, first: bool) -> bool {
        if first {
            self.remaining = self.remaining.saturating_sub(1);
        }
        self.remaining == 0
    }
}

impl<D: EmulatedDevice> EmulatedDevice for VanishingDevice<D> {
    fn spec(&self) -> DeviceSpec {
        self.inner.spec()
    }

    fn attach(&mut self, kicker: Kicker) {
        self.inner.attach(kicker);
    }

    fn control(&mut self, req: ControlRequest<'_>) -> Reply {
        if self.count(req.first_attempt) {
            return Reply::Gone;
        }
        self.inner.control(req)
    }

    fn data(&mut self, req: DataRequest<'_>) -> Reply {
        if self.count(req.first_attempt) {
            return Reply::Gone;
        }
        self.inner.data(req)
    }

    pass_state_changes_to_inner!();

    fn cancelled(&mut self, id: TransferId) {
        self.inner.cancelled(id);
    }
}
