//! The bench process: an embedded xenstore, the backend as a child process,
//! one controller with the loopback device in port 1, the frontend library
//! connected to it — then every figure of the report.

use std::io::{BufReader, IsTerminal, Write};
use std::process::{Child, ChildStdin, ChildStdout};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvusb_frontend::{Frontend, Options, Urb, UrbKind};
use pvusb_protocol::usb::request::{DIR_IN, GET_STATUS, RECIP_DEVICE, TYPE_STANDARD};
use pvusb_protocol::xenstore::backend_dir;
use pvusb_protocol::{Direction, SetupPacket};
use pvusb_support::Chain;
use pvusb_testkit::{domain, Controller, Xenstore};
use pvusb_xen::sim::{SimEventChannel, SimXen};
use pvusb_xen::{EventChannel, EventChannels};
use pvusb_xenstore::XsClient;

use super::child::{FRONT_DOMID, LOOPBACK_PORT};
use super::load::{self, MakeUrb};
use super::report::{Ratio, Report, Row};
use super::stats::{quantile, repeat, Plan, Summary};
use super::{cpu, refs};

/// Controller index used by the bench.
const DEVID: u32 = 0;
/// Ports of the bench's controller.
pub(super) const NUM_PORTS: u8 = 1;
/// How long set-up steps may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bulk endpoint number of the loopback device (0x01 OUT, 0x81 IN).
const BULK_EP: u8 = 1;
/// Bulk sizes of the throughput figures.
const BULK_SIZES: [usize; 3] = [4096, 16 * 1024, 63 * 1024];
/// URBs in flight for the batched figures (the ring size).
const DEEP: usize = 16;

/// How the bench's backend runs.
#[derive(Debug, Clone, Copy)]
pub struct Backend {
    /// Serve real USB devices too (`--device`).
    pub real_usb: bool,
    /// Count per-port statistics.
    pub port_stats: bool,
    /// Controllers as daemon threads instead of worker processes.
    pub threads: bool,
    /// The ring-polling bound, µs (`None`: the daemon's default).
    pub poll_max_us: Option<u64>,
    /// Loopback devices on the emulated bus, at ports 1..=N (`--scale`
    /// gives each controller its own).
    pub loopbacks: u8,
}

impl Default for Backend {
    /// What `pvusb backend` does by default.
    fn default() -> Self {
        Self {
            real_usb: false,
            port_stats: true,
            threads: false,
            poll_max_us: None,
            loopbacks: 1,
        }
    }
}

/// A running bench set-up. Field order is drop order: the frontend goes
/// before the backend, the xenstore and the directory.
pub struct Session {
    front: Arc<Frontend>,
    echo: SimEventChannel,
    child: Child,
    child_in: ChildStdin,
    child_out: BufReader<ChildStdout>,
    /// The device's address and port.
    pub address: u8,
    port: u8,
    _xen: Arc<SimXen>,
    _xs_server: Xenstore,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("dir", &self.dir.path())
            .field("child", &self.child.id())
            .finish()
    }
}

/// Writes a controller of guest `domid` with [`NUM_PORTS`] empty ports, as
/// the toolstack does.
pub(super) fn write_controller(xs: &XsClient, domid: u16, devid: u32) -> Result<(), String> {
    domain::create(xs, domid, &format!("bench{domid}"))
        .and_then(|()| Controller::new(domid, devid, 2, NUM_PORTS).write(xs))
        .map_err(|e| format!("cannot write the controller nodes: {e}", e = Chain(&e)))
}

impl Session {
    /// Start everything; `busid` is the device to put in port 1 (the emulated
    /// loopback device unless `--device`).
    pub fn start(busid: &str, backend: Backend) -> Result<Session, String> {
        // Short, under /tmp and open to the backend's worker processes,
        // which run as another user and must reach the transport's sockets.
        let dir = pvusb_testkit::dir::create("pvusb-bench")
            .map_err(|e| format!("cannot create a directory: {e}", e = Chain(&e)))?;
        let xs_server = Xenstore::start_in(dir.path())
            .map_err(|e| format!("cannot start the embedded xenstore: {e}", e = Chain(&e)))?;
        let xs_path = xs_server.path().to_owned();
        let xs = Arc::new(
            xs_server
                .connect()
                .map_err(|e| format!("cannot reach xenstore: {e}", e = Chain(&e)))?,
        );
        let xen = Arc::new(SimXen::new(dir.path(), FRONT_DOMID));
        let echo = xen
            .alloc_unbound(0)
            .map_err(|e| format!("cannot allocate the echo port: {e}", e = Chain(&e)))?;

        let cmd = super::child::command(dir.path(), &xs_path, echo.port(), &backend)?;
        let (child, child_in, child_out) = super::child::spawn_ready(cmd)?;

        write_controller(&xs, FRONT_DOMID, DEVID)?;
        let options = Options {
            reconnect: false,
            ..Options::default()
        };
        let front = Frontend::connect(Arc::clone(&xs), xen.clone(), FRONT_DOMID, DEVID, options)
            .map_err(|e| format!("the frontend did not connect: {e}", e = Chain(&e)))?;
        let front = Arc::new(front);
        let port = LOOPBACK_PORT.min(NUM_PORTS);
        xs.write(
            pvusb_xenstore::Tx::NONE,
            &format!("{}/port/{port}", backend_dir(0, FRONT_DOMID, DEVID)),
            busid,
        )
        .map_err(|e| format!("cannot attach {busid}: {e}", e = Chain(&e)))?;
        front
            .wait_for_device(port, SETUP_TIMEOUT)
            .map_err(|e| format!("device {busid} did not appear: {e}", e = Chain(&e)))?;
        let dev = front
            .enumerate(port)
            .map_err(|e| format!("cannot enumerate {busid}: {e}", e = Chain(&e)))?;
        front
            .control_out(
                port,
                dev.address,
                SetupPacket::set_configuration(1),
                &[],
                SETUP_TIMEOUT,
            )
            .map_err(|e| format!("cannot configure {busid}: {e}", e = Chain(&e)))?;
        Ok(Session {
            front,
            echo,
            child,
            child_in,
            child_out,
            address: dev.address,
            port,
            _xen: xen,
            _xs_server: xs_server,
            dir,
        })
    }

    /// The frontend.
    pub fn front(&self) -> &Arc<Frontend> {
        &self.front
    }

    /// The backend process's CPU seconds so far.
    pub fn child_cpu(&mut self) -> Result<f64, String> {
        cpu::ask_backend(&mut self.child_in, &mut self.child_out).map(|u| u.seconds)
    }

    /// A URB maker for bulk transfers of `len` bytes on the loopback endpoint.
    pub fn bulk(&self, direction: Direction, endpoint: u8, len: usize) -> MakeUrb {
        let (port, device) = (self.port, self.address);
        Arc::new(move |mut buffer: Vec<u8>| {
            buffer.resize(len, 0x5a);
            Urb {
                port,
                device,
                endpoint,
                direction,
                kind: UrbKind::Bulk,
                buffer,
                short_not_ok: false,
            }
        })
    }

    /// A URB maker for GET_STATUS on the device.
    pub fn get_status(&self) -> MakeUrb {
        let (port, device) = (self.port, self.address);
        let setup = SetupPacket::new(DIR_IN | TYPE_STANDARD | RECIP_DEVICE, GET_STATUS, 0, 0, 2);
        Arc::new(move |mut buffer: Vec<u8>| {
            buffer.resize(2, 0);
            Urb {
                port,
                device,
                endpoint: 0,
                direction: Direction::In,
                kind: UrbKind::Control(setup),
                buffer,
                short_not_ok: false,
            }
        })
    }

    /// Stop the frontend and the backend process (a failure is logged).
    pub fn close(self) {
        if let Err(e) = self.close_checked() {
            tracing::warn!("{e}");
        }
    }

    /// Close the frontend (bounded by its close timeout); the backend process
    /// keeps running until [`Session::close_checked`].
    pub fn close_front(&self) -> Result<(), String> {
        self.front
            .close()
            .map_err(|e| format!("the frontend did not close cleanly: {e}", e = Chain(&e)))
    }

    /// Stop the frontend and the backend process, each wait bounded: a backend
    /// process that does not exit within [`CHILD_EXIT_TIMEOUT`] of "quit" is
    /// killed and named in the error.
    pub fn close_checked(mut self) -> Result<(), String> {
        let front = self.front.close();
        let _ = writeln!(self.child_in, "quit").and_then(|()| self.child_in.flush());
        let deadline = Instant::now() + CHILD_EXIT_TIMEOUT;
        let exited = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(CHILD_EXIT_POLL),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break Err(format!(
                        "the backend process did not exit within {CHILD_EXIT_TIMEOUT:?} of quit; killed it"
                    ));
                }
                Err(e) => {
                    break Err(format!(
                        "cannot wait for the backend process: {e}",
                        e = Chain(&e)
                    ))
                }
            }
        };
        let status = exited?;
        if let Err(e) = front {
            // The measurements are done; an unclean close is worth a line, not a failure.
            tracing::warn!(error = %Chain(&e), "the frontend did not close cleanly");
        }
        if !status.success() {
            return Err(format!("the backend process ended with {status}"));
        }
        Ok(())
    }
}

/// How long the backend process may take to stop after "quit" (its daemon
/// closes the controller and gives the device back).
const CHILD_EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval while waiting for it.
const CHILD_EXIT_POLL: Duration = Duration::from_millis(20);

/// Progress on stderr: "[i/n] what". On a terminal each step overwrites the
/// previous one; elsewhere (a log file, the Xen test-bed) each is a line of
/// its own with the seconds since the start, so a hang shows which step it is.
pub(super) struct Progress {
    done: usize,
    total: usize,
    start: Instant,
    terminal: bool,
}

impl Progress {
    pub(super) fn new(total: usize) -> Progress {
        Progress {
            done: 0,
            total,
            start: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }
    pub(super) fn step(&mut self, what: &str) {
        self.done += 1;
        if self.terminal {
            eprint!("\r\x1b[K[{}/{}] {what}", self.done, self.total);
        } else {
            let t = self.start.elapsed().as_secs_f64();
            eprintln!("[{}/{}] {t:7.2}s {what}", self.done, self.total);
        }
    }
    pub(super) fn finish(&self) {
        if self.terminal {
            eprint!("\r\x1b[K");
        } else {
            eprintln!("      {:7.2}s done", self.start.elapsed().as_secs_f64());
        }
    }
}

/// A row with no CPU figures.
pub(super) fn rate_row(name: String, unit: &'static str, value: Summary) -> Row {
    Row {
        name,
        unit,
        value,
        front_cpu_s_per_gb: None,
        back_cpu_s_per_gb: None,
    }
}

/// Measure every figure (simulated transport, loopback device).
pub fn measure(
    s: &mut Session,
    [counting, uncounted]: [&mut Session; 2],
    threads: &mut Session,
    plan: &Plan,
    transport: String,
) -> Result<Report, String> {
    let mut progress =
        Progress::new(4 + 1 + 1 + 2 * BULK_SIZES.len() + 1 + 1 + BULK_SIZES.len() + 1);
    let front = Arc::clone(s.front());
    let mut pvusb = Vec::new();

    // Prime the loopback device with one maximal OUT, so IN returns full URBs.
    let prime = (s.bulk(Direction::Out, BULK_EP, 63 * 1024))(Vec::new());
    front
        .transfer(prime, SETUP_TIMEOUT)
        .map_err(|e| format!("cannot prime the loopback device: {e}", e = Chain(&e)))?;

    let small: [(&str, MakeUrb); 2] = [
        ("control GET_STATUS", s.get_status()),
        ("bulk IN 64 B", s.bulk(Direction::In, BULK_EP, 64)),
    ];
    let mut small16 = 0.0;
    for (name, make) in &small {
        for depth in [1, DEEP] {
            progress.step(&format!("{name}, {depth} in flight"));
            let v = repeat(plan, |d| {
                load::stream(&front, make, depth, d)
                    .map(|o| o.urbs as f64 / o.elapsed.as_secs_f64())
            })?;
            if depth == DEEP && name.starts_with("bulk") {
                small16 = v.median;
            }
            pvusb.push(rate_row(format!("{name}, {depth} in flight"), "URB/s", v));
        }
    }

    progress.step("bulk IN 64 B, counting on and off, interleaved");
    let (counted, uncounted_v) = interleaved(counting, uncounted, plan)?.rate;
    pvusb.push(rate_row(
        format!("bulk IN 64 B, {DEEP} in flight, counted"),
        "URB/s",
        counted,
    ));
    pvusb.push(rate_row(
        format!("bulk IN 64 B, {DEEP} in flight, uncounted"),
        "URB/s",
        uncounted_v,
    ));

    progress.step("bulk IN 64 B, worker process and daemon thread, interleaved");
    let isolation = interleaved(counting, threads, plan)?;
    let (process, thread) = isolation.rate;
    let (process_cpu, thread_cpu) = isolation.cpu_us;
    pvusb.push(rate_row(
        format!("bulk IN 64 B, {DEEP} in flight, worker process"),
        "URB/s",
        process,
    ));
    pvusb.push(rate_row(
        format!("bulk IN 64 B, {DEEP} in flight, daemon thread"),
        "URB/s",
        thread,
    ));
    pvusb.push(rate_row(
        "backend CPU per 64 B bulk IN, worker process".into(),
        "us",
        process_cpu,
    ));
    pvusb.push(rate_row(
        "backend CPU per 64 B bulk IN, daemon thread".into(),
        "us",
        thread_cpu,
    ));

    let mut bulk63 = 0.0;
    for (dir, ep) in [(Direction::In, BULK_EP), (Direction::Out, BULK_EP)] {
        for len in BULK_SIZES {
            let name = format!(
                "bulk {} {} KiB, {DEEP} in flight",
                if dir == Direction::In { "IN" } else { "OUT" },
                len / 1024
            );
            progress.step(&name);
            let make = s.bulk(dir, ep, len);
            let (f0, b0) = (cpu::self_seconds(), s.child_cpu()?);
            let mut bytes = 0u64;
            let v = repeat(plan, |d| {
                load::stream(&front, &make, DEEP, d).map(|o| {
                    bytes += o.bytes;
                    o.bytes as f64 / o.elapsed.as_secs_f64() / 1e6
                })
            })?;
            let (f1, b1) = (cpu::self_seconds(), s.child_cpu()?);
            let gb = bytes as f64 / 1e9;
            if dir == Direction::In && len == 63 * 1024 {
                bulk63 = v.median;
            }
            pvusb.push(Row {
                name,
                unit: "MB/s",
                value: v,
                front_cpu_s_per_gb: Some((f1 - f0) / gb),
                back_cpu_s_per_gb: Some((b1 - b0) / gb),
            });
        }
    }

    progress.step("latency of one 64 B bulk IN");
    let make = s.bulk(Direction::In, BULK_EP, 64);
    let (mut p50, mut p99) = (Vec::new(), Vec::new());
    repeat(plan, |d| {
        let mut lat = load::latencies(&front, &make, d)?;
        lat.sort_by(f64::total_cmp);
        p50.push(quantile(&lat, 0.50));
        p99.push(quantile(&lat, 0.99));
        Ok::<_, String>(0.0)
    })?;
    // The warm-up run is the first entry of each list.
    pvusb.push(rate_row(
        "latency p50, 64 B bulk IN".into(),
        "us",
        Summary::of(p50.get(1..).unwrap_or(&[])),
    ));
    pvusb.push(rate_row(
        "latency p99, 64 B bulk IN".into(),
        "us",
        Summary::of(p99.get(1..).unwrap_or(&[])),
    ));

    let mut reference = Vec::new();
    progress.step("event round trip between the two processes");
    let rt = repeat(plan, |d| refs::evtchn_round_trips(&s.echo, d))?;
    reference.push(rate_row(
        "event channel round trip, cross-process".into(),
        "RT/s",
        rt,
    ));
    let mut memcpy63 = 0.0;
    for len in BULK_SIZES {
        progress.step(&format!("memcpy {} KiB", len / 1024));
        let v = repeat(plan, |d| Ok::<_, String>(refs::memcpy_mb_s(len, d)))?;
        if len == 63 * 1024 {
            memcpy63 = v.median;
        }
        reference.push(rate_row(
            format!("memcpy {} KiB, one thread", len / 1024),
            "MB/s",
            v,
        ));
    }
    progress.step("63 KiB hand-off between two CPUs");
    let handoff63 = repeat(plan, |d| Ok::<_, String>(refs::handoff_mb_s(63 * 1024, d)))?;
    reference.push(rate_row(
        format!("hand-off 63 KiB, two CPUs, {DEEP} buffers"),
        "MB/s",
        handoff63,
    ));
    progress.finish();

    let ratios = vec![
        Ratio::new(
            "bulk IN 64 B URB/s at 16 in flight / event round trips/s",
            small16 / rt.median,
            10.0,
        ),
        Ratio::new(
            "bulk IN 63 KiB MB/s / memcpy 63 KiB MB/s",
            bulk63 / memcpy63,
            0.4,
        ),
        Ratio::context(
            "bulk IN 63 KiB MB/s / hand-off 63 KiB MB/s",
            bulk63 / handoff63.median,
        ),
        Ratio::new(
            "bulk IN 64 B URB/s at 16 in flight, counting on / off",
            counted.median / uncounted_v.median,
            0.98,
        ),
        Ratio::new(
            "bulk IN 64 B URB/s at 16 in flight, worker process / daemon thread",
            process.median / thread.median,
            0.95,
        ),
        Ratio::new(
            "backend CPU per URB, daemon thread / worker process",
            thread_cpu.median / process_cpu.median,
            0.95,
        ),
    ];
    Ok(Report::new(transport, plan, pvusb, reference, ratios))
}

/// Small bulk INs (where a URB's fixed costs weigh most: counting, the
/// process model) through two backends, alternating run by run and which
/// goes first, so that both see the same machine.
fn interleaved(on: &mut Session, off: &mut Session, plan: &Plan) -> Result<Pair, String> {
    // URB/s, and the backend's CPU µs per URB (its process and workers).
    let run = |s: &mut Session, d: Duration| -> Result<(f64, f64), String> {
        let make = s.bulk(Direction::In, BULK_EP, 64);
        let before = s.child_cpu()?;
        let o = load::stream(s.front(), &make, DEEP, d)?;
        let spent = s.child_cpu()? - before;
        Ok((
            o.urbs as f64 / o.elapsed.as_secs_f64(),
            spent * 1e6 / o.urbs.max(1) as f64,
        ))
    };
    run(on, plan.warm_up)?;
    run(off, plan.warm_up)?;
    let (mut a, mut b) = (Vec::with_capacity(plan.runs), Vec::with_capacity(plan.runs));
    for i in 0..plan.runs {
        if i % 2 == 0 {
            a.push(run(on, plan.run)?);
            b.push(run(off, plan.run)?);
        } else {
            b.push(run(off, plan.run)?);
            a.push(run(on, plan.run)?);
        }
    }
    let rates = |v: &[(f64, f64)]| Summary::of(&v.iter().map(|x| x.0).collect::<Vec<_>>());
    let cpus = |v: &[(f64, f64)]| Summary::of(&v.iter().map(|x| x.1).collect::<Vec<_>>());
    Ok(Pair {
        rate: (rates(&a), rates(&b)),
        cpu_us: (cpus(&a), cpus(&b)),
    })
}

/// Two backends measured alternately: URB/s and backend CPU µs per URB,
/// each (first, second).
struct Pair {
    rate: (Summary, Summary),
    cpu_us: (Summary, Summary),
}
