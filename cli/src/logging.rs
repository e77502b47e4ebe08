//! Structured logs through `tracing`, filtered by `PVUSB_LOG` (or `RUST_LOG`),
//! written to stderr so that command output on stdout stays machine-readable.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `PVUSB_LOG_FORMAT=json` switches to JSON lines
/// for log collectors.
pub fn init() {
    let filter = EnvFilter::try_from_env("PVUSB_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("PVUSB_LOG_FORMAT").as_deref() == Ok("json") {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}
