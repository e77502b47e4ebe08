//! A thread that plays a party beside a test until the test is done with it.
//!
//! Why: the stand-ins that run next to a test (the toolstack's peer, the
//! reaper, a load generator) each need a stop flag, a loop that looks at it
//! and a join, so that no thread outlives its test; [`Background`] is that,
//! once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What the thread's loop asks: whether its owner still wants it to run.
#[derive(Debug, Clone)]
pub struct Running(Arc<AtomicBool>);

impl Running {
    /// False once the owner stopped or dropped the [`Background`].
    pub fn get(&self) -> bool {
        !self.0.load(Ordering::SeqCst)
    }
}

/// A thread running a loop until [`Background::stop`] or drop, which both
/// clear its [`Running`] and join it.
#[derive(Debug)]
pub struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Spawns `body`; it should return soon after `running.get()` is false.
    pub fn spawn(body: impl FnOnce(Running) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let running = Running(Arc::clone(&stop));
        let thread = std::thread::spawn(move || body(running));
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and waits for it; panics if it panicked (which drop
    /// does not: a test already failing should show its own panic).
    pub fn stop(mut self) {
        if let Some(Err(panic)) = self.halt() {
            std::panic::resume_unwind(panic);
        }
    }

    fn halt(&mut self) -> Option<std::thread::Result<()>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().map(JoinHandle::join)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}
