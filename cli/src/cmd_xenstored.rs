//! `pvusb xenstored`: the embedded xenstore server in the foreground, for running
//! the simulated stack across processes on a machine without Xen.

use std::path::PathBuf;

use pvusb_support::Chain;
use pvusb_xenstore::{ServerConfig, XsServer};

use crate::signals::StopSignals;

/// Run an embedded xenstore server on a UNIX socket.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to listen (clients find it through `XENSTORED_PATH`).
    #[arg(long)]
    pub socket: PathBuf,
    /// Honour connections' `XS_CONTROL "pvusb-domid"` declarations, so simulated
    /// guests are confined by permissions as on Xen. Simulation only: anyone who
    /// can reach the socket can then claim any domain.
    #[arg(long)]
    pub trust_declared_domids: bool,
}

/// Serves until SIGTERM or SIGINT, then stops cleanly (removing the socket).
pub fn run(args: Args) -> Result<(), String> {
    // Before the server threads exist, so only the wait below receives them.
    let signals = StopSignals::block()?;
    let config = ServerConfig {
        trust_declared_domids: args.trust_declared_domids,
        ..ServerConfig::default()
    };
    XsServer::run(&args.socket, config, || match signals.wait() {
        Ok(sig) => tracing::info!(signal = ?sig, "stopping the embedded xenstore"),
        Err(e) => tracing::error!(error = %e, "waiting for a signal failed; stopping"),
    })
    .map_err(|e| Chain(&e).to_string())
}
