//! Target `xenstore_server`: the embedded xenstore server's request handling
//! (`pvusb_xenstore::server`), below the socket layer and without threads
//! (`server::fuzzing::Core`), fed by up to four connections that declare
//! domains, open transactions, register watches, set permissions, introduce and
//! release domains, send garbage, and sometimes stop reading their replies.
//!
//! Input layout (zero-padded, see [`crate::input`]): three config bytes (quotas:
//! nodes per domain, watches and transactions per connection, queued messages),
//! then up to [`MAX_STEPS`] operations, one opcode byte each (see [`Op`]) plus
//! their arguments. Requests are either built from a small vocabulary of paths,
//! permissions and tokens (so the fuzzer reaches deep states quickly) or raw
//! bytes framed by the server's own reader.
//!
//! Oracles: no panic; every queued message parses whole; every request gets
//! exactly one reply, in order, echoing its request and transaction ids, unless
//! its connection was cut off for not reading; errors are known errno names;
//! watch events name a token the connection registered; a request of an
//! unprivileged domain never takes that domain's node count past the quota (nor
//! raises another domain's); the server's own structural invariants hold
//! (trees connected, ownership counts right, quotas per connection).

use std::collections::{BTreeSet, VecDeque};

use pvusb_xenstore::server::fuzzing::Core;
use pvusb_xenstore::wire::{Message, MsgType, RawHeader, HEADER_LEN, PAYLOAD_MAX};
use pvusb_xenstore::{ServerConfig, DECLARE_DOMID_COMMAND};

use crate::input::Input;

/// Upper bound on operations per input.
pub const MAX_STEPS: usize = 256;
/// Connections the input can use (ids `0..CONNS`).
pub const CONNS: usize = 4;

const PATHS: [&str; 16] = [
    "/",
    "/local",
    "/local/domain",
    "/local/domain/1",
    "/local/domain/1/device/vusb/0/state",
    "/local/domain/2/data",
    "/a",
    "/a/b",
    "/a/b/c",
    "device/vusb/0",
    "data",
    "data/x/y",
    "@introduceDomain",
    "@releaseDomain",
    "/bad//path",
    "",
];
const PERMS: [&str; 8] = ["n0", "r1", "b2", "w1", "n1", "b0", "r2", "x9"];
const TOKENS: [&str; 3] = ["t", "u", ""];
const ERRNOS: [&str; 9] = [
    "EACCES", "EAGAIN", "EBUSY", "EEXIST", "EINVAL", "ENOENT", "ENOSYS", "EQUOTA", "E2BIG",
];

opcodes! {
    /// Operations, by opcode (`byte % 6`).
    pub enum Op {
        /// Connect `conn: u8` (dom0 until it declares a domain).
        Connect,
        /// `conn` closes its end.
        Disconnect,
        /// `conn` sends a request built from the vocabulary (see [`build`]).
        Request,
        /// `conn` sends `len: u8` raw bytes, framed by the server's reader.
        Raw,
        /// `conn` stops or resumes reading its replies (`flag: u8`).
        Reading,
        /// `conn` declares domain `d: u8 % 4` (`XS_CONTROL pvusb-domid`).
        Declare,
    }
}

/// What the harness knows about one connection.
#[derive(Debug, Default)]
struct Client {
    open: bool,
    reading: bool,
    /// `(req_id, tx_id)` of requests whose reply has not been seen yet.
    expected: VecDeque<(u32, u32)>,
    /// Tokens this connection ever asked to watch.
    tokens: BTreeSet<String>,
    /// The last transaction id the server handed out to it.
    last_tx: u32,
    /// Whether `expected`'s front is a transaction start (to learn its id).
    tx_starts: VecDeque<bool>,
    /// Its domain when it sent its last request.
    ident: Option<(u16, bool)>,
    /// It changed its domain after sending requests.
    mixed: bool,
}

struct Harness {
    core: Core,
    clients: Vec<Client>,
    max_nodes: usize,
}

/// Run one input. Panics only when an oracle fails.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (a, b, c) = (input.u8(), input.u8(), input.u8());
    let config = ServerConfig {
        trust_declared_domids: true,
        max_value_len: 64,
        max_nodes_per_domain: 2 + usize::from(a % 16),
        max_watches_per_connection: 1 + usize::from(b % 8),
        max_transactions_per_connection: 1 + usize::from((b >> 3) % 4),
        max_queued_messages: 2 + usize::from(c % 32),
        max_connections: CONNS,
    };
    let mut h = Harness {
        core: Core::new(config.clone()),
        clients: (0..CONNS).map(|_| Client::default()).collect(),
        max_nodes: config.max_nodes_per_domain,
    };
    // Connection 0 is always there, so short inputs do something.
    h.connect(0);
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let op = Op::decode(input.u8());
        let conn = usize::from(input.u8()) % CONNS;
        match op {
            Op::Connect => h.connect(conn),
            Op::Disconnect => {
                if h.clients[conn].open {
                    h.core.disconnect(conn as u64);
                    h.closed(conn);
                }
            }
            Op::Request => {
                let bytes = build(&mut input, h.clients[conn].last_tx);
                h.send(conn, &bytes);
            }
            Op::Raw => {
                let mut bytes = vec![0u8; usize::from(input.u8())];
                input.fill(&mut bytes);
                h.send(conn, &bytes);
            }
            Op::Reading => h.clients[conn].reading = input.u8().is_multiple_of(2),
            Op::Declare => {
                let d = (input.u8() % 4).to_string();
                let payload = [DECLARE_DOMID_COMMAND.as_bytes(), b"\0", d.as_bytes(), b"\0"];
                let msg = frame(MsgType::Control, 77, 0, &payload.concat());
                h.send(conn, &msg);
            }
        }
        h.drain();
        if let Err(e) = h.core.check() {
            panic!("server invariant broken: {e}");
        }
    }
    for c in &mut h.clients {
        c.reading = true;
    }
    h.drain();
}

fn frame(ty: MsgType, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let payload = payload.get(..PAYLOAD_MAX).unwrap_or(payload);
    Message::new(ty, req_id, tx_id, payload.to_vec())
        .map(|m| m.serialize())
        .unwrap_or_default()
}

/// A request from the vocabulary: `type: u8`, `req_id: u8`, `tx: u8` (0: none,
/// 1: the connection's last transaction, else that number), then arguments.
fn build(input: &mut Input<'_>, last_tx: u32) -> Vec<u8> {
    let ty = MsgType::try_from(u32::from(input.u8() % 24)).unwrap_or(MsgType::Read);
    let req_id = u32::from(input.u8());
    let tx = match input.u8() {
        0 | 2..=127 => 0,
        1 | 128..=191 => last_tx,
        t => u32::from(t),
    };
    let mut pick = |list: &[&'static str]| list[usize::from(input.u8()) % list.len()];
    let mut payload: Vec<u8> = Vec::new();
    let arg = |payload: &mut Vec<u8>, s: &str| {
        payload.extend_from_slice(s.as_bytes());
        payload.push(0);
    };
    match ty {
        MsgType::Write => {
            let path = pick(&PATHS);
            arg(&mut payload, path);
            let n = usize::from(input.u8() % 80);
            let mut value = vec![0u8; n];
            input.fill(&mut value);
            payload.extend_from_slice(&value);
        }
        MsgType::SetPerms => {
            let path = pick(&PATHS);
            arg(&mut payload, path);
            for _ in 0..input.u8() % 4 {
                let p = PERMS[usize::from(input.u8()) % PERMS.len()];
                arg(&mut payload, p);
            }
        }
        MsgType::Watch | MsgType::Unwatch => {
            let (path, token) = (pick(&PATHS), pick(&TOKENS));
            arg(&mut payload, path);
            arg(&mut payload, token);
        }
        MsgType::TransactionStart | MsgType::ResetWatches => {}
        MsgType::TransactionEnd => {
            let t = if input.u8().is_multiple_of(3) {
                "F"
            } else {
                "T"
            };
            arg(&mut payload, t);
        }
        MsgType::Introduce => {
            let d = (input.u8() % 4).to_string();
            arg(&mut payload, &d);
            arg(&mut payload, "1234");
            arg(&mut payload, "7");
        }
        MsgType::Release | MsgType::IsDomainIntroduced | MsgType::GetDomainPath => {
            let d = (input.u8() % 4).to_string();
            arg(&mut payload, &d);
        }
        _ => {
            let path = pick(&PATHS);
            arg(&mut payload, path);
        }
    }
    frame(ty, req_id, tx, &payload)
}

impl Harness {
    fn connect(&mut self, conn: usize) {
        if self.clients[conn].open {
            return;
        }
        // A closed connection's queue must be drained before its id is reused.
        if self.core.connect(conn as u64).expect("socketpair") {
            self.clients[conn] = Client {
                open: true,
                reading: true,
                ..Client::default()
            };
        }
    }

    fn closed(&mut self, conn: usize) {
        self.clients[conn].open = false;
    }

    /// Feeds `bytes` to the server as `conn`'s stream, message by message,
    /// recording the replies to expect.
    fn send(&mut self, conn: usize, bytes: &[u8]) {
        if !self.clients[conn].open {
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let expect = expected_reply(rest);
            if let Ok((m, _)) = Message::parse(rest) {
                if let (MsgType::Watch, Ok(args)) = (m.msg_type, m.args(2)) {
                    self.clients[conn].tokens.insert(args[1].to_owned());
                }
            }
            let ident = self.core.caller(conn as u64).expect("open connection");
            let (domid, privileged) = ident;
            // A connection that changes its domain after it has sent requests
            // (a simulation-only declaration) may commit a transaction it
            // opened as dom0: the quota oracle does not apply to it.
            let c = &mut self.clients[conn];
            c.mixed |= c.ident.is_some_and(|i| i != ident);
            c.ident = Some(ident);
            let mixed = c.mixed;
            let before: Vec<usize> = (0..4).map(|d| self.core.owned_by(d)).collect();
            let go_on = self.core.feed(conn as u64, &mut rest);
            let c = &mut self.clients[conn];
            if let Some((req_id, tx_id, start)) = expect {
                c.expected.push_back((req_id, tx_id));
                c.tx_starts.push_back(start);
            }
            if !privileged && !mixed {
                for (d, &was) in (0u16..).zip(&before) {
                    let now = self.core.owned_by(d);
                    if now > was {
                        assert_eq!(d, domid, "domain {domid} raised domain {d}'s node count");
                        assert!(
                            now <= self.max_nodes,
                            "domain {d} owns {now} nodes, quota {}",
                            self.max_nodes
                        );
                    }
                }
            }
            if !go_on {
                self.closed(conn);
                break;
            }
        }
    }

    /// Reads every reading connection's queue and checks what it holds.
    fn drain(&mut self) {
        for conn in 0..CONNS {
            if !self.clients[conn].reading {
                continue;
            }
            let out = self.core.output(conn as u64);
            let c = &mut self.clients[conn];
            for bytes in &out {
                let (msg, used) = Message::parse(bytes).expect("the server queued garbage");
                assert_eq!(used, bytes.len(), "trailing bytes after a queued message");
                if msg.msg_type == MsgType::WatchEvent {
                    let args = msg.args(2).expect("a watch event has two arguments");
                    assert!(
                        c.tokens.contains(args[1]),
                        "event for token {:?} never registered",
                        args[1]
                    );
                    continue;
                }
                let (req_id, tx_id) = c
                    .expected
                    .pop_front()
                    .unwrap_or_else(|| panic!("unexpected reply {msg:?}"));
                let start = c.tx_starts.pop_front().unwrap_or(false);
                assert_eq!((msg.req_id, msg.tx_id), (req_id, tx_id), "reply ids");
                if msg.msg_type == MsgType::Error {
                    let e = msg.one_arg().expect("an error names its errno");
                    assert!(ERRNOS.contains(&e), "unknown errno {e:?}");
                } else if start {
                    let id = msg.one_arg().expect("a transaction id");
                    c.last_tx = id.parse().expect("a numeric transaction id");
                }
            }
            if !c.open {
                // Cut off or closed: whatever was not queued never comes.
                c.expected.clear();
                c.tx_starts.clear();
            } else if self.core.is_open(conn as u64) {
                assert!(
                    c.expected.is_empty(),
                    "connection {conn}: {} requests without a reply",
                    c.expected.len()
                );
            }
        }
    }
}

/// The reply the front message of `stream` calls for, as the reader frames it:
/// `(req_id, tx_id, is a transaction start)`; `None` when the stream ends
/// inside it (the connection closes without a reply).
fn expected_reply(stream: &[u8]) -> Option<(u32, u32, bool)> {
    let head: &[u8; HEADER_LEN] = stream.get(..HEADER_LEN)?.try_into().ok()?;
    let raw = RawHeader::decode(head);
    match raw.payload_len() {
        Err(_) => Some((raw.req_id, raw.tx_id, false)),
        Ok(len) => {
            stream.get(..HEADER_LEN + len)?;
            let start = raw.msg_type == MsgType::TransactionStart as u32;
            Some((raw.req_id, raw.tx_id, start))
        }
    }
}

/// Inputs that reach the interesting paths.
pub fn seeds() -> Vec<Vec<u8>> {
    let req = |conn: u8, ty: MsgType, req_id: u8, tx: u8, args: &[u8]| {
        let mut v = vec![Op::Request as u8, conn, ty as u8, req_id, tx];
        v.extend_from_slice(args);
        v
    };
    let declare = |conn: u8, d: u8| vec![Op::Declare as u8, conn, d];
    let connect = |conn: u8| vec![Op::Connect as u8, conn];
    // Path indexes: 3 /local/domain/1, 6 /a, 7 /a/b, 9 device/vusb/0, 10 data,
    // 11 data/x/y, 12 @introduceDomain. Perm indexes: 0 n0, 1 r1, 3 w1.
    let basics = [
        vec![9, 3, 40],
        req(0, MsgType::Write, 1, 0, &[7, 3, b'a', b'b', b'c']),
        req(0, MsgType::Watch, 2, 0, &[6, 0]),
        req(0, MsgType::Read, 3, 0, &[7]),
        req(0, MsgType::Directory, 4, 0, &[6]),
        req(0, MsgType::GetPerms, 5, 0, &[7]),
        req(0, MsgType::SetPerms, 6, 0, &[7, 2, 0, 1]),
        req(0, MsgType::Rm, 7, 0, &[6]),
        req(0, MsgType::Unwatch, 8, 0, &[6, 0]),
    ]
    .concat();
    let guest = [
        vec![15, 2, 3],
        req(0, MsgType::Mkdir, 1, 0, &[3]),
        req(0, MsgType::SetPerms, 2, 0, &[3, 2, 0, 1]),
        req(0, MsgType::SetPerms, 2, 0, &[3, 2, 0, 3]),
        connect(1),
        declare(1, 1),
        req(1, MsgType::Write, 3, 0, &[9, 2, b'4', b'2']),
        req(1, MsgType::Write, 4, 0, &[11, 1, b'x']),
        req(1, MsgType::Write, 5, 0, &[10, 0]),
        req(1, MsgType::Read, 6, 0, &[6]),
        req(1, MsgType::Watch, 7, 0, &[10, 1]),
        req(0, MsgType::Rm, 8, 0, &[3]),
    ]
    .concat();
    let transactions = [
        vec![7, 9, 40],
        req(0, MsgType::TransactionStart, 1, 0, &[]),
        req(0, MsgType::Write, 2, 1, &[7, 1, b'v']),
        req(0, MsgType::Read, 3, 1, &[6]),
        req(0, MsgType::Write, 4, 0, &[6, 1, b'w']),
        req(0, MsgType::TransactionEnd, 5, 1, &[1]),
        req(0, MsgType::TransactionStart, 6, 0, &[]),
        req(0, MsgType::Mkdir, 7, 1, &[11]),
        req(0, MsgType::TransactionEnd, 8, 1, &[1]),
        req(0, MsgType::TransactionStart, 9, 0, &[]),
        req(0, MsgType::TransactionEnd, 10, 1, &[0]),
    ]
    .concat();
    let domains = [
        vec![3, 3, 3],
        req(0, MsgType::Watch, 1, 0, &[12, 0]),
        req(0, MsgType::Watch, 2, 0, &[13, 1]),
        req(0, MsgType::Introduce, 3, 0, &[2]),
        req(0, MsgType::IsDomainIntroduced, 4, 0, &[2]),
        req(0, MsgType::Release, 5, 0, &[2]),
        req(0, MsgType::GetDomainPath, 6, 0, &[3]),
        connect(2),
        declare(2, 2),
        req(2, MsgType::Introduce, 7, 0, &[1]),
        req(2, MsgType::ResetWatches, 8, 0, &[]),
    ]
    .concat();
    let flood = [
        vec![1, 0, 0],
        vec![Op::Reading as u8, 0, 1],
        req(0, MsgType::Watch, 1, 0, &[0, 0]),
        req(0, MsgType::Write, 2, 0, &[6, 0]),
        req(0, MsgType::Write, 3, 0, &[7, 0]),
        req(0, MsgType::Write, 4, 0, &[8, 0]),
        req(0, MsgType::Write, 5, 0, &[6, 0]),
        vec![Op::Reading as u8, 0, 0],
        connect(0),
        req(0, MsgType::Read, 6, 0, &[6]),
    ]
    .concat();
    let raw = {
        let mut v = vec![0, 0, 0, Op::Raw as u8, 0, 60];
        v.extend_from_slice(&frame(MsgType::Read, 1, 0, b"/a\0"));
        v.extend_from_slice(
            &RawHeader {
                msg_type: 99,
                req_id: 2,
                tx_id: 0,
                len: 0,
            }
            .encode(),
        );
        v.extend_from_slice(
            &RawHeader {
                msg_type: 2,
                req_id: 3,
                tx_id: 0,
                len: 5000,
            }
            .encode(),
        );
        v.resize(6 + 60, 0);
        v
    };
    vec![basics, guest, transactions, domains, flood, raw]
}

#[cfg(test)]
mod tests {
    crate::clean_run_tests!(800, 700);
}
