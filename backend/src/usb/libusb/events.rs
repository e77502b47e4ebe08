//! One libusb event thread per context: it runs every transfer callback and
//! hotplug callback (`libusb_handle_events_timeout_completed` in a loop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusb::{Context, UsbContext};

/// How long one `handle_events` call may sleep. Only bounds how quickly the
/// thread notices `stop`; events themselves wake it at once.
const EVENT_WAIT: Duration = Duration::from_millis(500);

/// Threads waiting in [`EventThread::paused`], and the event thread's wait
/// for them to finish.
#[derive(Default)]
struct Pausers {
    waiting: Mutex<usize>,
    done: Condvar,
}

impl Pausers {
    fn waiting(&self) -> MutexGuard<'_, usize> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self) {
        *self.waiting() += 1;
    }

    fn leave(&self) {
        let mut waiting = self.waiting();
        *waiting = waiting.saturating_sub(1);
        if *waiting == 0 {
            self.done.notify_all();
        }
    }

    /// On the event thread: while a thread waits to pause event handling, do
    /// not take libusb's event lock (see [`EventThread::paused`]). Returns
    /// when no one waits any more, or `stop` is set.
    fn step_aside(&self, stop: &AtomicBool) {
        let mut waiting = self.waiting();
        while *waiting > 0 && !stop.load(Ordering::Acquire) {
            // Bounded wait: `stop` is checked again even if a wake-up were missed.
            waiting = self
                .done
                .wait_timeout(waiting, EVENT_WAIT)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// The running event thread; stopping it (on drop) wakes libusb and joins.
pub(super) struct EventThread {
    context: Context,
    stop: Arc<AtomicBool>,
    pausers: Arc<Pausers>,
    thread: Option<JoinHandle<()>>,
}

impl EventThread {
    pub(super) fn start(context: Context) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let pausers = Arc::new(Pausers::default());
        let (ctx, flag, p) = (context.clone(), stop.clone(), pausers.clone());
        let thread = std::thread::Builder::new()
            .name("pvusb-libusb-events".to_owned())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    p.step_aside(&flag);
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
            pausers,
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
    /// [`super::ffi::without_callbacks`]). Must not be called on the event thread.
    ///
    /// WHY the event thread is told to step aside, not only woken: libusb's
    /// event lock is a plain mutex, and the event thread takes it again
    /// (`libusb_try_lock_events`) right after giving it up, then holds it for a
    /// whole poll. A thread blocked in `libusb_lock_events` only gets it if it
    /// is scheduled in that instant: on one CPU (the Xen test-bed's dom0)
    /// dropping a `LibusbHost` waited 1.5 to 20 s here, and `pvusb bench
    /// --device` once hung past its 20-minute limit. (libusb's own `libusb_close` avoids
    /// this with its internal `device_close` count, which the public API does
    /// not offer.)
    pub(super) fn paused<R>(&self, f: impl FnOnce() -> R) -> R {
        /// Leaves on drop, also if `f` panics (else the event thread would
        /// stay aside until it is stopped).
        struct Entered<'a>(&'a Pausers);
        impl Drop for Entered<'_> {
            fn drop(&mut self) {
                self.0.leave();
            }
        }
        self.pausers.enter();
        let _entered = Entered(&self.pausers);
        self.context.interrupt_handle_events();
        super::ffi::without_callbacks(&self.context, f)
    }
}

impl Drop for EventThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.pausers.done.notify_all();
        self.context.interrupt_handle_events();
        if let Some(t) = self.thread.take() {
            // Never join ourselves (the last user may be dropped from a callback).
            if t.thread().id() != std::thread::current().id() && t.join().is_err() {
                tracing::error!("libusb event thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Runs `step_aside` on another thread; the channel gets the number of
    /// waiting pausers it saw when it returned.
    fn aside(p: &Arc<Pausers>, stop: &Arc<AtomicBool>) -> mpsc::Receiver<usize> {
        let (p, stop, (tx, rx)) = (p.clone(), stop.clone(), mpsc::channel());
        std::thread::spawn(move || {
            p.step_aside(&stop);
            let _ = tx.send(*p.waiting());
        });
        rx
    }

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn the_event_thread_steps_aside_until_the_last_pauser_leaves() {
        let (p, stop) = (
            Arc::new(Pausers::default()),
            Arc::new(AtomicBool::new(false)),
        );
        assert_eq!(
            aside(&p, &stop).recv_timeout(LONG),
            Ok(0),
            "no pauser: no wait"
        );
        p.enter();
        p.enter();
        let seen = aside(&p, &stop);
        p.leave();
        p.leave();
        assert_eq!(
            seen.recv_timeout(LONG),
            Ok(0),
            "returned while a pauser waited"
        );
    }

    #[test]
    fn stopping_ends_the_wait_even_with_a_pauser_left() {
        let (p, stop) = (
            Arc::new(Pausers::default()),
            Arc::new(AtomicBool::new(false)),
        );
        p.enter();
        let seen = aside(&p, &stop);
        stop.store(true, Ordering::Release);
        p.done.notify_all();
        assert_eq!(seen.recv_timeout(LONG), Ok(1));
        p.leave();
        assert_eq!(*p.waiting(), 0);
        p.leave();
        assert_eq!(*p.waiting(), 0, "leave never goes below zero");
    }
}
