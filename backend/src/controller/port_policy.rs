//! What the controller opens on each port, and the toolstack's device
//! records (toolstack/src/record.rs).
//!
//! The busid in `port/N` is opened only while its record
//! `/pvusb/usbback/<busid-key>/state` is `claimed` or `assigned`, or when there
//! is no record at all — a port written by another toolstack (libxl
//! `type=pv`, a script, `xenstore-write` by hand) must still work, and those
//! keep no record. When the record moves to `detach-releasing` (the toolstack
//! withdrew its claim), the device is released while the port still lists it:
//! its requests are cancelled and answered, speed 0 is posted, and the device
//! is closed so the kernel drivers can be bound again. The daemon watches the
//! records and forwards changes as [`xenbus::RECORD_CHANGED`] paths.

use std::sync::Arc;

use pvusb_protocol::Status;
use pvusb_support::Chain;
use pvusb_xen::{EventChannels, GrantMapper};

use super::Controller;
use crate::guest::GrantedMemory;
use crate::stats::Stats;
use crate::usb::{BusId, CompletionSink, Speed};
use crate::xenbus;

impl<G: GrantMapper, E: EventChannels> Controller<G, E> {
    /// A device record changed: re-check the ports holding that busid (every
    /// port when the key is empty or not a busid key).
    pub(super) fn record_changed(&mut self, key: &str) {
        let Some(setup) = self.setup.as_ref() else {
            return;
        };
        let ports: Vec<u8> = match BusId::from_key(key.split('/').next().unwrap_or("")) {
            Ok(b) => setup.ports.ports_of(&b),
            Err(_) => setup
                .ports
                .numbers()
                .filter(|&p| setup.ports.busid(p).is_some())
                .collect(),
        };
        for p in ports {
            self.port_changed(p);
        }
    }

    /// Whether the toolstack's record lets the backend open `busid`.
    pub(super) fn record_permits(&mut self, busid: &BusId, port: u8) -> bool {
        match xenbus::read_record(&self.ctx.xs, busid) {
            Ok(v) if v.permits_open() => true,
            Ok(v) => {
                let msg = format!("device {busid} not opened or released: the toolstack's record withholds it ({v:?})");
                self.port_note(port, false, msg);
                false
            }
            Err(e) => {
                let msg = format!(
                    "device {busid} record unreadable, device not opened: {e}",
                    e = Chain(&e)
                );
                self.port_note(port, true, msg);
                false
            }
        }
    }

    /// Logs `msg` about `port` unless it is what was said last about that
    /// port (then only at debug level); new lines share a budget.
    pub(super) fn port_note(&mut self, port: u8, warn: bool, msg: String) {
        if !self.port_notes.is_new(port, &msg) {
            tracing::debug!(ctl = %self.id, port, "(repeated) {msg}");
            return;
        }
        if let crate::ratelimit::Verdict::Log { suppressed } = self.port_limiter.check() {
            if suppressed > 0 {
                tracing::warn!(ctl = %self.id, suppressed, "suppressed {suppressed} port log lines");
            }
            if warn {
                tracing::warn!(ctl = %self.id, port, "{msg}");
            } else {
                tracing::info!(ctl = %self.id, port, "{msg}");
            }
        }
    }

    pub(super) fn port_changed(&mut self, port: u8) {
        let new = match xenbus::read_port(&self.ctx.xs, &self.be, port) {
            Ok(b) => b,
            Err(e) => {
                self.port_note(port, true, format!("port left empty: {e}", e = Chain(&e)));
                None
            }
        };
        if new.is_none() {
            self.port_notes.clear(port);
        }
        let permitted = new.as_ref().is_some_and(|b| self.record_permits(b, port));
        let Some(setup) = self.setup.as_mut() else {
            return;
        };
        let old = setup.ports.busid(port).cloned();
        let attached = setup.ports.is_attached(port);
        if old == new && attached == permitted {
            return;
        }
        if attached && (old != new || !permitted) {
            self.detach_port(port);
        }
        if let Some(setup) = self.setup.as_mut() {
            setup.ports.set_busid(port, new);
        }
        let attached = self
            .setup
            .as_ref()
            .is_some_and(|s| s.ports.is_attached(port));
        if permitted && !attached {
            self.attach_port(port);
        }
    }

    pub(super) fn attach_port(&mut self, port: u8) {
        let Some(busid) = self
            .setup
            .as_ref()
            .and_then(|s| s.ports.busid(port).cloned())
        else {
            return;
        };
        // The mark goes first, in a transaction that re-reads the record: a
        // detach that withdrew the claim meanwhile either sees the mark (and
        // waits for its removal) or made this transaction see the withdrawal
        // (and nothing is opened). Marking after the open would leave a
        // moment when the device is open and the detach does not wait.
        match xenbus::mark_opened(&self.ctx.xs, &busid) {
            Ok(xenbus::RecordVerdict::Withheld(v)) => {
                let msg =
                    format!("device {busid} not opened: the toolstack's record withholds it ({v})");
                self.port_note(port, false, msg);
                return;
            }
            Ok(xenbus::RecordVerdict::Open | xenbus::RecordVerdict::NoRecord) => {}
            Err(e) => {
                tracing::warn!(ctl = %self.id, port, "cannot mark the device open in its record: {e}", e = Chain(&e))
            }
        }
        let Some(setup) = self.setup.as_mut() else {
            return;
        };
        let sink: Arc<dyn CompletionSink> = self.mailbox.clone();
        match setup
            .ports
            .attach(port, &mut *self.io, sink, !self.resuming)
        {
            Ok(speed) => {
                // The device policy, on the device as it is now: also after a
                // re-plug that changed what the device says it is.
                let refusal = self.ctx.policy.clone().and_then(|policy| {
                    let mem = GrantedMemory {
                        grants: &*self.ctx.grants,
                        domid: self.id.domid,
                    };
                    let (engine, responses) = (&mut setup.engine, &mut self.responses);
                    let dev = crate::engine::Devices::device(&mut setup.ports, port)?;
                    crate::device_policy::check(
                        &policy,
                        dev,
                        &self.mailbox,
                        &self.ctx.xs,
                        self.id.domid,
                        &mut |tid, c| engine.complete(tid, c, &mem, responses),
                    )
                });
                if let Some(msg) = refusal {
                    setup.ports.detach(port);
                    Stats::inc(&self.stats.attach_refused);
                    self.flush_responses();
                    self.mark_closed(&busid);
                    self.port_note(port, true, msg);
                    return;
                }
                self.port_notes.clear(port);
                Stats::inc(&self.stats.attached);
                tracing::info!(ctl = %self.id, port, ?speed, %busid, "device attached");
                setup.engine.forget_port(port);
                self.post(port, speed);
            }
            Err(e) => {
                Stats::inc(&self.stats.attach_refused);
                self.mark_closed(&busid);
                self.port_note(port, true, format!("port left empty: {e}", e = Chain(&e)));
            }
        }
    }

    /// Closes the device of `port`: its requests are cancelled and each
    /// answered, then speed 0 is posted.
    pub(super) fn detach_port(&mut self, port: u8) {
        let Some(setup) = self.setup.as_mut() else {
            return;
        };
        setup.ports.detach(port);
        let busid = setup.ports.busid(port).cloned();
        self.drain_completions();
        if let Some(setup) = self.setup.as_mut() {
            setup
                .engine
                .abort_port(port, Status::NoDev, &mut self.responses);
            setup.engine.forget_port(port);
        }
        tracing::info!(ctl = %self.id, port, "device detached");
        self.flush_responses();
        self.post(port, Speed::None);
        // Closed and every request answered: acknowledge the release.
        if let Some(busid) = busid {
            self.mark_closed(&busid);
        }
    }

    pub(super) fn mark_closed(&self, busid: &BusId) {
        if let Err(e) = xenbus::mark_closed(&self.ctx.xs, busid) {
            tracing::warn!(ctl = %self.id, %busid, "cannot acknowledge the release in the device's record: {e}", e = Chain(&e));
        }
    }

    pub(super) fn post(&mut self, port: u8, speed: Speed) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if let Err(e) = conn.post(port, speed) {
            self.ring_failed(e);
        }
    }
}
