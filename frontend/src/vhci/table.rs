//! The bridge's in-flight table: which `CMD_SUBMIT`s await an answer, which
//! of them vhci asked to unlink, and the credits that bound both.
//!
//! WHY credits and not just the table's size: refusals and `RET_UNLINK`s
//! for finished URBs are answered without entering the table, yet they too
//! may wait in the answers' backlog. One credit per command read, given
//! back when the message answering it is on the socket, bounds everything
//! the bridge holds for the peer by [`super::BridgeOptions::max_in_flight`].

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use pvusb_support::lock_unpoisoned;

use super::split::Split;
use super::translate::Request;
use super::BridgeEnd;
use crate::frontend::UrbHandle;

/// One submitted URB awaiting its completion.
#[derive(Debug)]
pub(super) struct Entry {
    /// What its reply must agree with.
    pub request: Request,
    /// To cancel it (a split request: its piece in flight); `None` only
    /// between insertion and submission.
    pub handle: Option<UrbHandle>,
    /// A bulk request carried in pieces, and how far it got.
    pub split: Option<Split>,
    /// The `seqnum` of vhci's `CMD_UNLINK` for it, once one arrived.
    pub unlink_seqnum: Option<u32>,
}

#[derive(Debug, Default)]
pub(super) struct Table {
    /// By `CMD_SUBMIT` seqnum.
    pub in_flight: HashMap<u32, Entry>,
    /// Commands read and not yet answered on the socket.
    pub credits_used: usize,
    /// Set once the bridge is ending: the reader stops, completions of
    /// failed URBs are answered `-ENODEV`.
    pub ending: Option<BridgeEnd>,
}

/// The table and the condition the reader waits on for a credit.
#[derive(Debug, Default)]
pub(super) struct SharedTable {
    table: Mutex<Table>,
    changed: Condvar,
}

impl SharedTable {
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves the table consistent (every
        // update is a single insert or remove), so poisoning is ignored.
        lock_unpoisoned(&self.table)
    }

    /// Waits for a free credit and takes it; `false` if the bridge is ending.
    pub fn take_credit(&self, max: usize) -> bool {
        let mut table = self.lock();
        loop {
            if table.ending.is_some() {
                return false;
            }
            if table.credits_used < max {
                table.credits_used += 1;
                return true;
            }
            table = self.changed.wait(table).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Gives `n` credits back once their answer is written.
    pub fn release(&self, n: usize) {
        let mut table = self.lock();
        table.credits_used = table.credits_used.saturating_sub(n);
        drop(table);
        self.changed.notify_all();
    }

    /// Marks the bridge ending (first reason wins) and returns the handles
    /// of every URB still in flight, to cancel them outside the lock.
    pub fn begin_end(&self, reason: BridgeEnd) -> Option<Vec<UrbHandle>> {
        let mut table = self.lock();
        if table.ending.is_some() {
            return None;
        }
        table.ending = Some(reason);
        let handles = table
            .in_flight
            .values()
            .filter_map(|e| e.handle.clone())
            .collect();
        drop(table);
        self.changed.notify_all();
        Some(handles)
    }
}
