//! [`Peer`]: the backend daemon and every guest's frontend reduced to their
//! xenbus states, for the toolstack's tests (which test the toolstack, not
//! the ends).

use std::collections::HashMap;
use std::time::Duration;

use pvusb_xenstore::{Tx, XsClient};

use crate::background::Background;
use crate::controller::BACKEND_DOMID;
use crate::world::World;

/// How long the peer waits for a watch event before looking again.
const POLL: Duration = Duration::from_millis(20);

/// Answers the backend states (Initialising → Connected, Closing → Closed)
/// and writes the same to each guest's frontend state, through real
/// xenstore connections with the guests' own domids. Stops on drop.
#[derive(Debug)]
pub struct Peer {
    _thread: Background,
}

impl Peer {
    /// Starts it in `world`.
    pub fn start(world: &World) -> Peer {
        let sock = world.xs_path();
        let back = world.client();
        let base = format!("/local/domain/{BACKEND_DOMID}/backend/vusb");
        let watch = back.watch(&base).expect("a watch on the backend directory");
        let thread = Background::spawn(move |running| {
            let mut guests: HashMap<u16, XsClient> = HashMap::new();
            while running.get() {
                let _ = watch.receiver().recv_timeout(POLL);
                for g in back.directory(Tx::NONE, &base).unwrap_or_default() {
                    let Ok(domid) = g.parse::<u16>() else {
                        continue;
                    };
                    for d in back
                        .directory(Tx::NONE, &format!("{base}/{g}"))
                        .unwrap_or_default()
                    {
                        let be = format!("{base}/{g}/{d}");
                        let fe = format!("/local/domain/{domid}/device/vusb/{d}/state");
                        let guest = guests.entry(domid).or_insert_with(|| {
                            XsClient::connect_as(&sock, domid).expect("a guest connection")
                        });
                        // Read and answer the backend state in one
                        // transaction, so a toolstack write in between (e.g.
                        // ctrl-detach's Closing right after a crashed
                        // ctrl-attach) makes the answer retry instead of
                        // overwriting it with a stale Connected.
                        let answer = back.transaction(|tx| {
                            let state = back.read(tx, &format!("{be}/state"))?;
                            let next = match state.as_deref() {
                                Some("1") => "4",
                                Some("5") => "6",
                                _ => return Ok(None),
                            };
                            back.write(tx, &format!("{be}/state"), next)?;
                            Ok(Some(next))
                        });
                        if let Ok(Some(next)) = answer {
                            let _ = guest.write(Tx::NONE, &fe, next);
                        }
                    }
                }
            }
        });
        Peer { _thread: thread }
    }
}
