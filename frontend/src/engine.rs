//! The URB engine: request ids, the local FIFO queue, unlink semantics and the
//! validation of every response. It owns the [`Connection`] and is driven by
//! the submitting threads and by the worker, always under one mutex.
//!
//! Why callbacks are returned instead of called: a callback may submit again
//! (which takes the mutex), so everything that completes is collected in a
//! [`Done`] list and run by the caller after the lock is released.
//!
//! Its state is private: the frontend's threads and the fuzz harness
//! (`crate::fuzzing`) drive it through the methods below, so the invariants
//! between ids, slots, queue and connection are kept in this file alone.

use std::collections::VecDeque;
use std::sync::Arc;

use pvusb_protocol::{ConnRequest, Pipe, UrbRequest, UrbResponse};
use pvusb_ring::FrontRing;
use pvusb_support::Chain;
use pvusb_xen::EventChannel;
use tracing::{debug, warn};

use crate::connection::{Connection, Page, NR_IDS};
use crate::error::{BackendViolation, UrbStatus};
use crate::ports::{PortEvent, RootHub};
use crate::report::{EngineReport, InFlightReport, Listed, RingIndexes};
use crate::urb::{Callback, Completion, Urb};

/// Completions to deliver once the engine lock is released.
pub(crate) type Done = Vec<(Callback, Completion)>;

/// What one request id is doing.
enum Slot {
    Free,
    /// Not boxed: a steady stream of URBs allocates nothing here.
    Submit(InFlight),
    /// An unlink request for the submit at `target`.
    Unlink {
        target: u16,
    },
}

struct InFlight {
    token: u64,
    urb: Urb,
    callback: Callback,
    pipe: Pipe,
    /// Set by `unlink`: the status the URB completes with, whatever the backend says.
    unlink_status: Option<UrbStatus>,
}

enum Queued {
    Submit {
        token: u64,
        urb: Urb,
        callback: Callback,
    },
    Unlink {
        token: u64,
    },
}

/// Counters a test or a user can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// URBs handed to [`crate::Frontend::submit`].
    pub submitted: u64,
    /// URBs completed (any status, local or remote).
    pub completed: u64,
    /// Unlink requests put on the ring.
    pub unlinks_sent: u64,
    /// Responses with a status outside the seven defined values.
    pub bad_statuses: u64,
    /// Responses whose actual_length had to be clamped.
    pub clamped_lengths: u64,
    /// Events that brought no work.
    pub spurious_events: u64,
    /// Notifications sent to the backend.
    pub notifications: u64,
}

/// What [`Engine::process`] does about `rsp_event` once the rings look empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RspEvent {
    /// Arm it and look once more (the final check): the worker is about to
    /// sleep and needs an event for the next response.
    Arm,
    /// Leave it as it is: the worker is polling the rings, so the backend
    /// need not notify us for responses we are about to see anyway. The
    /// worker processes once more with [`Self::Arm`] before it sleeps.
    LeaveUnarmed,
}

/// Engine state; lives inside the frontend's mutex.
pub(crate) struct Engine {
    conn: Option<Connection>,
    dead: Option<BackendViolation>,
    slots: Vec<Slot>,
    free_ids: Vec<u16>,
    queue: VecDeque<Queued>,
    hub: RootHub,
    next_token: u64,
    events: Vec<PortEvent>,
    stats: EngineStats,
    warn_budget: u32,
    /// Set between [`Self::start_batch`] and [`Self::finish_batch`], while the
    /// worker runs completion callbacks: URBs they submit are pushed but
    /// published (and the backend notified) once, after the last callback,
    /// instead of once per URB.
    defer_flush: bool,
    /// The backend asked to be notified of what [`Self::flush`] published;
    /// the caller notifies after releasing the engine's lock
    /// ([`Self::take_notify`]).
    notify_due: bool,
}

/// Every request id, highest first, so that `pop` hands out 0 first.
fn all_ids() -> Vec<u16> {
    (0..=u16::MAX).take(NR_IDS).rev().collect()
}

impl Engine {
    pub(crate) fn new(num_ports: u8) -> Self {
        Self {
            conn: None,
            dead: None,
            slots: (0..NR_IDS).map(|_| Slot::Free).collect(),
            free_ids: all_ids(),
            queue: VecDeque::new(),
            hub: RootHub::new(num_ports),
            next_token: 1,
            events: Vec::new(),
            stats: EngineStats::default(),
            warn_budget: 16,
            defer_flush: false,
            notify_due: false,
        }
    }

    /// Whether a connection is attached (dead or not): false once the
    /// backend went away or the controller was torn down.
    pub(crate) fn is_attached(&self) -> bool {
        self.conn.is_some()
    }

    /// Whether `ch` is the current connection's event channel.
    pub(crate) fn uses_channel(&self, ch: &Arc<dyn EventChannel>) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.evtchn, ch))
    }

    /// The event channel the worker sleeps on: that of a live connection
    /// (a dead controller ignores events until the re-handshake).
    pub(crate) fn event_channel(&self) -> Option<Arc<dyn EventChannel>> {
        self.conn
            .as_ref()
            .filter(|_| self.dead.is_none())
            .map(|c| Arc::clone(&c.evtchn))
    }

    /// Grant references of the urb and conn ring pages.
    pub(crate) fn ring_refs(&self) -> Option<(u32, u32)> {
        self.conn.as_ref().map(Connection::ring_refs)
    }

    /// Why the controller is dead, if a backend protocol error killed it.
    pub(crate) fn dead_reason(&self) -> Option<BackendViolation> {
        self.dead
    }

    /// The counters.
    pub(crate) fn stats(&self) -> EngineStats {
        self.stats
    }

    /// A snapshot for an operator ([`crate::report`]).
    pub(crate) fn report(&self) -> EngineReport {
        let in_flight = (0u16..)
            .zip(&self.slots)
            .filter_map(|(id, slot)| match slot {
                Slot::Free => None,
                Slot::Submit(f) => Some(InFlightReport::Submit {
                    id,
                    token: f.token,
                    pipe: f.pipe,
                    unlinking: f.unlink_status.is_some(),
                }),
                Slot::Unlink { target } => Some(InFlightReport::Unlink {
                    id,
                    target: *target,
                }),
            });
        EngineReport {
            attached: self.conn.is_some(),
            dead: self.dead,
            in_flight: Listed::first(EngineReport::LISTED, in_flight),
            queued: self.queue.len(),
            urb_ring: self.conn.as_ref().map(|c| indexes(&c.urb)),
            conn_ring: self.conn.as_ref().map(|c| indexes(&c.conn)),
            stats: self.stats,
        }
    }

    /// The root hub, as the conn ring and local resets left it.
    pub(crate) fn hub(&self) -> &RootHub {
        &self.hub
    }

    /// A local port reset (spec 9): false if the port is missing or empty.
    pub(crate) fn reset_port(&mut self, port: u8) -> bool {
        match self.hub.reset(port) {
            Some(ev) => {
                self.events.push(ev);
                true
            }
            None => false,
        }
    }

    /// A free device address for enumeration, if any.
    pub(crate) fn alloc_address(&mut self) -> Option<u8> {
        self.hub.alloc_address()
    }

    /// Gives an address from [`Self::alloc_address`] back unused.
    pub(crate) fn release_address(&mut self, address: u8) {
        self.hub.release_address(Some(address));
    }

    /// Records the address the device on `port` now answers to.
    pub(crate) fn set_address(&mut self, port: u8, address: Option<u8>) {
        self.hub.set_address(port, address);
    }

    /// Port events since the last call, for the subscribers.
    pub(crate) fn take_events(&mut self) -> Vec<PortEvent> {
        std::mem::take(&mut self.events)
    }

    /// From now until [`Self::finish_batch`], submitted URBs are pushed onto
    /// the ring but not published.
    pub(crate) fn start_batch(&mut self) {
        self.defer_flush = true;
    }

    /// Publishes what was pushed since [`Self::start_batch`], notifying the
    /// backend once if it asked for it.
    pub(crate) fn finish_batch(&mut self) {
        self.defer_flush = false;
        self.flush();
    }

    /// Whether URBs can be submitted.
    pub(crate) fn usable(&self) -> bool {
        self.conn.is_some() && self.dead.is_none()
    }

    /// URBs in flight on the ring plus queued locally.
    pub(crate) fn outstanding(&self) -> usize {
        (NR_IDS - self.free_ids.len()) + self.queue.len()
    }

    /// Rate-limited warning: the backend can trigger these at will.
    fn warn(&mut self, what: &str) {
        if self.warn_budget > 0 {
            self.warn_budget -= 1;
            warn!("backend misbehaved: {what}");
        } else {
            debug!("backend misbehaved: {what}");
        }
    }

    /// Submits `urb`; returns its token. A URB that cannot be carried, or a
    /// controller that is not usable, completes it at once (into `done`).
    ///
    /// `from_batch`: the caller is a completion callback of the running
    /// batch ([`Self::start_batch`]), whose URBs are published together at
    /// its end. Any other caller's URB is published at once. WHY not every
    /// URB while a batch runs: another thread's URB would then wait for the
    /// worker to finish its callbacks, and on one vCPU for the worker to be
    /// scheduled again.
    pub(crate) fn submit(
        &mut self,
        urb: Urb,
        callback: Callback,
        from_batch: bool,
        done: &mut Done,
    ) -> u64 {
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        self.stats.submitted += 1;
        if !self.usable() {
            self.complete_local(callback, UrbStatus::Shutdown, urb.buffer, done);
            return token;
        }
        if let Err(reason) = urb.check(self.hub.num_ports()) {
            debug!("URB refused: {reason}");
            self.complete_local(callback, UrbStatus::Refused, urb.buffer, done);
            return token;
        }
        if self.queue.is_empty() && !self.free_ids.is_empty() {
            self.place(token, urb, callback, done);
            if !(self.defer_flush && from_batch) {
                self.flush();
            }
        } else {
            self.queue.push_back(Queued::Submit {
                token,
                urb,
                callback,
            });
        }
        token
    }

    fn complete_local(
        &mut self,
        callback: Callback,
        status: UrbStatus,
        buffer: Vec<u8>,
        done: &mut Done,
    ) {
        self.stats.completed += 1;
        done.push((callback, Completion::local(status, buffer)));
    }

    /// Puts a submit on the ring (not yet published). Needs a free id.
    fn place(&mut self, token: u64, urb: Urb, callback: Callback, done: &mut Done) {
        let (Some(id), Some(conn)) = (self.free_ids.pop(), self.conn.as_mut()) else {
            self.complete_local(callback, UrbStatus::Shutdown, urb.buffer, done);
            return;
        };
        let pushed = conn
            .build_request(id, &urb)
            .and_then(|(req, pipe)| Ok((conn.urb.push_request(&req)?, pipe)));
        match pushed {
            Ok(((), pipe)) => {
                if let Some(s) = self.slots.get_mut(usize::from(id)) {
                    *s = Slot::Submit(InFlight {
                        token,
                        urb,
                        callback,
                        pipe,
                        unlink_status: None,
                    });
                }
            }
            Err(e) => {
                debug!("cannot place URB: {e}", e = Chain(&e));
                self.free_ids.push(id);
                self.complete_local(callback, UrbStatus::Shutdown, urb.buffer, done);
            }
        }
    }

    /// Puts an unlink of the in-flight submit at `target` on the ring.
    fn place_unlink(&mut self, target: u16, pipe: Pipe) -> bool {
        let (Some(id), Some(conn)) = (self.free_ids.pop(), self.conn.as_mut()) else {
            return false;
        };
        if conn
            .urb
            .push_request(&UrbRequest::unlink(id, pipe, target))
            .is_err()
        {
            self.free_ids.push(id);
            return false;
        }
        if let Some(s) = self.slots.get_mut(usize::from(id)) {
            *s = Slot::Unlink { target };
        }
        self.stats.unlinks_sent += 1;
        true
    }

    /// Whether the backend published responses we have not consumed (a few
    /// shared-memory loads; nothing is armed). The worker polls this while it
    /// spins.
    pub(crate) fn responses_pending(&self) -> bool {
        self.usable()
            && self.conn.as_ref().is_some_and(|c| {
                c.urb.has_unconsumed_responses().unwrap_or(true)
                    || c.conn.has_unconsumed_responses().unwrap_or(true)
            })
    }

    /// Publishes pushed requests; if the backend asked to be notified, the
    /// notification is due ([`Self::take_notify`]).
    fn flush(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match conn.urb.push_requests_and_check_notify() {
            Ok(true) => self.notify_due = true,
            Ok(false) => {}
            Err(e) => debug!("publish failed: {e}", e = Chain(&e)),
        }
    }

    /// The event channel to notify for what was published since the last
    /// call, if the backend asked for it; the caller notifies once it has
    /// released the engine's lock.
    ///
    /// WHY outside the lock: a notify is a system call, and a thread
    /// switched out on its return (the guest's one vCPU going to the thread
    /// the published work wakes) would hold the lock, so the next thread to
    /// submit sleeps on it and the worker has to be switched in again to
    /// let it go: two more switches for one URB.
    pub(crate) fn take_notify(&mut self) -> Option<Arc<dyn EventChannel>> {
        if !std::mem::take(&mut self.notify_due) {
            return None;
        }
        let ch = self.conn.as_ref().map(|c| Arc::clone(&c.evtchn))?;
        self.stats.notifications += 1;
        Some(ch)
    }

    /// Moves queued work onto the ring while ids are free (FIFO).
    fn drain_queue(&mut self, done: &mut Done) {
        while !self.free_ids.is_empty() && self.usable() {
            match self.queue.pop_front() {
                None => break,
                Some(Queued::Submit {
                    token,
                    urb,
                    callback,
                }) => self.place(token, urb, callback, done),
                Some(Queued::Unlink { token }) => {
                    if let Some((target, pipe)) = self.in_flight(token) {
                        self.place_unlink(target, pipe);
                    }
                }
            }
        }
    }

    fn in_flight(&self, token: u64) -> Option<(u16, Pipe)> {
        (0u16..).zip(&self.slots).find_map(|(i, s)| match s {
            Slot::Submit(f) if f.token == token => Some((i, f.pipe)),
            _ => None,
        })
    }

    /// Spec 7.6: a URB still queued locally completes locally with `status`; an
    /// in-flight one gets an unlink request and completes with `status` when
    /// its own response arrives. Returns false if the URB had already completed.
    pub(crate) fn unlink(&mut self, token: u64, status: UrbStatus, done: &mut Done) -> bool {
        let queued = self
            .queue
            .iter()
            .position(|q| matches!(q, Queued::Submit { token: t, .. } if *t == token));
        if let Some(Queued::Submit { urb, callback, .. }) =
            queued.and_then(|i| self.queue.remove(i))
        {
            self.complete_local(callback, status, urb.buffer, done);
            return true;
        }
        let Some((target, pipe)) = self.in_flight(token) else {
            return false;
        };
        if let Some(Slot::Submit(f)) = self.slots.get_mut(usize::from(target)) {
            if f.unlink_status.is_some() {
                return true; // already being unlinked
            }
            f.unlink_status = Some(status);
        }
        if self.queue.is_empty() && self.place_unlink(target, pipe) {
            self.flush();
        } else {
            // Unlinks go before queued submits: they free ids sooner.
            self.queue.push_front(Queued::Unlink { token });
        }
        true
    }

    /// Consumes every published response on both rings (bounded), validating
    /// each, then refills the ring from the queue. Returns whether any work
    /// was found.
    ///
    /// Stops early, returning `true`, once `limit` URB responses were taken:
    /// the caller delivers those and publishes the URBs their callbacks
    /// submit before it calls again, so the backend gets new work while we
    /// still have responses to go through.
    pub(crate) fn process(&mut self, done: &mut Done, limit: usize, rsp_event: RspEvent) -> bool {
        let mut worked = false;
        let mut taken = 0;
        // Each pass consumes at most one ring's worth per ring; the bound only
        // matters against a backend that keeps producing forever.
        for _ in 0..64 {
            if !self.usable() {
                break;
            }
            let n_urb = self.process_urb_ring(done, limit - taken);
            let n_conn = self.process_conn_ring(done);
            worked |= n_urb + n_conn > 0;
            self.drain_queue(done);
            self.flush();
            taken += n_urb;
            if taken >= limit {
                break;
            }
            let more = match self.conn.as_mut() {
                Some(c) if rsp_event == RspEvent::LeaveUnarmed => c
                    .urb
                    .has_unconsumed_responses()
                    .and_then(|u| Ok(u | c.conn.has_unconsumed_responses()?)),
                Some(c) => c
                    .urb
                    .final_check_for_responses()
                    .and_then(|u| Ok(u | c.conn.final_check_for_responses()?)),
                None => Ok(false),
            };
            match more {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    self.kill(BackendViolation::Ring("urb or conn", e), done);
                    break;
                }
            }
        }
        if !worked {
            self.stats.spurious_events += 1;
        }
        worked
    }

    fn process_urb_ring(&mut self, done: &mut Done, limit: usize) -> usize {
        let mut n = 0;
        while n < limit.min(NR_IDS) {
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            let rsp = match conn.urb.take_response() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    self.kill(BackendViolation::Ring("urb", e), done);
                    break;
                }
            };
            n += 1;
            if let Err(reason) = self.complete(&rsp, done) {
                self.kill(reason, done);
                break;
            }
        }
        n
    }

    /// Spec 7.7: validate one response and give its URB back.
    fn complete(&mut self, rsp: &UrbResponse, done: &mut Done) -> Result<(), BackendViolation> {
        let id = rsp.id;
        let slot = self
            .slots
            .get_mut(usize::from(id))
            .ok_or(BackendViolation::IdOutOfRange(id))?;
        match std::mem::replace(slot, Slot::Free) {
            Slot::Free => return Err(BackendViolation::NotInFlight(id)),
            Slot::Unlink { target } => debug!("unlink {id} of {target} answered {}", rsp.status),
            Slot::Submit(f) => {
                let InFlight {
                    urb,
                    callback,
                    unlink_status,
                    ..
                } = f;
                if rsp.status().is_none() {
                    self.stats.bad_statuses += 1;
                    self.warn(&format!("undefined status {} for request {id}", rsp.status));
                }
                let requested = urb.buffer.len() as u64;
                // Negative (fails the conversion) or longer than the buffer.
                if u64::try_from(rsp.actual_length).map_or(true, |n| n > requested) {
                    self.stats.clamped_lengths += 1;
                    self.warn(&format!(
                        "actual_length {} of a {requested}-byte request",
                        rsp.actual_length
                    ));
                }
                let status = unlink_status.unwrap_or_else(|| UrbStatus::from_wire(rsp.status));
                let completion = match self.conn.as_mut() {
                    Some(conn) => conn.finish(id, urb, rsp, status),
                    // Responses come from a connection; without one the
                    // URB still gets its one completion.
                    None => Completion::local(UrbStatus::Shutdown, urb.buffer),
                };
                self.stats.completed += 1;
                done.push((callback, completion));
            }
        }
        self.free_ids.push(id);
        Ok(())
    }

    fn process_conn_ring(&mut self, done: &mut Done) -> usize {
        let mut n = 0;
        let mut error = None;
        while n < 512 {
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            let rsp = match conn.conn.take_response() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    error = Some(BackendViolation::Ring("conn", e));
                    break;
                }
            };
            n += 1;
            // Keep every slot posted: re-post one request per response taken.
            if let Err(e) = conn.conn.push_request(&ConnRequest { id: rsp.id }) {
                error = Some(BackendViolation::Ring("conn", e));
                break;
            }
            match self.hub.apply(&rsp) {
                Ok(Some(ev)) => self.events.push(ev),
                Ok(None) => {}
                Err(e) => {
                    error = Some(BackendViolation::Conn(e));
                    break;
                }
            }
        }
        if let Some(conn) = self.conn.as_mut() {
            if n > 0 {
                if let Ok(true) = conn.conn.push_requests_and_check_notify() {
                    self.notify_due = true;
                }
            }
        }
        if let Some(reason) = error {
            self.kill(reason, done);
        }
        n
    }

    /// A protocol error (spec 7.7): the controller is dead, every URB fails
    /// with shutdown, later events are ignored. Sticky until a re-handshake.
    fn kill(&mut self, reason: BackendViolation, done: &mut Done) {
        if self.dead.is_some() {
            return;
        }
        self.warn(&Chain(&reason).to_string());
        self.dead = Some(reason);
        self.fail_all(done);
        self.events.push(PortEvent::ControllerDead { reason });
    }

    /// Fails every in-flight and queued URB with shutdown and frees every id.
    fn fail_all(&mut self, done: &mut Done) {
        for slot in &mut self.slots {
            if let Slot::Submit(f) = std::mem::replace(slot, Slot::Free) {
                self.stats.completed += 1;
                done.push((
                    f.callback,
                    Completion::local(UrbStatus::Shutdown, f.urb.buffer),
                ));
            }
        }
        self.free_ids = all_ids();
        while let Some(q) = self.queue.pop_front() {
            if let Queued::Submit { urb, callback, .. } = q {
                self.stats.completed += 1;
                done.push((callback, Completion::local(UrbStatus::Shutdown, urb.buffer)));
            }
        }
    }

    /// The connection is over (backend gone or closing): fail everything, empty
    /// the root hub and hand the connection back for grant release.
    pub(crate) fn teardown(&mut self, done: &mut Done) -> Option<Connection> {
        self.fail_all(done);
        let events = self.hub.clear();
        self.events.extend(events);
        let conn = self.conn.take();
        if conn.is_some() {
            self.events.push(PortEvent::ControllerDisconnected);
        }
        conn
    }

    /// A fresh connection after a handshake: the dead flag is cleared.
    pub(crate) fn attach(&mut self, conn: Connection) {
        self.conn = Some(conn);
        self.dead = None;
        // Owed to the connection before, if anyone.
        self.notify_due = false;
        self.events.push(PortEvent::ControllerConnected);
    }
}

/// A front ring's indexes, ours and the shared ones.
fn indexes<Req: bytemuck::Pod, Rsp: bytemuck::Pod>(
    ring: &FrontRing<Req, Rsp, Page>,
) -> RingIndexes {
    let shared = ring.sring();
    RingIndexes {
        req_prod_pvt: ring.req_prod_pvt(),
        req_prod: shared.req_prod().ok(),
        req_event: shared.req_event().ok(),
        rsp_cons: ring.rsp_cons(),
        rsp_prod: shared.rsp_prod().ok(),
        rsp_event: shared.rsp_event().ok(),
    }
}
