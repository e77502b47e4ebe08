//! One libusb event thread per context: it runs every transfer callback and
//! hotplug callback (`libusb_handle_events_timeout_completed` in a loop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusb::{Context, UsbContext};

/// How long one `handle_events` call may sleep. Only bounds how quickly the
/// thread notices `stop`; events themselves wake it at once.
const EVENT_WAIT: Duration = Duration::from_millis(500);

/// The running event thread; stopping it (on drop) wakes libusb and joins.
pub(super) struct EventThread {
    context: Context,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EventThread {
    pub(super) fn start(context: Context) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ctx, flag) = (context.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("pvusb-libusb-events".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    if let Err(e) = ctx.handle_events(Some(EVENT_WAIT)) {
                        // Interrupted is how `interrupt_handle_events` wakes us.
                        if e != rusb::Error::Interrupted {
                            tracing::warn!(error = %e, "libusb event handling failed");
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

    /// Whether the caller runs on the event thread (inside a callback).
    pub(super) fn is_current(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|t| t.thread().id() == std::thread::current().id())
    }

    /// Runs `f` while no libusb callback can run (see
    /// [`super::ffi::without_callbacks`]); wakes the event thread first so it
    /// gives the event lock up at once. Must not be called on the event thread.
    pub(super) fn paused<R>(&self, f: impl FnOnce() -> R) -> R {
        self.context.interrupt_handle_events();
        super::ffi::without_callbacks(&self.context, f)
    }
}

impl Drop for EventThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.context.interrupt_handle_events();
        if let Some(t) = self.thread.take() {
            // Never join ourselves (the last user may be dropped from a callback).
            if t.thread().id() != std::thread::current().id() && t.join().is_err() {
                tracing::error!("libusb event thread panicked");
            }
        }
    }
}
