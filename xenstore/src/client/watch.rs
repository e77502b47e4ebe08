//! A registered watch: a token routed by the connection's reader thread to a
//! channel, unregistered (route and server side) when dropped.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::conn::{Connection, WatchNotify};
use crate::error::XsError;
use crate::wire::{join_args, MsgType};

/// A watch on a path. Holds the connection open while it lives.
#[derive(Debug)]
pub struct XsWatch {
    conn: Arc<Connection>,
    path: String,
    token: String,
    rx: Receiver<String>,
}

impl XsWatch {
    pub(super) fn register(conn: Arc<Connection>, path: &str) -> Result<XsWatch, XsError> {
        // Route first: the initial event may race the reply.
        let (token, rx) = conn.add_watch_route()?;
        if let Err(e) = conn.request(MsgType::Watch, 0, join_args(&[path, &token]), path) {
            conn.remove_watch_route(&token);
            return Err(e);
        }
        Ok(XsWatch {
            conn,
            path: path.to_owned(),
            token,
            rx,
        })
    }

    /// The paths that fired, in order. Disconnected when the connection dies.
    pub fn receiver(&self) -> &Receiver<String> {
        &self.rx
    }

    /// The watched path as given.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for XsWatch {
    fn drop(&mut self) {
        self.conn.remove_watch_route(&self.token);
        // Fire and forget: drop must not block on a slow or dead daemon.
        let _ = self
            .conn
            .send_no_wait(MsgType::Unwatch, join_args(&[&self.path, &self.token]));
    }
}

/// A watch whose events call a function on the connection's reader thread
/// (see [`WatchNotify`]) instead of filling a channel: no thread of the
/// watcher's own has to wait for them. Unregistered when dropped.
#[derive(Debug)]
pub struct XsNotifyWatch {
    conn: Arc<Connection>,
    path: String,
    token: String,
}

impl XsNotifyWatch {
    pub(super) fn register(
        conn: Arc<Connection>,
        path: &str,
        notify: WatchNotify,
    ) -> Result<XsNotifyWatch, XsError> {
        let token = conn.add_watch_notify(notify)?;
        if let Err(e) = conn.request(MsgType::Watch, 0, join_args(&[path, &token]), path) {
            conn.remove_watch_route(&token);
            return Err(e);
        }
        Ok(XsNotifyWatch {
            conn,
            path: path.to_owned(),
            token,
        })
    }

    /// The watched path as given.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for XsNotifyWatch {
    fn drop(&mut self) {
        self.conn.remove_watch_route(&self.token);
        let _ = self
            .conn
            .send_no_wait(MsgType::Unwatch, join_args(&[&self.path, &self.token]));
    }
}
