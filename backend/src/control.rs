//! The daemon's control socket and metrics listener: where `pvusb stats` and
//! a node exporter read the live counters ([`crate::report`]).
//!
//! Control socket: a UNIX stream socket, mode 0600 (root only; the counters
//! say which guest does what), one request line per connection: `stats` or
//! `stats DOMID`, answered with one JSON document. Metrics listener: HTTP
//! `GET /metrics` on a UNIX socket or a loopback TCP address, answered in the
//! Prometheus text format. Each runs on one thread that serves one client at
//! a time with a bounded read, so a client that never sends its request holds
//! it for at most [`CLIENT_TIMEOUT`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use pvusb_support::Chain;

use crate::report::{to_json, to_prometheus, Reporter};

/// How long a client may take to send its request and read the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest request line read.
const MAX_REQUEST: u64 = 1024;

/// A listener failed to start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Binding or preparing the socket failed.
    #[error("cannot listen on {what}")]
    Listen {
        /// The address.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics address is not loopback or a socket path.
    #[error("metrics address {0:?} is neither a loopback address (127.0.0.1:9477, [::1]:9477) nor a UNIX socket path (unix:/run/pvusb/metrics.sock)")]
    NotLoopback(String),
}

/// Where the metrics listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddr {
    /// A UNIX socket path.
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

impl MetricsAddr {
    /// `unix:PATH`, a path starting with `/`, or a loopback `IP:PORT`.
    pub fn parse(s: &str) -> Result<Self, ControlError> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(MetricsAddr::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(MetricsAddr::Unix(PathBuf::from(s)));
        }
        match s.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => Ok(MetricsAddr::Tcp(a)),
            _ => Err(ControlError::NotLoopback(s.to_owned())),
        }
    }
}

/// A running listener thread; stops when dropped.
#[derive(Debug)]
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: Option<PathBuf>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn unix_listener(path: &Path, mode: u32) -> Result<UnixListener, ControlError> {
    let err = |source| ControlError::Listen {
        what: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // A socket file left by a daemon that died: nobody listens on it.
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(l)
}

/// Starts the control socket at `path` (mode 0600).
pub fn serve_control(path: &Path, reporter: Reporter) -> Result<Listener, ControlError> {
    let listener = unix_listener(path, 0o600)?;
    spawn(
        "pvusb-control",
        listener,
        Some(path.to_owned()),
        move |stream| answer_control(stream, &reporter),
    )
}

/// Starts the metrics listener.
pub fn serve_metrics(addr: &MetricsAddr, reporter: Reporter) -> Result<Listener, ControlError> {
    match addr {
        MetricsAddr::Unix(path) => {
            let listener = unix_listener(path, 0o660)?;
            spawn("pvusb-metrics", listener, Some(path.clone()), move |s| {
                answer_metrics(s, &reporter)
            })
        }
        MetricsAddr::Tcp(a) => {
            let listener = TcpListener::bind(a).map_err(|source| ControlError::Listen {
                what: a.to_string(),
                source,
            })?;
            spawn("pvusb-metrics", listener, None, move |s| {
                answer_metrics(s, &reporter)
            })
        }
    }
}

/// A listening socket the accept loop can wait on.
trait Accept: AsFd + Send + 'static {
    type Stream: Read + Write;
    fn accept_one(&self) -> std::io::Result<Self::Stream>;
    fn set_timeouts(s: &Self::Stream) -> std::io::Result<()>;
}

impl Accept for UnixListener {
    type Stream = std::os::unix::net::UnixStream;
    fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().map(|(s, _)| s)
    }
    fn set_timeouts(s: &Self::Stream) -> std::io::Result<()> {
        s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        s.set_write_timeout(Some(CLIENT_TIMEOUT))
    }
}

impl Accept for TcpListener {
    type Stream = std::net::TcpStream;
    fn accept_one(&self) -> std::io::Result<Self::Stream> {
        self.accept().map(|(s, _)| s)
    }
    fn set_timeouts(s: &Self::Stream) -> std::io::Result<()> {
        s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        s.set_write_timeout(Some(CLIENT_TIMEOUT))
    }
}

fn spawn<L: Accept>(
    name: &str,
    listener: L,
    path: Option<PathBuf>,
    answer: impl Fn(&mut L::Stream) -> std::io::Result<()> + Send + 'static,
) -> Result<Listener, ControlError> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                // Wake up now and then to notice the stop flag.
                let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(200u16)) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!("stats listener stopped: poll failed: {e}", e = Chain(&e));
                        return;
                    }
                }
                let Ok(mut stream) = listener.accept_one() else {
                    continue;
                };
                let served = L::set_timeouts(&stream).and_then(|()| answer(&mut stream));
                if let Err(e) = served {
                    tracing::debug!("stats client dropped: {e}", e = Chain(&e));
                }
            }
        })
        .map_err(|source| ControlError::Listen {
            what: name.to_owned(),
            source,
        })?;
    Ok(Listener {
        stop,
        thread: Some(thread),
        path,
    })
}

/// One bounded request line.
fn request_line(stream: &mut impl Read) -> std::io::Result<String> {
    let mut line = String::new();
    BufReader::new(stream.take(MAX_REQUEST)).read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

fn answer_control(stream: &mut (impl Read + Write), reporter: &Reporter) -> std::io::Result<()> {
    let line = request_line(stream)?;
    let mut words = line.split_ascii_whitespace();
    let reply = match (words.next(), words.next(), words.next()) {
        (Some("fault"), Some(dom), Some(dev)) => fault(reporter, dom, dev, words.next()),
        (Some("stats"), None, None) => to_json(&reporter.take()),
        (Some("stats"), Some(dom), None) => match dom.parse::<u16>() {
            Ok(domid) => {
                let mut r = reporter.take();
                r.retain(|c| c.domid == domid);
                to_json(&r)
            }
            Err(_) => error_json("the domain must be a domid"),
        },
        _ => error_json("unknown request: send `stats` or `stats DOMID`"),
    };
    stream.write_all(reply.as_bytes())?;
    stream.write_all(b"\n")
}

/// `fault DOMID DEVID KIND`: a test asks a worker process to crash.
fn fault(reporter: &Reporter, dom: &str, dev: &str, kind: Option<&str>) -> String {
    let (Ok(domid), Ok(devid)) = (dom.parse::<u16>(), dev.parse::<u32>()) else {
        return error_json("fault DOMID DEVID KIND: domid and devid are numbers");
    };
    let kind = match kind.unwrap_or("").parse::<crate::isolation::Fault>() {
        Ok(k) => k,
        Err(e) => return error_json(&e),
    };
    match reporter.inject(domid, devid, kind) {
        None => error_json("this daemon takes no faults (start it with --test-faults)"),
        Some(false) => error_json("no such controller with a worker process"),
        Some(true) => serde_json::json!({ "ok": true }).to_string(),
    }
}

fn error_json(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}

fn answer_metrics(stream: &mut (impl Read + Write), reporter: &Reporter) -> std::io::Result<()> {
    let line = request_line(stream)?;
    let mut parts = line.split_ascii_whitespace();
    let (status, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => ("200 OK", to_prometheus(&reporter.take())),
        (Some("GET"), Some(_)) => ("404 Not Found", "only /metrics is served\n".to_owned()),
        _ => ("400 Bad Request", "send GET /metrics\n".to_owned()),
    };
    // The rest of the request's headers are not needed: the answer closes
    // the connection.
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ControllerReport;
    use crate::stats::StatsSnapshot;
    use std::os::unix::net::UnixStream;

    fn reporter() -> Reporter {
        Reporter::new(|| {
            vec![ControllerReport {
                domid: 7,
                devid: 0,
                running: true,
                worker_pid: None,
                worker_restarts: 0,
                totals: StatsSnapshot::default(),
                ports: Vec::new(),
            }]
        })
    }

    fn ask(path: &Path, req: &str) -> String {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn control_socket_answers_stats_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let l = serve_control(&path, reporter()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let all: serde_json::Value = serde_json::from_str(&ask(&path, "stats\n")).unwrap();
        assert_eq!(all["controllers"][0]["domid"], 7);
        let none: serde_json::Value = serde_json::from_str(&ask(&path, "stats 8\n")).unwrap();
        assert_eq!(none["controllers"].as_array().unwrap().len(), 0);
        assert!(ask(&path, "reboot\n").contains("unknown request"));
        // A client that sends nothing is dropped after the timeout, and the
        // next one is served.
        let _silent = UnixStream::connect(&path).unwrap();
        assert!(ask(&path, "stats\n").contains("controllers"));
        drop(l);
        assert!(!path.exists(), "socket removed on stop");
    }

    #[test]
    fn metrics_listener_serves_prometheus_text_on_loopback_only() {
        assert!(matches!(
            MetricsAddr::parse("0.0.0.0:9477"),
            Err(ControlError::NotLoopback(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let addr = MetricsAddr::parse(&format!("unix:{}", path.display())).unwrap();
        let _l = serve_metrics(&addr, reporter()).unwrap();
        let reply = ask(&path, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
        assert!(reply.contains("# TYPE pvusb_urbs_total counter"));
        assert!(ask(&path, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.0 404"));
        let tcp = MetricsAddr::parse("127.0.0.1:0").unwrap();
        assert!(serve_metrics(&tcp, reporter()).is_ok());
    }
}
