//! The guest's address table (which guest address is which port) saved in
//! the backend directory, so a restarted daemon keeps serving the addresses
//! the guest already assigned.

use std::time::{Duration, Instant};

use pvusb_protocol::xenstore as xsp;
use pvusb_support::Chain;
use pvusb_xen::{EventChannels, GrantMapper};

use super::Controller;
use crate::stats::Stats;

/// Backend-directory key holding the guest address table ("addr:port,...").
pub const ADDRESS_MAP_KEY: &str = "pvusb-addresses";

/// Shortest time between two saves of the address table
/// ([`Controller::save_addresses`]).
pub const ADDRESS_SAVE_INTERVAL: Duration = Duration::from_millis(500);

/// The address table waiting to be saved, and when the last save went.
#[derive(Debug, Default)]
pub(super) struct AddressSave {
    pending: Option<String>,
    last: Option<Instant>,
}

impl<G: GrantMapper, E: EventChannels> Controller<G, E> {
    /// Saves the address table in the backend directory when it changed, at
    /// most once per [`ADDRESS_SAVE_INTERVAL`]; a change inside the interval
    /// waits for its end ([`Self::save_due_in`] tells the worker when).
    ///
    /// WHY: every SET_ADDRESS may change the table, and each save is a
    /// transaction on the xenstored every domain shares: a guest toggling
    /// addresses drove ~94 transactions per second. A restarted daemon still
    /// finds the table as it was at most one interval before the crash (and a
    /// guest enumerates at a pace the first save catches at once).
    pub fn save_addresses(&mut self) {
        if let Some(setup) = self.setup.as_mut() {
            if let Some(map) = setup.engine.take_address_changes() {
                self.address_save.pending = Some(map);
            }
        }
        if self.save_due_in().is_some_and(|d| d.is_zero()) {
            self.write_addresses();
        }
    }

    /// How long until a deferred address-table save is due, if one waits.
    pub fn save_due_in(&self) -> Option<Duration> {
        self.address_save.pending.as_ref()?;
        Some(match self.address_save.last {
            Some(last) => ADDRESS_SAVE_INTERVAL.saturating_sub(last.elapsed()),
            None => Duration::ZERO,
        })
    }

    pub(super) fn write_addresses(&mut self) {
        let Some(map) = self.address_save.pending.take() else {
            return;
        };
        self.address_save.last = Some(Instant::now());
        Stats::inc(&self.stats.address_saves);
        let path = xsp::join(&self.be, ADDRESS_MAP_KEY);
        let dir = self.be.clone();
        let xs = &self.ctx.xs;
        let r = xs.transaction(|tx| {
            if xs.exists(tx, &dir)? {
                xs.write(tx, &path, &map)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!(ctl = %self.id, "cannot save the address table: {e}", e = Chain(&e));
        }
    }
}
