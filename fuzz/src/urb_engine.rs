//! Target `urb_engine`: the backend's URB engine (validation, address
//! virtualisation, grant copies, in-flight table, unlink, completions) fed by
//! a back ring whose page a hostile frontend controls, against emulated
//! devices (a loopback on port 1, a disk on port 2) and a guest memory with
//! granted, read-only and missing pages.
//!
//! Input layout (zero-padded, see [`crate::input`]): up to [`MAX_STEPS`]
//! operations, one opcode byte each plus arguments (see the `match` in
//! [`run`]). Oracles: no panic; every request taken from the ring gets exactly
//! one response once everything is drained and aborted; only the seven usbif
//! statuses are ever sent; `actual_length` never exceeds 65536; the engine
//! never holds more than 16 requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pvusb_support::lock_unpoisoned;
use pvusb_backend::engine::{Devices, UrbEngine};
use pvusb_backend::guest::GuestMemory;
use pvusb_backend::stats::Stats;
use pvusb_backend::usb::emulated::loopback::LoopbackDevice;
use pvusb_backend::usb::emulated::mass_storage::store::MemoryStore;
use pvusb_backend::usb::emulated::mass_storage::MassStorageDevice;
use pvusb_backend::usb::emulated::EmulatedHost;
use pvusb_backend::usb::{Completion, CompletionSink, TransferId, UsbDevice};
use pvusb_protocol::{Status, UrbRequest, UrbResponse};
use pvusb_ring::mock::MockFrontend;
use pvusb_xen::{CopySeg, GrantError};

use crate::input::Input;

/// Upper bound on operations per input.
pub const MAX_STEPS: usize = 256;

/// Guest memory: grefs 8..24 writable, 24..32 read-only, others not granted.
struct FakeGuest {
    pages: Mutex<HashMap<u32, Vec<u8>>>,
}

impl FakeGuest {
    fn new() -> Self {
        let pages = (8..32).map(|g| (g, vec![0x5a; 4096])).collect();
        Self {
            pages: Mutex::new(pages),
        }
    }
}

impl GuestMemory for FakeGuest {
    fn copy_from(&self, segs: &[CopySeg], dst: &mut [u8]) -> Result<(), GrantError> {
        pvusb_xen::check_copy_segments(segs, dst.len())?;
        let pages = lock_unpoisoned(&self.pages);
        let mut at = 0;
        for s in segs {
            let page = pages
                .get(&s.gref)
                .ok_or(GrantError::BadRef { gref: s.gref })?;
            let (o, n) = (usize::from(s.offset), usize::from(s.len));
            dst[at..at + n].copy_from_slice(&page[o..o + n]);
            at += n;
        }
        Ok(())
    }

    fn copy_to(&self, segs: &[CopySeg], src: &[u8]) -> Result<(), GrantError> {
        pvusb_xen::check_copy_segments(segs, src.len())?;
        let mut pages = lock_unpoisoned(&self.pages);
        for s in segs {
            if !pages.contains_key(&s.gref) {
                return Err(GrantError::BadRef { gref: s.gref });
            }
            if s.gref >= 24 {
                return Err(GrantError::ReadOnly { gref: s.gref });
            }
        }
        let mut at = 0;
        for s in segs {
            let (o, n) = (usize::from(s.offset), usize::from(s.len));
            if let Some(page) = pages.get_mut(&s.gref) {
                page[o..o + n].copy_from_slice(&src[at..at + n]);
            }
            at += n;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Sink(Mutex<Vec<(TransferId, Completion)>>);

impl CompletionSink for Sink {
    fn complete(&self, id: TransferId, completion: Completion) {
        lock_unpoisoned(&self.0).push((id, completion));
    }
}

/// An emulated device that asks for coalescing (as libusb devices do), so the
/// fuzzer drives the coalesced path on port 1 and the one-by-one path on 2.
struct Joining {
    inner: Box<dyn UsbDevice>,
    /// The inner device's facts, but gaining from coalescing.
    info: pvusb_backend::usb::DeviceInfo,
}

impl Joining {
    fn new(inner: Box<dyn UsbDevice>) -> Self {
        let mut info = inner.info().clone();
        info.gains_from_coalescing = true;
        Self { inner, info }
    }
}

impl UsbDevice for Joining {
    fn info(&self) -> &pvusb_backend::usb::DeviceInfo {
        &self.info
    }
    fn submit(&mut self, id: TransferId, transfer: pvusb_backend::usb::Transfer) {
        self.inner.submit(id, transfer)
    }
    fn cancel(&mut self, id: TransferId) {
        self.inner.cancel(id)
    }
    fn reset(&mut self) -> Result<(), pvusb_backend::usb::UsbError> {
        self.inner.reset()
    }
    fn shutdown(&mut self) {
        self.inner.shutdown()
    }
}

struct Devs(Vec<Option<Box<dyn UsbDevice>>>);

impl Devices for Devs {
    fn device(&mut self, port: u8) -> Option<&mut dyn UsbDevice> {
        match self.0.get_mut(usize::from(port).checked_sub(1)?)?.as_mut() {
            Some(d) => Some(d.as_mut()),
            None => None,
        }
    }
}

fn check(rsps: &[UrbResponse]) {
    for r in rsps {
        assert!(
            Status::from_i32(r.status).is_some(),
            "status {} is not a usbif status",
            r.status
        );
        assert!(
            (0..=65536).contains(&r.actual_length),
            "actual_length {}",
            r.actual_length
        );
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let host = EmulatedHost::new();
    let Some(b1) = EmulatedHost::busid(1) else {
        return;
    };
    let Some(b2) = EmulatedHost::busid(2) else {
        return;
    };
    let store = Arc::new(MemoryStore::new(64));
    let _ = host.add(b1, Arc::new(|| Box::new(LoopbackDevice::new(4096))));
    let _ = host.add(
        b2,
        Arc::new(move || Box::new(MassStorageDevice::new(store.clone()))),
    );
    let sink = Arc::new(Sink::default());
    let open = |b| host.open(b, sink.clone() as Arc<dyn CompletionSink>).ok();
    let joining = open(&b1).map(|d| Box::new(Joining::new(d)) as Box<dyn UsbDevice>);
    let mut devs = Devs(vec![joining, open(&b2), None]);
    let guest = FakeGuest::new();
    let mut engine = UrbEngine::new(3, 1, Arc::new(Stats::default()));
    let front = MockFrontend::<UrbRequest, UrbResponse>::new();
    let Ok(mut back) = front.back_ring(0) else {
        return;
    };
    let mut out = Vec::new();
    let mut taken = 0u64;
    let mut answered = 0u64;
    let mut reqs = Vec::with_capacity(16);
    let mut broken = false;

    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 6 {
            0 | 1 => {
                // A request with fuzzed bytes, pointed at plausible grants.
                let mut raw = [0u8; 148];
                input.fill(&mut raw);
                let mut req: UrbRequest = bytemuck::pod_read_unaligned(&raw);
                req.pipe = (req.pipe & !0x1f) | u32::from(req.pipe as u8 % 4);
                for s in req.seg.iter_mut() {
                    s.gref = 6 + s.gref % 28;
                }
                let _ = front.submit(&req);
            }
            2 => {
                let v = input.u32();
                let _ = front.set_req_prod(v);
            }
            3 => {
                if broken {
                    continue;
                }
                match back.take_requests_into(&mut reqs, 16) {
                    Ok(n) => taken += n as u64,
                    Err(_) => broken = true,
                }
                for r in reqs.drain(..) {
                    engine.handle_request(&r, &guest, &mut devs, &mut out);
                }
                engine.dispatch(&guest, &mut devs, &mut out);
            }
            4 => {
                let done = std::mem::take(&mut *lock_unpoisoned(&sink.0));
                for (tid, c) in done {
                    engine.complete(tid, c, &guest, &mut out);
                }
                engine.dispatch(&guest, &mut devs, &mut out);
            }
            _ => {
                let port = input.u8() % 4;
                if let Some(Some(mut d)) = devs.0.get_mut(usize::from(port)).map(Option::take) {
                    d.shutdown();
                }
                engine.abort_port(port + 1, Status::NoDev, &mut out);
            }
        }
        assert!(engine.in_flight() <= 16);
        check(&out);
        answered += out.len() as u64;
        if !broken && back.push_responses(&out).is_err() {
            panic!("a response without a request to answer");
        }
        let _ = back.push_responses_and_check_notify();
        out.clear();
    }
    for d in devs.0.iter_mut().flatten() {
        d.shutdown();
    }
    let done = std::mem::take(&mut *lock_unpoisoned(&sink.0));
    for (tid, c) in done {
        engine.complete(tid, c, &guest, &mut out);
    }
    engine.abort_all(Status::Shutdown, &mut out);
    check(&out);
    answered += out.len() as u64;
    assert_eq!(taken, answered, "every request gets exactly one response");
}

/// Inputs that reach the interesting paths.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut get_descriptor = vec![0u8];
    let mut raw = [0u8; 148];
    raw[0] = 1; // id
    raw[2] = 1; // one segment
    raw[4..8].copy_from_slice(&0x8000_0081u32.to_le_bytes()); // control IN, dev 0, port 1
    raw[12..20].copy_from_slice(&[0x80, 6, 0, 1, 0, 0, 18, 0]);
    raw[20..28].copy_from_slice(&[2, 0, 0, 0, 0, 0, 64, 0]); // gref 8, 64 bytes
    get_descriptor.extend_from_slice(&raw);
    get_descriptor.extend_from_slice(&[3, 4]);
    let mut unlink = get_descriptor.clone();
    let mut u = [0u8; 148];
    u[0] = 2;
    u[4..8].copy_from_slice(&0x8000_00a1u32.to_le_bytes());
    u[12] = 1;
    unlink.push(0);
    unlink.extend_from_slice(&u);
    unlink.extend_from_slice(&[3, 4, 5, 0]);
    vec![
        get_descriptor,
        unlink,
        vec![2, 0xff, 0xff, 0, 0, 3],
        vec![0; 32],
    ]
}

#[cfg(test)]
mod tests {
    crate::clean_run_tests!(1500, 1200);
}
