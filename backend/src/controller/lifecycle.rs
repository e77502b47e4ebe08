//! The xenbus life-cycle of a controller (spec 6).
//!
//! States as written to the backend's `state` node:
//! * InitWait (2) once `usb-ver`/`num-ports` are valid (invalid: logged, the
//!   state is left alone, re-checked on every change of the directory);
//! * Connected (4) when the frontend is Initialised (3) or Connected (4) — a
//!   jump straight from Initialising is the normal xen-hcd path — and both
//!   rings are mapped and the event channel bound;
//! * Closing (5) mirrors a closing frontend, follows `online = 0` and marks a
//!   ring the frontend broke; Closed (6) once the frontend is Closed (or gone);
//! * back to InitWait when a frontend returns to Initialising after Closed.
//!
//! A restarted daemon finds state 4 with a Connected frontend and reconnects
//! without going through InitWait.

use std::sync::Arc;

use pvusb_protocol::xenstore as xsp;
use pvusb_protocol::{Status, XenbusState};
use pvusb_support::Chain;
use pvusb_xen::{EventChannels, GrantMapper};

use super::{Controller, Phase, Setup, ADDRESS_MAP_KEY};
use crate::connection::Connection;
use crate::engine::UrbEngine;
use crate::error::BackendError;
use crate::guest_warn;
use crate::ports::Ports;
use crate::stats::Stats;
use crate::usb::Speed;
use crate::xenbus;

impl<G: GrantMapper, E: EventChannels> Controller<G, E> {
    /// Reads and validates the configuration if not done yet. Returns whether
    /// the controller is configured.
    pub(super) fn configure(&mut self) -> bool {
        if self.setup.is_some() {
            return true;
        }
        match xenbus::read_config(&self.ctx.xs, &self.be) {
            Ok(config) => {
                self.last_config_error = None;
                let mut engine =
                    UrbEngine::new(config.num_ports, self.id.domid, Arc::clone(&self.stats));
                engine.set_port_stats(self.ctx.port_stats);
                engine.set_map_min_bytes(self.ctx.map_min_bytes);
                engine.reset_addresses();
                self.setup = Some(Setup {
                    config,
                    ports: Ports::new(config.num_ports, config.usb_ver),
                    engine,
                });
                tracing::info!(ctl = %self.id, usb_ver = %config.usb_ver, num_ports = config.num_ports, "controller configured");
                for p in 1..=config.num_ports {
                    self.port_changed(p);
                }
                true
            }
            Err(e) => {
                let msg = e.to_string();
                if self.last_config_error.as_deref() != Some(msg.as_str()) {
                    tracing::error!(ctl = %self.id, "controller not usable, state left unchanged: {msg}");
                    self.last_config_error = Some(msg);
                }
                false
            }
        }
    }

    pub(super) fn frontend_state(&mut self) -> Option<XenbusState> {
        match xenbus::read_state(&self.ctx.xs, &self.fe) {
            Ok(s) => s,
            Err(e) => {
                guest_warn!(self.limiter, ctl = %self.id, "frontend state unreadable, treated as Unknown: {e}", e = Chain(&e));
                Some(XenbusState::Unknown)
            }
        }
    }

    pub(super) fn write_state(&mut self, state: XenbusState) {
        match xenbus::write_state(&self.ctx.xs, &self.be, state) {
            Ok(true) => tracing::debug!(ctl = %self.id, "backend state {state}"),
            Ok(false) => {
                tracing::debug!(ctl = %self.id, "backend directory gone; state {state} not written")
            }
            Err(e) => {
                tracing::error!(ctl = %self.id, "cannot write backend state {state}: {e}", e = Chain(&e))
            }
        }
    }

    /// Runs the state machine until it is stable.
    pub fn reconcile(&mut self) {
        for _ in 0..4 {
            if !self.step() {
                break;
            }
        }
    }

    /// One transition; returns whether the phase changed.
    pub(super) fn step(&mut self) -> bool {
        let before = self.phase;
        let online = xenbus::read_online(&self.ctx.xs, &self.be).unwrap_or(true);
        if self.phase == Phase::Unconfigured {
            if !online || !self.configure() {
                return false;
            }
            self.phase = Phase::InitWait;
            self.write_state(XenbusState::InitWait);
            return true;
        }
        let fe = self.frontend_state();
        let fe_gone = matches!(fe, None | Some(XenbusState::Unknown | XenbusState::Closed));
        match self.phase {
            Phase::Unconfigured => {}
            Phase::InitWait => {
                if !online {
                    self.phase = Phase::Closed;
                    self.write_state(XenbusState::Closed);
                } else if matches!(fe, Some(XenbusState::Initialised | XenbusState::Connected)) {
                    self.connect();
                }
            }
            Phase::Connected => {
                if !online || fe == Some(XenbusState::Closing) {
                    self.disconnect(Status::Shutdown, true);
                    self.phase = Phase::Closing;
                    self.write_state(XenbusState::Closing);
                } else if fe_gone || fe == Some(XenbusState::Initialising) {
                    self.disconnect(Status::Shutdown, true);
                    self.phase = Phase::Closed;
                    self.write_state(XenbusState::Closed);
                }
            }
            Phase::Closing => {
                if fe_gone || fe == Some(XenbusState::Initialising) {
                    self.phase = Phase::Closed;
                    self.write_state(XenbusState::Closed);
                }
            }
            Phase::Closed => {
                if online && fe == Some(XenbusState::Initialising) {
                    tracing::info!(ctl = %self.id, "frontend is initialising again: re-handshake");
                    self.phase = Phase::InitWait;
                    self.write_state(XenbusState::InitWait);
                }
            }
        }
        self.phase != before
    }

    pub(super) fn connect(&mut self) {
        let domid = self.id.domid;
        let result =
            (|| {
                let refs = xenbus::read_refs(&self.ctx.xs, &self.fe)?;
                let grants = &self.ctx.grants;
                let urb = grants.map(domid, &[refs.urb], true).map_err(|source| {
                    BackendError::MapRing {
                        ring: "urb",
                        gref: refs.urb,
                        domid,
                        source,
                    }
                })?;
                let conn = grants.map(domid, &[refs.conn], true).map_err(|source| {
                    BackendError::MapRing {
                        ring: "conn",
                        gref: refs.conn,
                        domid,
                        source,
                    }
                })?;
                let ch = self
                    .ctx
                    .evtchns
                    .bind_interdomain(domid, refs.evtchn)
                    .map_err(|source| BackendError::BindEvtchn {
                        port: refs.evtchn,
                        domid,
                        source,
                    })?;
                Connection::new(urb, conn, ch, Arc::clone(&self.stats))
            })();
        let mut conn = match result {
            Ok(c) => c,
            Err(e) => {
                guest_warn!(self.limiter, ctl = %self.id, "cannot connect, staying in InitWait: {e}", e = Chain(&e));
                return;
            }
        };
        let saved_path = xsp::join(&self.be, ADDRESS_MAP_KEY);
        let saved = if self.resuming {
            xenbus::read(&self.ctx.xs, &saved_path).ok().flatten()
        } else {
            None
        };
        let resumed = std::mem::take(&mut self.resuming);
        if resumed {
            if let Err(e) = conn.fence_published() {
                guest_warn!(self.limiter, ctl = %self.id, "cannot read the urb ring at resume: {e}");
            }
        }
        let Some(setup) = self.setup.as_mut() else {
            return;
        };
        setup.engine.reset_addresses();
        if let Some(saved) = saved {
            setup.engine.restore_addresses(&saved);
            tracing::info!(ctl = %self.id, "guest address table restored: {saved}");
        }
        for p in setup.ports.numbers() {
            let speed = setup.ports.speed(p);
            // After a daemon restart the guest still believes in the ports
            // the last daemon posted: one whose device is not served now
            // (unplugged, detached or refused by the rules meanwhile) is
            // posted empty, which a port the guest knew empty takes as a
            // connection change with nothing behind it.
            if speed != Speed::None || resumed {
                if let Err(e) = conn.post(p, speed) {
                    tracing::error!(ctl = %self.id, "conn ring unusable at connect: {e}", e = Chain(&e));
                    self.stats
                        .ring_errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.phase = Phase::Closing;
                    self.write_state(XenbusState::Closing);
                    return;
                }
            }
        }
        self.conn = Some(conn);
        self.phase = Phase::Connected;
        Stats::inc(&self.stats.connects);
        self.write_state(XenbusState::Connected);
        tracing::info!(ctl = %self.id, "connected");
    }

    /// Answers every in-flight request (cancelling it in its device first),
    /// then releases the rings and the event channel. `push`: whether the
    /// rings are still usable for the answers.
    pub(super) fn disconnect(&mut self, status: Status, push: bool) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if let Some(setup) = self.setup.as_mut() {
            // Devices may complete cancelled transfers synchronously.
            for p in setup.ports.numbers().collect::<Vec<_>>() {
                if setup.ports.is_attached(p) && setup.engine.in_flight() > 0 {
                    setup.engine.cancel_port(p, &mut setup.ports);
                }
            }
        }
        self.drain_completions();
        if let Some(setup) = self.setup.as_mut() {
            setup.engine.abort_all(status, &mut self.responses);
        }
        if push {
            if let Err(e) = conn.respond(&self.responses) {
                tracing::warn!(ctl = %self.id, "could not deliver the final answers: {e}", e = Chain(&e));
            }
        }
        self.responses.clear();
        drop(conn);
        tracing::info!(ctl = %self.id, "disconnected; rings unmapped, event channel unbound");
    }

    /// The frontend broke a ring: stop serving this controller (QEMU does the
    /// same), go Closing; other controllers are unaffected.
    pub(super) fn ring_failed(&mut self, e: BackendError) {
        Stats::inc(&self.stats.ring_errors);
        tracing::error!(ctl = %self.id, "stopping the controller: {e}", e = Chain(&e));
        self.disconnect(Status::Shutdown, false);
        self.phase = Phase::Closing;
        self.write_state(XenbusState::Closing);
    }
}
