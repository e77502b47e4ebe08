//! The demo's child processes: spawned with their output captured (the last
//! lines are kept to explain a failure), waited for with a timeout, stopped with
//! SIGTERM (SIGKILL only after a grace period), and always reaped — also from the
//! Ctrl-C path, which shares this registry.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pvusb_support::{lock_unpoisoned, Chain};

/// Output lines kept per child.
const TAIL_LINES: usize = 12;
/// How often waits look at a child.
const POLL: Duration = Duration::from_millis(10);

/// A child's identity in the registry.
pub type ProcId = usize;

struct Proc {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Its stdout lines (the first [`STDOUT_LINES`]), when not piped to the caller.
    stdout: Arc<Mutex<Vec<String>>>,
    /// The threads copying its output; finished once the pipes hit end of file.
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Stdout lines kept per child.
const STDOUT_LINES: usize = 256;

/// Every child the demo started (shared with the signal thread).
#[derive(Clone, Default)]
pub struct Children {
    procs: Arc<Mutex<Vec<Proc>>>,
    /// Set when the user interrupted the demo: children dying is then expected.
    interrupted: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Children {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Children")
            .field("count", &self.lock().len())
            .finish()
    }
}

/// A freshly spawned child and the pipes the caller asked for.
#[derive(Debug)]
pub struct Spawned {
    /// Its id.
    pub id: ProcId,
    /// Its pid.
    pub pid: u32,
    /// Its stdin, when piped.
    pub stdin: Option<ChildStdin>,
    /// Its stdout, when piped (otherwise it goes to the tail buffer).
    pub stdout: Option<ChildStdout>,
}

fn keep_tail(
    src: impl Read + Send + 'static,
    tail: Arc<Mutex<VecDeque<String>>>,
    all: Option<Arc<Mutex<Vec<String>>>>,
) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("demo-child-output".into())
        .spawn(move || {
            for line in BufReader::new(src).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if let Some(all) = &all {
                    let mut all = lock_unpoisoned(all);
                    if all.len() < STDOUT_LINES {
                        all.push(line.clone());
                    }
                }
                let mut t = lock_unpoisoned(&tail);
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        })
        .ok()
}

/// `line` without terminal colour sequences (`ESC [ ... letter`), which the
/// children's loggers may emit.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How a child ended, for messages.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

impl Children {
    fn lock(&self) -> MutexGuard<'_, Vec<Proc>> {
        lock_unpoisoned(&self.procs)
    }

    /// Starts `cmd`; stderr (and stdout unless `talk`) feed the tail buffer.
    /// With `talk`, stdin and stdout are pipes returned to the caller.
    pub fn spawn(&self, name: &str, mut cmd: Command, talk: bool) -> Result<Spawned, String> {
        cmd.stderr(Stdio::piped());
        if talk {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the {name}: {e}", e = Chain(&e)))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stdout_log = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(err) = child.stderr.take() {
            readers.extend(keep_tail(err, Arc::clone(&tail), None));
        }
        let (stdin, stdout) = if talk {
            (child.stdin.take(), child.stdout.take())
        } else {
            if let Some(out) = child.stdout.take() {
                readers.extend(keep_tail(
                    out,
                    Arc::clone(&tail),
                    Some(Arc::clone(&stdout_log)),
                ));
            }
            (None, None)
        };
        let pid = child.id();
        let mut procs = self.lock();
        procs.push(Proc {
            name: name.to_owned(),
            child,
            status: None,
            tail,
            stdout: stdout_log,
            readers,
        });
        Ok(Spawned {
            id: procs.len() - 1,
            pid,
            stdin,
            stdout,
        })
    }

    /// Marks the run as interrupted (before the children are stopped).
    pub fn interrupt(&self) {
        self.interrupted
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the run was interrupted.
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The name a child was started under.
    pub fn name(&self, id: ProcId) -> String {
        self.lock()
            .get(id)
            .map_or_else(|| format!("child {id}"), |p| p.name.clone())
    }

    /// The last lines a child printed.
    pub fn tail(&self, id: ProcId) -> Vec<String> {
        let procs = self.lock();
        procs
            .get(id)
            .map(|p| lock_unpoisoned(&p.tail).iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What a child printed on stdout so far (when not piped to the caller).
    pub fn stdout(&self, id: ProcId) -> Vec<String> {
        let procs = self.lock();
        procs
            .get(id)
            .map(|p| lock_unpoisoned(&p.stdout).clone())
            .unwrap_or_default()
    }

    /// Its exit status if it has ended (reaping it).
    pub fn try_status(&self, id: ProcId) -> Option<ExitStatus> {
        let mut procs = self.lock();
        let p = procs.get_mut(id)?;
        if p.status.is_none() {
            p.status = p.child.try_wait().ok().flatten();
        }
        p.status
    }

    /// Waits for a child to end by itself.
    pub fn wait(&self, id: ProcId, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status(id) {
                // The child has exited, but its output may still be in the pipes: let
                // the readers reach end of file so callers see all of it.
                self.drain_output(id, Duration::from_secs(5));
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the {} did not finish within {timeout:?}",
                    self.name(id)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits (up to `limit`) until the output readers of an exited child are done.
    /// A grandchild still holding the pipes open only costs the limit.
    fn drain_output(&self, id: ProcId, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let done = self
                .lock()
                .get(id)
                .is_none_or(|p| p.readers.iter().all(|r| r.is_finished()));
            if done {
                return;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs a command to completion; Err unless it exits 0.
    pub fn run(
        &self,
        name: &str,
        cmd: Command,
        timeout: Duration,
    ) -> Result<ProcId, (String, Option<ProcId>)> {
        let s = self.spawn(name, cmd, false).map_err(|e| (e, None))?;
        match self.wait(s.id, timeout) {
            Ok(st) if st.success() => Ok(s.id),
            Ok(st) => Err((format!("`{name}` failed ({})", describe(st)), Some(s.id))),
            Err(e) => {
                self.stop(s.id, Duration::from_secs(1));
                Err((e, Some(s.id)))
            }
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status and
    /// whether it ended on SIGTERM within the grace period.
    pub fn stop(&self, id: ProcId, grace: Duration) -> (Option<ExitStatus>, bool) {
        if let Some(s) = self.try_status(id) {
            return (Some(s), true);
        }
        let pid = self
            .lock()
            .get(id)
            .and_then(|p| i32::try_from(p.child.id()).ok());
        if let Some(pid) = pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if let Ok(s) = self.wait(id, grace) {
            return (Some(s), true);
        }
        let mut procs = self.lock();
        let Some(p) = procs.get_mut(id) else {
            return (None, false);
        };
        let _ = p.child.kill();
        p.status = p.child.wait().ok();
        (p.status, false)
    }

    /// Stops every child still running, newest first (the guest before the
    /// backend before xenstore).
    pub fn stop_all(&self, grace: Duration) {
        let n = self.lock().len();
        for id in (0..n).rev() {
            self.stop(id, grace);
        }
    }

    /// Children that have not been reaped.
    pub fn running(&self) -> Vec<String> {
        let n = self.lock().len();
        (0..n)
            .filter(|&id| self.try_status(id).is_none())
            .map(|id| self.name(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_sequences_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2mtime\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"),
            "time  INFO x"
        );
        assert_eq!(strip_ansi("plain [text]"), "plain [text]");
        assert_eq!(strip_ansi("cut \u{1b}[3"), "cut ");
    }

    #[test]
    fn run_reports_exit_status_and_output() {
        let children = Children::default();
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo hello; echo oops >&2"]);
        let id = children
            .run("ok", ok, Duration::from_secs(20))
            .expect("sh runs");
        assert_eq!(children.stdout(id), vec!["hello".to_owned()]);
        let mut bad = Command::new("sh");
        bad.args(["-c", "echo broken >&2; exit 3"]);
        let (msg, id) = children
            .run("bad", bad, Duration::from_secs(20))
            .expect_err("exit 3 fails");
        assert!(msg.contains("exit status 3"), "{msg}");
        let id = id.expect("the child is named");
        // The output thread may still be draining the pipe.
        let deadline = Instant::now() + Duration::from_secs(20);
        while children.tail(id).is_empty() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert_eq!(children.tail(id), vec!["broken".to_owned()]);
    }

    #[test]
    fn a_hung_child_is_stopped_and_reaped() {
        let children = Children::default();
        let mut hung = Command::new("sleep");
        hung.arg("600");
        let (msg, id) = children
            .run("sleeper", hung, Duration::from_millis(50))
            .expect_err("times out");
        assert!(msg.contains("did not finish"), "{msg}");
        assert!(
            id.is_some_and(|id| children.try_status(id).is_some()),
            "reaped"
        );
        assert!(children.running().is_empty());
    }
}
