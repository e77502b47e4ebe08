//! The URB engine without threads, xenstore or a real transport, for the fuzz
//! targets (`fuzz/`, target `front_engine`): the caller plays the worker
//! (`process`), the submitting threads (`submit`, `unlink`) and the supervisor
//! (`teardown`, `reconnect`), one call at a time, and completion callbacks run
//! on its thread when each call returns. Not a stable API.

use std::sync::Arc;

use pvusb_xen::DomId;

use crate::connection::Connection;
use crate::engine::{Done, Engine, EngineStats, RspEvent};
use crate::error::{FrontendError, UrbStatus};
use crate::ports::{PortEvent, RootHub};
use crate::transport::Transport;
use crate::urb::{Callback, Urb};

/// One controller's engine, connected over `transport`.
pub struct EngineHarness {
    engine: Engine,
    transport: Arc<dyn Transport>,
    backend: DomId,
    done: Done,
}

impl std::fmt::Debug for EngineHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHarness")
            .field("stats", &self.engine.stats())
            .field("dead", &self.engine.dead_reason())
            .finish()
    }
}

impl EngineHarness {
    /// A controller of `num_ports` ports as the handshake leaves it: both rings
    /// granted and initialised, the event channel allocated, every conn-ring
    /// slot posted, the connection attached.
    pub fn connect(
        transport: Arc<dyn Transport>,
        backend: DomId,
        num_ports: u8,
    ) -> Result<Self, FrontendError> {
        let mut h = Self {
            engine: Engine::new(num_ports),
            transport,
            backend,
            done: Vec::new(),
        };
        h.reconnect()?;
        Ok(h)
    }

    /// The supervisor's re-handshake: fresh rings and event channel (after a
    /// [`Self::teardown`]; an existing connection is torn down first).
    pub fn reconnect(&mut self) -> Result<(), FrontendError> {
        self.teardown();
        let mut conn = Connection::new(Arc::clone(&self.transport), self.backend)?;
        conn.post_all_conn_requests()?;
        self.engine.attach(conn);
        Ok(())
    }

    /// Grant references of the urb and conn ring pages of the connection.
    pub fn ring_refs(&self) -> Option<(u32, u32)> {
        self.engine.ring_refs()
    }

    /// `Frontend::submit`: returns the URB's token.
    pub fn submit(&mut self, urb: Urb, callback: Callback) -> u64 {
        let token = self.engine.submit(urb, callback, false, &mut self.done);
        self.deliver();
        token
    }

    /// `UrbHandle::unlink`.
    pub fn unlink(&mut self, token: u64, status: UrbStatus) -> bool {
        let found = self.engine.unlink(token, status, &mut self.done);
        self.deliver();
        found
    }

    /// One wake-up of the worker: up to `limit` (≥ 1) URB responses and the
    /// conn ring, with the publish of what their callbacks submitted deferred
    /// as the worker defers it. `polling` leaves `rsp_event` unarmed, as while
    /// the worker spins. Returns whether there was work.
    pub fn process(&mut self, limit: usize, polling: bool) -> bool {
        let rsp_event = if polling {
            RspEvent::LeaveUnarmed
        } else {
            RspEvent::Arm
        };
        let worked = self.engine.process(&mut self.done, limit.max(1), rsp_event);
        self.engine.start_batch();
        self.deliver();
        self.engine.finish_batch();
        self.deliver();
        worked
    }

    /// Whether the backend published responses not yet consumed.
    pub fn responses_pending(&self) -> bool {
        self.engine.responses_pending()
    }

    /// The backend went away: every URB fails with shutdown, the root hub
    /// empties, the connection is dropped.
    pub fn teardown(&mut self) {
        let conn = self.engine.teardown(&mut self.done);
        self.deliver();
        drop(conn);
    }

    /// A local port reset (`Frontend::reset_port`); false if the port is
    /// missing or empty.
    pub fn reset_port(&mut self, port: u8) -> bool {
        self.engine.reset_port(port)
    }

    /// Enumeration's address bookkeeping: an address for `port`, if any is free.
    pub fn assign_address(&mut self, port: u8) -> Option<u8> {
        let a = self.engine.alloc_address()?;
        self.engine.set_address(port, Some(a));
        Some(a)
    }

    /// Port events since the last call.
    pub fn take_events(&mut self) -> Vec<PortEvent> {
        self.engine.take_events()
    }

    /// The root hub.
    pub fn hub(&self) -> &RootHub {
        self.engine.hub()
    }

    /// The engine's counters.
    pub fn stats(&self) -> EngineStats {
        self.engine.stats()
    }

    /// Why the controller is dead, if it is.
    pub fn dead_reason(&self) -> Option<crate::error::BackendViolation> {
        self.engine.dead_reason()
    }

    /// Whether URBs can be submitted.
    pub fn usable(&self) -> bool {
        self.engine.usable()
    }

    /// URBs in flight plus queued locally.
    pub fn outstanding(&self) -> usize {
        self.engine.outstanding()
    }

    fn deliver(&mut self) {
        if let Some(ch) = self.engine.take_notify() {
            let _ = ch.notify();
        }
        for (callback, completion) in self.done.drain(..) {
            callback(completion);
        }
    }
}

impl Drop for EngineHarness {
    fn drop(&mut self) {
        self.teardown();
    }
}
