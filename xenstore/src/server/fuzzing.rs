//! The server's request handling without sockets or threads, for the fuzz
//! targets (`fuzz/`, target `xenstore_server`): bytes go in through the same
//! framing and dispatch the reader thread uses, replies come out of each
//! connection's output queue. Not a stable API.

use std::collections::BTreeMap;
use std::os::unix::net::UnixStream;

use crossbeam_channel::{bounded, Receiver};

use super::conn::on_read;
use super::state::{ConnId, State};
use super::ServerConfig;
use crate::wire::read_message;

/// One server's state and the client ends of its connections.
#[derive(Debug)]
pub struct Core {
    state: State,
    config: ServerConfig,
    queues: BTreeMap<ConnId, Queue>,
}

#[derive(Debug)]
struct Queue {
    rx: Receiver<Vec<u8>>,
    /// The client end of the socket pair whose server end the state holds (to
    /// shut it down when the client does not read).
    _peer: UnixStream,
}

impl Core {
    /// A server with `config` and no connection.
    pub fn new(config: ServerConfig) -> Core {
        Core {
            state: State::new(config.clone()),
            config,
            queues: BTreeMap::new(),
        }
    }

    /// Opens connection `id` (dom0 until it declares another domain), as the
    /// acceptor does. False if `id` is open or the connection limit is reached.
    pub fn connect(&mut self, id: u64) -> std::io::Result<bool> {
        if self.queues.contains_key(&id)
            || self.state.connection_count() >= self.config.max_connections
        {
            return Ok(false);
        }
        let (server_end, peer) = UnixStream::pair()?;
        let (tx, rx) = bounded(self.config.max_queued_messages);
        self.state.add_conn(id, tx, server_end);
        self.queues.insert(id, Queue { rx, _peer: peer });
        Ok(true)
    }

    /// Whether connection `id` is open and was not cut off for not reading.
    pub fn is_open(&self, id: u64) -> bool {
        self.queues.contains_key(&id) && self.state.is_alive(id)
    }

    /// The connection's domain and whether it is privileged.
    pub fn caller(&self, id: u64) -> Option<(u16, bool)> {
        self.state.caller(id).ok().map(|c| (c.domid, c.privileged))
    }

    /// Reads one message off the front of `bytes` and handles it as the
    /// connection's reader thread does. Returns false when the reader would hang
    /// up (end of stream, an oversized message, a connection cut off for not
    /// reading); the connection is then closed as the reader closes it.
    pub fn feed(&mut self, id: u64, bytes: &mut &[u8]) -> bool {
        if !self.queues.contains_key(&id) || self.state.caller(id).is_err() {
            return false;
        }
        // A connection cut off for not reading has its socket shut down: its
        // reader sees the end of the stream, not the bytes.
        let go_on = self.state.is_alive(id)
            && on_read(&mut self.state, id, read_message(bytes))
            && self.state.is_alive(id);
        if !go_on {
            self.state.remove_conn_after_flush(id);
        }
        go_on
    }

    /// The client closes connection `id`, as at end of stream.
    pub fn disconnect(&mut self, id: u64) {
        self.state.remove_conn_after_flush(id);
    }

    /// Takes everything queued for connection `id` (serialised messages). Once
    /// the connection is closed and drained, its queue is forgotten.
    pub fn output(&mut self, id: u64) -> Vec<Vec<u8>> {
        let Some(q) = self.queues.get(&id) else {
            return Vec::new();
        };
        let out: Vec<Vec<u8>> = q.rx.try_iter().collect();
        if self.state.caller(id).is_err() {
            self.queues.remove(&id);
        }
        out
    }

    /// Nodes of the committed tree owned by `domid`.
    pub fn owned_by(&self, domid: u16) -> usize {
        self.state.owned_by(domid)
    }

    /// Nodes in the committed tree.
    pub fn node_count(&self) -> usize {
        self.state.node_count()
    }

    /// The state's structural invariants (see `State::check_invariants`).
    pub fn check(&self) -> Result<(), String> {
        self.state.check_invariants()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Message, MsgType};

    fn request(ty: MsgType, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
        Message::new(ty, req_id, tx_id, payload.to_vec())
            .unwrap()
            .serialize()
    }

    fn replies(core: &mut Core, id: u64) -> Vec<Message> {
        core.output(id)
            .iter()
            .map(|b| Message::parse(b).unwrap().0)
            .collect()
    }

    #[test]
    fn requests_in_replies_out() {
        let mut core = Core::new(ServerConfig::simulation());
        assert!(core.connect(1).unwrap());
        assert!(!core.connect(1).unwrap());
        let bytes = [
            request(MsgType::Write, 1, 0, b"/a/b\0v"),
            request(MsgType::Watch, 2, 0, b"/a\0t\0"),
            request(MsgType::Read, 3, 0, b"/a/b\0"),
        ]
        .concat();
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            assert!(core.feed(1, &mut rest));
        }
        let got = replies(&mut core, 1);
        let kinds: Vec<MsgType> = got.iter().map(|m| m.msg_type).collect();
        assert_eq!(
            kinds,
            [
                MsgType::Write,
                MsgType::Watch,
                MsgType::WatchEvent,
                MsgType::Read
            ]
        );
        assert_eq!(got[3].payload(), b"v");
        core.check().unwrap();
        assert_eq!(core.node_count(), 5);
        // A truncated message ends the stream: the connection closes.
        let mut cut: &[u8] = &request(MsgType::Read, 4, 0, b"/a\0")[..10];
        assert!(!core.feed(1, &mut cut));
        assert!(!core.is_open(1));
        assert!(core.output(1).is_empty());
    }
}
