//! `pvusb bench --scale GxC`: G guests with C controllers each, one worker
//! process per controller (the daemon's default), every controller with a
//! loopback device — what containment costs at scale.
//!
//! Figures, all over the simulated transport in one run:
//! * backend CPU per URB with one controller streaming, with two (of two
//!   guests), and with all of them streaming at once (daemon plus every
//!   worker process; the target is at most 1.2× the single controller's),
//!   and the backend's context switches per URB in each case;
//! * the p99 latency of one light guest (one URB at a time) alone, and
//!   while every other guest keeps its rings full (no head-of-line blocking
//!   across guests).
//!
//! Every controller has a loopback device of its own (200-1, 200-2, ...),
//! as every guest would have its own device.

use std::io::{BufReader, Write};
use std::sync::Arc;
use std::time::Duration;

use pvusb_frontend::{Frontend, Options, Urb, UrbKind};
use pvusb_protocol::xenstore::backend_dir;
use pvusb_protocol::{Direction, SetupPacket};
use pvusb_support::Chain;
use pvusb_testkit::Xenstore;
use pvusb_xen::sim::SimXen;
use pvusb_xen::{EventChannel, EventChannels};
use pvusb_xenstore::{Tx, XsClient};

use super::child::{FRONT_DOMID, LOOPBACK_PORT};
use super::load::{self, MakeUrb};
use super::report::{Ratio, Report};
use super::session::{rate_row as row, write_controller};
use super::stats::{quantile, Plan, Summary};

/// URBs each streaming controller keeps in flight (its ring).
const DEEP: usize = 16;
/// How long set-up steps may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// `GxC`, e.g. `16x4`.
pub fn parse(s: &str) -> Result<(u16, u32), String> {
    let bad = || format!("--scale {s:?}: give GUESTSxCONTROLLERS, e.g. 16x4");
    let (g, c) = s.split_once('x').ok_or_else(bad)?;
    let (g, c): (u16, u32) = (g.parse().map_err(|_| bad())?, c.parse().map_err(|_| bad())?);
    if !(2..=64).contains(&g) || !(1..=8).contains(&c) {
        return Err(format!("--scale {s}: 2 to 64 guests of 1 to 8 controllers"));
    }
    Ok((g, c))
}

/// One controller as its guest sees it.
struct Ctl {
    front: Arc<Frontend>,
    bulk_in: MakeUrb,
}

fn bulk(port: u8, device: u8, direction: Direction, len: usize) -> MakeUrb {
    Arc::new(move |mut buffer: Vec<u8>| {
        buffer.resize(len, 0x5a);
        Urb {
            port,
            device,
            endpoint: 1,
            direction,
            kind: UrbKind::Bulk,
            buffer,
            short_not_ok: false,
        }
    })
}

/// The backend process's CPU (daemon and workers) so far.
struct Backend {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

impl Backend {
    fn usage(&mut self) -> Result<super::cpu::Usage, String> {
        super::cpu::ask_backend(&mut self.input, &mut self.output)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = writeln!(self.input, "quit");
        let _ = self.input.flush();
        let _ = self.child.wait();
    }
}

/// Streams bulk IN 64 B on every controller of `ctls` at once for `budget`;
/// the URBs done in all.
fn stream_all(ctls: &[&Ctl], budget: Duration) -> Result<u64, String> {
    let handles: Vec<_> = ctls
        .iter()
        .map(|c| {
            let (front, make) = (Arc::clone(&c.front), Arc::clone(&c.bulk_in));
            std::thread::spawn(move || load::stream(&front, &make, DEEP, budget))
        })
        .collect();
    let mut urbs = 0;
    for h in handles {
        urbs += h.join().map_err(|_| "a stream thread panicked")??.urbs;
    }
    Ok(urbs)
}

/// What the backend spends per URB while some controllers stream.
struct PerUrb {
    /// CPU microseconds (daemon and workers).
    cpu_us: Summary,
    /// Context switches of the backend's threads.
    switches: Summary,
}

/// Backend CPU and context switches per URB while `ctls` stream, over the
/// plan's runs.
fn per_urb(backend: &mut Backend, ctls: &[&Ctl], plan: &Plan) -> Result<PerUrb, String> {
    stream_all(ctls, plan.warm_up)?;
    let (mut cpu, mut switches) = (Vec::new(), Vec::new());
    for _ in 0..plan.runs {
        let before = backend.usage()?;
        let urbs = stream_all(ctls, plan.run)?.max(1) as f64;
        let spent = backend.usage()? - before;
        cpu.push(spent.seconds / urbs * 1e6);
        switches.push(spent.switches as f64 / urbs);
    }
    Ok(PerUrb {
        cpu_us: Summary::of(&cpu),
        switches: Summary::of(&switches),
    })
}

/// The light guest's p99 round trip (µs), per run, while `others` stream.
fn light_p99(light: &Ctl, others: &[&Ctl], plan: &Plan) -> Result<Summary, String> {
    let mut values = Vec::with_capacity(plan.runs);
    for run in 0..=plan.runs {
        let budget = if run == 0 { plan.warm_up } else { plan.run };
        let streams: Vec<_> = others
            .iter()
            .map(|c| {
                let (front, make) = (Arc::clone(&c.front), Arc::clone(&c.bulk_in));
                // Longer than the light guest's run, so it never runs alone.
                std::thread::spawn(move || {
                    load::stream(&front, &make, DEEP, budget + Duration::from_millis(200))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(if others.is_empty() {
            0
        } else {
            100
        }));
        let mut lat = load::latencies(&light.front, &light.bulk_in, budget)?;
        for s in streams {
            s.join().map_err(|_| "a stream thread panicked")??;
        }
        lat.sort_by(f64::total_cmp);
        if run > 0 {
            values.push(quantile(&lat, 0.99));
        }
    }
    Ok(Summary::of(&values))
}

/// Runs the scale figures.
pub fn measure(
    guests: u16,
    per_guest: u32,
    plan: &Plan,
    poll_max_us: Option<u64>,
    threads: bool,
) -> Result<Report, String> {
    let dir = pvusb_testkit::dir::create("pvusb-scale")
        .map_err(|e| format!("cannot create a directory: {e}", e = Chain(&e)))?;
    let server = Xenstore::start_in(dir.path())
        .map_err(|e| format!("cannot start the embedded xenstore: {e}", e = Chain(&e)))?;
    let xs_path = server.path().to_owned();
    let xs = Arc::new(server.connect().map_err(|e| Chain(&e).to_string())?);
    let xens: Vec<Arc<SimXen>> = (FRONT_DOMID..FRONT_DOMID + guests)
        .map(|d| Arc::new(SimXen::new(dir.path(), d)))
        .collect();
    let echo = xens[0]
        .alloc_unbound(0)
        .map_err(|e| format!("echo port: {e}", e = Chain(&e)))?;
    let n = usize::from(guests) * usize::try_from(per_guest).map_err(|e| e.to_string())?;
    let settings = super::session::Backend {
        threads,
        poll_max_us,
        loopbacks: u8::try_from(n).map_err(|_| format!("{n} controllers: at most 255"))?,
        ..Default::default()
    };
    let cmd = super::child::command(dir.path(), &xs_path, echo.port(), &settings)?;
    let (child, input, output) = super::child::spawn_ready(cmd)?;
    let mut backend = Backend {
        child,
        input,
        output,
    };

    eprint!("pvusb bench --scale: connecting {guests}x{per_guest} controllers...");
    let mut ctls: Vec<Vec<Ctl>> = Vec::new();
    for (g, xen) in xens.iter().enumerate() {
        let domid = FRONT_DOMID + u16::try_from(g).map_err(|e| e.to_string())?;
        let mut mine = Vec::new();
        for devid in 0..per_guest {
            // Each controller its own loopback, as each guest its own device.
            let k = g * per_guest as usize + devid as usize;
            let port = u8::try_from(k)
                .ok()
                .and_then(|k| LOOPBACK_PORT.checked_add(k))
                .ok_or("too many controllers")?;
            let busid = pvusb_backend::usb::emulated::EmulatedHost::busid(port)
                .ok_or("no busid for a loopback")?
                .to_string();
            mine.push(connect(&xs, xen, domid, devid, &busid)?);
        }
        ctls.push(mine);
    }
    eprintln!(" done");

    let all: Vec<&Ctl> = ctls.iter().flatten().collect();
    let n = all.len();
    let first = all.first().ok_or("no controller")?;
    let others: Vec<&Ctl> = ctls.iter().skip(1).flatten().collect();

    eprintln!("pvusb bench --scale: one controller streaming");
    let single = per_urb(&mut backend, &[first], plan)?;
    // WHY two: one controller streaming has a CPU for its worker and one
    // for its frontend, and neither ever sleeps; two workers and two
    // frontends already share the CPUs (they sleep and wake per batch
    // unless they poll). The step from two to all is what the number of
    // workers costs.
    let second = ctls
        .get(1)
        .and_then(|g| g.first())
        .ok_or("no second guest")?;
    eprintln!("pvusb bench --scale: 2 controllers (of 2 guests) streaming");
    let pair = per_urb(&mut backend, &[first, second], plan)?;
    eprintln!("pvusb bench --scale: all {n} controllers streaming");
    let scaled = per_urb(&mut backend, &all, plan)?;
    eprintln!("pvusb bench --scale: the light guest alone");
    let alone = light_p99(first, &[], plan)?;
    eprintln!(
        "pvusb bench --scale: the light guest among {} saturating guests",
        guests - 1
    );
    let crowded = light_p99(first, &others, plan)?;

    let rows = vec![
        row(
            "backend CPU per URB, 1 controller streaming".into(),
            "us",
            single.cpu_us,
        ),
        row(
            "backend CPU per URB, 2 controllers streaming".into(),
            "us",
            pair.cpu_us,
        ),
        row(
            format!("backend CPU per URB, {n} controllers streaming"),
            "us",
            scaled.cpu_us,
        ),
        row(
            "backend context switches, 1 controller streaming".into(),
            "per URB",
            single.switches,
        ),
        row(
            "backend context switches, 2 controllers streaming".into(),
            "per URB",
            pair.switches,
        ),
        row(
            format!("backend context switches, {n} controllers streaming"),
            "per URB",
            scaled.switches,
        ),
        row("light guest p99, alone".into(), "us", alone),
        row(
            format!("light guest p99, {} guests saturating", guests - 1),
            "us",
            crowded,
        ),
    ];
    let ratios = vec![
        Ratio::new(
            format!("CPU per URB: 1 controller / {n} controllers"),
            single.cpu_us.median / scaled.cpu_us.median,
            // At most 1.2x the single controller's CPU per URB.
            0.83,
        ),
        Ratio::context(
            format!("CPU per URB: 2 controllers / {n} controllers"),
            pair.cpu_us.median / scaled.cpu_us.median,
        ),
        Ratio::context(
            "light guest p99: crowded / alone",
            crowded.median / alone.median,
        ),
    ];
    drop(ctls);
    drop(backend);
    Ok(Report::new(
        format!(
            "simulated transport, {guests} guests x {per_guest} controllers, {}, loopback devices",
            if threads {
                "each a daemon thread"
            } else {
                "one worker process each"
            }
        ),
        plan,
        rows,
        Vec::new(),
        ratios,
    ))
}

/// Writes controller `devid` of `domid` with the loopback in port 1,
/// connects its frontend, enumerates and configures the device, and primes
/// the loopback so that bulk INs return full URBs.
fn connect(
    xs: &Arc<XsClient>,
    xen: &Arc<SimXen>,
    domid: u16,
    devid: u32,
    busid: &str,
) -> Result<Ctl, String> {
    write_controller(xs, domid, devid)?;
    let options = Options {
        reconnect: false,
        handshake_timeout: SETUP_TIMEOUT,
        ..Options::default()
    };
    let transport: Arc<dyn pvusb_frontend::Transport> = xen.clone();
    let front = Frontend::connect(Arc::clone(xs), transport, domid, devid, options)
        .map_err(|e| format!("guest {domid} controller {devid}: {e}", e = Chain(&e)))?;
    xs.write(
        Tx::NONE,
        &format!("{}/port/1", backend_dir(0, domid, devid)),
        busid,
    )
    .map_err(|e| Chain(&e).to_string())?;
    front
        .wait_for_device(1, SETUP_TIMEOUT)
        .map_err(|e| format!("guest {domid} controller {devid}: {e}", e = Chain(&e)))?;
    let dev = front.enumerate(1).map_err(|e| Chain(&e).to_string())?;
    front
        .control_out(
            1,
            dev.address,
            SetupPacket::set_configuration(1),
            &[],
            SETUP_TIMEOUT,
        )
        .map_err(|e| Chain(&e).to_string())?;
    let front = Arc::new(front);
    let prime = (bulk(1, dev.address, Direction::Out, 63 * 1024))(Vec::new());
    front
        .transfer(prime, SETUP_TIMEOUT)
        .map_err(|e| format!("cannot prime the loopback: {e}", e = Chain(&e)))?;
    Ok(Ctl {
        front,
        bulk_in: bulk(1, dev.address, Direction::In, 64),
    })
}
