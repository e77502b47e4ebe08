//! The decision for one request from the worker: forward it, or refuse it.
//!
//! Everything here reads bytes a confined (so presumed compromised) worker
//! wrote. The rule is an allow-list: a request passes only if its type is one a
//! worker needs, its arguments have exactly the shape `xs_wire.h` gives that
//! type, and its path is canonical and in the worker's [`Scope`]. Canonical
//! matters as much as the scope: xenstored resolves a relative path against the
//! connection's home (dom0's, here), so only the one spelling the daemon will act
//! on may reach the prefix check.

use super::{Access, Scope};
use crate::wire::{is_valid_abs_path, Message, MsgType, WireError};

/// Why a request was refused (for the log line; the worker only sees `EACCES`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The message type is not one a worker may send at all.
    #[error("{0:?} requests are not forwarded")]
    Type(MsgType),
    /// The arguments do not have the shape the message type requires.
    #[error("malformed {0:?} request")]
    Malformed(MsgType, #[source] WireError),
    /// A transaction request whose argument is neither empty nor `T`/`F`.
    #[error("malformed transaction argument")]
    TransactionArg,
    /// The path is relative, special (`@...`) or not in canonical form.
    #[error("path {0:?} is not a canonical absolute path")]
    Path(String),
    /// The path is canonical but outside the worker's scope.
    #[error("{access:?} access to {path} is outside the proxy's scope")]
    Scope {
        /// The requested path.
        path: String,
        /// The access the request needs.
        access: Access,
    },
}

/// Longest piece of a hostile path repeated in a log line.
const LOGGED_PATH_MAX: usize = 128;

/// Whether `msg` may be forwarded upstream unchanged.
pub(super) fn check(msg: &Message, scope: &dyn Scope) -> Result<(), Refusal> {
    let ty = msg.msg_type;
    let malformed = |e| Refusal::Malformed(ty, e);
    match ty {
        MsgType::Read | MsgType::Directory | MsgType::GetPerms => {
            in_scope(msg.one_arg().map_err(malformed)?, Access::Read, scope)
        }
        MsgType::Mkdir | MsgType::Rm => {
            in_scope(msg.one_arg().map_err(malformed)?, Access::Write, scope)
        }
        MsgType::Write => {
            let (path, _value) = msg.path_and_value().map_err(malformed)?;
            in_scope(path, Access::Write, scope)
        }
        // A canonical path starts with '/', so this also keeps special watches
        // (`@releaseDomain`, `@introduceDomain`) out: they would tell a worker
        // about every guest.
        MsgType::Watch => {
            let args = msg.args(2).map_err(malformed)?;
            // `args(2)` returned two; an absent path would fail as "" anyway.
            in_scope(
                args.first().copied().unwrap_or_default(),
                Access::Read,
                scope,
            )
        }
        // The upstream connection is the worker's own, so an unwatch can only
        // remove one of the worker's watches; the shape is still checked, so
        // the daemon only ever parses well-formed requests from a worker.
        MsgType::Unwatch => msg.args(2).map(drop).map_err(malformed),
        // Transactions are per connection as well.
        MsgType::TransactionStart if msg.is_empty_arg() => Ok(()),
        MsgType::TransactionEnd if matches!(msg.payload(), b"T\0" | b"F\0") => Ok(()),
        MsgType::TransactionStart | MsgType::TransactionEnd => Err(Refusal::TransactionArg),
        // Everything else either acts on other domains (INTRODUCE, RELEASE,
        // SET_TARGET, RESUME), changes who may do what (SET_PERMS), reaches
        // around the scope (GET_DOMAIN_PATH, DIRECTORY_PART, RESET_WATCHES,
        // CONTROL) or is a reply type a client never sends.
        MsgType::Control
        | MsgType::Introduce
        | MsgType::Release
        | MsgType::GetDomainPath
        | MsgType::SetPerms
        | MsgType::WatchEvent
        | MsgType::Error
        | MsgType::IsDomainIntroduced
        | MsgType::Resume
        | MsgType::SetTarget
        | MsgType::Restrict
        | MsgType::ResetWatches
        | MsgType::DirectoryPart => Err(Refusal::Type(ty)),
    }
}

fn in_scope(path: &str, access: Access, scope: &dyn Scope) -> Result<(), Refusal> {
    let logged = || path.chars().take(LOGGED_PATH_MAX).collect();
    if !is_valid_abs_path(path) {
        return Err(Refusal::Path(logged()));
    }
    if scope.allows(path, access) {
        Ok(())
    } else {
        Err(Refusal::Scope {
            path: logged(),
            access,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::PrefixScope;
    use super::*;

    fn scope() -> PrefixScope {
        PrefixScope::new().read("/r").write("/w")
    }

    fn msg(ty: MsgType, payload: &[u8]) -> Message {
        Message::new(ty, 1, 0, payload.to_vec()).unwrap()
    }

    fn verdict(ty: MsgType, payload: &[u8]) -> Result<(), Refusal> {
        check(&msg(ty, payload), &scope())
    }

    #[test]
    fn requests_in_scope_pass() {
        for (ty, payload) in [
            (MsgType::Read, &b"/r/x\0"[..]),
            (MsgType::Directory, b"/r\0"),
            (MsgType::GetPerms, b"/w/x\0"),
            (MsgType::Watch, b"/r\0tok\0"),
            (MsgType::Unwatch, b"/anything\0tok\0"),
            (MsgType::Write, b"/w/x\0value\0with nul"),
            (MsgType::Write, b"/w\0"),
            (MsgType::Mkdir, b"/w/d\0"),
            (MsgType::Rm, b"/w\0"),
            (MsgType::TransactionStart, b"\0"),
            (MsgType::TransactionStart, b""),
            (MsgType::TransactionEnd, b"T\0"),
            (MsgType::TransactionEnd, b"F\0"),
        ] {
            assert_eq!(verdict(ty, payload), Ok(()), "{ty:?} {payload:?}");
        }
    }

    #[test]
    fn writes_need_write_scope() {
        for (ty, payload) in [
            (MsgType::Write, &b"/r/x\0v"[..]),
            (MsgType::Mkdir, b"/r/x\0"),
            (MsgType::Rm, b"/r\0"),
            (MsgType::Write, b"/elsewhere\0v"),
            (MsgType::Read, b"/elsewhere\0"),
            (MsgType::Watch, b"/\0tok\0"),
        ] {
            assert!(
                matches!(verdict(ty, payload), Err(Refusal::Scope { .. })),
                "{ty:?} {payload:?}"
            );
        }
    }

    #[test]
    fn non_canonical_paths_are_refused_before_the_scope_sees_them() {
        for payload in [
            &b"r/x\0"[..],
            b"/r//x\0",
            b"/r/\0",
            b"/r/.\0",
            b"/r/a b\0",
            b"@releaseDomain\0",
            b"\0",
        ] {
            assert!(
                matches!(verdict(MsgType::Read, payload), Err(Refusal::Path(_))),
                "{payload:?}"
            );
        }
        assert!(matches!(
            verdict(MsgType::Watch, b"@introduceDomain\0t\0"),
            Err(Refusal::Path(_))
        ));
        let long = format!("/r/{}\0", "a".repeat(3100));
        match verdict(MsgType::Read, long.as_bytes()) {
            Err(Refusal::Path(logged)) => assert_eq!(logged.len(), LOGGED_PATH_MAX),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn arguments_must_have_the_wire_shape() {
        for (ty, payload) in [
            (MsgType::Read, &b"/r"[..]),
            (MsgType::Read, b"/r\0/r\0"),
            (MsgType::Read, b"/r\xff\0"),
            (MsgType::Read, b""),
            (MsgType::Write, b"/w"),
            (MsgType::Watch, b"/r\0"),
            (MsgType::Watch, b"/r\0tok"),
            (MsgType::Unwatch, b"/r\0"),
        ] {
            assert!(
                matches!(verdict(ty, payload), Err(Refusal::Malformed(..))),
                "{ty:?} {payload:?}"
            );
        }
        for (ty, payload) in [
            (MsgType::TransactionStart, &b"x\0"[..]),
            (MsgType::TransactionEnd, b"T"),
            (MsgType::TransactionEnd, b"X\0"),
            (MsgType::TransactionEnd, b""),
        ] {
            assert_eq!(verdict(ty, payload), Err(Refusal::TransactionArg));
        }
    }

    #[test]
    fn other_types_are_refused_whatever_their_arguments() {
        for ty in [
            MsgType::Control,
            MsgType::Introduce,
            MsgType::Release,
            MsgType::GetDomainPath,
            MsgType::SetPerms,
            MsgType::WatchEvent,
            MsgType::Error,
            MsgType::IsDomainIntroduced,
            MsgType::Resume,
            MsgType::SetTarget,
            MsgType::Restrict,
            MsgType::ResetWatches,
            MsgType::DirectoryPart,
        ] {
            assert_eq!(verdict(ty, b"/w\0b0\0"), Err(Refusal::Type(ty)));
        }
    }
}
