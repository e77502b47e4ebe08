//! The daemon-level libusb context's event thread: it runs hotplug callbacks
//! only. No device is ever opened in that context (each controller wraps its
//! devices into a context of its own, `ffi::IoContext`), so no transfer
//! callback runs here and nothing ever has to pause this thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use pvusb_support::Chain;
use rusb::{Context, UsbContext};

/// How long one `handle_events` call may sleep. Only bounds how quickly the
/// thread notices `stop` if the interrupt were lost; events wake it at once.
const EVENT_WAIT: Duration = Duration::from_millis(500);

/// The running hotplug thread; stopped and joined by [`HotplugThread::stop`]
/// (or on drop).
pub(super) struct HotplugThread {
    context: Context,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HotplugThread {
    pub(super) fn start(context: Context) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ctx, flag) = (context.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("pvusb-hotplug".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    if let Err(e) = ctx.handle_events(Some(EVENT_WAIT)) {
                        // Interrupted is how `interrupt_handle_events` wakes us.
                        if e != rusb::Error::Interrupted {
                            tracing::warn!(error = %Chain(&e), "libusb hotplug event handling failed");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })?;
        Ok(Self {
            context,
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the caller runs on this thread (inside a hotplug callback).
    pub(super) fn is_current(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|t| t.thread().id() == std::thread::current().id())
    }

    /// Stops the thread and waits for it: afterwards no hotplug callback runs
    /// (so a registration can be freed safely). Must not be called from the
    /// thread itself (see [`Self::is_current`]); then it only asks it to stop.
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.context.interrupt_handle_events();
        if let Some(t) = self.thread.take() {
            if t.thread().id() == std::thread::current().id() {
                return;
            }
            if t.join().is_err() {
                tracing::error!("libusb hotplug thread panicked");
            }
        }
    }
}

impl Drop for HotplugThread {
    fn drop(&mut self) {
        self.stop();
    }
}
