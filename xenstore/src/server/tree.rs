//! The node tree and the operations on it, with xenstored's permission and quota
//! rules. The same code runs on the committed tree and on a transaction's private
//! copy; each operation validates everything before changing anything, so a refused
//! operation leaves the tree untouched, and it reports what it looked at (for
//! transaction conflict detection) and what it changed (for watches).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::errno::Errno;
use super::path::{child_prefix, parent, INTRODUCE_DOMAIN, RELEASE_DOMAIN};
use crate::perms::{access_for, Access, Perm};

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub value: Vec<u8>,
    pub perms: Vec<Perm>,
    /// Stamp of the last change to this node or its list of children.
    pub gen: u64,
}

impl Node {
    /// The owning domain: the first permission entry's (dom0 if there is none).
    pub fn owner(&self) -> u16 {
        self.perms.first().map_or(0, |p| p.domid)
    }
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller {
    pub domid: u16,
    pub privileged: bool,
}

impl Caller {
    fn access(self, node: &Node) -> Access {
        access_for(&node.perms, self.domid, self.privileged)
    }
}

/// Size limits applied by writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_value_len: usize,
    pub max_nodes_per_domain: usize,
}

/// A change watches may fire on.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub path: String,
    /// The node's permissions, deciding who may see the event.
    pub perms: Vec<Perm>,
    /// The node was removed: watches below it fire too.
    pub removed: bool,
}

/// What one operation looked at and changed.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Paths read or changed, with their stamp before the operation.
    pub touched: Vec<(String, Option<u64>)>,
    /// Paths whose node was created, changed or removed.
    pub modified: Vec<String>,
    pub events: Vec<Event>,
}

/// The tree: absolute paths (and the two special names) to nodes.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    nodes: BTreeMap<String, Node>,
    /// Node count per owning domain, for the per-domain quota.
    owned: HashMap<u16, usize>,
}

const ROOT_PERMS: [Perm; 1] = [Perm {
    domid: 0,
    access: Access::None,
}];

impl Tree {
    /// A tree with `/` and the special nodes, all owned by dom0 and private.
    pub fn new() -> Tree {
        let mut t = Tree {
            nodes: BTreeMap::new(),
            owned: HashMap::new(),
        };
        for p in ["/", INTRODUCE_DOMAIN, RELEASE_DOMAIN] {
            t.put(
                p,
                Node {
                    value: Vec::new(),
                    perms: ROOT_PERMS.to_vec(),
                    gen: 0,
                },
            );
        }
        t
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Structural invariants: the root and the special nodes exist, every other
    /// node is a valid absolute path whose parent exists, and the per-domain
    /// ownership counts match the nodes.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut owned: HashMap<u16, usize> = HashMap::new();
        for (path, node) in &self.nodes {
            *owned.entry(node.owner()).or_insert(0) += 1;
            if path == "/" || path == INTRODUCE_DOMAIN || path == RELEASE_DOMAIN {
                continue;
            }
            if super::path::resolve(path, 0).map(|r| r.abs).as_deref() != Ok(path) {
                return Err(format!("node {path:?} is not a valid absolute path"));
            }
            match parent(path) {
                Some(p) if self.nodes.contains_key(p) => {}
                _ => return Err(format!("node {path:?} has no parent")),
            }
        }
        for p in ["/", INTRODUCE_DOMAIN, RELEASE_DOMAIN] {
            if !self.nodes.contains_key(p) {
                return Err(format!("{p} is missing"));
            }
        }
        let counted: HashMap<u16, usize> = self
            .owned
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(d, n)| (*d, *n))
            .collect();
        if counted != owned {
            return Err(format!("ownership counts {counted:?}, nodes {owned:?}"));
        }
        Ok(())
    }

    pub fn gen(&self, path: &str) -> Option<u64> {
        self.nodes.get(path).map(|n| n.gen)
    }

    /// Nodes owned by `domid`.
    pub fn owned_by(&self, domid: u16) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    /// Inserts or replaces a node, keeping the ownership counts right.
    pub fn put(&mut self, path: &str, node: Node) {
        let owner = node.owner();
        if let Some(old) = self.nodes.insert(path.to_owned(), node) {
            self.disown(&old);
        }
        *self.owned.entry(owner).or_insert(0) += 1;
    }

    /// Removes one node (not its children), keeping the ownership counts right.
    pub fn remove_one(&mut self, path: &str) {
        if let Some(old) = self.nodes.remove(path) {
            self.disown(&old);
        }
    }

    fn disown(&mut self, node: &Node) {
        let owner = node.owner();
        if let Some(n) = self.owned.get_mut(&owner) {
            *n = n.saturating_sub(1);
        }
    }

    fn touch(&self, fx: &mut Effects, path: &str) {
        fx.touched.push((path.to_owned(), self.gen(path)));
    }

    /// ENOENT, or EACCES when the caller may not even read the nearest existing
    /// ancestor (so a missing node does not reveal what a hidden one contains).
    fn missing(&self, caller: Caller, path: &str) -> Errno {
        let mut cur = parent(path);
        while let Some(p) = cur {
            if let Some(node) = self.nodes.get(p) {
                return if caller.access(node).can_read() {
                    Errno::NoEnt
                } else {
                    Errno::Access
                };
            }
            cur = parent(p);
        }
        Errno::NoEnt
    }

    /// A node the caller may read.
    pub fn readable(&self, caller: Caller, path: &str, fx: &mut Effects) -> Result<&Node, Errno> {
        self.touch(fx, path);
        let node = self
            .nodes
            .get(path)
            .ok_or_else(|| self.missing(caller, path))?;
        if caller.access(node).can_read() {
            Ok(node)
        } else {
            Err(Errno::Access)
        }
    }

    /// The names of a node's children, in order. Skips each child's subtree with a
    /// seek, so the cost is per child, not per descendant.
    pub fn children(&self, path: &str) -> Vec<String> {
        let prefix = child_prefix(path);
        let mut out: Vec<String> = Vec::new();
        let mut from = Bound::Excluded(prefix.clone());
        while let Some((key, _)) = self
            .nodes
            .range::<String, _>((from.clone(), Bound::Unbounded))
            .next()
        {
            let Some(rest) = key.strip_prefix(&prefix) else {
                break;
            };
            // A child's own key sorts before its descendants, so only keys without
            // a further '/' name children; a descendant key means "skip this
            // subtree": every key below `prefix + name` starts with
            // `prefix + name + "/"`, and '0' is the byte after '/'.
            from = match rest.split_once('/') {
                Some((name, _)) => Bound::Included(format!("{prefix}{name}0")),
                None => {
                    if !rest.is_empty() {
                        out.push(rest.to_owned());
                    }
                    Bound::Excluded(key.clone())
                }
            };
        }
        out
    }

    /// Writes a value, creating missing parents as xenstored does.
    pub fn write(
        &mut self,
        caller: Caller,
        limits: Limits,
        path: &str,
        value: &[u8],
        stamp: u64,
        fx: &mut Effects,
    ) -> Result<(), Errno> {
        if value.len() > limits.max_value_len {
            return Err(Errno::TooBig);
        }
        self.touch(fx, path);
        if let Some(node) = self.nodes.get(path) {
            if !caller.access(node).can_write() {
                return Err(Errno::Access);
            }
            let mut node = node.clone();
            node.value = value.to_vec();
            node.gen = stamp;
            fx.events.push(Event {
                path: path.to_owned(),
                perms: node.perms.clone(),
                removed: false,
            });
            fx.modified.push(path.to_owned());
            self.put(path, node);
            return Ok(());
        }
        self.create(caller, limits, path, value, stamp, fx)
    }

    /// Creates a node with an empty value unless it exists.
    pub fn mkdir(
        &mut self,
        caller: Caller,
        limits: Limits,
        path: &str,
        stamp: u64,
        fx: &mut Effects,
    ) -> Result<(), Errno> {
        self.touch(fx, path);
        if self.nodes.contains_key(path) {
            return Ok(());
        }
        self.create(caller, limits, path, &[], stamp, fx)
    }

    /// Creates `path` and its missing ancestors. Requires write access to the
    /// nearest existing ancestor; new nodes inherit its permissions, and a node an
    /// unprivileged domain creates is owned by that domain.
    fn create(
        &mut self,
        caller: Caller,
        limits: Limits,
        path: &str,
        value: &[u8],
        stamp: u64,
        fx: &mut Effects,
    ) -> Result<(), Errno> {
        let mut missing = vec![path];
        let mut cur = parent(path);
        let (anchor, anchor_node) = loop {
            let p = cur.ok_or(Errno::Invalid)?;
            if let Some(n) = self.nodes.get(p) {
                break (p, n);
            }
            missing.push(p);
            cur = parent(p);
        };
        if !caller.access(anchor_node).can_write() {
            return Err(Errno::Access);
        }
        if !caller.privileged {
            let owned = self.owned_by(caller.domid);
            if owned.saturating_add(missing.len()) > limits.max_nodes_per_domain {
                return Err(Errno::Quota);
            }
        }
        let mut perms = anchor_node.perms.clone();
        if !caller.privileged {
            if let Some(owner) = perms.first_mut() {
                owner.domid = caller.domid;
            }
        }
        let anchor = anchor.to_owned();
        self.touch(fx, &anchor);
        if let Some(n) = self.nodes.get_mut(&anchor) {
            n.gen = stamp;
        }
        fx.modified.push(anchor);
        for p in missing.iter().rev() {
            self.touch(fx, p);
            let v = if *p == path {
                value.to_vec()
            } else {
                Vec::new()
            };
            self.put(
                p,
                Node {
                    value: v,
                    perms: perms.clone(),
                    gen: stamp,
                },
            );
            fx.modified.push((*p).to_owned());
        }
        fx.events.push(Event {
            path: path.to_owned(),
            perms,
            removed: false,
        });
        Ok(())
    }

    /// Removes a node and its subtree. A missing node whose parent exists is fine.
    pub fn rm(
        &mut self,
        caller: Caller,
        path: &str,
        stamp: u64,
        fx: &mut Effects,
    ) -> Result<(), Errno> {
        let par = parent(path).ok_or(Errno::Invalid)?.to_owned();
        self.touch(fx, path);
        self.touch(fx, &par);
        let Some(node) = self.nodes.get(path) else {
            return if self.nodes.contains_key(&par) {
                Ok(())
            } else {
                Err(self.missing(caller, path))
            };
        };
        if !caller.access(node).can_write() {
            return Err(Errno::Access);
        }
        let perms = node.perms.clone();
        let prefix = child_prefix(path);
        let below: Vec<String> = self
            .nodes
            .range::<String, _>((Bound::Included(prefix.clone()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for p in below.iter().map(String::as_str).chain([path]) {
            self.touch(fx, p);
            self.remove_one(p);
            fx.modified.push(p.to_owned());
        }
        if let Some(n) = self.nodes.get_mut(&par) {
            n.gen = stamp;
        }
        fx.modified.push(par);
        fx.events.push(Event {
            path: path.to_owned(),
            perms,
            removed: true,
        });
        Ok(())
    }

    /// Replaces a node's permissions: only its owner or a privileged caller may, and
    /// an unprivileged owner may not give the node away.
    pub fn set_perms(
        &mut self,
        caller: Caller,
        path: &str,
        perms: Vec<Perm>,
        stamp: u64,
        fx: &mut Effects,
    ) -> Result<(), Errno> {
        self.touch(fx, path);
        let node = self
            .nodes
            .get(path)
            .ok_or_else(|| self.missing(caller, path))?;
        let owner = node.perms.first().map(|p| p.domid);
        let new_owner = perms.first().map(|p| p.domid).ok_or(Errno::Invalid)?;
        if !caller.privileged && (owner != Some(caller.domid) || new_owner != caller.domid) {
            return Err(Errno::Access);
        }
        let mut node = node.clone();
        node.perms = perms;
        node.gen = stamp;
        fx.events.push(Event {
            path: path.to_owned(),
            perms: node.perms.clone(),
            removed: false,
        });
        fx.modified.push(path.to_owned());
        self.put(path, node);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOM0: Caller = Caller {
        domid: 0,
        privileged: true,
    };
    const LIMITS: Limits = Limits {
        max_value_len: 2048,
        max_nodes_per_domain: 3,
    };

    #[test]
    fn children_skip_subtrees_and_handle_sorting_neighbours() {
        let mut t = Tree::new();
        let mut fx = Effects::default();
        for p in ["/a/b/c/d", "/a/b-x", "/a/b0", "/a/c", "/ab"] {
            t.write(DOM0, LIMITS, p, b"v", 1, &mut fx).unwrap();
        }
        assert_eq!(t.children("/a"), vec!["b", "b-x", "b0", "c"]);
        assert_eq!(t.children("/"), vec!["a", "ab"]);
        assert!(t.children("/a/c").is_empty());
    }

    #[test]
    fn unprivileged_creation_owns_and_counts() {
        let mut t = Tree::new();
        let mut fx = Effects::default();
        t.mkdir(DOM0, LIMITS, "/d", 1, &mut fx).unwrap();
        t.set_perms(
            DOM0,
            "/d",
            vec![
                Perm {
                    domid: 0,
                    access: Access::None,
                },
                Perm {
                    domid: 5,
                    access: Access::Write,
                },
            ],
            2,
            &mut fx,
        )
        .unwrap();
        let dom5 = Caller {
            domid: 5,
            privileged: false,
        };
        assert_eq!(t.readable(dom5, "/d", &mut fx).err(), Some(Errno::Access));
        t.write(dom5, LIMITS, "/d/x/y", b"1", 3, &mut fx).unwrap();
        assert_eq!(t.get("/d/x").unwrap().perms[0].domid, 5);
        assert_eq!(t.readable(dom5, "/d/x/y", &mut fx).unwrap().value, b"1");
        assert_eq!(
            t.write(dom5, LIMITS, "/d/x/z/w", b"", 4, &mut fx),
            Err(Errno::Quota)
        );
        t.rm(dom5, "/d/x", 5, &mut fx).unwrap();
        t.write(dom5, LIMITS, "/d/q", b"", 6, &mut fx).unwrap();
        let dom6 = Caller {
            domid: 6,
            privileged: false,
        };
        assert_eq!(t.rm(dom6, "/d", 7, &mut fx), Err(Errno::Access));
        assert_eq!(t.rm(dom5, "/", 7, &mut fx), Err(Errno::Invalid));
        assert_eq!(
            t.readable(dom5, "/nope/x", &mut fx).err(),
            Some(Errno::Access)
        );
        assert_eq!(
            t.readable(dom5, "/d/q/nope", &mut fx).err(),
            Some(Errno::NoEnt)
        );
    }
}
