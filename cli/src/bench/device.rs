//! `pvusb bench --device BUS.ADDR`: the same bulk measurements against a real
//! device, through pvusb (backend process with libusb) and natively (libusb
//! from this process, through the same libusb host type the backend uses), and
//! their ratio.
//!
//! pvusb runs first (enumeration through the frontend is how the bench learns
//! the bulk IN endpoint); the session is closed, and the backend process gone,
//! before this process opens the device: both cannot hold the interface at once.
//! The native half opens the device once for all its sizes and runs.
//!
//! Every step runs under a [`Watchdog`]: a step that does not answer within its
//! limit ends the bench with one line naming it, instead of hanging.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use pvusb_backend::ids::TransferIds;
use pvusb_backend::usb::libusb::LibusbHost;
use pvusb_backend::usb::{
    Completion, CompletionSink, DeviceInfo, DeviceIo, Transfer, TransferId, TransferKind,
    TransferOutcome, UsbDevice, UsbHost,
};
use pvusb_protocol::usb::descriptor::EndpointDescriptor;
use pvusb_protocol::Direction;
use pvusb_support::{lock_unpoisoned, Chain};

use super::report::{Ratio, Report, Row};
use super::session::{Progress, Session};
use super::stats::{repeat, Plan};
use super::{cpu, load};

/// Bulk sizes measured on a real device.
const SIZES: [usize; 3] = [4096, 16 * 1024, 63 * 1024];
/// URBs in flight.
const DEEP: usize = 16;
/// How long one native transfer may take before the device counts as not
/// answering (the source/sink gadget answers in microseconds).
const TRANSFER_LIMIT: Duration = Duration::from_secs(10);
/// Limit of a step that is one action (open, close, release): generous, since
/// TCG is slow, but far below the test-bed's scenario timeout.
const ACTION_LIMIT: Duration = Duration::from_secs(60);

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
        .map_err(|e| format!("cannot list USB devices through libusb: {e}", e = Chain(&e)))?;
    let n = devices.len();
    devices
        .into_iter()
        .find(|d| d.bus == bus && d.address == addr)
        .ok_or_else(|| {
            format!("no USB device at {bus}.{addr} (libusb sees {n} device(s) on this machine)")
        })
}

struct Sink(Sender<Completion>);

impl CompletionSink for Sink {
    fn complete(&self, _id: TransferId, completion: Completion) {
        let _ = self.0.send(completion);
    }
}

/// The device opened natively, once for every native figure, with the I/O
/// loop a controller of the backend would run it in (this thread runs the
/// completions, as a controller's thread does).
struct Native {
    /// Declared before `io`: the device closes first.
    dev: Box<dyn UsbDevice>,
    io: Box<dyn DeviceIo>,
    done: Receiver<Completion>,
    /// Makes the ids of the transfers it submits.
    ids: TransferIds,
    endpoint: u8,
}

impl Native {
    fn open(host: &LibusbHost, info: &DeviceInfo, endpoint: u8) -> Result<Native, String> {
        let (tx, done) = crossbeam_channel::unbounded();
        let mut io = host.device_io();
        let dev = io
            .open(&info.busid, Arc::new(Sink(tx)))
            .map_err(|e| format!("cannot open the device natively: {e}", e = Chain(&e)))?;
        Ok(Native {
            dev,
            io,
            done,
            ids: TransferIds::new(),
            endpoint,
        })
    }

    fn submit(&mut self, buffer: Vec<u8>) {
        let id = self.ids.next();
        let transfer = Transfer {
            endpoint: self.endpoint,
            kind: TransferKind::Bulk,
            buffer: buffer.into(),
            short_not_ok: false,
        };
        self.dev.submit(id, transfer);
    }

    /// Bulk IN throughput (MB/s) of `len`-byte transfers, `DEEP` in flight,
    /// for `budget`, and the bytes moved; all transfers are back when it returns.
    fn mb_s(&mut self, len: usize, budget: Duration) -> Result<(f64, u64), String> {
        let start = Instant::now();
        for _ in 0..DEEP {
            self.submit(vec![0; len]);
        }
        let (mut bytes, mut outstanding) = (0u64, DEEP);
        let mut failure = None;
        while outstanding > 0 {
            let c = self.next_completion().ok_or_else(|| {
                format!(
                    "{outstanding} native bulk IN transfer(s) did not complete within {TRANSFER_LIMIT:?}"
                )
            })?;
            outstanding -= 1;
            if c.outcome != TransferOutcome::Completed {
                failure.get_or_insert_with(|| format!("a native transfer ended {:?}", c.outcome));
            }
            bytes += c.actual_length as u64;
            if failure.is_none() && start.elapsed() < budget {
                let mut buffer = c.buffer.into_data();
                buffer.resize(len, 0);
                self.submit(buffer);
                outstanding += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        match failure {
            Some(f) => Err(f),
            None => Ok((bytes as f64 / secs / 1e6, bytes)),
        }
    }

    /// The next completion, running the I/O until one arrives; `None` after
    /// [`TRANSFER_LIMIT`] without one.
    fn next_completion(&mut self) -> Option<Completion> {
        let start = Instant::now();
        loop {
            if let Ok(c) = self.done.try_recv() {
                return Some(c);
            }
            if start.elapsed() >= TRANSFER_LIMIT {
                return None;
            }
            self.io.run_ready(Duration::from_millis(100));
        }
    }

    /// Gives the interfaces back (cancels nothing: every transfer is back).
    fn close(mut self) {
        self.dev.shutdown();
    }
}

/// The machine's CPU time by kind, from the first line of /proc/stat (clock
/// ticks since boot): where the time of a figure went.
///
/// WHY: on the test-bed's one-CPU dom0 the device itself (dummy_hcd and the
/// gadget copy the data in softirq context) competes with the userspace of
/// whichever path is measured; whether the CPU was saturated, and by whom,
/// tells CPU cost from latency.
#[derive(Debug, Clone, Copy, Default)]
struct MachineCpu {
    user: u64,
    system: u64,
    irq: u64,
    idle: u64,
}

impl MachineCpu {
    /// `None` where /proc/stat is unreadable (then the line is left out).
    fn now() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        Some(MachineCpu {
            user: at(0).saturating_add(at(1)),
            system: at(2),
            irq: at(5).saturating_add(at(6)),
            idle: at(3).saturating_add(at(4)),
        })
    }

    /// "busy 97 % (user 40, system 20, irq+softirq 37)" between two snapshots.
    fn since(self, before: MachineCpu) -> String {
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
        let (u, s, i, idle) = (
            d(self.user, before.user),
            d(self.system, before.system),
            d(self.irq, before.irq),
            d(self.idle, before.idle),
        );
        let total = (u + s + i + idle).max(1.0);
        let pc = |x: f64| (100.0 * x / total).round();
        format!(
            "CPU busy {} % (user {}, system {}, irq+softirq {})",
            pc(u + s + i),
            pc(u),
            pc(s),
            pc(i)
        )
    }
}

/// CPU seconds per GB moved, from two readings of a CPU clock.
fn per_gb(before: f64, after: f64, bytes: u64) -> Option<f64> {
    let gb = bytes as f64 / 1e9;
    (gb > 0.0 && after.is_finite() && before.is_finite()).then(|| (after - before) / gb)
}

fn first_bulk_in(endpoints: &[EndpointDescriptor]) -> Option<u8> {
    endpoints
        .iter()
        .find(|e| e.address & 0x80 != 0 && e.attributes & 3 == 2)
        .map(|e| e.address)
}

/// Ends the process with one line naming the step when a step overruns its
/// limit. Why a process exit and not an error value: the steps it guards are
/// blocking calls into libusb and the kernel that cannot be interrupted from
/// outside; a thread left stuck in one would also stick the destructors that
/// run on the way out of an error.
struct Watchdog {
    armed: Arc<std::sync::Mutex<Option<(String, Instant, Duration)>>>,
}

impl Watchdog {
    fn start() -> Result<Watchdog, String> {
        let armed = Arc::new(std::sync::Mutex::new(None::<(String, Instant, Duration)>));
        let watched = Arc::clone(&armed);
        std::thread::Builder::new()
            .name("bench-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                let guard = lock_unpoisoned(&watched);
                if let Some((what, since, limit)) = guard.as_ref() {
                    if since.elapsed() > *limit {
                        eprintln!(
                            "\npvusb bench --device: {what} did not answer within {}s; giving up",
                            limit.as_secs()
                        );
                        std::process::exit(3);
                    }
                }
            })
            .map_err(|e| format!("cannot start the watchdog thread: {e}", e = Chain(&e)))?;
        Ok(Watchdog { armed })
    }

    /// From now on `what` is the step that must finish within `limit`.
    fn arm(&self, what: &str, limit: Duration) {
        *lock_unpoisoned(&self.armed) = Some((what.to_owned(), Instant::now(), limit));
    }

    fn disarm(&self) {
        *lock_unpoisoned(&self.armed) = None;
    }
}

/// Progress line and watchdog together: every step is shown and bounded.
struct Steps {
    progress: Progress,
    watchdog: Watchdog,
}

impl Steps {
    fn step(&mut self, what: &str, limit: Duration) {
        self.progress.step(what);
        self.watchdog.arm(what, limit);
    }

    /// A step failed with `error`: what runs next is the clean-up of what the
    /// step held (the session, the open device), watched under that name.
    fn failed(&self, error: String) -> String {
        self.watchdog
            .arm(&format!("cleaning up after \"{error}\""), ACTION_LIMIT);
        error
    }
}

/// How long a figure measured with `plan` may take: its runs plus the drain of
/// each, with room for TCG.
fn figure_limit(plan: &Plan) -> Duration {
    let runs = u32::try_from(plan.runs)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    (plan.run + TRANSFER_LIMIT).saturating_mul(runs) + ACTION_LIMIT
}

/// Measure `--device`.
pub fn measure(spec: &str, plan: &Plan) -> Result<Report, String> {
    let (bus, addr) = parse(spec)?;
    let mut steps = Steps {
        // context, session start, pvusb figures, close front and stop backend,
        // native open, native figures, release, close context
        progress: Progress::new(1 + 1 + SIZES.len() + 2 + 1 + SIZES.len() + 1 + 1),
        watchdog: Watchdog::start()?,
    };
    steps.step("libusb: open a context and list devices", ACTION_LIMIT);
    let host =
        LibusbHost::new().map_err(|e| format!("libusb is not usable here: {e}", e = Chain(&e)))?;
    let result = measure_on(&host, &mut steps, spec, (bus, addr), plan);
    // Dropping the host stops its hotplug thread: watched like every step,
    // and after a failure named with it (the failure is printed by the caller
    // only once this returns).
    match &result {
        Ok(_) => steps.step("libusb: close the context", ACTION_LIMIT),
        Err(e) => steps.watchdog.arm(
            &format!("cleaning up after \"{e}\" (closing libusb)"),
            ACTION_LIMIT,
        ),
    }
    drop(host);
    steps.watchdog.disarm();
    steps.progress.finish();
    result
}

fn measure_on(
    host: &LibusbHost,
    steps: &mut Steps,
    spec: &str,
    (bus, addr): (u8, u8),
    plan: &Plan,
) -> Result<Report, String> {
    let info = find(host, bus, addr)?;
    let busid = info.busid.to_string();
    let limit = figure_limit(plan);

    steps.step(
        "pvusb: start the backend process and enumerate",
        ACTION_LIMIT,
    );
    let mut session = Session::start(
        &busid,
        super::session::Backend {
            real_usb: true,
            ..Default::default()
        },
    )?;
    let dev = session
        .front()
        .enumerate(1)
        .map_err(|e| steps.failed(format!("cannot enumerate {busid}: {e}", e = Chain(&e))))?;
    let endpoint = first_bulk_in(&dev.endpoints())
        .ok_or_else(|| steps.failed(format!("device {spec} has no bulk IN endpoint")))?;
    let mut pvusb = Vec::new();
    for len in SIZES {
        let name = format!("bulk IN {} KiB via pvusb", len / 1024);
        steps.step(&name, limit);
        let make = session.bulk(Direction::In, endpoint & 0x0f, len);
        let front = Arc::clone(session.front());
        let (machine, f0) = (MachineCpu::now(), cpu::self_seconds());
        let b0 = session.child_cpu().map_err(|e| steps.failed(e))?;
        let mut bytes = 0u64;
        let v = repeat(plan, |d| {
            load::stream(&front, &make, DEEP, d).map(|o| {
                bytes += o.bytes;
                o.bytes as f64 / o.elapsed.as_secs_f64() / 1e6
            })
        })
        .map_err(|e| steps.failed(e))?;
        let b1 = session.child_cpu().map_err(|e| steps.failed(e))?;
        let (front_cpu, back_cpu) = (
            per_gb(f0, cpu::self_seconds(), bytes),
            per_gb(b0, b1, bytes),
        );
        explain(&name, v.median, machine);
        pvusb.push(Row {
            front_cpu_s_per_gb: front_cpu,
            back_cpu_s_per_gb: back_cpu,
            ..row(name, v)
        });
    }
    steps.step("pvusb: close the frontend", ACTION_LIMIT);
    if let Err(e) = session.close_front() {
        tracing::warn!("{e}");
    }
    steps.step("pvusb: stop the backend process", ACTION_LIMIT);
    session.close_checked()?;

    steps.step(
        &format!("native: open {busid} through libusb"),
        ACTION_LIMIT,
    );
    let mut native = Native::open(host, &info, endpoint)?;
    let mut reference = Vec::new();
    for len in SIZES {
        let name = format!("bulk IN {} KiB, native libusb", len / 1024);
        steps.step(&name, limit);
        let (machine, c0, mut bytes) = (MachineCpu::now(), cpu::self_seconds(), 0u64);
        let v = repeat(plan, |d| {
            native.mb_s(len, d).map(|(mb_s, b)| {
                bytes += b;
                mb_s
            })
        })
        .map_err(|e| steps.failed(e))?;
        let own_cpu = per_gb(c0, cpu::self_seconds(), bytes);
        explain(&name, v.median, machine);
        // One process does the backend's libusb work without the ring: its
        // CPU goes in the back column.
        reference.push(Row {
            back_cpu_s_per_gb: own_cpu,
            ..row(name, v)
        });
    }
    steps.step(&format!("native: release {busid}"), ACTION_LIMIT);
    native.close();

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

/// One line on stderr: the figure and where the machine's CPU went meanwhile.
fn explain(name: &str, median: f64, before: Option<MachineCpu>) {
    if let (Some(before), Some(after)) = (before, MachineCpu::now()) {
        eprintln!("      {name}: {median:.1} MB/s, {}", after.since(before));
    }
}

fn row(name: String, value: super::stats::Summary) -> Row {
    Row {
        name,
        unit: "MB/s",
        value,
        front_cpu_s_per_gb: None,
        back_cpu_s_per_gb: None,
    }
}
