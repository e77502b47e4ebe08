//! Tests of the emulated devices through the `UsbDevice` trait only, as the
//! URB engine sees them.

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
    fn count(&self, id: TransferId) -> usize {
        self.done
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| *i == id)
            .count()
    }

    fn ids(&self) -> Vec<TransferId> {
        self.done.lock().unwrap().iter().map(|(i, _)| *i).collect()
    }

    /// The completion of `id`, waiting (generously) for asynchronous ones.
    fn wait(&self, id: TransferId) -> Completion {
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
    next: TransferId,
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
        self.dev.submit(id, transfer);
        let c = self.sink.wait(id);
        assert_eq!(self.sink.count(id), 1);
        c
    }

    fn control_in(&mut self, rt: u8, req: u8, value: u16, index: u16, len: u16) -> Completion {
        let setup = SetupPacket::new(rt, req, value, index, len);
        self.run(Transfer {
            endpoint: 0x80,
            kind: TransferKind::Control { setup },
            buffer: vec![0; len.into()],
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
        let setup = SetupPacket::new(rt, req, value, index, data.len() as u16);
        self.run(Transfer {
            endpoint: 0,
            kind: TransferKind::Control { setup },
            buffer: data,
            short_not_ok: false,
        })
    }

    fn bulk(&mut self, endpoint: u8, buffer: Vec<u8>) -> Completion {
        self.run(Transfer {
            endpoint,
            kind: TransferKind::Bulk,
            buffer,
            short_not_ok: false,
        })
    }

    fn data_in(c: &Completion) -> &[u8] {
        &c.buffer[..c.actual_length]
    }
}

/// Walks a configuration descriptor; returns (interfaces, endpoints) seen.
fn parse_config(d: &[u8]) -> (usize, usize) {
    assert_eq!(d[1], 2);
    assert_eq!(
        u16::from_le_bytes([d[2], d[3]]) as usize,
        d.len(),
        "wTotalLength"
    );
    let (mut interfaces, mut endpoints, mut pos) = (0, 0, 0);
    while pos < d.len() {
        let len = d[pos] as usize;
        assert!(
            len >= 2 && pos + len <= d.len(),
            "descriptor at {pos} overruns"
        );
        match d[pos + 1] {
            4 => interfaces += 1,
            5 => endpoints += 1,
            _ => {}
        }
        pos += len;
    }
    (interfaces, endpoints)
}

fn all_factories() -> Vec<(DeviceFactory, Speed, (usize, usize))> {
    let kb = KeyboardHandle::new();
    vec![
        (
            factory(|| Box::new(LoopbackDevice::new(4096))),
            Speed::High,
            (1, 2),
        ),
        (
            factory(|| Box::new(MassStorageDevice::new(Arc::new(MemoryStore::new(64))))),
            Speed::High,
            (1, 2),
        ),
        (factory(move || Box::new(kb.device())), Speed::Full, (1, 1)),
        (
            factory(|| Box::new(AudioDevice::new(Arc::default()))),
            Speed::Full,
            (2, 2),
        ),
        (factory(|| Box::new(StallDevice)), Speed::High, (1, 3)),
    ]
}

#[test]
fn descriptors_parse_back() {
    for (f, speed, (ifaces, eps)) in all_factories() {
        let (host, busid, dev, sink) = plug(f);
        let info = host
            .list()
            .unwrap()
            .into_iter()
            .find(|i| i.busid == busid)
            .unwrap();
        assert_eq!(info.speed, speed);
        assert!(!info.is_hub);
        let mut d = Driver::new(dev, sink);
        let dd = d.control_in(0x80, 6, 0x0100, 0, 18);
        assert_eq!(dd.outcome, TransferOutcome::Completed);
        assert_eq!(Driver::data_in(&dd), &info.device_descriptor[..]);
        assert_eq!(&dd.buffer[..2], &[18, 1]);
        // Truncated to wLength, then the whole configuration.
        let head = d.control_in(0x80, 6, 0x0200, 0, 9);
        assert_eq!(head.actual_length, 9);
        let total = u16::from_le_bytes([head.buffer[2], head.buffer[3]]);
        let full = d.control_in(0x80, 6, 0x0200, 0, total);
        assert_eq!(parse_config(Driver::data_in(&full)), (ifaces, eps));
        // Strings: language list, then the product name in UTF-16LE.
        let langs = d.control_in(0x80, 6, 0x0300, 0, 255);
        assert_eq!(Driver::data_in(&langs), &[4, 3, 0x09, 0x04]);
        let product = d.control_in(0x80, 6, 0x0302, 0x0409, 255);
        let units: Vec<u16> = Driver::data_in(&product)[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(Some(String::from_utf16(&units).unwrap()), info.product);
        // Unknown descriptors stall; GET_CONFIGURATION reports the active one.
        assert_eq!(
            d.control_in(0x80, 6, 0x0309, 0, 255).outcome,
            TransferOutcome::Stall
        );
        assert_eq!(Driver::data_in(&d.control_in(0x80, 8, 0, 0, 1)), &[1]);
    }
}

#[test]
fn standard_requests_and_intercepted_kinds() {
    let (_host, _busid, dev, sink) = plug(factory(|| Box::new(LoopbackDevice::new(64))));
    let mut d = Driver::new(dev, sink);
    let run = |d: &mut Driver, kind| {
        d.run(Transfer {
            endpoint: 0,
            kind,
            buffer: Vec::new(),
            short_not_ok: false,
        })
    };
    assert_eq!(
        run(&mut d, TransferKind::SetConfiguration(7)).outcome,
        TransferOutcome::Stall
    );
    assert_eq!(
        run(&mut d, TransferKind::SetConfiguration(0)).outcome,
        TransferOutcome::Completed
    );
    // Unconfigured: data endpoints do not exist.
    assert_eq!(d.bulk(0x01, vec![1, 2, 3]).outcome, TransferOutcome::Error);
    assert_eq!(
        run(&mut d, TransferKind::SetConfiguration(1)).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        d.bulk(0x01, vec![1, 2, 3]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        run(
            &mut d,
            TransferKind::SetInterface {
                interface: 0,
                alt_setting: 1
            }
        )
        .outcome,
        TransferOutcome::Stall
    );
    assert_eq!(
        run(
            &mut d,
            TransferKind::SetInterface {
                interface: 0,
                alt_setting: 0
            }
        )
        .outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        run(&mut d, TransferKind::ClearHalt { endpoint: 0x05 }).outcome,
        TransferOutcome::Stall
    );
    // Endpoints that do not exist or have another type.
    assert_eq!(d.bulk(0x02, vec![0; 4]).outcome, TransferOutcome::Error);
    let int = d.run(Transfer {
        endpoint: 0x81,
        kind: TransferKind::Interrupt,
        buffer: vec![0; 8],
        short_not_ok: false,
    });
    assert_eq!(int.outcome, TransferOutcome::Error);
    // SET_FEATURE(HALT) then GET_STATUS shows it; CLEAR_FEATURE clears it.
    assert_eq!(
        d.control_out(0x02, 3, 0, 0x81, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(Driver::data_in(&d.control_in(0x82, 0, 0, 0x81, 2)), &[1, 0]);
    assert_eq!(d.bulk(0x81, vec![0; 8]).outcome, TransferOutcome::Stall);
    assert_eq!(
        d.control_out(0x02, 1, 0, 0x81, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(Driver::data_in(&d.control_in(0x82, 0, 0, 0x81, 2)), &[0, 0]);
}

#[test]
fn loopback_and_source_modes() {
    let (_host, _busid, dev, sink) = plug(factory(|| Box::new(LoopbackDevice::new(1024))));
    let mut d = Driver::new(dev, sink);
    let payload: Vec<u8> = (0..600u32).map(|i| (i * 7) as u8).collect();
    let out = d.bulk(0x01, payload.clone());
    assert_eq!(
        (out.outcome, out.actual_length),
        (TransferOutcome::Completed, 600)
    );
    assert_eq!(out.buffer, payload, "the OUT buffer comes back");
    let back = d.bulk(0x81, vec![0; 1024]);
    assert_eq!(Driver::data_in(&back), &payload[..]);
    // Short IN with short_not_ok is an error.
    let strict = d.run(Transfer {
        endpoint: 0x81,
        kind: TransferKind::Bulk,
        buffer: vec![0; 1024],
        short_not_ok: true,
    });
    assert_eq!(strict.outcome, TransferOutcome::Error);
    // Source mode: a deterministic pattern continuing across transfers.
    assert_eq!(
        d.control_out(0x40, VENDOR_SET_MODE, 1, 0, vec![]).outcome,
        TransferOutcome::Completed
    );
    let a = d.bulk(0x81, vec![0; 300]);
    let b = d.bulk(0x81, vec![0; 300]);
    let stream: Vec<u8> = [Driver::data_in(&a), Driver::data_in(&b)].concat();
    assert!(stream
        .iter()
        .enumerate()
        .all(|(i, &x)| x == LoopbackDevice::pattern_byte(i as u64)));
    assert_eq!(
        d.control_out(0x40, VENDOR_SET_MODE, 9, 0, vec![]).outcome,
        TransferOutcome::Stall
    );
    let counters = d.control_in(0xc0, VENDOR_GET_COUNTERS, 0, 0, 16);
    let consumed = u64::from_le_bytes(counters.buffer[..8].try_into().unwrap());
    let produced = u64::from_le_bytes(counters.buffer[8..].try_into().unwrap());
    assert_eq!((consumed, produced), (600, 600 + 600 + 600));
}

// ---- mass storage ----

struct Bot {
    d: Driver,
    tag: u32,
}

impl Bot {
    fn cbw(&mut self, cdb: &[u8], len: u32, dir_in: bool) -> Vec<u8> {
        self.tag += 1;
        let mut b = Vec::new();
        b.extend_from_slice(&CBW_SIGNATURE.to_le_bytes());
        b.extend_from_slice(&self.tag.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&[if dir_in { 0x80 } else { 0 }, 0, cdb.len() as u8]);
        let mut padded = cdb.to_vec();
        padded.resize(16, 0);
        b.extend_from_slice(&padded);
        b
    }

    fn csw(&mut self) -> (u32, u8) {
        let c = self.d.bulk(EP_IN, vec![0; 13]);
        assert_eq!(
            (c.outcome, c.actual_length),
            (TransferOutcome::Completed, 13)
        );
        assert_eq!(
            u32::from_le_bytes(c.buffer[0..4].try_into().unwrap()),
            CSW_SIGNATURE
        );
        assert_eq!(
            u32::from_le_bytes(c.buffer[4..8].try_into().unwrap()),
            self.tag,
            "CSW tag"
        );
        (
            u32::from_le_bytes(c.buffer[8..12].try_into().unwrap()),
            c.buffer[12],
        )
    }

    /// Command with an IN data phase of `len`; returns data, residue, status.
    fn read(&mut self, cdb: &[u8], len: u32) -> (Vec<u8>, u32, u8) {
        let cbw = self.cbw(cdb, len, true);
        assert_eq!(self.d.bulk(EP_OUT, cbw).outcome, TransferOutcome::Completed);
        let data = if len > 0 {
            let c = self.d.bulk(EP_IN, vec![0; len as usize]);
            if c.outcome == TransferOutcome::Stall {
                self.clear_halt(EP_IN);
            }
            Driver::data_in(&c).to_vec()
        } else {
            Vec::new()
        };
        let (residue, status) = self.csw();
        (data, residue, status)
    }

    fn write(&mut self, cdb: &[u8], data: Vec<u8>) -> (u32, u8) {
        let cbw = self.cbw(cdb, data.len() as u32, false);
        assert_eq!(self.d.bulk(EP_OUT, cbw).outcome, TransferOutcome::Completed);
        let c = self.d.bulk(EP_OUT, data);
        assert_eq!(c.outcome, TransferOutcome::Completed);
        self.csw()
    }

    fn clear_halt(&mut self, endpoint: u8) {
        let c = self.d.run(Transfer {
            endpoint: 0,
            kind: TransferKind::ClearHalt { endpoint },
            buffer: vec![],
            short_not_ok: false,
        });
        assert_eq!(c.outcome, TransferOutcome::Completed);
    }
}

fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [op, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn storage_round_trip(store: Arc<dyn BlockStore>) {
    let blocks = (store.len() / 512) as u32;
    let (_host, _busid, dev, sink) = plug(factory(move || {
        Box::new(MassStorageDevice::new(store.clone()))
    }));
    let mut bot = Bot {
        d: Driver::new(dev, sink),
        tag: 0,
    };
    assert_eq!(
        Driver::data_in(&bot.d.control_in(0xa1, 0xfe, 0, 0, 1)),
        &[0],
        "Get Max LUN"
    );
    let (inq, residue, status) = bot.read(&[0x12, 0, 0, 0, 36, 0], 36);
    assert_eq!((inq.len(), residue, status), (36, 0, 0));
    assert_eq!(&inq[8..13], b"pvusb");
    assert_eq!(bot.read(&[0, 0, 0, 0, 0, 0], 0).2, 0, "TEST UNIT READY");
    let (cap, _, status) = bot.read(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(status, 0);
    assert_eq!(
        u32::from_be_bytes(cap[0..4].try_into().unwrap()),
        blocks - 1
    );
    assert_eq!(u32::from_be_bytes(cap[4..8].try_into().unwrap()), 512);
    let (mode, _, status) = bot.read(&[0x1a, 0, 0x3f, 0, 192, 0], 192);
    assert_eq!((mode.len(), status), (4, 0));
    let (mode10, _, status) = bot.read(&[0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 255, 0], 255);
    assert_eq!((mode10.len(), status), (8, 0));
    assert_eq!(
        bot.read(&[0x1e, 0, 0, 0, 1, 0], 0).2,
        0,
        "PREVENT ALLOW MEDIUM REMOVAL"
    );

    // 256 KiB of pseudo-random data in 32 KiB commands, read back in 64 KiB ones.
    let mut seed = 0x1234_5678u32;
    let data: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        })
        .collect();
    for (i, chunk) in data.chunks(32 * 1024).enumerate() {
        assert_eq!(
            bot.write(&rw10(0x2a, 8 + i as u32 * 64, 64), chunk.to_vec()),
            (0, 0)
        );
    }
    let mut back = Vec::new();
    for i in 0..4u32 {
        let (chunk, residue, status) = bot.read(&rw10(0x28, 8 + i * 128, 128), 64 * 1024);
        assert_eq!((residue, status), (0, 0));
        back.extend_from_slice(&chunk);
    }
    assert_eq!(checksum(&back), checksum(&data));
    assert_eq!(back, data);

    // Out of range: failed CSW, data phase stalled, sense LBA OUT OF RANGE.
    let (_, residue, status) = bot.read(&rw10(0x28, blocks, 1), 512);
    assert_eq!((residue, status), (512, 1));
    let (sense, _, status) = bot.read(&[0x03, 0, 0, 0, 18, 0], 18);
    assert_eq!((status, sense[2], sense[12]), (0, 0x05, 0x21));
    // Unknown opcode: ILLEGAL REQUEST / invalid command operation code.
    assert_eq!(bot.read(&[0xee, 0, 0, 0, 0, 0], 0).2, 1);
    let (sense, _, _) = bot.read(&[0x03, 0, 0, 0, 18, 0], 18);
    assert_eq!((sense[2], sense[12]), (0x05, 0x20));
    // Host expects less than the command moves: phase error (BOT case 7).
    let (short, residue, status) = bot.read(&rw10(0x28, 0, 2), 512);
    assert_eq!((short.len(), residue, status), (512, 0, 2));
    // Host expects more: short data, residue, passed (case 5).
    let (inq, residue, status) = bot.read(&[0x12, 0, 0, 0, 36, 0], 100);
    assert_eq!((inq.len(), residue, status), (36, 64, 0));
}

#[test]
fn storage_round_trip_in_memory() {
    storage_round_trip(Arc::new(MemoryStore::new(2048)));
}

#[test]
fn storage_round_trip_file_backed() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::create(&dir.path().join("disk.img"), 2048).unwrap();
    storage_round_trip(Arc::new(store));
}

#[test]
fn invalid_cbw_stalls_until_reset_recovery() {
    let (_host, _busid, dev, sink) = plug(factory(|| {
        Box::new(MassStorageDevice::new(Arc::new(MemoryStore::new(16))))
    }));
    let mut bot = Bot {
        d: Driver::new(dev, sink),
        tag: 0,
    };
    for garbage in [vec![0u8; 31], vec![0x55; 7], {
        let mut wrong_lun = bot.cbw(&[0, 0, 0, 0, 0, 0], 0, false);
        wrong_lun[13] = 3;
        wrong_lun
    }] {
        assert_eq!(bot.d.bulk(EP_OUT, garbage).outcome, TransferOutcome::Stall);
        // Clearing the halts is not enough: BOT 6.6.1 wants a reset recovery.
        bot.clear_halt(EP_OUT);
        bot.clear_halt(EP_IN);
        let cbw = bot.cbw(&[0, 0, 0, 0, 0, 0], 0, false);
        assert_eq!(bot.d.bulk(EP_OUT, cbw).outcome, TransferOutcome::Stall);
        bot.clear_halt(EP_OUT);
        assert_eq!(
            bot.d.bulk(EP_IN, vec![0; 13]).outcome,
            TransferOutcome::Stall
        );
        bot.clear_halt(EP_IN);
        assert_eq!(
            bot.d.control_out(0x21, 0xff, 0, 0, vec![]).outcome,
            TransferOutcome::Completed
        );
        assert_eq!(bot.read(&[0, 0, 0, 0, 0, 0], 0).2, 0);
    }
    // Direction disagreement (host OUT, device IN): stall, then phase error.
    let cbw = bot.cbw(&[0x12, 0, 0, 0, 36, 0], 36, false);
    assert_eq!(bot.d.bulk(EP_OUT, cbw).outcome, TransferOutcome::Completed);
    assert_eq!(
        bot.d.bulk(EP_OUT, vec![0; 36]).outcome,
        TransferOutcome::Stall
    );
    bot.clear_halt(EP_OUT);
    assert_eq!(bot.csw(), (36, 2));
}

// ---- faulty devices ----

#[test]
fn stall_device_stalls_and_halts() {
    let (_host, _busid, dev, sink) = plug(factory(|| Box::new(StallDevice)));
    let mut d = Driver::new(dev, sink);
    assert_eq!(
        d.control_in(0x80, 6, 0x0100, 0, 18).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        d.control_in(0xc0, 1, 0, 0, 4).outcome,
        TransferOutcome::Stall
    );
    assert_eq!(
        d.control_out(0x21, 1, 0, 0, vec![1]).outcome,
        TransferOutcome::Stall
    );
    assert_eq!(d.bulk(0x01, vec![1; 8]).outcome, TransferOutcome::Stall);
    assert_eq!(
        Driver::data_in(&d.control_in(0x82, 0, 0, 0x01, 2)),
        &[1, 0],
        "halted"
    );
    assert_eq!(
        d.control_out(0x02, 1, 0, 0x01, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(Driver::data_in(&d.control_in(0x82, 0, 0, 0x01, 2)), &[0, 0]);
    assert_eq!(d.bulk(0x01, vec![1; 8]).outcome, TransferOutcome::Stall);
}

fn keyboard_plug() -> (
    KeyboardHandle,
    EmulatedHost,
    BusId,
    Box<dyn UsbDevice>,
    Arc<Collect>,
) {
    let kb = KeyboardHandle::new();
    let k = kb.clone();
    let (host, busid, dev, sink) = plug(factory(move || Box::new(k.device())));
    (kb, host, busid, dev, sink)
}

fn interrupt_in() -> Transfer {
    Transfer {
        endpoint: EP_REPORTS,
        kind: TransferKind::Interrupt,
        buffer: vec![0; 8],
        short_not_ok: false,
    }
}

#[test]
fn keyboard_pending_reports_and_cancel_exactly_once() {
    let (kb, _host, _busid, mut dev, sink) = keyboard_plug();
    dev.submit(1, interrupt_in());
    dev.submit(2, interrupt_in());
    assert!(sink.ids().is_empty(), "no key pressed yet: pending");
    dev.cancel(1);
    dev.cancel(1);
    dev.cancel(99);
    assert_eq!(sink.count(1), 1);
    assert_eq!(sink.wait(1).outcome, TransferOutcome::Cancelled);
    assert_eq!(kb.press("hI"), 2);
    let first = sink.wait(2);
    assert_eq!(first.outcome, TransferOutcome::Completed);
    assert_eq!(&first.buffer[..], &[0, 0, 0x0b, 0, 0, 0, 0, 0], "'h'");
    for (id, expect) in [
        (3, [0u8; 8]),
        (4, [0x02, 0, 0x0c, 0, 0, 0, 0, 0]),
        (5, [0; 8]),
    ] {
        dev.submit(id, interrupt_in());
        assert_eq!(sink.wait(id).buffer, expect);
    }
    assert_eq!(kb.queued(), 0);
    // Class requests.
    let mut d = Driver::new(dev, sink);
    let rd = d.control_in(0x81, 6, 0x2200, 0, 255);
    assert_eq!(Driver::data_in(&rd), &REPORT_DESCRIPTOR[..]);
    assert_eq!(
        d.control_out(0x21, 0x0a, 0x0400, 0, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(Driver::data_in(&d.control_in(0xa1, 0x02, 0, 0, 1)), &[4]);
    assert_eq!(
        d.control_out(0x21, 0x0b, 0, 0, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        d.control_out(0x21, 0x09, 0x0200, 0, vec![0x02]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(kb.leds(), 0x02);
    assert_eq!(
        Driver::data_in(&d.control_in(0xa1, 0x01, 0x0100, 0, 8)),
        &[0; 8]
    );
}

#[test]
fn shutdown_cancels_pending_and_refuses_later_submits() {
    let (_kb, host, busid, mut dev, sink) = keyboard_plug();
    dev.submit(1, interrupt_in());
    assert!(matches!(
        host.open(&busid, Arc::new(Collect::default())),
        Err(crate::usb::UsbError::Busy(_))
    ));
    dev.shutdown();
    assert_eq!(sink.wait(1).outcome, TransferOutcome::Cancelled);
    dev.submit(2, interrupt_in());
    assert_eq!(sink.wait(2).outcome, TransferOutcome::NoDevice);
    dev.shutdown();
    assert_eq!(sink.ids(), vec![1, 2]);
    // Closed: it can be opened again.
    let (_again, _s) = open(&host, &busid);
}

fn hotplug_log(host: &EmulatedHost) -> Arc<Mutex<Vec<HotplugEvent>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    host.set_hotplug_handler(Arc::new(move |e| l.lock().unwrap().push(e)));
    log
}

#[test]
fn vanishing_device_fails_everything_and_leaves() {
    let kb = KeyboardHandle::new();
    let k = kb.clone();
    let host = EmulatedHost::new();
    let log = hotplug_log(&host);
    let busid = host
        .add_next(factory(move || {
            Box::new(VanishingDevice::new(k.device(), 3))
        }))
        .unwrap();
    let (mut dev, sink) = open(&host, &busid);
    dev.submit(1, interrupt_in()); // device transfer 1: pending
    dev.submit(2, interrupt_in()); // queued behind it, not attempted yet
    let setup = SetupPacket::new(0xa1, 0x02, 0, 0, 1);
    dev.submit(
        3,
        Transfer {
            endpoint: 0x80,
            kind: TransferKind::Control { setup },
            buffer: vec![0],
            short_not_ok: false,
        },
    );
    // Control has its own queue: device transfer 2, answered at once.
    assert_eq!(sink.wait(3).outcome, TransferOutcome::Completed);
    assert_eq!(sink.ids(), vec![3]);
    // The key press completes 1; then 2 is the device's 3rd transfer: gone.
    kb.press("a");
    assert_eq!(sink.wait(1).outcome, TransferOutcome::Completed);
    assert_eq!(sink.wait(2).outcome, TransferOutcome::NoDevice);
    dev.submit(4, interrupt_in());
    assert_eq!(sink.wait(4).outcome, TransferOutcome::NoDevice);
    dev.submit(5, interrupt_in());
    assert_eq!(sink.wait(5).outcome, TransferOutcome::NoDevice);
    for id in 1..=5 {
        assert_eq!(sink.count(id), 1);
    }
    assert!(host.list().unwrap().is_empty());
    assert_eq!(
        *log.lock().unwrap(),
        vec![HotplugEvent::Arrived(busid), HotplugEvent::Left(busid)]
    );
    assert!(dev.reset().is_err());
}

#[test]
fn unplug_and_replug_through_the_host() {
    let host = EmulatedHost::new();
    let log = hotplug_log(&host);
    let kb = KeyboardHandle::new();
    let k = kb.clone();
    let busid = host
        .add_next(factory(move || Box::new(k.device())))
        .unwrap();
    assert_eq!(busid.to_string(), "200-1");
    assert!(host.add(busid, factory(|| Box::new(StallDevice))).is_err());
    let (mut dev, sink) = open(&host, &busid);
    dev.submit(7, interrupt_in());
    host.replug(&busid).unwrap();
    assert_eq!(sink.wait(7).outcome, TransferOutcome::NoDevice);
    let (mut dev2, sink2) = open(&host, &busid);
    kb.press("z");
    dev2.submit(1, interrupt_in());
    assert_eq!(sink2.wait(1).buffer[2], 0x1d);
    assert!(host.remove(&busid));
    assert!(!host.remove(&busid));
    assert!(matches!(
        host.open(&busid, sink2),
        Err(crate::usb::UsbError::NotFound(_))
    ));
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            HotplugEvent::Arrived(busid),
            HotplugEvent::Left(busid),
            HotplugEvent::Arrived(busid),
            HotplugEvent::Left(busid)
        ]
    );
    dev.shutdown();
}

#[test]
fn slow_device_completes_in_order_per_endpoint() {
    let (_host, _busid, mut dev, sink) = plug(factory(|| {
        Box::new(SlowDevice::new(
            LoopbackDevice::new(64),
            Duration::from_millis(5),
        ))
    }));
    let mut expected_out = Vec::new();
    let mut expected_in = Vec::new();
    for i in 0..6u64 {
        let (endpoint, list) = if i % 2 == 0 {
            (0x01, &mut expected_out)
        } else {
            (0x81, &mut expected_in)
        };
        dev.submit(
            i,
            Transfer {
                endpoint,
                kind: TransferKind::Bulk,
                buffer: vec![i as u8; 16],
                short_not_ok: false,
            },
        );
        list.push(i);
    }
    dev.submit(
        100,
        Transfer {
            endpoint: 0x81,
            kind: TransferKind::Bulk,
            buffer: vec![0; 16],
            short_not_ok: false,
        },
    );
    dev.cancel(100);
    for i in 0..6 {
        assert_eq!(sink.wait(i).outcome, TransferOutcome::Completed);
    }
    assert_eq!(sink.wait(100).outcome, TransferOutcome::Cancelled);
    let order = sink.ids();
    let out_order: Vec<u64> = order
        .iter()
        .copied()
        .filter(|i| expected_out.contains(i))
        .collect();
    let in_order: Vec<u64> = order
        .iter()
        .copied()
        .filter(|i| expected_in.contains(i))
        .collect();
    assert_eq!(out_order, expected_out);
    assert_eq!(in_order, expected_in);
    let counts: HashMap<u64, usize> = order.iter().fold(HashMap::new(), |mut m, i| {
        *m.entry(*i).or_default() += 1;
        m
    });
    assert!(counts.values().all(|&c| c == 1));
}

#[test]
fn audio_iso_packets() {
    let stats = Arc::new(AudioStats::default());
    let s = stats.clone();
    let (_host, _busid, dev, sink) = plug(factory(move || Box::new(AudioDevice::new(s.clone()))));
    let mut d = Driver::new(dev, sink);
    let iso = |endpoint, buffer, packets| Transfer {
        endpoint,
        kind: TransferKind::Isochronous { packets },
        buffer,
        short_not_ok: false,
    };
    let packets = vec![
        IsoPacket {
            offset: 0,
            length: 192,
        },
        IsoPacket {
            offset: 256,
            length: 100,
        },
    ];
    // Alternate setting 0 has no endpoints.
    assert_eq!(
        d.run(iso(EP_SOURCE, vec![0; 512], packets.clone())).outcome,
        TransferOutcome::Error
    );
    let alt1 = TransferKind::SetInterface {
        interface: 0,
        alt_setting: 1,
    };
    assert_eq!(
        d.run(Transfer {
            endpoint: 0,
            kind: alt1,
            buffer: vec![],
            short_not_ok: false
        })
        .outcome,
        TransferOutcome::Completed
    );
    let c = d.run(iso(EP_SOURCE, vec![0xee; 512], packets.clone()));
    assert_eq!(
        (c.outcome, c.actual_length, c.error_count),
        (TransferOutcome::Completed, 292, 0)
    );
    assert_eq!(
        c.iso.iter().map(|r| r.actual_length).collect::<Vec<_>>(),
        vec![192, 100]
    );
    let sample = |n| AudioDevice::sample(n).to_le_bytes();
    assert_eq!(&c.buffer[0..2], &sample(0));
    assert_eq!(&c.buffer[256..258], &sample(96));
    assert!(
        c.buffer[192..256].iter().all(|&b| b == 0xee),
        "gap untouched"
    );
    let out = d.run(iso(EP_SINK, vec![1; 512], packets));
    assert_eq!(
        (out.outcome, out.iso.len()),
        (TransferOutcome::Completed, 2)
    );
    assert_eq!(
        stats.out_bytes.load(std::sync::atomic::Ordering::Relaxed),
        292
    );
    assert_eq!(
        stats.out_packets.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // A packet outside the buffer fails the transfer.
    let bad = d.run(iso(
        EP_SINK,
        vec![1; 64],
        vec![IsoPacket {
            offset: 60,
            length: 8,
        }],
    ));
    assert_eq!(bad.outcome, TransferOutcome::Error);
}

#[test]
fn vanishing_mid_transfer_fails_pending_ones() {
    let kb = KeyboardHandle::new();
    let k = kb.clone();
    let (host, _busid, mut dev, sink) = plug(factory(move || {
        Box::new(VanishingDevice::new(k.device(), 2))
    }));
    dev.submit(1, interrupt_in()); // device transfer 1: pending
    dev.submit(2, interrupt_in()); // queued behind it
    let setup = SetupPacket::new(0xa1, 0x02, 0, 0, 1);
    dev.submit(
        3,
        Transfer {
            endpoint: 0x80,
            kind: TransferKind::Control { setup },
            buffer: vec![0],
            short_not_ok: false,
        },
    );
    for id in 1..=3 {
        assert_eq!(sink.wait(id).outcome, TransferOutcome::NoDevice, "id {id}");
        assert_eq!(sink.count(id), 1);
    }
    assert_eq!(sink.ids(), vec![3, 1, 2]);
    assert!(host.list().unwrap().is_empty());
    kb.press("x"); // nothing left to wake; must not complete anything again
    assert_eq!(sink.ids().len(), 3);
}
