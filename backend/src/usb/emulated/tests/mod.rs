//! Tests of the emulated devices through the `UsbDevice` trait only, as the
//! URB engine sees them. This file holds the shared test driver.

mod devices;
mod standard;
mod storage;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::audio::{AudioDevice, AudioStats, EP_SINK, EP_SOURCE};
use super::faulty::{SlowDevice, StallDevice, VanishingDevice};
use super::keyboard::{KeyboardHandle, EP_REPORTS, REPORT_DESCRIPTOR};
use super::loopback::{LoopbackDevice, VENDOR_GET_COUNTERS, VENDOR_SET_MODE};
use super::mass_storage::store::{BlockStore, FileStore, MemoryStore};
use super::mass_storage::{MassStorageDevice, CBW_SIGNATURE, CSW_SIGNATURE, EP_IN, EP_OUT};
use super::{DeviceFactory, EmulatedHost};
use crate::usb::proto::{BusId, SetupPacket, Speed, TransferOutcome};
use crate::usb::{
    Completion, CompletionSink, HotplugEvent, IsoPacket, Transfer, TransferId, TransferKind,
    UsbDevice, UsbHost,
};

/// Transfer id `n` (these tests pick their own ids; no engine runs here).
fn tid(n: u64) -> TransferId {
    TransferId::for_tests(n)
}

/// Records completions; complains about a second completion of one id.
#[derive(Default)]
struct Collect {
    done: Mutex<Vec<(TransferId, Completion)>>,
    cv: Condvar,
}

impl CompletionSink for Collect {
    fn complete(&self, id: TransferId, completion: Completion) {
        self.done.lock().unwrap().push((id, completion));
        self.cv.notify_all();
    }
}

impl Collect {
    fn count(&self, id: u64) -> usize {
        let id = tid(id);
        self.done
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| *i == id)
            .count()
    }

    fn ids(&self) -> Vec<u64> {
        self.done
            .lock()
            .unwrap()
            .iter()
            .map(|(i, _)| i.raw_for_tests())
            .collect()
    }

    /// The completion of `id`, waiting (generously) for asynchronous ones.
    fn wait(&self, id: u64) -> Completion {
        let id = tid(id);
        let mut done = self.done.lock().unwrap();
        loop {
            if let Some((_, c)) = done.iter().find(|(i, _)| *i == id) {
                return c.clone();
            }
            let (d, timeout) = self.cv.wait_timeout(done, Duration::from_secs(30)).unwrap();
            assert!(!timeout.timed_out(), "transfer {id} never completed");
            done = d;
        }
    }
}

fn factory(
    f: impl Fn() -> Box<dyn super::EmulatedDevice> + Send + Sync + 'static,
) -> DeviceFactory {
    Arc::new(f)
}

fn open(host: &EmulatedHost, busid: &BusId) -> (Box<dyn UsbDevice>, Arc<Collect>) {
    let sink = Arc::new(Collect::default());
    let dev = host.open(busid, sink.clone()).unwrap();
    (dev, sink)
}

fn plug(f: DeviceFactory) -> (EmulatedHost, BusId, Box<dyn UsbDevice>, Arc<Collect>) {
    let host = EmulatedHost::new();
    let busid = host.add_next(f).unwrap();
    let (dev, sink) = open(&host, &busid);
    (host, busid, dev, sink)
}

/// Runs one transfer on a device whose transfers complete synchronously.
struct Driver {
    dev: Box<dyn UsbDevice>,
    sink: Arc<Collect>,
    next: u64,
}

impl Driver {
    fn new(dev: Box<dyn UsbDevice>, sink: Arc<Collect>) -> Self {
        Self {
            dev,
            sink,
            next: 1000,
        }
    }

    fn run(&mut self, transfer: Transfer) -> Completion {
        self.next += 1;
        let id = self.next;
        self.dev.submit(tid(id), transfer);
        let c = self.sink.wait(id);
        assert_eq!(self.sink.count(id), 1);
        c
    }

    /// Runs a transfer with a zeroed `len`-byte buffer (nothing to send).
    fn transfer(
        &mut self,
        endpoint: u8,
        kind: TransferKind,
        len: usize,
        short_not_ok: bool,
    ) -> Completion {
        self.run(Transfer {
            endpoint,
            kind,
            buffer: vec![0; len].into(),
            short_not_ok,
        })
    }

    fn control_in(&mut self, rt: u8, req: u8, value: u16, index: u16, len: u16) -> Completion {
        let setup = SetupPacket::new(rt, req, value, index, len);
        self.run(Transfer {
            endpoint: 0x80,
            kind: TransferKind::Control { setup },
            buffer: vec![0; len.into()].into(),
            short_not_ok: false,
        })
    }

    fn control_out(
        &mut self,
        rt: u8,
        req: u8,
        value: u16,
        index: u16,
        data: Vec<u8>,
    ) -> Completion {
        let setup = SetupPacket::new(rt, req, value, index, u16::try_from(data.len()).unwrap());
        self.run(Transfer {
            endpoint: 0,
            kind: TransferKind::Control { setup },
            buffer: data.into(),
            short_not_ok: false,
        })
    }

    fn bulk(&mut self, endpoint: u8, buffer: Vec<u8>) -> Completion {
        self.run(Transfer {
            endpoint,
            kind: TransferKind::Bulk,
            buffer: buffer.into(),
            short_not_ok: false,
        })
    }

    fn data_in(c: &Completion) -> &[u8] {
        &c.buffer[..c.actual_length]
    }
}
