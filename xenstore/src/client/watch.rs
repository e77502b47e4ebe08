//! A registered watch: a token routed by the connection's reader thread to a
//! channel, unregistered (route and server side) when dropped.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::conn::{Connection, WatchNotify};
use crate::error::XsError;
use crate::wire::{join_args, MsgType};

/// A watch registered with the daemon under a token whose route exists;
/// dropping it removes the route and unregisters the watch.
#[derive(Debug)]
struct Registration {
    conn: Arc<Connection>,
    path: String,
    token: String,
}

impl Registration {
    /// Asks the daemon to watch `path` under `token`, whose route the caller
    /// added first (the initial event may race the reply); on failure the
    /// route is removed again.
    fn watch(conn: Arc<Connection>, path: &str, token: String) -> Result<Self, XsError> {
        if let Err(e) = conn.request(MsgType::Watch, 0, join_args(&[path, &token]), path) {
            conn.remove_watch_route(&token);
            return Err(e);
        }
        Ok(Self {
            conn,
            path: path.to_owned(),
            token,
        })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.conn.remove_watch_route(&self.token);
        // Fire and forget: drop must not block on a slow or dead daemon.
        let _ = self
            .conn
            .send_no_wait(MsgType::Unwatch, join_args(&[&self.path, &self.token]));
    }
}

/// A watch on a path. Holds the connection open while it lives.
#[derive(Debug)]
pub struct XsWatch {
    registration: Registration,
    rx: Receiver<String>,
}

impl XsWatch {
    pub(super) fn register(conn: Arc<Connection>, path: &str) -> Result<XsWatch, XsError> {
        let (token, rx) = conn.add_watch_route()?;
        Ok(XsWatch {
            registration: Registration::watch(conn, path, token)?,
            rx,
        })
    }

    /// The paths that fired, in order. Disconnected when the connection dies.
    pub fn receiver(&self) -> &Receiver<String> {
        &self.rx
    }

    /// The watched path as given.
    pub fn path(&self) -> &str {
        &self.registration.path
    }
}

/// A watch whose events call a function on the connection's reader thread
/// (see [`WatchNotify`]) instead of filling a channel: no thread of the
/// watcher's own has to wait for them. Unregistered when dropped.
#[derive(Debug)]
pub struct XsNotifyWatch {
    registration: Registration,
}

impl XsNotifyWatch {
    pub(super) fn register(
        conn: Arc<Connection>,
        path: &str,
        notify: WatchNotify,
    ) -> Result<XsNotifyWatch, XsError> {
        let token = conn.add_watch_notify(notify)?;
        Ok(XsNotifyWatch {
            registration: Registration::watch(conn, path, token)?,
        })
    }

    /// The watched path as given.
    pub fn path(&self) -> &str {
        &self.registration.path
    }
}
