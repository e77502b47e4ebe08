//! The demo's end of the line protocol with its guest process: one request
//! out, one reply back, with a timeout (a hung guest must not hang the demo).

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use pvusb_support::Chain;

use super::wire::{Reply, Request};

/// Talks to the guest process.
#[derive(Debug)]
pub struct GuestLink {
    stdin: ChildStdin,
    replies: Receiver<String>,
}

impl GuestLink {
    /// Wraps the guest's pipes; a thread turns its stdout into reply lines.
    pub fn new(stdin: ChildStdin, stdout: ChildStdout) -> Self {
        let (tx, replies) = crossbeam_channel::unbounded();
        let _ = std::thread::Builder::new()
            .name("demo-guest-replies".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        Self { stdin, replies }
    }

    /// Sends a request without waiting for its reply (see [`Self::reply`]).
    pub fn send(&mut self, req: &Request) -> Result<(), String> {
        let text = serde_json::to_string(req)
            .map_err(|e| format!("cannot encode a request: {e}", e = Chain(&e)))?;
        writeln!(self.stdin, "{text}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("the guest is not listening ({e})", e = Chain(&e)))
    }

    /// The next reply; the guest's own errors become `Err`.
    pub fn reply(&mut self, timeout: Duration) -> Result<Reply, String> {
        let line = self.replies.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => format!("the guest did not answer within {timeout:?}"),
            RecvTimeoutError::Disconnected => "the guest exited without answering".to_owned(),
        })?;
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Error { message }) => Err(format!("guest: {message}")),
            Ok(r) => Ok(r),
            Err(e) => Err(format!(
                "unreadable reply from the guest ({e}): {line}",
                e = Chain(&e)
            )),
        }
    }

    /// [`Self::send`] then [`Self::reply`].
    pub fn call(&mut self, req: &Request, timeout: Duration) -> Result<Reply, String> {
        self.send(req)?;
        self.reply(timeout)
    }
}
