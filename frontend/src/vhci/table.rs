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
use crate::report::{BridgeReport, Listed};

/// One submitted URB awaiting its completion.
#[derive(Debug)]
pub(super) struct Entry {
    /// What its reply must agree with.
    pub request: Request,
    /// To cancel it (a split request: one per piece, in order); empty
    /// only between insertion and submission.
    pub handles: Vec<UrbHandle>,
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
            .flat_map(|e| e.handles.iter().cloned())
            .collect();
        drop(table);
        self.changed.notify_all();
        Some(handles)
    }
}

impl SharedTable {
    /// A snapshot of the table.
    pub fn report(&self) -> BridgeReport {
        let table = self.lock();
        let mut entries: Vec<(&u32, &Entry)> = table.in_flight.iter().collect();
        entries.sort_unstable_by_key(|(seq, _)| **seq);
        let lines = entries.into_iter().map(|(seq, e)| {
            let mut line = format!(
                "seq {seq} {:?} {} bytes",
                e.request.shape.direction, e.request.shape.transfer_buffer_length
            );
            if let Some((done, total)) = e.split.as_ref().map(Split::progress) {
                line.push_str(&format!(" split {done}/{total}"));
            }
            if e.handles.is_empty() {
                line.push_str(" not submitted");
            }
            if let Some(u) = e.unlink_seqnum {
                line.push_str(&format!(" unlink seq {u}"));
            }
            line
        });
        BridgeReport {
            credits_used: table.credits_used,
            ending: table.ending.as_ref().map(ToString::to_string),
            in_flight: Listed::first(BridgeReport::LISTED, lines),
        }
    }
}

#[cfg(test)]
mod tests {
    use pvusb_protocol::usbip::{Direction, PacketCount, SubmitShape};

    use super::*;

    fn entry(seqnum: u32, unlink_seqnum: Option<u32>) -> Entry {
        Entry {
            request: Request {
                seqnum,
                shape: SubmitShape {
                    direction: Direction::In,
                    transfer_buffer_length: 512,
                    number_of_packets: PacketCount::NotIso,
                },
                iso: Vec::new(),
            },
            handles: Vec::new(),
            split: None,
            unlink_seqnum,
        }
    }

    #[test]
    fn the_report_lists_pending_commands_by_seqnum() {
        let table = SharedTable::default();
        {
            let mut t = table.lock();
            t.in_flight.insert(9, entry(9, Some(12)));
            t.in_flight.insert(4, entry(4, None));
            t.credits_used = 3;
        }
        let report = table.report();
        assert_eq!(report.in_flight.total, 2);
        assert_eq!(
            report.to_string(),
            "2 in flight, 3 credits used; [seq 4 In 512 bytes not submitted]; \
             [seq 9 In 512 bytes not submitted unlink seq 12]"
        );
    }
}
