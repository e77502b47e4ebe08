//! [`PrefixScope`]: the scope a USB controller's worker gets, written as path
//! prefixes because everything a worker touches lives in a few known subtrees.

use super::{Access, Scope};
use crate::wire::is_valid_abs_path;

/// A [`Scope`] of path prefixes. A prefix covers the node itself and everything
/// below it on a component boundary: `/a/b` covers `/a/b` and `/a/b/c`, never
/// `/a/bc`. Write prefixes imply read.
///
/// A prefix that is not a canonical absolute path (see
/// [`crate::wire::is_valid_abs_path`]) covers nothing: a typo such as a trailing
/// `/` or an empty string must shut the worker out, not let it everywhere.
///
/// ```
/// use pvusb_xenstore::proxy::{Access, PrefixScope, Scope};
///
/// let scope = PrefixScope::new()
///     .read("/local/domain/1/device/vusb/0")
///     .write("/local/domain/0/backend/vusb/1/0")
///     .write_leaf("/pvusb/usbback", "opened");
/// assert!(scope.allows("/local/domain/1/device/vusb/0/state", Access::Read));
/// assert!(!scope.allows("/local/domain/1/device/vusb/0/state", Access::Write));
/// assert!(scope.allows("/local/domain/0/backend/vusb/1/0", Access::Write));
/// assert!(!scope.allows("/local/domain/0/backend/vusb/1/01", Access::Read));
/// assert!(scope.allows("/pvusb/usbback/1-2/opened", Access::Write));
/// assert!(!scope.allows("/pvusb/usbback/1-2/driver", Access::Write));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixScope {
    read: Vec<String>,
    write: Vec<String>,
    /// `(prefix, leaf)`: `prefix/<one component>/leaf` may be read and written.
    leaves: Vec<(String, String)>,
}

impl PrefixScope {
    /// A scope that allows nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also allows reading (and watching) `prefix` and everything below it.
    pub fn read(mut self, prefix: impl Into<String>) -> Self {
        self.read.push(prefix.into());
        self
    }

    /// Also allows reading and writing (and removing) `prefix` and everything
    /// below it.
    pub fn write(mut self, prefix: impl Into<String>) -> Self {
        self.write.push(prefix.into());
        self
    }

    /// Also allows reading, writing and removing exactly the nodes
    /// `prefix/<any one component>/<leaf>`, and nothing else below `prefix`.
    ///
    /// Why a rule of its own: the toolstack keeps one record per host device
    /// under a shared directory (`/pvusb/usbback/<busid>/`), and a worker must
    /// mark the devices it opened there without being able to rewrite the
    /// other fields of any record. Writing a leaf whose record does not exist
    /// yet makes xenstored create the empty record node, as for any write.
    pub fn write_leaf(mut self, prefix: impl Into<String>, leaf: impl Into<String>) -> Self {
        self.leaves.push((prefix.into(), leaf.into()));
        self
    }

    fn readable(&self, path: &str) -> bool {
        self.read.iter().any(|p| covers(p, path)) || self.writable(path)
    }

    fn writable(&self, path: &str) -> bool {
        self.write.iter().any(|p| covers(p, path))
            || self
                .leaves
                .iter()
                .any(|(prefix, leaf)| is_leaf_of(prefix, leaf, path))
    }
}

impl Scope for PrefixScope {
    fn allows(&self, path: &str, access: Access) -> bool {
        match access {
            Access::Read => self.readable(path),
            Access::Write => self.writable(path),
        }
    }
}

/// Whether `path` is `prefix` or below it on a component boundary.
fn covers(prefix: &str, path: &str) -> bool {
    if !is_valid_abs_path(prefix) {
        return false;
    }
    if prefix == "/" {
        return path.starts_with('/');
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether `path` is `prefix/<component>/leaf` with a non-empty component.
fn is_leaf_of(prefix: &str, leaf: &str, path: &str) -> bool {
    if !is_valid_abs_path(prefix) || leaf.is_empty() || leaf.contains('/') {
        return false;
    }
    let below = if prefix == "/" {
        path.strip_prefix('/')
    } else {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
    };
    let Some(below) = below else {
        return false;
    };
    match below.split_once('/') {
        Some((component, rest)) => !component.is_empty() && rest == leaf,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_on_component_boundaries() {
        let s = PrefixScope::new().read("/a/b").write("/w");
        for (path, read, write) in [
            ("/a/b", true, false),
            ("/a/b/c", true, false),
            ("/a/bc", false, false),
            ("/a", false, false),
            ("/w", true, true),
            ("/w/x/y", true, true),
            ("/wx", false, false),
            ("/", false, false),
        ] {
            assert_eq!(s.allows(path, Access::Read), read, "read {path}");
            assert_eq!(s.allows(path, Access::Write), write, "write {path}");
        }
    }

    #[test]
    fn leaves_are_one_component_below_the_prefix() {
        let s = PrefixScope::new().write_leaf("/pvusb/usbback", "opened");
        for (path, ok) in [
            ("/pvusb/usbback/1-2/opened", true),
            ("/pvusb/usbback/1-2", false),
            ("/pvusb/usbback", false),
            ("/pvusb/usbback/opened", false),
            ("/pvusb/usbback/a/b/opened", false),
            ("/pvusb/usbback/1-2/opened/x", false),
            ("/pvusb/usbback/1-2/openedx", false),
            ("/pvusb/usbbackx/1-2/opened", false),
        ] {
            assert_eq!(s.allows(path, Access::Write), ok, "{path}");
            assert_eq!(s.allows(path, Access::Read), ok, "{path}");
        }
        let root = PrefixScope::new().write_leaf("/", "x");
        assert!(root.allows("/a/x", Access::Write) && !root.allows("/a/b/x", Access::Write));
    }

    #[test]
    fn malformed_prefixes_cover_nothing() {
        for bad in ["", "a", "/a/", "//", "/a//b"] {
            let s = PrefixScope::new().write(bad).read(bad).write_leaf(bad, "x");
            for path in ["/", "/a", "/a/b", "/a/x", "/a/b/x"] {
                assert!(!s.allows(path, Access::Read), "{bad:?} {path}");
            }
        }
        let s = PrefixScope::new().write_leaf("/p", "a/b");
        assert!(!s.allows("/p/c/a/b", Access::Write));
        let s = PrefixScope::new().write_leaf("/p", "");
        assert!(!s.allows("/p/c/", Access::Write) && !s.allows("/p/c", Access::Write));
    }

    #[test]
    fn the_root_prefix_covers_everything() {
        let s = PrefixScope::new().read("/");
        assert!(s.allows("/", Access::Read) && s.allows("/x/y", Access::Read));
        assert!(!s.allows("/x", Access::Write));
    }
}
