//! `pvusb demo`: the whole stack on one machine without Xen or USB — embedded
//! xenstore, backend daemon and guest frontend as separate processes over the
//! simulated transport, driven through the toolstack commands. A thin adapter:
//! the steps live in [`crate::demo`].

use std::path::PathBuf;
use std::time::Duration;

use crate::demo;

/// Which process of the demo this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The guest (domain 1): a pvUSB frontend serving the demo's requests.
    Guest,
}

/// Flags of `pvusb demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also pass this host USB device through (lsusb's BUS.ADDR, repeatable);
    /// needs host USB (libusb) and permission to use it.
    #[arg(long = "device", value_name = "BUS.ADDR")]
    pub devices: Vec<String>,
    /// Upper bound on each step, in seconds.
    #[arg(long, default_value_t = 30)]
    pub step_timeout: u64,
    /// MiB written to and read back from the emulated disk (1..=16).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub storage_mib: u16,
    /// MiB moved through the loopback device, half each way (2..=1024).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(2..=1024))]
    pub throughput_mib: u16,
    /// Internal: run one of the demo's processes.
    #[arg(long, value_enum, hide = true)]
    pub role: Option<Role>,
    /// Internal (guest): the xenstore socket.
    #[arg(long, hide = true)]
    pub xenstore: Option<PathBuf>,
    /// Internal (guest): the simulated transport's directory.
    #[arg(long, hide = true)]
    pub sim_dir: Option<PathBuf>,
    /// Internal (guest): the guest's domain id.
    #[arg(long, hide = true, default_value_t = demo::stack::GUEST_DOMID)]
    pub domid: u16,
}

/// Runs the demo, or one of its processes.
pub fn run(args: Args) -> Result<(), String> {
    let step_timeout = Duration::from_secs(args.step_timeout.max(1));
    match args.role {
        Some(Role::Guest) => {
            let (Some(xs), Some(dir)) = (args.xenstore, args.sim_dir) else {
                return Err("--role guest needs --xenstore and --sim-dir".into());
            };
            demo::guest::run(&xs, &dir, args.domid, step_timeout)
        }
        None => demo::script::run(demo::script::Options {
            devices: args.devices,
            step_timeout,
            storage_bytes: usize::from(args.storage_mib) << 20,
            throughput_bytes: usize::from(args.throughput_mib) << 20,
        }),
    }
}
