//! The bridge's own thread: writes the answers the socket could not take
//! at once (the backlog of [`Answers`]), watches the port, and decides when
//! and why the bridge ends.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use tracing::info;

use super::answer::Answers;
use super::table::SharedTable;
use super::translate::DeviceTarget;
use super::BridgeEnd;
use crate::error::UrbStatus;
use crate::frontend::Frontend;
use crate::ports::PortEvent;

/// How often the thread looks at the drain deadline while ending.
const TICK: Duration = Duration::from_millis(100);

/// What the reader, the answers and [`super::Bridge::stop`] tell the thread.
#[derive(Debug)]
pub(super) enum Event {
    /// Answers wait in the backlog.
    Backlog,
    /// A write to the socket failed.
    SocketFailed(std::io::ErrorKind),
    /// The reader stopped.
    ReaderDone(BridgeEnd),
    /// [`super::Bridge::stop`].
    Stop,
}

pub(super) struct Watch {
    table: Arc<SharedTable>,
    answers: Arc<Answers>,
    target: DeviceTarget,
    /// For blocking writes of the backlog, and the final shutdown.
    socket: UnixStream,
    events: Receiver<Event>,
    port_events: Receiver<PortEvent>,
    front: Arc<Frontend>,
    drain_timeout: Duration,
    /// Set when the bridge started ending.
    drain_deadline: Option<Instant>,
}

impl Watch {
    pub fn new(
        answers: Arc<Answers>,
        target: DeviceTarget,
        socket: UnixStream,
        events: Receiver<Event>,
        port_events: Receiver<PortEvent>,
        front: Arc<Frontend>,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            table: answers.table(),
            answers,
            target,
            socket,
            events,
            port_events,
            front,
            drain_timeout,
            drain_deadline: None,
        }
    }

    /// Runs until the bridge has ended and the socket is shut down.
    pub fn run(mut self) -> BridgeEnd {
        loop {
            select! {
                recv(self.events) -> event => match event {
                    Ok(event) => self.handle(event),
                    // Unreachable while the answers hold a sender; treat as a stop.
                    Err(_) => self.begin_end(BridgeEnd::Stopped),
                },
                recv(self.port_events) -> event => match event {
                    Ok(event) => self.port_event(event),
                    Err(_) => self.begin_end(BridgeEnd::ControllerGone),
                },
                default(TICK) => {}
            }
            if let Some(deadline) = self.drain_deadline {
                let drained = self.table.lock().in_flight.is_empty() && self.answers.flushed();
                if drained || Instant::now() >= deadline {
                    break;
                }
            }
        }
        // vhci sees the end of stream and detaches the port.
        let _ = self.socket.shutdown(Shutdown::Both);
        let end = self
            .table
            .lock()
            .ending
            .clone()
            .unwrap_or(BridgeEnd::Stopped);
        info!(port = self.target.port, %end, "vhci bridge ended");
        end
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Backlog => {
                if let Err(kind) = self.answers.drain_backlog(&self.socket) {
                    self.begin_end(BridgeEnd::Socket(kind));
                }
            }
            Event::SocketFailed(kind) => self.begin_end(BridgeEnd::Socket(kind)),
            Event::ReaderDone(end) => self.begin_end(end),
            Event::Stop => self.begin_end(BridgeEnd::Stopped),
        }
    }

    fn port_event(&mut self, event: PortEvent) {
        let port = self.target.port;
        let end = match event {
            PortEvent::Disconnected { port: p }
            | PortEvent::Reset { port: p }
            | PortEvent::Connected { port: p, .. }
                if p == port =>
            {
                Some(BridgeEnd::DeviceGone(port))
            }
            PortEvent::ControllerDisconnected | PortEvent::ControllerDead { .. } => {
                Some(BridgeEnd::ControllerGone)
            }
            // Events were dropped: look at the port as it is now.
            PortEvent::Lagged { .. } => {
                let here = self
                    .front
                    .port(port)
                    .map(|p| p.connected() && p.address == Some(self.target.address))
                    .unwrap_or(false);
                (!here).then_some(BridgeEnd::DeviceGone(port))
            }
            _ => None,
        };
        if let Some(end) = end {
            self.begin_end(end);
        }
    }

    /// Starts ending (once): every URB in flight is cancelled and will be
    /// answered `-ENODEV` as it completes, within the drain timeout.
    fn begin_end(&mut self, end: BridgeEnd) {
        let Some(handles) = self.table.begin_end(end) else {
            return;
        };
        self.drain_deadline = Some(Instant::now() + self.drain_timeout);
        for handle in handles {
            handle.unlink(UrbStatus::NoDev);
        }
    }
}
