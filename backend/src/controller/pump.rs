//! The pump: requests from the ring through the engine to the devices, and
//! completions and responses back, in bounded passes.

use pvusb_protocol::{Status, UrbRequest, UrbResponse};
use pvusb_xen::{EventChannels, GrantMapper};

use super::{Controller, Setup};
use crate::connection::{must_not_rerun, Connection, RingWait};
use crate::error::BackendError;
use crate::guest::GrantedMemory;
use crate::mailbox::Mailbox;
use crate::usb::{Completion, TransferId};
use pvusb_ring::SharedMem;
use pvusb_xen::EventChannel;

/// Responses are published (and the frontend notified if it asked) after
/// this many, so that a busy frontend overlaps with us; see `service`.
const PUBLISH_EVERY: usize = 4;

/// Passes over the rings one [`Controller::service`] call makes at most (each
/// takes up to a ring's worth of requests).
const SERVICE_PASSES: usize = 8;

impl<G: GrantMapper, E: EventChannels> Controller<G, E> {
    /// Hands every completion waiting in the mailbox to the engine; the
    /// answers collect in `self.responses`.
    pub(super) fn drain_completions(&mut self) {
        let Some(setup) = self.setup.as_mut() else {
            return;
        };
        self.mailbox.take_completions(&mut self.completions);
        let mem = GrantedMemory {
            grants: &*self.ctx.grants,
            domid: self.id.domid,
        };
        for (tid, c) in self.completions.drain(..) {
            setup.engine.complete(tid, c, &mem, &mut self.responses);
        }
    }

    pub(super) fn flush_responses(&mut self) {
        if self.responses.is_empty() {
            return;
        }
        let result = match self.conn.as_mut() {
            Some(conn) => conn.respond(&self.responses),
            None => Ok(()),
        };
        self.responses.clear();
        if let Err(e) = result {
            self.ring_failed(e);
        }
    }

    /// Does all pending ring and completion work, then (with
    /// [`RingWait::Arm`]) arms the ring's event index so that the next
    /// request notifies us, or (with [`RingWait::Poll`], while the worker
    /// keeps polling) leaves it alone.
    ///
    /// Returns whether there was any work. Returns true without arming the
    /// ring's event after `SERVICE_PASSES` passes that all found more to
    /// do, so that the worker (which never sleeps after a true return) reads
    /// its control messages between passes: a guest that keeps the ring full
    /// cannot starve a removal, a shutdown or a hotplug event.
    pub fn service(&mut self, wait: RingWait) -> bool {
        let mut work = false;
        for _ in 0..SERVICE_PASSES {
            let (Some(setup), Some(conn)) = (self.setup.as_mut(), self.conn.as_mut()) else {
                return work;
            };
            let mut pump = Pump {
                setup,
                conn,
                mailbox: &self.mailbox,
                mem: GrantedMemory {
                    grants: &*self.ctx.grants,
                    domid: self.id.domid,
                },
                completions: &mut self.completions,
                responses: &mut self.responses,
            };
            let checked = pump.pass(&mut self.requests).and_then(|found| {
                if self.mailbox.has_completions() {
                    return Ok((found, true));
                }
                Ok((found, conn_final_check(self.conn.as_mut(), wait)?))
            });
            match checked {
                Ok((found, more)) => {
                    work |= found;
                    if !more {
                        return work;
                    }
                }
                Err(e) => {
                    self.requests.clear();
                    self.ring_failed(e);
                    return true;
                }
            }
        }
        true
    }
}

/// Whether requests are waiting (see [`Connection::final_check`]); none
/// without a connection.
fn conn_final_check<M, C>(
    conn: Option<&mut Connection<M, C>>,
    wait: RingWait,
) -> Result<bool, BackendError>
where
    M: SharedMem,
    C: EventChannel,
{
    match conn {
        Some(c) => c.final_check(wait),
        None => Ok(false),
    }
}

/// What one pass over the rings works with, borrowed from the controller.
struct Pump<'a, G, M, C> {
    setup: &'a mut Setup,
    conn: &'a mut Connection<M, C>,
    mailbox: &'a Mailbox,
    mem: GrantedMemory<'a, G>,
    completions: &'a mut Vec<(TransferId, Completion)>,
    responses: &'a mut Vec<UrbResponse>,
}

impl<G, M, C> Pump<'_, G, M, C>
where
    G: GrantMapper,
    M: SharedMem,
    C: EventChannel,
{
    /// Publishes the collected responses once there are [`PUBLISH_EVERY`]
    /// (every one when `all`): the frontend starts on the first ones while
    /// we work on the rest (the two sides overlap instead of taking turns).
    fn publish(&mut self, all: bool) -> Result<(), BackendError> {
        if self.responses.len() >= PUBLISH_EVERY || (all && !self.responses.is_empty()) {
            self.conn.respond(self.responses)?;
            self.responses.clear();
        }
        Ok(())
    }

    /// Hands the completions waiting in the mailbox to the engine, publishing
    /// as the answers come. Returns whether there were any.
    fn complete(&mut self) -> Result<bool, BackendError> {
        self.mailbox.take_completions(self.completions);
        let any = !self.completions.is_empty();
        let mut done = std::mem::take(self.completions);
        for (tid, c) in done.drain(..) {
            self.setup
                .engine
                .complete(tid, c, &self.mem, self.responses);
            self.publish(false)?;
        }
        // The (now empty) vector goes back, with its capacity.
        *self.completions = done;
        Ok(any)
    }

    /// One pass: completions, the requests published now, the bulk queues'
    /// dispatch, until no completion waits; every answer published. Returns
    /// whether there was any work.
    fn pass(&mut self, requests: &mut Vec<UrbRequest>) -> Result<bool, BackendError> {
        let had_completions = self.complete()?;
        let (n, pre_restart) = self.conn.take_requests_fenced(requests)?;
        for (i, r) in requests.drain(..).enumerate() {
            if i < pre_restart && must_not_rerun(&r) {
                // The dead daemon may have started it (Connection::fence_published).
                self.responses
                    .push(UrbResponse::new(r.id, Status::IoError, 0));
                self.publish(false)?;
                continue;
            }
            let setup = &mut *self.setup;
            setup
                .engine
                .handle_request(&r, &self.mem, &mut setup.ports, self.responses);
            // Emulated devices complete during the submit: their answers go
            // out as they come. Bulk URBs waiting for the dispatch stay
            // queued until the whole batch is in, so a burst is not split by
            // a completion that happens to arrive meanwhile
            // (`crate::coalesce`).
            if self.mailbox.has_completions() {
                self.complete()?;
            } else {
                self.publish(false)?;
            }
        }
        self.dispatch();
        while self.mailbox.has_completions() {
            self.complete()?;
            self.dispatch();
        }
        self.publish(true)?;
        self.conn.flush_conn()?;
        Ok(n > 0 || had_completions)
    }

    fn dispatch(&mut self) {
        let setup = &mut *self.setup;
        setup
            .engine
            .dispatch(&self.mem, &mut setup.ports, self.responses);
    }
}
