//! Path validation and resolution, following xenstored's rules: absolute paths
//! start with `/`, relative ones are under the caller's `/local/domain/<id>`, the
//! only characters are ASCII alphanumerics and `-/_@`, no empty components, and the
//! special `@introduceDomain` / `@releaseDomain` names.

use super::errno::Errno;
use crate::wire::{is_valid_abs_path, REL_PATH_MAX};

/// Fired by `XS_INTRODUCE`.
pub(crate) const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Fired by `XS_RELEASE`.
pub(crate) const RELEASE_DOMAIN: &str = "@releaseDomain";

/// A validated path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The absolute path (or the special name).
    pub abs: String,
    /// The caller gave a relative path, so watch events are reported relative too.
    pub relative: bool,
}

impl Resolved {
    pub fn is_special(&self) -> bool {
        self.abs.starts_with('@')
    }
}

/// The home of a domain.
pub(crate) fn domain_path(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

/// Validates `path` and makes it absolute for a caller of domain `domid`.
pub(crate) fn resolve(path: &str, domid: u16) -> Result<Resolved, Errno> {
    if path == INTRODUCE_DOMAIN || path == RELEASE_DOMAIN {
        return Ok(Resolved {
            abs: path.to_owned(),
            relative: false,
        });
    }
    let relative = !path.starts_with('/');
    if relative && path.len() > REL_PATH_MAX {
        return Err(Errno::Invalid);
    }
    let abs = if relative {
        format!("{}/{path}", domain_path(domid))
    } else {
        path.to_owned()
    };
    if path.is_empty() || path.starts_with('@') || !is_valid_abs_path(&abs) {
        return Err(Errno::Invalid);
    }
    Ok(Resolved { abs, relative })
}

/// The parent of an absolute path; `None` for `/` and special names.
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path == "/" || !path.starts_with('/') {
        return None;
    }
    let cut = path.rfind('/')?;
    Some(if cut == 0 { "/" } else { path.get(..cut)? })
}

/// Whether `path` is `ancestor` or below it.
pub(crate) fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    path == ancestor || is_strictly_below(path, ancestor)
}

/// Whether `path` is strictly below `ancestor`.
pub(crate) fn is_strictly_below(path: &str, ancestor: &str) -> bool {
    if ancestor == "/" {
        return path.len() > 1 && path.starts_with('/');
    }
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The prefix every key below `path` starts with.
pub(crate) fn child_prefix(path: &str) -> String {
    if path == "/" {
        "/".to_owned()
    } else {
        format!("{path}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_and_validation() {
        assert_eq!(
            resolve("device/vusb", 3).unwrap(),
            Resolved {
                abs: "/local/domain/3/device/vusb".into(),
                relative: true
            }
        );
        assert_eq!(resolve("/", 3).unwrap().abs, "/");
        assert!(resolve("@releaseDomain", 3).unwrap().is_special());
        for bad in [
            "",
            "/a/",
            "/a//b",
            "/a b",
            "/a.b",
            "@other",
            "/\u{e9}",
            &"a".repeat(2049),
            &format!("/{}", "a".repeat(3072)),
        ] {
            assert_eq!(resolve(bad, 0), Err(Errno::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn relations() {
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        assert!(
            is_at_or_below("/a/b", "/a") && is_at_or_below("/a", "/a") && is_at_or_below("/a", "/")
        );
        assert!(!is_at_or_below("/ab", "/a") && !is_strictly_below("/", "/"));
    }
}
