//! One toolstack command at a time per host: the command lock.
//!
//! WHY: a command's steps span xenstore (records, ports) and sysfs (driver
//! bindings), and sysfs has no transactions. Two commands interleaving their
//! steps on one device (an attach unbinding an interface while a `recover`
//! rebinds it, a detach and a re-attach of the same port) can leave a state
//! that no single command would. The xenstore transactions catch the races on
//! xenstore nodes; this lock makes the commands that change bindings or ports
//! run one after another, as libxl serialises device changes with its
//! userdata lock.
//!
//! The lock is `flock(2)` on a file next to the sysfs tree the commands change
//! ([`crate::Sysfs::command_lock_path`]): released by the kernel when its
//! holder dies, so `kill -9` never leaves it held. It is re-entrant per thread
//! (a `ctrl-detach` runs `dev-detach` for each port) and waited for with a
//! bound; a command that cannot get it fails with a one-line error.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use pvusb_support::lock_unpoisoned;

use crate::error::ToolError;

/// The locks this process holds: path, holding thread, nesting depth, and the
/// locked file (dropping it unlocks).
static HELD: Mutex<Vec<Held>> = Mutex::new(Vec::new());

struct Held {
    path: PathBuf,
    thread: ThreadId,
    depth: usize,
    _file: Flock<File>,
}

/// Holds the command lock until dropped.
#[derive(Debug)]
#[must_use = "the lock is released when this is dropped"]
pub struct CommandLock {
    path: PathBuf,
    thread: ThreadId,
}

fn held() -> std::sync::MutexGuard<'static, Vec<Held>> {
    lock_unpoisoned(&HELD)
}

impl CommandLock {
    /// Takes the lock at `path`, waiting at most `timeout` for another command
    /// to finish. Creates the file (and its directory) if needed.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<CommandLock, ToolError> {
        let thread = std::thread::current().id();
        if let Some(h) = held()
            .iter_mut()
            .find(|h| h.path == path && h.thread == thread)
        {
            h.depth += 1;
            return Ok(CommandLock {
                path: path.to_owned(),
                thread,
            });
        }
        let io = |e: std::io::Error| ToolError::Lock {
            path: path.to_owned(),
            source: e,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let deadline = Instant::now() + timeout;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        let locked = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((f, nix::errno::Errno::EWOULDBLOCK | nix::errno::Errno::EINTR)) => {
                    if Instant::now() >= deadline {
                        return Err(ToolError::Busy {
                            path: path.to_owned(),
                            secs: timeout.as_secs(),
                        });
                    }
                    file = f;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((_, e)) => return Err(io(e.into())),
            }
        };
        held().push(Held {
            path: path.to_owned(),
            thread,
            depth: 1,
            _file: locked,
        });
        Ok(CommandLock {
            path: path.to_owned(),
            thread,
        })
    }
}

impl Drop for CommandLock {
    fn drop(&mut self) {
        let mut held = held();
        if let Some(i) = held
            .iter()
            .position(|h| h.path == self.path && h.thread == self.thread)
        {
            if let Some(h) = held.get_mut(i) {
                h.depth -= 1;
                if h.depth == 0 {
                    // Dropping the entry closes the file, which unlocks it.
                    held.swap_remove(i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_other_threads_and_nests_in_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let outer = CommandLock::acquire(&path, Duration::from_secs(1)).unwrap();
        let inner = CommandLock::acquire(&path, Duration::from_secs(1)).unwrap();
        let p2 = path.clone();
        let other = std::thread::spawn(move || {
            CommandLock::acquire(&p2, Duration::from_millis(50)).map(drop)
        });
        assert!(matches!(other.join().unwrap(), Err(ToolError::Busy { .. })));
        drop(inner);
        let p3 = path.clone();
        let still = std::thread::spawn(move || {
            CommandLock::acquire(&p3, Duration::from_millis(50)).map(drop)
        });
        assert!(still.join().unwrap().is_err(), "inner drop must not unlock");
        drop(outer);
        let p4 = path.clone();
        let free = std::thread::spawn(move || {
            CommandLock::acquire(&p4, Duration::from_millis(50)).map(drop)
        });
        assert!(free.join().unwrap().is_ok());
    }
}
