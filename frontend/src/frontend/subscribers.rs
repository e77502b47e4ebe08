//! The channels of [`super::Frontend::subscribe`]: bounded, so a slow
//! subscriber costs a counter, not memory the backend could grow at will by
//! flipping a port at ring speed.

use crossbeam_channel::{Sender, TrySendError};

use crate::ports::PortEvent;

/// Events a subscriber's channel holds before it counts as lagging.
pub const SUBSCRIBER_QUEUE: usize = 256;

/// One subscriber's channel.
pub(super) struct Subscriber {
    tx: Sender<PortEvent>,
    /// Events dropped since the channel was last full.
    missed: u64,
}

impl Subscriber {
    /// A new channel of at most [`SUBSCRIBER_QUEUE`] events, with the
    /// receiving end for the subscriber.
    pub(super) fn new() -> (Self, crossbeam_channel::Receiver<PortEvent>) {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_QUEUE);
        (Self { tx, missed: 0 }, rx)
    }

    /// Sends `ev` unless the channel is full (then counts it as missed, and
    /// reports the count once there is room). Returns false when the
    /// receiver is gone.
    pub(super) fn offer(&mut self, ev: &PortEvent) -> bool {
        if self.missed > 0 {
            match self.tx.try_send(PortEvent::Lagged {
                missed: self.missed,
            }) {
                Ok(()) => self.missed = 0,
                Err(TrySendError::Full(_)) => {
                    self.missed += 1;
                    return true;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        match self.tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.missed += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend flipping a port at ring speed must not grow a slow
    /// subscriber's queue without bound.
    #[test]
    fn a_lagging_subscriber_gets_a_count_instead_of_an_unbounded_queue() {
        let (mut sub, rx) = Subscriber::new();
        let flip = |i: usize| PortEvent::Reset {
            port: u8::try_from(i % 8).unwrap_or(1),
        };
        for i in 0..SUBSCRIBER_QUEUE + 44 {
            assert!(sub.offer(&flip(i)));
        }
        assert_eq!(rx.len(), SUBSCRIBER_QUEUE);
        let _: Vec<_> = rx.try_iter().collect();
        assert!(sub.offer(&PortEvent::ControllerConnected));
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            vec![
                PortEvent::Lagged { missed: 44 },
                PortEvent::ControllerConnected
            ]
        );
        drop(rx);
        assert!(!sub.offer(&PortEvent::ControllerConnected), "receiver gone");
    }
}
