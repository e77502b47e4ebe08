//! `pvusb bench`: URB throughput of frontend and backend as two processes
//! over the simulated transport, against memcpy and the cross-process event
//! round trip measured in the same run (see [`crate::bench`]).

use std::path::PathBuf;

use pvusb_support::Chain;

use crate::bench::stats::Plan;
use crate::bench::{child, device, scale, session};

/// Arguments of `pvusb bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A few seconds in total: fewer and shorter runs.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Measure a real device (lsusb's BUS.ADDR) through libusb, against native libusb.
    #[arg(long, value_name = "BUS.ADDR")]
    device: Option<String>,
    /// Measure containment at scale instead: G guests with C controllers
    /// each (e.g. 16x4), one worker process per controller; backend CPU per
    /// URB against one controller, and a light guest's p99 latency while the
    /// others saturate their rings.
    #[arg(long, value_name = "GxC", conflicts_with = "device")]
    scale: Option<String>,
    /// Internal: run as the bench's backend process.
    #[arg(long, hide = true, value_parser = ["backend"])]
    role: Option<String>,
    /// Internal: the simulation directory (backend role).
    #[arg(long, hide = true)]
    sim_dir: Option<PathBuf>,
    /// Internal: the xenstore socket (backend role).
    #[arg(long, hide = true)]
    xs_path: Option<PathBuf>,
    /// Internal: the event-channel port to echo (backend role).
    #[arg(long, hide = true)]
    echo_port: Option<u32>,
    /// Internal: serve real USB devices too (backend role, `--device`).
    #[arg(long, hide = true)]
    real_usb: bool,
    /// Internal: per-port statistics off (backend role; the counting-cost
    /// comparison).
    #[arg(long, hide = true)]
    no_port_stats: bool,
    /// Controllers as daemon threads instead of worker processes (with
    /// --scale: the same figures for comparison; internally the backend
    /// role of the isolation-cost comparison).
    #[arg(long)]
    threads: bool,
    /// Internal: loopback devices the backend role plugs in.
    #[arg(long, hide = true, default_value_t = 1)]
    loopbacks: u8,
    /// The backend's ring-polling bound, µs (as `pvusb backend
    /// --poll-max-us`; default the daemon's).
    #[arg(long, value_name = "US")]
    poll_max_us: Option<u64>,
}

/// Run the bench (or its backend role).
pub fn run(args: Args) -> Result<(), String> {
    if args.role.is_some() {
        let (Some(dir), Some(xs), Some(port)) = (&args.sim_dir, &args.xs_path, args.echo_port)
        else {
            return Err("--role backend needs --sim-dir, --xs-path and --echo-port".into());
        };
        let backend = session::Backend {
            real_usb: args.real_usb,
            port_stats: !args.no_port_stats,
            threads: args.threads,
            poll_max_us: args.poll_max_us,
            loopbacks: args.loopbacks.max(1),
        };
        return child::run(dir, xs, port, backend);
    }
    let plan = if args.quick {
        Plan::QUICK
    } else {
        Plan::DEFAULT
    };
    let report = match (&args.device, &args.scale) {
        (_, Some(scale)) => {
            let (guests, per_guest) = scale::parse(scale)?;
            let plan = Plan {
                run: plan.run * 2,
                warm_up: plan.warm_up * 2,
                ..plan
            };
            scale::measure(guests, per_guest, &plan, args.poll_max_us, args.threads)?
        }
        (Some(spec), None) => device::measure(spec, &plan)?,
        (None, None) => {
            let busid = pvusb_backend::usb::emulated::EmulatedHost::busid(child::LOOPBACK_PORT)
                .ok_or("no busid for the emulated loopback port")?
                .to_string();
            let default = session::Backend::default();
            let mut s = session::Session::start(&busid, default)?;
            // Two fresh backend processes, one without per-port counting,
            // measured alternately: what counting costs. (A process that
            // ran the other figures first is no fair partner: both counting,
            // it and a fresh one differed by a quarter.)
            let mut counted = session::Session::start(&busid, default)?;
            let mut uncounted = session::Session::start(
                &busid,
                session::Backend {
                    port_stats: false,
                    ..default
                },
            )?;
            // The same pair for what worker processes cost against threads.
            let mut threads = session::Session::start(
                &busid,
                session::Backend {
                    threads: true,
                    ..default
                },
            )?;
            let r = session::measure(
                &mut s,
                [&mut counted, &mut uncounted],
                &mut threads,
                &plan,
                "simulated transport, emulated loopback device".into(),
            );
            threads.close();
            uncounted.close();
            counted.close();
            s.close();
            r?
        }
    };
    if args.json {
        let json = serde_json::to_string(&report)
            .map_err(|e| format!("cannot encode the report: {e}", e = Chain(&e)))?;
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
