//! `pvusb backend-worker` (hidden): one controller's confined worker
//! process, started by the backend daemon with its link on standard input.
//! Not for operators: see `pvusb_backend::isolation`.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

/// Runs the worker; its exit status tells the daemon how it ended.
pub fn run() -> ExitCode {
    close_inherited();
    let link = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("pvusb backend-worker: no link on standard input: {e}");
            return ExitCode::from(78);
        }
    };
    // Standard input becomes /dev/null, so the link has one descriptor:
    // the worker's death closes it and the daemon sees that at once.
    match std::fs::File::open("/dev/null") {
        Ok(null) => {
            if let Err(e) = nix::unistd::dup2(null.as_raw_fd(), 0) {
                eprintln!("pvusb backend-worker: cannot close standard input: {e}");
            }
        }
        Err(e) => eprintln!("pvusb backend-worker: /dev/null: {e}"),
    }
    let code = pvusb_backend::isolation::worker_process::run(link);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Closes every descriptor above standard error that the worker inherited
/// without asking: std's `Command` closes only those marked close-on-exec,
/// and a daemon's parent (a shell, a test harness, a service manager) may
/// leave others open. The worker must hold only what its setup gives it.
fn close_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        eprintln!(
            "pvusb backend-worker: cannot list /proc/self/fd; inherited descriptors stay open"
        );
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // The directory's own descriptor is in the list and already closed.
        let _ = nix::unistd::close(fd);
    }
}
