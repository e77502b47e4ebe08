//! Whom the worker becomes, and becoming them.
//!
//! The name is resolved before any step runs (the user database may be files,
//! NSS modules or a daemon's socket; none is reachable after confinement), and
//! the switch is groups, then gid, then uid: setting groups and gids needs
//! `CAP_SETGID`, which the uid change takes away.

use nix::unistd::{self, Gid, Uid, User};

use crate::{ConfineError, Outcome, UserChoice};

/// A user from the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// The login name.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
}

/// The user `choice` names, `None` for [`UserChoice::Keep`]. A named user that
/// does not exist is an error whose message says how to fix it.
pub fn resolve_user(choice: &UserChoice) -> Result<Option<ResolvedUser>, ConfineError> {
    match choice {
        UserChoice::Keep => Ok(None),
        UserChoice::Named(name) => match lookup(name)? {
            Some(user) => Ok(Some(user)),
            None => Err(ConfineError::UnknownUser { name: name.clone() }),
        },
        UserChoice::Default => {
            for name in ["pvusb", "nobody"] {
                if let Some(user) = lookup(name)? {
                    return Ok(Some(user));
                }
            }
            Err(ConfineError::NoDefaultUser)
        }
    }
}

fn lookup(name: &str) -> Result<Option<ResolvedUser>, ConfineError> {
    let found = User::from_name(name).map_err(|source| ConfineError::LookupUser {
        name: name.to_owned(),
        source,
    })?;
    Ok(found.map(|u| ResolvedUser {
        name: u.name,
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    }))
}

/// Step 3: become `user` if we are root; `None` is [`UserChoice::Keep`].
pub(crate) fn switch(user: Option<&ResolvedUser>) -> Result<Outcome, ConfineError> {
    let euid = unistd::geteuid();
    let Some(user) = user else {
        return Ok(Outcome::Skipped(format!("kept by request (uid {euid})")));
    };
    if !euid.is_root() {
        return Ok(Outcome::Skipped(format!("not root; keeping uid {euid}")));
    }
    let failed = |what: &'static str| {
        move |source| ConfineError::SwitchUser {
            what,
            user: user.name.clone(),
            source,
        }
    };
    let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    // No supplementary groups: root's would otherwise stay, and the worker
    // needs no group's access (its descriptors are already open).
    unistd::setgroups(&[]).map_err(failed("setgroups"))?;
    unistd::setresgid(gid, gid, gid).map_err(failed("setresgid"))?;
    unistd::setresuid(uid, uid, uid).map_err(failed("setresuid"))?;
    check_ids(user)?;
    Ok(Outcome::Applied(format!(
        "{} ({}:{})",
        user.name, user.uid, user.gid
    )))
}

/// The real, effective and saved ids are all the user's: a saved uid of 0
/// would let the process become root again.
fn check_ids(user: &ResolvedUser) -> Result<(), ConfineError> {
    let wanted = format!("{0}/{0}/{0}:{1}/{1}/{1}", user.uid, user.gid);
    let (Ok(u), Ok(g)) = (unistd::getresuid(), unistd::getresgid()) else {
        return Err(ConfineError::UserNotSwitched {
            wanted,
            found: "unreadable".into(),
        });
    };
    let found = format!(
        "{}/{}/{}:{}/{}/{}",
        u.real, u.effective, u.saved, g.real, g.effective, g.saved
    );
    if found == wanted {
        Ok(())
    } else {
        Err(ConfineError::UserNotSwitched { wanted, found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_resolves_to_nobody_in_particular() {
        assert_eq!(resolve_user(&UserChoice::Keep).unwrap(), None);
    }

    #[test]
    fn an_unknown_user_is_an_error_naming_the_fix() {
        let e = resolve_user(&UserChoice::Named("no-such-user-xyz".into())).unwrap_err();
        assert!(matches!(e, ConfineError::UnknownUser { .. }), "{e:?}");
        let message = e.to_string();
        assert!(message.contains("no-such-user-xyz"), "{message}");
        assert!(message.contains("useradd --system pvusb"), "{message}");
    }

    #[test]
    fn root_and_the_default_user_resolve() {
        let root = resolve_user(&UserChoice::Named("root".into())).unwrap();
        assert_eq!(
            root,
            Some(ResolvedUser {
                name: "root".into(),
                uid: 0,
                gid: 0
            })
        );
        // Every system this runs on has `nobody` at least.
        let user = resolve_user(&UserChoice::Default).unwrap().unwrap();
        assert!(user.name == "pvusb" || user.name == "nobody", "{user:?}");
        assert_ne!(user.uid, 0);
    }

    #[test]
    fn keep_is_skipped_with_the_uid_kept() {
        let outcome = switch(None).unwrap();
        let Outcome::Skipped(why) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(why.starts_with("kept by request (uid "), "{why}");
    }
}
