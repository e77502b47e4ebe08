//! The xenbus life-cycle of the controller (spec 6.1, 13.18, xen-hcd): waiting
//! for the backend to offer a connection, the handshake, the close, and the
//! supervisor thread that follows the backend going away and coming back.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use pvusb_protocol::XenbusState;
use pvusb_support::Chain;
use pvusb_xenstore::XsClient;
use tracing::{debug, info, warn};

use super::shared::Shared;
use crate::connection::Connection;
use crate::error::FrontendError;
use crate::xenbus::ControllerConfig;

/// Until the backend offers a connection (spec 6.1 step 1-2): announces a new
/// session first if a previous one left our node in another state.
pub(super) fn await_backend(
    xs: &XsClient,
    cfg: &ControllerConfig,
    timeout: Duration,
) -> Result<(), FrontendError> {
    // A previous session on this controller left our node Closed (or anything
    // but Initialising): announce a new session first, as spec 13.18 describes
    // the re-handshake; the backend answers Closed -> InitWait.
    if !matches!(cfg.own_state(xs)?, Some(XenbusState::Initialising)) {
        cfg.set_state(xs, XenbusState::Initialising)?;
    }
    cfg.wait_backend(xs, "InitWait, Initialised or Connected", timeout, |s| {
        matches!(
            s,
            Some(XenbusState::InitWait | XenbusState::Initialised | XenbusState::Connected)
        )
    })?;
    Ok(())
}

/// Fresh rings, keys, conn requests, Connected.
pub(super) fn handshake(shared: &Shared) -> Result<(), FrontendError> {
    let mut conn = Connection::new(Arc::clone(&shared.transport), shared.cfg.backend_domid)?;
    shared.cfg.publish(&shared.xs, &mut conn)?;
    let mut engine = shared.engine();
    engine.attach(conn);
    shared.deliver(&mut Vec::new(), engine);
    shared.wake_worker();
    Ok(())
}

/// xen-hcd remove, once the threads are stopped: state Closing, wait for the
/// backend to disconnect (Closing or Closed: usbback only goes Closed after
/// the frontend did), fail every URB with shutdown, end access to every
/// granted page (retrying while the backend still maps them), state Closed.
pub(super) fn close(s: &Shared) -> Result<(), FrontendError> {
    let timeout = s.options.close_timeout;
    // The toolstack already removed the controller (ctrl-detach after the
    // backend closed): as when xenbus unregisters xen-hcd's device, there is
    // no state left to write, and writing would recreate removed nodes.
    let removed = matches!(
        s.xs.exists(pvusb_xenstore::Tx::NONE, &s.cfg.frontend_dir),
        Ok(false)
    );
    let mut result = if removed {
        Ok(())
    } else {
        s.cfg.set_state(&s.xs, XenbusState::Closing)
    };
    if result.is_ok() && !removed {
        result = s
            .cfg
            .wait_backend(&s.xs, "Closing or Closed", timeout, |st| {
                matches!(st, Some(XenbusState::Closing | XenbusState::Closed) | None)
            })
            .map(drop);
    }
    let mut done = Vec::new();
    let mut engine = s.engine();
    let conn = engine.teardown(&mut done);
    s.deliver(&mut done, engine);
    if let Some(conn) = conn {
        let left = conn.release_grants(deadline_after(timeout));
        if left > 0 && result.is_ok() {
            result = Err(FrontendError::GrantsStillMapped(left));
        }
    }
    if removed {
        return result;
    }
    let closed = s.cfg.set_state(&s.xs, XenbusState::Closed);
    result.and(closed)
}

/// `timeout` from now, saturating far in the future instead of overflowing.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Fails everything and drops the connection (its grants end as the backend
/// unmaps them).
fn teardown(shared: &Shared) {
    let mut done = Vec::new();
    let mut engine = shared.engine();
    let conn = engine.teardown(&mut done);
    shared.deliver(&mut done, engine);
    if let Some(conn) = conn {
        let left = conn.release_grants(Instant::now());
        if left > 0 {
            debug!("{left} pages still mapped by the departed backend; released when it unmaps");
        }
    }
}

/// Starts the supervisor of a controller the handshake just connected: it
/// follows the backend's state and the worker's kicks (`kick`).
pub(super) fn spawn_supervisor(
    shared: &Arc<Shared>,
    kick: Receiver<()>,
) -> Result<JoinHandle<()>, FrontendError> {
    let watch = shared.xs.watch(&shared.cfg.backend_state_path())?;
    let s = Arc::clone(shared);
    std::thread::Builder::new()
        .name("pvusb-front-xenbus".into())
        .spawn(move || {
            Supervisor {
                shared: &s,
                phase: Phase::Connected,
            }
            .run(watch.receiver(), &kick);
        })
        .map_err(|e| FrontendError::Thread("supervisor", e))
}

/// Where the xenbus life-cycle stands, from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Initialising,
    Connected,
    Closed,
}

/// The reconnect state machine; its thread is the only one that moves the
/// phase once the controller is connected.
struct Supervisor<'a> {
    shared: &'a Shared,
    phase: Phase,
}

impl Supervisor<'_> {
    /// Follows the backend's state (and the worker's "peer gone" kicks).
    fn run(&mut self, watch: &Receiver<String>, kick: &Receiver<()>) {
        let shared = self.shared;
        while !shared.stopping() {
            crossbeam_channel::select! {
                recv(watch) -> m => if m.is_err() { warn!("xenstore watch ended; no more reconnects"); return; },
                recv(kick) -> _ => {},
            }
            if shared.stopping() {
                return;
            }
            let state = match shared.cfg.backend_state(&shared.xs) {
                Ok(s) => s,
                Err(e) => {
                    debug!("reading backend state: {e}", e = Chain(&e));
                    continue;
                }
            };
            let peer_gone = !shared.engine().is_attached();
            self.step(state, peer_gone);
        }
    }

    /// One step of the reconnect state machine.
    fn step(&mut self, state: Option<XenbusState>, lost: bool) {
        use XenbusState as S;
        let shared = self.shared;
        let xs = &shared.xs;
        match self.phase {
            Phase::Connected if lost || matches!(state, Some(S::Closing | S::Closed) | None) => {
                info!(?state, "backend went away; tearing the controller down");
                teardown(shared);
                let _ = shared.cfg.set_state_if_present(xs, S::Closed);
                self.phase = Phase::Closed;
                self.step(state, false);
            }
            Phase::Closed if !matches!(state, Some(S::Closing) | None) => {
                let _ = shared.cfg.set_state_if_present(xs, S::Initialising);
                self.phase = Phase::Initialising;
                self.step(state, false);
            }
            Phase::Initialising
                if matches!(state, Some(S::InitWait | S::Initialised | S::Connected)) =>
            {
                match handshake(shared) {
                    Ok(()) => {
                        self.phase = Phase::Connected;
                        info!("re-handshake with the backend done");
                    }
                    Err(e) => warn!("re-handshake failed: {e}", e = Chain(&e)),
                }
            }
            _ => {}
        }
    }
}
