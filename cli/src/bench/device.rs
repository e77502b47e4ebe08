//! `pvusb bench --device BUS.ADDR`: the same bulk measurements against a real
//! device, through pvusb (backend process with libusb) and natively (libusb
//! from this process, through the backend's own libusb host), and their ratio.
//!
//! Native runs first and releases the device before the backend process
//! claims it: both cannot hold the interface at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use pvusb_backend::usb::libusb::LibusbHost;
use pvusb_backend::usb::{CompletionSink, DeviceInfo, Transfer, TransferKind, UsbHost};
use pvusb_protocol::usb::descriptor::EndpointDescriptor;
use pvusb_protocol::Direction;

use super::load;
use super::report::{Ratio, Report, Row};
use super::session::Session;
use super::stats::{repeat, Plan};

/// Bulk sizes measured on a real device.
const SIZES: [usize; 3] = [4096, 16 * 1024, 63 * 1024];
/// URBs in flight.
const DEEP: usize = 16;

/// Parse `BUS.ADDR` (lsusb's numbers).
pub fn parse(spec: &str) -> Result<(u8, u8), String> {
    spec.split_once('.')
        .and_then(|(b, a)| Some((b.parse().ok()?, a.parse().ok()?)))
        .ok_or_else(|| format!("--device {spec:?}: use BUS.ADDR as lsusb prints them, e.g. 1.6"))
}

/// The device at `bus.addr`, or a one-line reason why there is none.
pub fn find(host: &LibusbHost, bus: u8, addr: u8) -> Result<DeviceInfo, String> {
    let devices = host
        .list()
        .map_err(|e| format!("cannot list USB devices through libusb: {e}"))?;
    let n = devices.len();
    devices
        .into_iter()
        .find(|d| d.bus == bus && d.address == addr)
        .ok_or_else(|| {
            format!("no USB device at {bus}.{addr} (libusb sees {n} device(s) on this machine)")
        })
}

struct Sink(Sender<pvusb_backend::usb::Completion>);

impl CompletionSink for Sink {
    fn complete(&self, _id: u64, completion: pvusb_backend::usb::Completion) {
        let _ = self.0.send(completion);
    }
}

/// Native libusb bulk IN throughput (MB/s) on `endpoint`, `DEEP` in flight.
fn native_mb_s(
    host: &LibusbHost,
    info: &DeviceInfo,
    endpoint: u8,
    len: usize,
    budget: Duration,
) -> Result<f64, String> {
    let (tx, rx): (Sender<_>, Receiver<_>) = crossbeam_channel::unbounded();
    let mut dev = host
        .open(&info.busid, Arc::new(Sink(tx)))
        .map_err(|e| format!("cannot open the device natively: {e}"))?;
    let next = Mutex::new(0u64);
    let submit = |dev: &mut Box<dyn pvusb_backend::usb::UsbDevice>, buffer: Vec<u8>| {
        let mut id = next.lock().unwrap_or_else(|e| e.into_inner());
        *id += 1;
        dev.submit(
            *id,
            Transfer {
                endpoint,
                kind: TransferKind::Bulk,
                buffer,
                short_not_ok: false,
            },
        );
    };
    let start = Instant::now();
    for _ in 0..DEEP {
        submit(&mut dev, vec![0; len]);
    }
    let (mut bytes, mut outstanding) = (0u64, DEEP);
    while outstanding > 0 {
        let c = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "a native transfer did not complete within 10 s".to_string())?;
        outstanding -= 1;
        bytes += c.actual_length as u64;
        if start.elapsed() < budget {
            let mut buffer = c.buffer;
            buffer.resize(len, 0);
            submit(&mut dev, buffer);
            outstanding += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    dev.shutdown();
    Ok(bytes as f64 / secs / 1e6)
}

fn first_bulk_in(endpoints: &[EndpointDescriptor]) -> Option<u8> {
    endpoints
        .iter()
        .find(|e| e.address & 0x80 != 0 && e.attributes & 3 == 2)
        .map(|e| e.address)
}

/// Measure `--device`.
pub fn measure(spec: &str, plan: &Plan) -> Result<Report, String> {
    let (bus, addr) = parse(spec)?;
    let host = LibusbHost::new().map_err(|e| format!("libusb is not usable here: {e}"))?;
    let info = find(&host, bus, addr)?;
    let busid = info.busid.to_string();

    // pvusb first only to learn the endpoint through enumeration; then close.
    let mut session = Session::start(&busid, true)?;
    let dev = session
        .front()
        .enumerate(1)
        .map_err(|e| format!("cannot enumerate {busid}: {e}"))?;
    let endpoint = first_bulk_in(&dev.endpoints())
        .ok_or_else(|| format!("device {spec} has no bulk IN endpoint"))?;
    let mut pvusb = Vec::new();
    for len in SIZES {
        let make = session.bulk(Direction::In, endpoint & 0x0f, len);
        let front = Arc::clone(session.front());
        let v = repeat(plan, |d| {
            load::stream(&front, &make, DEEP, d)
                .map(|o| o.bytes as f64 / o.elapsed.as_secs_f64() / 1e6)
        })?;
        pvusb.push(Row {
            name: format!("bulk IN {} KiB via pvusb", len / 1024),
            unit: "MB/s",
            value: v,
            front_cpu_s_per_gb: None,
            back_cpu_s_per_gb: None,
        });
    }
    let _ = session.child_cpu();
    session.close();

    let mut reference = Vec::new();
    for len in SIZES {
        let v = repeat(plan, |d| native_mb_s(&host, &info, endpoint, len, d))?;
        reference.push(Row {
            name: format!("bulk IN {} KiB, native libusb", len / 1024),
            unit: "MB/s",
            value: v,
            front_cpu_s_per_gb: None,
            back_cpu_s_per_gb: None,
        });
    }
    let ratios = pvusb
        .iter()
        .zip(&reference)
        .map(|(p, n): (&Row, &Row)| {
            Ratio::new(
                format!("{} / native", p.name),
                p.value.median / n.value.median,
                0.95,
            )
        })
        .collect();
    Ok(Report::new(
        format!("device {spec} ({busid})"),
        plan,
        pvusb,
        reference,
        ratios,
    ))
}
