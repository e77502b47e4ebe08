//! Shared helpers: a server in a temporary directory and event waiting.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::Receiver;
use pvusb_xenstore::{ServerConfig, XsClient, XsServer, XsServerHandle};

/// Long enough never to trigger on a loaded machine; only bounds a failing test.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Fixture {
    pub server: XsServerHandle,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn start(config: ServerConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("xenstored.sock");
    let server = XsServer::start_with(&path, config).unwrap();
    Fixture {
        server,
        path,
        _dir: dir,
    }
}

impl Fixture {
    pub fn dom0(&self) -> XsClient {
        XsClient::connect(&self.path).unwrap()
    }
    pub fn dom(&self, domid: u16) -> XsClient {
        XsClient::connect_as(&self.path, domid).unwrap()
    }
}

/// The next watch event, failing the test instead of hanging.
pub fn next(rx: &Receiver<String>) -> String {
    rx.recv_timeout(WAIT).expect("watch event")
}

/// Drains events until `want` arrives; returns everything seen before it.
pub fn until(rx: &Receiver<String>, want: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let ev = next(rx);
        if ev == want {
            return seen;
        }
        seen.push(ev);
    }
}
