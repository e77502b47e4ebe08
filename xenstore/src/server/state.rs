//! The server's shared state and the request handler: connections, watches,
//! transactions and introduced domains around the [`Tree`]. Everything here runs
//! under one mutex and never blocks: replies and watch events go into each
//! connection's bounded output queue with `try_send`, and a connection whose
//! queue is full is disconnected rather than allowed to stall everyone.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::net::UnixStream;

use crossbeam_channel::{Sender, TrySendError};

use super::errno::Errno;
use super::path::{
    domain_path, is_at_or_below, is_strictly_below, resolve, Resolved, INTRODUCE_DOMAIN,
    RELEASE_DOMAIN,
};
use super::tree::{Caller, Effects, Event, Limits, Tree};
use super::ServerConfig;
use crate::client::DECLARE_DOMID_COMMAND;
use crate::perms::{access_for, perms_to_payload, Perm};
use crate::wire::{join_args, parse_number, Message, MsgType, PAYLOAD_MAX};

pub(crate) type ConnId = u64;

#[derive(Debug)]
struct WatchReg {
    target: Resolved,
    token: String,
}

#[derive(Debug)]
struct Conn {
    caller: Caller,
    out: Sender<Vec<u8>>,
    /// A clone of the socket, shut down to disconnect an overflowing client.
    socket: UnixStream,
    watches: Vec<WatchReg>,
    dead: bool,
}

impl Conn {
    fn push(&mut self, msg: &Message) {
        if self.dead {
            return;
        }
        match self.out.try_send(msg.serialize()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::debug!(
                    domid = self.caller.domid,
                    "xenstore client not reading; disconnecting it"
                );
                self.kill();
            }
            Err(TrySendError::Disconnected(_)) => self.kill(),
        }
    }

    fn kill(&mut self) {
        self.dead = true;
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

#[derive(Debug)]
struct Txn {
    owner: ConnId,
    tree: Tree,
    /// Every path the transaction looked at, with its stamp when first seen.
    accessed: HashMap<String, Option<u64>>,
    modified: BTreeSet<String>,
    events: Vec<Event>,
}

/// What a successful request produced.
struct Outcome {
    payload: Vec<u8>,
    events: Vec<Event>,
    /// The initial fire of a new watch, sent after the reply.
    followup: Option<Message>,
}

impl Outcome {
    fn ok() -> Outcome {
        Outcome::reply(join_args(&["OK"]))
    }
    fn reply(payload: Vec<u8>) -> Outcome {
        Outcome {
            payload,
            events: Vec::new(),
            followup: None,
        }
    }
}

/// Everything the server knows.
#[derive(Debug)]
pub(crate) struct State {
    config: ServerConfig,
    tree: Tree,
    stamp: u64,
    conns: HashMap<ConnId, Conn>,
    txns: HashMap<u32, Txn>,
    next_tx: u32,
    introduced: BTreeSet<u16>,
}

impl State {
    pub fn new(config: ServerConfig) -> State {
        State {
            config,
            tree: Tree::new(),
            stamp: 0,
            conns: HashMap::new(),
            txns: HashMap::new(),
            next_tx: 1,
            introduced: BTreeSet::new(),
        }
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Registers a connection; it is dom0 (privileged) until it declares otherwise.
    pub fn add_conn(&mut self, id: ConnId, out: Sender<Vec<u8>>, socket: UnixStream) {
        let caller = Caller {
            domid: 0,
            privileged: true,
        };
        self.conns.insert(
            id,
            Conn {
                caller,
                out,
                socket,
                watches: Vec::new(),
                dead: false,
            },
        );
    }

    /// Forgets a connection with its watches and transactions.
    pub fn remove_conn(&mut self, id: ConnId) {
        if let Some(mut c) = self.conns.remove(&id) {
            c.kill();
        }
        self.txns.retain(|_, t| t.owner != id);
    }

    /// Forgets a connection whose client stopped sending, without cutting the
    /// socket: dropping its queue sender lets the writer flush pending replies
    /// first (the writer's send timeout bounds how long that may take).
    pub fn remove_conn_after_flush(&mut self, id: ConnId) {
        self.conns.remove(&id);
        self.txns.retain(|_, t| t.owner != id);
    }

    /// Disconnects everyone (server shutdown).
    pub fn kill_all(&mut self) {
        for c in self.conns.values_mut() {
            c.kill();
        }
    }

    /// Answers an unparseable request with an error.
    pub fn reply_error(&mut self, id: ConnId, req_id: u32, tx_id: u32, errno: &str) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.push(&Message::error(req_id, tx_id, errno));
        }
    }

    /// Handles one request from connection `id`: queues the reply, then fires the
    /// watches the request triggered.
    pub fn handle(&mut self, id: ConnId, msg: &Message) {
        let result = self.dispatch(id, msg);
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match result {
            Ok(out) => {
                match Message::new(msg.msg_type, msg.req_id, msg.tx_id, out.payload) {
                    Ok(reply) => conn.push(&reply),
                    Err(_) => {
                        conn.push(&Message::error(msg.req_id, msg.tx_id, Errno::TooBig.name()))
                    }
                }
                if let Some(f) = out.followup {
                    conn.push(&f);
                }
                self.fire(&out.events);
            }
            Err(e) => conn.push(&Message::error(msg.req_id, msg.tx_id, e.name())),
        }
    }

    pub(super) fn caller(&self, id: ConnId) -> Result<Caller, Errno> {
        self.conns.get(&id).map(|c| c.caller).ok_or(Errno::Invalid)
    }

    /// Whether connection `id` exists and was not cut for not reading.
    pub(super) fn is_alive(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| !c.dead)
    }

    /// Nodes of the committed tree owned by `domid`.
    pub(super) fn owned_by(&self, domid: u16) -> usize {
        self.tree.owned_by(domid)
    }

    /// Nodes in the committed tree.
    pub(super) fn node_count(&self) -> usize {
        self.tree.len()
    }

    /// Structural invariants of everything the state holds (for tests and the
    /// fuzz targets): every tree is well formed, every transaction belongs to a
    /// connection, no connection exceeds its watch or transaction quota.
    pub(super) fn check_invariants(&self) -> Result<(), String> {
        self.tree.check_invariants()?;
        for (tx_id, t) in &self.txns {
            if *tx_id == 0 || !self.conns.contains_key(&t.owner) {
                return Err(format!("transaction {tx_id} of a missing connection"));
            }
            t.tree
                .check_invariants()
                .map_err(|e| format!("transaction {tx_id}: {e}"))?;
        }
        for (id, c) in &self.conns {
            if c.watches.len() > self.config.max_watches_per_connection {
                return Err(format!("connection {id} holds {} watches", c.watches.len()));
            }
            let open = self.txns.values().filter(|t| t.owner == *id).count();
            if open > self.config.max_transactions_per_connection {
                return Err(format!("connection {id} holds {open} transactions"));
            }
        }
        if self.introduced.contains(&0) {
            return Err("dom0 is among the introduced domains".into());
        }
        Ok(())
    }

    fn limits(&self) -> Limits {
        Limits {
            max_value_len: self.config.max_value_len,
            max_nodes_per_domain: self.config.max_nodes_per_domain,
        }
    }

    fn resolve_node(&self, id: ConnId, path: &str) -> Result<String, Errno> {
        let r = resolve(path, self.caller(id)?.domid)?;
        if r.is_special() {
            return Err(Errno::Invalid);
        }
        Ok(r.abs)
    }

    /// Runs a tree operation on the committed tree or on the request's transaction.
    /// Outside a transaction, the events are returned to fire now; inside, they are
    /// kept for the commit.
    fn on_tree<R>(
        &mut self,
        id: ConnId,
        tx_id: u32,
        op: impl FnOnce(&mut Tree, &mut Effects, u64) -> Result<R, Errno>,
    ) -> Result<(R, Vec<Event>), Errno> {
        let mut fx = Effects::default();
        if tx_id == 0 {
            self.stamp = self.stamp.wrapping_add(1);
            let r = op(&mut self.tree, &mut fx, self.stamp)?;
            return Ok((r, fx.events));
        }
        let txn = self
            .txns
            .get_mut(&tx_id)
            .filter(|t| t.owner == id)
            .ok_or(Errno::NoEnt)?;
        let r = op(&mut txn.tree, &mut fx, 0);
        for (path, gen) in fx.touched {
            txn.accessed.entry(path).or_insert(gen);
        }
        let r = r?;
        txn.modified.extend(fx.modified);
        txn.events.extend(fx.events);
        Ok((r, Vec::new()))
    }

    fn dispatch(&mut self, id: ConnId, msg: &Message) -> Result<Outcome, Errno> {
        let caller = self.caller(id)?;
        let tx = msg.tx_id;
        match msg.msg_type {
            MsgType::Read => {
                let path = self.resolve_node(id, msg.one_arg()?)?;
                let (value, _) = self.on_tree(id, tx, |t, fx, _| {
                    t.readable(caller, &path, fx).map(|n| n.value.clone())
                })?;
                Ok(Outcome::reply(value))
            }
            MsgType::Write => {
                let (path, value) = msg.path_and_value()?;
                let path = self.resolve_node(id, path)?;
                let limits = self.limits();
                let ((), events) = self.on_tree(id, tx, |t, fx, s| {
                    t.write(caller, limits, &path, value, s, fx)
                })?;
                Ok(Outcome {
                    events,
                    ..Outcome::ok()
                })
            }
            MsgType::Mkdir => {
                let path = self.resolve_node(id, msg.one_arg()?)?;
                let limits = self.limits();
                let ((), events) =
                    self.on_tree(id, tx, |t, fx, s| t.mkdir(caller, limits, &path, s, fx))?;
                Ok(Outcome {
                    events,
                    ..Outcome::ok()
                })
            }
            MsgType::Rm => {
                let path = self.resolve_node(id, msg.one_arg()?)?;
                let ((), events) = self.on_tree(id, tx, |t, fx, s| t.rm(caller, &path, s, fx))?;
                Ok(Outcome {
                    events,
                    ..Outcome::ok()
                })
            }
            MsgType::Directory => {
                let path = self.resolve_node(id, msg.one_arg()?)?;
                let (names, _) = self.on_tree(id, tx, |t, fx, _| {
                    t.readable(caller, &path, fx)?;
                    Ok(t.children(&path))
                })?;
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let payload = join_args(&names);
                if payload.len() > PAYLOAD_MAX {
                    return Err(Errno::TooBig);
                }
                Ok(Outcome::reply(payload))
            }
            MsgType::GetPerms => {
                let path = resolve(msg.one_arg()?, caller.domid)?.abs;
                let (perms, _) = self.on_tree(id, tx, |t, fx, _| {
                    t.readable(caller, &path, fx).map(|n| n.perms.clone())
                })?;
                Ok(Outcome::reply(perms_to_payload(&perms)))
            }
            MsgType::SetPerms => {
                let args = msg.list()?;
                let (path, perms) = args.split_first().ok_or(Errno::Invalid)?;
                if perms.is_empty() {
                    return Err(Errno::Invalid);
                }
                let perms = perms
                    .iter()
                    .map(|p| Perm::parse(p))
                    .collect::<Result<Vec<_>, _>>()?;
                let path = resolve(path, caller.domid)?.abs;
                let ((), events) =
                    self.on_tree(id, tx, |t, fx, s| t.set_perms(caller, &path, perms, s, fx))?;
                Ok(Outcome {
                    events,
                    ..Outcome::ok()
                })
            }
            MsgType::Watch => self.watch(id, msg),
            MsgType::Unwatch => {
                let args = msg.args(2)?;
                let (path, token) = (
                    args.first().ok_or(Errno::Invalid)?,
                    args.get(1).ok_or(Errno::Invalid)?,
                );
                let target = resolve(path, caller.domid)?;
                let conn = self.conns.get_mut(&id).ok_or(Errno::Invalid)?;
                let before = conn.watches.len();
                conn.watches
                    .retain(|w| !(w.target == target && w.token == *token));
                if conn.watches.len() == before {
                    return Err(Errno::NoEnt);
                }
                Ok(Outcome::ok())
            }
            MsgType::ResetWatches => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.watches.clear();
                }
                self.txns.retain(|_, t| t.owner != id);
                Ok(Outcome::ok())
            }
            MsgType::TransactionStart => self.transaction_start(id, msg),
            MsgType::TransactionEnd => self.transaction_end(id, msg),
            MsgType::GetDomainPath => {
                let domid = parse_number::<u16>(msg.one_arg()?)?;
                Ok(Outcome::reply(join_args(&[&domain_path(domid)])))
            }
            MsgType::Introduce => {
                if !caller.privileged {
                    return Err(Errno::Access);
                }
                let args = msg.args(3)?;
                let mut it = args.iter();
                let domid = parse_number::<u16>(it.next().ok_or(Errno::Invalid)?)?;
                parse_number::<u64>(it.next().ok_or(Errno::Invalid)?)?;
                parse_number::<u32>(it.next().ok_or(Errno::Invalid)?)?;
                let mut out = Outcome::ok();
                if domid != 0 && self.introduced.insert(domid) {
                    out.events = self.special_event(INTRODUCE_DOMAIN);
                }
                Ok(out)
            }
            MsgType::Release => {
                if !caller.privileged {
                    return Err(Errno::Access);
                }
                let domid = parse_number::<u16>(msg.one_arg()?)?;
                if !self.introduced.remove(&domid) {
                    return Err(Errno::NoEnt);
                }
                Ok(Outcome {
                    events: self.special_event(RELEASE_DOMAIN),
                    ..Outcome::ok()
                })
            }
            MsgType::IsDomainIntroduced => {
                let domid = parse_number::<u16>(msg.one_arg()?)?;
                let yes = domid == 0 || self.introduced.contains(&domid);
                Ok(Outcome::reply(join_args(&[if yes { "T" } else { "F" }])))
            }
            MsgType::Control => self.control(id, msg),
            MsgType::WatchEvent | MsgType::Error => Err(Errno::Invalid),
            MsgType::Resume | MsgType::SetTarget | MsgType::Restrict | MsgType::DirectoryPart => {
                Err(Errno::NoSys)
            }
        }
    }

    fn special_event(&self, name: &str) -> Vec<Event> {
        let perms = self
            .tree
            .get(name)
            .map(|n| n.perms.clone())
            .unwrap_or_default();
        vec![Event {
            path: name.to_owned(),
            perms,
            removed: false,
        }]
    }

    /// `XS_CONTROL "pvusb-domid\0<n>\0"`: a simulation-only declaration of the
    /// connection's domain, refused unless the server trusts declarations.
    fn control(&mut self, id: ConnId, msg: &Message) -> Result<Outcome, Errno> {
        let args = msg.list()?;
        match args.as_slice() {
            [cmd, domid] if *cmd == DECLARE_DOMID_COMMAND => {
                if !self.config.trust_declared_domids {
                    return Err(Errno::Access);
                }
                let domid = parse_number::<u16>(domid)?;
                let conn = self.conns.get_mut(&id).ok_or(Errno::Invalid)?;
                conn.caller = Caller {
                    domid,
                    privileged: domid == 0,
                };
                tracing::debug!(domid, "xenstore connection declared its domain");
                Ok(Outcome::ok())
            }
            _ => Err(Errno::Invalid),
        }
    }

    fn watch(&mut self, id: ConnId, msg: &Message) -> Result<Outcome, Errno> {
        let args = msg.args(2)?;
        let (given, token) = (
            *args.first().ok_or(Errno::Invalid)?,
            *args.get(1).ok_or(Errno::Invalid)?,
        );
        let max = self.config.max_watches_per_connection;
        let conn = self.conns.get_mut(&id).ok_or(Errno::Invalid)?;
        let target = resolve(given, conn.caller.domid)?;
        if conn
            .watches
            .iter()
            .any(|w| w.target == target && w.token == token)
        {
            return Err(Errno::Exists);
        }
        if conn.watches.len() >= max {
            return Err(Errno::Quota);
        }
        conn.watches.push(WatchReg {
            target,
            token: token.to_owned(),
        });
        let initial = Message::new(MsgType::WatchEvent, 0, 0, join_args(&[given, token]))?;
        Ok(Outcome {
            followup: Some(initial),
            ..Outcome::ok()
        })
    }

    fn transaction_start(&mut self, id: ConnId, msg: &Message) -> Result<Outcome, Errno> {
        if msg.tx_id != 0 {
            return Err(Errno::Busy);
        }
        if !msg.is_empty_arg() {
            return Err(Errno::Invalid);
        }
        let open = self.txns.values().filter(|t| t.owner == id).count();
        if open >= self.config.max_transactions_per_connection {
            return Err(Errno::Quota);
        }
        // Ids in use are bounded by connections x per-connection quota, far below
        // u32::MAX, so this finds a free id within a few steps.
        let mut tx_id = self.next_tx;
        while tx_id == 0 || self.txns.contains_key(&tx_id) {
            tx_id = tx_id.wrapping_add(1);
        }
        self.next_tx = tx_id.wrapping_add(1);
        let txn = Txn {
            owner: id,
            tree: self.tree.clone(),
            accessed: HashMap::new(),
            modified: BTreeSet::new(),
            events: Vec::new(),
        };
        self.txns.insert(tx_id, txn);
        Ok(Outcome::reply(join_args(&[&tx_id.to_string()])))
    }

    /// Commits or aborts. A commit fails with `EAGAIN` if any node the transaction
    /// looked at changed since it started; otherwise its changed nodes are copied
    /// into the committed tree with a fresh stamp and its events fire.
    fn transaction_end(&mut self, id: ConnId, msg: &Message) -> Result<Outcome, Errno> {
        let commit = match msg.one_arg()? {
            "T" => true,
            "F" => false,
            _ => return Err(Errno::Invalid),
        };
        if self.txns.get(&msg.tx_id).is_none_or(|t| t.owner != id) {
            return Err(Errno::NoEnt);
        }
        let txn = self.txns.remove(&msg.tx_id).ok_or(Errno::NoEnt)?;
        if !commit {
            return Ok(Outcome::ok());
        }
        if txn
            .accessed
            .iter()
            .any(|(path, gen)| self.tree.gen(path) != *gen)
        {
            return Err(Errno::Again);
        }
        self.check_commit_quota(&txn)?;
        self.stamp = self.stamp.wrapping_add(1);
        for path in &txn.modified {
            match txn.tree.get(path) {
                Some(node) => {
                    let mut node = node.clone();
                    node.gen = self.stamp;
                    self.tree.put(path, node);
                }
                None => self.tree.remove_one(path),
            }
        }
        Ok(Outcome {
            events: txn.events,
            ..Outcome::ok()
        })
    }

    /// The per-domain node quota, re-checked against the committed tree: each
    /// transaction checked it against its own snapshot only, so several concurrent
    /// transactions of one domain touching disjoint subtrees (no conflict) could
    /// otherwise add up past it. Dom0 (privileged) owns without limit.
    fn check_commit_quota(&self, txn: &Txn) -> Result<(), Errno> {
        let mut delta: HashMap<u16, i64> = HashMap::new();
        for path in &txn.modified {
            if let Some(old) = self.tree.get(path) {
                *delta.entry(old.owner()).or_insert(0) -= 1;
            }
            if let Some(new) = txn.tree.get(path) {
                *delta.entry(new.owner()).or_insert(0) += 1;
            }
        }
        let max = self.config.max_nodes_per_domain;
        for (domid, d) in delta {
            let Ok(added) = usize::try_from(d) else {
                continue; // the domain owns fewer nodes afterwards
            };
            if domid != 0 && self.tree.owned_by(domid).saturating_add(added) > max {
                return Err(Errno::Quota);
            }
        }
        Ok(())
    }

    /// Queues watch events: a change fires the watches on its path and above it; a
    /// removal also fires the watches below it (reporting the watch's own path).
    /// Only connections that may read the node see the event.
    fn fire(&mut self, events: &[Event]) {
        for conn in self.conns.values_mut() {
            let mut out = Vec::new();
            for ev in events {
                if !access_for(&ev.perms, conn.caller.domid, conn.caller.privileged).can_read() {
                    continue;
                }
                for w in &conn.watches {
                    let abs = &w.target.abs;
                    let hit = if ev.path.starts_with('@') || abs.starts_with('@') {
                        (ev.path == *abs).then_some(abs.as_str())
                    } else if is_at_or_below(&ev.path, abs) {
                        Some(ev.path.as_str())
                    } else if ev.removed && is_strictly_below(abs, &ev.path) {
                        Some(abs.as_str())
                    } else {
                        None
                    };
                    let Some(hit) = hit else { continue };
                    let home = format!("{}/", domain_path(conn.caller.domid));
                    let shown = if w.target.relative {
                        hit.strip_prefix(&home).unwrap_or(hit)
                    } else {
                        hit
                    };
                    if let Ok(m) =
                        Message::new(MsgType::WatchEvent, 0, 0, join_args(&[shown, &w.token]))
                    {
                        out.push(m);
                    }
                }
            }
            for m in &out {
                conn.push(m);
            }
        }
    }
}
