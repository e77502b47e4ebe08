//! `pvusb`: one command for the backend daemon, the frontend, the toolstack, the
//! embedded xenstore, the demo and the benchmarks. All logic lives in the library
//! crates; each subcommand here is a thin adapter in its own module.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod cmd_backend;
mod cmd_backend_worker;
mod cmd_bench;
mod cmd_demo;
mod cmd_front;
mod cmd_front_serve;
mod cmd_generate;
mod cmd_stats;
mod cmd_toolstack;
mod cmd_xenstored;
mod demo;
mod logging;
mod signals;

/// Xen paravirtual USB (usbif) in userspace: backend daemon, frontend and toolstack.
#[derive(Debug, Parser)]
#[command(name = "pvusb", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole stack on this machine without Xen or USB: embedded xenstore,
    /// backend and frontend as separate processes, emulated devices.
    Demo(cmd_demo::Args),
    /// Run the backend daemon (userspace usbback) in dom0 or a driver domain.
    Backend(cmd_backend::Args),
    /// The guest-side frontend: list devices, descriptors, mass-storage I/O, self-test,
    /// serve to vhci-hcd.
    Front(cmd_front::Args),
    /// Run an embedded xenstore server on a UNIX socket.
    Xenstored(cmd_xenstored::Args),
    /// Measure URB throughput (frontend and backend as two processes) against
    /// memcpy and the cross-process event round trip.
    Bench(cmd_bench::Args),
    /// Live counters of the running backend daemon, per controller and port.
    Stats(cmd_stats::Args),
    #[command(flatten)]
    Toolstack(cmd_toolstack::Command),
    /// Write man pages or shell completions (package build).
    #[command(hide = true)]
    Generate(cmd_generate::Args),
    /// One controller's confined worker process (started by the daemon).
    #[command(hide = true)]
    BackendWorker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let result: Result<(), String> = match cli.command {
        Command::Demo(args) => cmd_demo::run(args),
        Command::Backend(args) => cmd_backend::run(args),
        Command::Front(args) => cmd_front::run(args),
        Command::Xenstored(args) => cmd_xenstored::run(args),
        Command::Bench(args) => cmd_bench::run(args),
        Command::Stats(args) => cmd_stats::run(args),
        Command::Toolstack(cmd) => cmd_toolstack::run(cmd),
        Command::Generate(args) => cmd_generate::run(args),
        Command::BackendWorker => return cmd_backend_worker::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pvusb: {e}");
            ExitCode::FAILURE
        }
    }
}
