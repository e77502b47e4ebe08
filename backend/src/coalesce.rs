//! Bulk URB coalescing: consecutive small bulk URBs of one endpoint go to the
//! device as one transfer, and its result is split back into one answer per
//! URB.
//!
//! WHY: the stock xen-hcd has no scatter-gather, so usb-storage in a guest
//! sends a command's data as one URB per contiguous piece of its buffer, and
//! a guest (or pvusb's own frontend) may put several of them on the ring at
//! once. Each device transfer costs a fixed time in dom0 (libusb, usbfs, the
//! host controller, an interrupt) whatever its size: ~1.2 ms in the Xen
//! test-bed (scenario `anatomy`). One transfer for a burst pays it once.
//!
//! When: only a burst, i.e. URBs that are waiting together when the engine
//! dispatches (the controller dispatches after taking a batch of requests
//! and after completions). A lone URB goes at once, pipelined behind
//! whatever single transfers are in flight: holding it back in the hope of
//! company costs a whole completion round trip, often for nothing, while a
//! burst already holds a usb-storage command's data together. (Both were
//! measured in the Xen test-bed: docs/perf/2026-11-22-readme-history.md.)
//!
//! Semantics kept: a bulk transfer ends at a short packet, so a coalesced
//! transfer can only be split at boundaries the device would have honoured
//! itself, which holds when every URB is a whole number of max-size packets
//! ([`PACKET_MULTIPLE`] covers every speed; see [`joins`]). Where the device
//! ended the transfer, that URB gets the end; the URBs behind it received
//! nothing and go to the device again, in order, before anything queued
//! later. To keep that order nothing of the endpoint is given to the device
//! after a coalesced transfer until it is back (single transfers before it
//! are fine: they end before it starts). URBs too big to gain from it go one
//! by one, pipelined. Only devices that say they gain from it
//! ([`crate::usb::DeviceInfo::gains_from_coalescing`]: libusb ones, not the
//! emulated ones that answer inside `submit`) get coalesced transfers, and
//! only their bulk URBs wait for the dispatch.
//!
//! This module holds the rules (pure functions); the queues they act on are
//! the engine's endpoints (`crate::engine`'s `endpoint` module).

use crate::usb::TransferOutcome;

/// Every URB of a coalesced transfer but the last must be a multiple of this
/// (1024: the largest bulk max-packet size, SuperSpeed; a multiple of 512
/// and 64 too).
pub const PACKET_MULTIPLE: usize = 1024;
/// URBs larger than this are not coalesced: their fixed cost is small
/// against their data, and they stay pipelined one per transfer.
pub const MAX_URB: usize = 32 * 1024;
/// Upper bound of one coalesced transfer.
pub const MAX_TRANSFER: usize = 256 * 1024;

/// Whether a bulk URB of `len` bytes may go to the device together with
/// others.
pub fn coalescible(len: usize) -> bool {
    len > 0 && len <= MAX_URB
}

/// Whether a URB of `len` bytes may follow one of `prev` bytes in one
/// transfer: only runs of whole-packet URBs are coalesced.
///
/// WHY whole packets: a bulk pipe is a byte stream that a short packet ends,
/// so URBs of whole packets can be split back exactly where the device would
/// have put their boundaries. And the phase markers of the protocols that
/// send runs of small URBs are never whole packets (usb-storage's 31-byte CBW
/// and 13-byte CSW), so a run of whole-packet URBs stays inside one data
/// phase. That matters for devices emulated at the transfer level (QEMU's
/// usb-storage behind an emulated xHCI), which end a transfer at the end of a
/// phase. Sizes may differ: xen-hcd cuts a command's data into one URB per
/// physically contiguous piece of the guest's buffer (4 to 64 KiB, measured).
pub fn joins(prev: usize, len: usize) -> bool {
    prev % PACKET_MULTIPLE == 0 && len % PACKET_MULTIPLE == 0
}

/// One URB of a finished coalesced transfer, as the split sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Offset of its data in the transfer buffer.
    pub offset: usize,
    /// Its length.
    pub len: usize,
    /// The guest asked for an error on a short IN transfer.
    pub short_not_ok: bool,
    /// The guest unlinked it while the transfer was in flight.
    pub unlinked: bool,
}

/// What becomes of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Answer with `outcome` and `actual` bytes (IN data at its offset).
    Answer {
        /// How its part of the transfer ended.
        outcome: TransferOutcome,
        /// Bytes of its own.
        actual: usize,
    },
    /// It received nothing and was not unlinked: give it to the device again.
    Requeue,
}

/// Splits the result of a coalesced transfer (`outcome`, `actual` bytes)
/// over its `members` (in buffer order).
///
/// Every split answers at least one member (the one the transfer ended in,
/// or an unlinked one), so requeueing always makes progress.
pub fn split(members: &[Member], outcome: TransferOutcome, actual: usize) -> Vec<Fate> {
    // A cancel nobody's unlink asked for (port closing, device shutdown)
    // ends every member, like a vanished device.
    let final_outcome = matches!(
        outcome,
        TransferOutcome::NoDevice | TransferOutcome::Shutdown
    ) || (outcome == TransferOutcome::Cancelled
        && !members.iter().any(|m| m.unlinked));
    let mut ended = false;
    members
        .iter()
        .map(|m| {
            let end = m.offset.saturating_add(m.len);
            if actual >= end && !(ended && m.len > 0) {
                // Fully received: done, whatever ended the transfer after it.
                return Fate::Answer {
                    outcome: TransferOutcome::Completed,
                    actual: m.len,
                };
            }
            if ended {
                // Behind the end of the transfer: nothing of it reached the bus.
                return match outcome {
                    _ if m.unlinked => Fate::Answer {
                        outcome: TransferOutcome::Cancelled,
                        actual: 0,
                    },
                    _ if final_outcome => Fate::Answer { outcome, actual: 0 },
                    _ => Fate::Requeue,
                };
            }
            // The transfer ended inside this member (or at its start).
            ended = true;
            let got = actual.saturating_sub(m.offset).min(m.len);
            match outcome {
                TransferOutcome::Completed if got < m.len && m.short_not_ok => Fate::Answer {
                    outcome: TransferOutcome::Error,
                    actual: got,
                },
                TransferOutcome::Cancelled if !m.unlinked && !final_outcome => {
                    // Cancelled for another member's unlink. If it got
                    // nothing, it simply goes again. If part of it moved, it
                    // is answered as cancelled with what it got, never as a
                    // short success: a short success tells the guest's
                    // driver the data ended there (a silent truncation),
                    // and re-submitting the rest would give one URB two
                    // transfers' worth of state. Drivers that unlink one URB
                    // of a burst (usb-storage cancelling a command's
                    // scatter-gather) unlink its siblings next anyway.
                    if got == 0 {
                        Fate::Requeue
                    } else {
                        Fate::Answer {
                            outcome: TransferOutcome::Cancelled,
                            actual: got,
                        }
                    }
                }
                _ => Fate::Answer {
                    outcome,
                    actual: got,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(lens: &[usize]) -> Vec<Member> {
        let mut off = 0;
        lens.iter()
            .map(|&len| {
                let m = Member {
                    offset: off,
                    len,
                    short_not_ok: false,
                    unlinked: false,
                };
                off += len;
                m
            })
            .collect()
    }

    fn answer(outcome: TransferOutcome, actual: usize) -> Fate {
        Fate::Answer { outcome, actual }
    }

    use TransferOutcome::*;

    #[test]
    fn a_full_transfer_answers_every_member_whole() {
        let m = members(&[4096, 4096, 2048]);
        assert_eq!(
            split(&m, Completed, 10240),
            vec![
                answer(Completed, 4096),
                answer(Completed, 4096),
                answer(Completed, 2048)
            ]
        );
    }

    #[test]
    fn a_short_packet_ends_its_member_and_the_rest_go_again() {
        let m = members(&[4096, 4096, 4096, 4096]);
        assert_eq!(
            split(&m, Completed, 5000),
            vec![
                answer(Completed, 4096),
                answer(Completed, 904),
                Fate::Requeue,
                Fate::Requeue
            ]
        );
    }

    #[test]
    fn a_zero_length_packet_at_a_boundary_is_the_next_members_answer() {
        // The device sent exactly 4096 bytes then a zero-length packet: the
        // first URB was full, the second got the empty packet.
        let m = members(&[4096, 4096, 4096]);
        assert_eq!(
            split(&m, Completed, 4096),
            vec![answer(Completed, 4096), answer(Completed, 0), Fate::Requeue]
        );
    }

    #[test]
    fn short_not_ok_turns_the_ending_member_into_an_error() {
        let mut m = members(&[4096, 4096]);
        m[0].short_not_ok = true;
        m[1].short_not_ok = true;
        assert_eq!(
            split(&m, Completed, 100),
            vec![answer(Error, 100), Fate::Requeue]
        );
    }

    #[test]
    fn a_stall_goes_to_the_member_it_hit() {
        let m = members(&[4096, 4096, 4096]);
        assert_eq!(
            split(&m, Stall, 4096),
            vec![answer(Completed, 4096), answer(Stall, 0), Fate::Requeue]
        );
    }

    #[test]
    fn an_unlink_cancels_its_member_and_spares_the_others() {
        let mut m = members(&[4096, 4096, 4096, 4096]);
        m[2].unlinked = true;
        // Cancelled before anything moved: the unlinked one is answered, the
        // others (ahead of and behind it) go to the device again.
        assert_eq!(
            split(&m, Cancelled, 0),
            vec![
                Fate::Requeue,
                Fate::Requeue,
                answer(Cancelled, 0),
                Fate::Requeue
            ]
        );
        // Cancelled after 6000 bytes: the first is complete, the second is
        // answered as cancelled with what it got (never as a short
        // success, which would end the guest's data there), the unlinked
        // third as cancelled.
        assert_eq!(
            split(&m, Cancelled, 6000),
            vec![
                answer(Completed, 4096),
                answer(Cancelled, 1904),
                answer(Cancelled, 0),
                Fate::Requeue
            ]
        );
    }

    #[test]
    fn a_cancel_without_an_unlink_answers_everyone() {
        let m = members(&[4096, 4096, 4096]);
        assert_eq!(
            split(&m, Cancelled, 5000),
            vec![
                answer(Completed, 4096),
                answer(Cancelled, 904),
                answer(Cancelled, 0)
            ]
        );
    }

    #[test]
    fn a_vanished_device_answers_everyone() {
        let m = members(&[4096, 4096]);
        assert_eq!(
            split(&m, NoDevice, 0),
            vec![answer(NoDevice, 0), answer(NoDevice, 0)]
        );
    }

    #[test]
    fn only_runs_of_whole_packet_urbs_join() {
        assert!(joins(4096, 4096));
        assert!(joins(24576, 32768));
        assert!(!joins(4096, 13));
        assert!(!joins(13, 4096));
        assert!(!joins(4096, 2048 + 512));
        assert!(!joins(1000, 1000));
    }

    #[test]
    fn only_small_nonempty_urbs_coalesce() {
        assert!(coalescible(4096));
        assert!(coalescible(MAX_URB));
        assert!(!coalescible(0));
        assert!(!coalescible(MAX_URB + 1));
    }
}
