//! [`Bridge`]: one pvUSB device served to vhci-hcd over one stream socket,
//! with a reader thread (commands in, URBs submitted) and a bridge thread
//! (port events watched, the end decided, answers the socket could not
//! take at once written).
//!
//! WHY two threads and not one: the reader blocks in `read` on the socket,
//! and port events and the end must be acted on while it does. Answers do
//! not go through a thread: see the `answer` module.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use pvusb_protocol::consts::URB_RING_SIZE;
use pvusb_protocol::usbip::Limits;
use thiserror::Error;

use super::answer::Answers;
use super::reader::Reader;
use super::table::SharedTable;
use super::translate::DeviceTarget;
use super::watch::{Event, Watch};
use crate::frontend::Frontend;
use crate::report::BridgeReport;

/// Default bound on commands held ([`BridgeOptions::max_in_flight`]).
///
/// WHY four rings' worth: the usbif ring has [`URB_RING_SIZE`] request
/// slots per controller, shared by every device; more keeps the ring full
/// while replies are written (the frontend queues the rest locally), and
/// the bound keeps what one guest driver can make the bridge hold to 64
/// requests, each of at most [`crate::MAX_URB_DATA`] bytes unless it is a
/// split bulk request (at most [`Limits::max_transfer_len`], 1 MiB by
/// default: lower it, or this, to hold less).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4 * URB_RING_SIZE;

/// How a bridge is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeOptions {
    /// Commands read and not yet answered; the reader stops reading the
    /// socket at this many (vhci's own queue then holds the rest).
    pub max_in_flight: usize,
    /// What the decoder accepts; a larger message ends the bridge.
    pub limits: Limits,
    /// When the bridge ends, how long it waits for cancelled URBs to
    /// complete before it closes the socket regardless.
    pub drain_timeout: Duration,
    /// How long one reply may wait for the peer to read; longer ends the
    /// bridge. WHY: a peer that stops reading would otherwise block the
    /// bridge thread forever, and with it [`Bridge::stop`] and port events.
    pub write_timeout: Duration,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            limits: Limits::DEFAULT,
            drain_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a bridge ended. After any of them the socket is shut down, which
/// makes vhci detach its port.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BridgeEnd {
    /// The controller disconnected, died or was dropped.
    #[error("the pvUSB controller went away")]
    ControllerGone,
    /// The device was unplugged, replaced or reset behind the bridge.
    #[error("the device left port {0}")]
    DeviceGone(u8),
    /// vhci closed its end (the port was detached).
    #[error("the peer closed the socket")]
    PeerClosed,
    /// vhci sent something the decoder refuses, or a duplicate seqnum.
    #[error("protocol error from the peer: {0}")]
    Protocol(String),
    /// Reading or writing the socket failed.
    #[error("socket error: {0}")]
    Socket(io::ErrorKind),
    /// [`Bridge::stop`] was called.
    #[error("stopped")]
    Stopped,
}

/// Why a bridge could not start.
#[derive(Debug, Error)]
pub enum BridgeError {
    /// The device is not (or no longer) on its port at its address.
    #[error("no device at address {address} on port {port}")]
    NotAttached {
        /// Root-hub port.
        port: u8,
        /// Expected address.
        address: u8,
    },
    /// Setting up the socket (write timeout, clone for the second thread)
    /// failed.
    #[error("cannot set up the socket")]
    Socket(#[source] io::Error),
    /// A thread could not be spawned.
    #[error("cannot spawn a bridge thread")]
    Spawn(#[source] io::Error),
}

/// A running bridge for one device.
#[derive(Debug)]
pub struct Bridge {
    events: Sender<Event>,
    table: Arc<SharedTable>,
    reader: Option<JoinHandle<()>>,
    watch: Option<JoinHandle<BridgeEnd>>,
}

impl Bridge {
    /// Serves `target` to the peer on `socket` until the device, the
    /// controller or the peer goes away. The device must be addressed
    /// (enumerated) on the frontend already.
    pub fn spawn(
        front: Arc<Frontend>,
        target: DeviceTarget,
        socket: UnixStream,
        options: BridgeOptions,
    ) -> Result<Self, BridgeError> {
        // Subscribe first, then check: a disconnect in between is then seen.
        let port_events = front.subscribe();
        let here = front
            .port(target.port)
            .map(|p| p.connected() && p.address == Some(target.address))
            .unwrap_or(false);
        if !here {
            return Err(BridgeError::NotAttached {
                port: target.port,
                address: target.address,
            });
        }
        let options = BridgeOptions {
            // No credit at all would leave the reader waiting forever.
            max_in_flight: options.max_in_flight.max(1),
            ..options
        };
        socket
            .set_write_timeout(Some(options.write_timeout.max(Duration::from_millis(1))))
            .map_err(BridgeError::Socket)?;
        let read_half = socket.try_clone().map_err(BridgeError::Socket)?;
        let watch_half = socket.try_clone().map_err(BridgeError::Socket)?;
        let (events, events_rx) = crossbeam_channel::unbounded();
        let table = Arc::new(SharedTable::default());
        let answers = Arc::new(Answers::new(
            Arc::clone(&table),
            target,
            Arc::downgrade(&front),
            socket,
            events.clone(),
        ));
        let watch = Watch::new(
            Arc::clone(&answers),
            target,
            watch_half,
            events_rx,
            port_events,
            front,
            options.drain_timeout,
        );
        let watch = std::thread::Builder::new()
            .name(format!("vhci-tx-{}", target.port))
            .spawn(move || watch.run())
            .map_err(BridgeError::Spawn)?;
        let reader = Reader::new(answers, target, read_half, events.clone(), options);
        let reader = std::thread::Builder::new()
            .name(format!("vhci-rx-{}", target.port))
            .spawn(move || reader.run());
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                let _ = events.send(Event::Stop);
                let _ = watch.join();
                return Err(BridgeError::Spawn(e));
            }
        };
        Ok(Self {
            events,
            table,
            reader: Some(reader),
            watch: Some(watch),
        })
    }

    /// Asks the bridge to end: pending URBs are cancelled and answered
    /// `-ENODEV`, then the socket is shut down. [`Bridge::join`] waits.
    pub fn stop(&self) {
        let _ = self.events.send(Event::Stop);
    }

    /// What the bridge holds for vhci now.
    pub fn report(&self) -> BridgeReport {
        self.table.report()
    }

    /// True once the bridge has ended (by itself or after [`Bridge::stop`]);
    /// [`Bridge::join`] then returns at once.
    pub fn is_finished(&self) -> bool {
        self.watch.as_ref().is_none_or(|w| w.is_finished())
    }

    /// Waits for the bridge to end and says why it did.
    pub fn join(mut self) -> BridgeEnd {
        self.join_threads()
    }

    fn join_threads(&mut self) -> BridgeEnd {
        let end = self
            .watch
            .take()
            .map(|w| w.join().unwrap_or(BridgeEnd::Stopped))
            .unwrap_or(BridgeEnd::Stopped);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        end
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if self.watch.is_some() {
            self.stop();
            self.join_threads();
        }
    }
}
